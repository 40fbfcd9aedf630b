# BLAKE3 from the official C implementation that Debian ships as source in librust-blake3-dev
# (scripts/install-deps.sh installs it), rather than a hash written by hand. Gives two targets:
#   blake3       static, linked into ckptcore (Xet chunk, xorb and file hashes)
#   ckptblake3   shared, loaded by the test hub through ctypes (Python has no BLAKE3)
# Override the source folder with -DBLAKE3_C_DIR=... where the package puts it elsewhere.
if(NOT BLAKE3_C_DIR)
  file(GLOB _blake3_dirs /usr/share/cargo/registry/blake3-*/c)
  list(SORT _blake3_dirs)
  list(REVERSE _blake3_dirs)
  list(GET _blake3_dirs 0 BLAKE3_C_DIR)
endif()
if(NOT BLAKE3_C_DIR OR NOT EXISTS ${BLAKE3_C_DIR}/blake3.h)
  message(FATAL_ERROR "BLAKE3 C sources not found: apt-get install librust-blake3-dev "
                      "(or pass -DBLAKE3_C_DIR=<folder holding blake3.h>)")
endif()

set(_blake3_sources ${BLAKE3_C_DIR}/blake3.c ${BLAKE3_C_DIR}/blake3_dispatch.c
                    ${BLAKE3_C_DIR}/blake3_portable.c)
set(_blake3_defs "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  # The SIMD kernels as C with intrinsics, each built for its instruction set; the dispatcher
  # picks one at run time from cpuid.
  list(APPEND _blake3_sources ${BLAKE3_C_DIR}/blake3_sse2.c ${BLAKE3_C_DIR}/blake3_sse41.c
       ${BLAKE3_C_DIR}/blake3_avx2.c ${BLAKE3_C_DIR}/blake3_avx512.c)
  set_source_files_properties(${BLAKE3_C_DIR}/blake3_sse2.c PROPERTIES COMPILE_OPTIONS -msse2)
  set_source_files_properties(${BLAKE3_C_DIR}/blake3_sse41.c PROPERTIES COMPILE_OPTIONS -msse4.1)
  set_source_files_properties(${BLAKE3_C_DIR}/blake3_avx2.c PROPERTIES COMPILE_OPTIONS -mavx2)
  set_source_files_properties(${BLAKE3_C_DIR}/blake3_avx512.c PROPERTIES COMPILE_OPTIONS
                              "-mavx512f;-mavx512vl")
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  list(APPEND _blake3_sources ${BLAKE3_C_DIR}/blake3_neon.c)
  list(APPEND _blake3_defs BLAKE3_USE_NEON=1)
else()
  list(APPEND _blake3_defs BLAKE3_NO_SSE2 BLAKE3_NO_SSE41 BLAKE3_NO_AVX2 BLAKE3_NO_AVX512)
endif()

# Third-party code: built with its own flags, not ours (-Werror, sanitizers, fuzz coverage).
foreach(_target blake3 ckptblake3)
  if(_target STREQUAL blake3)
    add_library(${_target} STATIC ${_blake3_sources})
  else()
    add_library(${_target} SHARED ${_blake3_sources})
  endif()
  set_property(TARGET ${_target} PROPERTY COMPILE_OPTIONS -O3 -w)
  set_property(TARGET ${_target} PROPERTY LINK_OPTIONS "")
  set_property(TARGET ${_target} PROPERTY POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(${_target} PRIVATE ${_blake3_defs})
  target_include_directories(${_target} SYSTEM PUBLIC ${BLAKE3_C_DIR})
endforeach()
set_target_properties(ckptblake3 PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
