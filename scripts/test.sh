#!/usr/bin/env bash
# The test command README gives users and CI runs: install what is missing, build, check the
# formatting, run every test with ctest. Pass --asan to build and test with ASan+UBSan instead.
set -euo pipefail

cd "$(dirname "$0")/.."
build=build
cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [[ ${1:-} == --asan ]]; then
    build=build-asan
    cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DCKPT_SANITIZE=ON)
fi

bash scripts/install-deps.sh
cmake -S . -B "$build" "${cmake_args[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

mapfile -t sources < <(git ls-files 'daemon/*.[ch]' 'client/*.[ch]' 'tests/*.[ch]')
if ((${#sources[@]})); then
    clang-format --dry-run -Werror "${sources[@]}"
fi

ctest --test-dir "$build" --output-on-failure -j2
