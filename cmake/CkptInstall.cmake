# CkptInstall.cmake - what `cmake --install` puts where (GNUInstallDirs):
#   bin/                         ckptpushd, ckptpush (when the client is built)
#   lib/systemd/system/          ckptpushd@.service          (CKPT_SYSTEMD_SYSTEM_UNIT_DIR)
#   lib/systemd/user/            ckptpushd@.service          (CKPT_SYSTEMD_USER_UNIT_DIR)
#   lib/sysusers.d/              ckptpush.conf               (CKPT_SYSUSERS_DIR)
#   share/doc/ckptpush/          config example and README, env file example, examples/
#   share/ckptpush/python/       the Python client package source (pip install it from there)
# The units' ExecStart= is the installed ckptpushd (CMAKE_INSTALL_FULL_BINDIR).
include(GNUInstallDirs)

set(CKPT_SYSTEMD_SYSTEM_UNIT_DIR "lib/systemd/system" CACHE STRING "systemd system units")
set(CKPT_SYSTEMD_USER_UNIT_DIR "lib/systemd/user" CACHE STRING "systemd user units")
set(CKPT_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING "sysusers.d snippets")

install(TARGETS ckptpushd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET ckptpush)
  install(TARGETS ckptpush RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

configure_file(${CMAKE_SOURCE_DIR}/systemd/ckptpushd@.service.in
               ${CMAKE_BINARY_DIR}/systemd/system/ckptpushd@.service @ONLY)
configure_file(${CMAKE_SOURCE_DIR}/systemd/user/ckptpushd@.service.in
               ${CMAKE_BINARY_DIR}/systemd/user/ckptpushd@.service @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/systemd/system/ckptpushd@.service
        DESTINATION ${CKPT_SYSTEMD_SYSTEM_UNIT_DIR})
install(FILES ${CMAKE_BINARY_DIR}/systemd/user/ckptpushd@.service
        DESTINATION ${CKPT_SYSTEMD_USER_UNIT_DIR})
install(FILES ${CMAKE_SOURCE_DIR}/systemd/ckptpush.sysusers DESTINATION ${CKPT_SYSUSERS_DIR}
        RENAME ckptpush.conf)

install(FILES ${CMAKE_SOURCE_DIR}/config/ckptpushd.example.jsonc
              ${CMAKE_SOURCE_DIR}/config/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/config)
install(FILES ${CMAKE_SOURCE_DIR}/systemd/example.env DESTINATION ${CMAKE_INSTALL_DOCDIR}/systemd)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
        USE_SOURCE_PERMISSIONS)
if(EXISTS ${CMAKE_SOURCE_DIR}/client/python)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/client/python/
          DESTINATION ${CMAKE_INSTALL_DATADIR}/ckptpush/python
          PATTERN "__pycache__" EXCLUDE
          PATTERN "*.pyc" EXCLUDE)
endif()
