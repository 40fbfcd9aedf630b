#!/usr/bin/env bash
# tests/bench/run.sh - one command for the benchmark table (see tests/bench/README.md).
# Builds an optimized ckptpushd in build-bench/, makes sure the official JS client is installed,
# runs bench.py on data in a temporary directory and deletes it. Not part of the default ctest
# run except --smoke (tiny sizes: the harness itself keeps working).
#   bash tests/bench/run.sh [--quick | --smoke] [--reps N] [--only s1,s2,...] [--max-rate R]
#       [--compare OTHER_CKPTPUSHD]   (a second build, interleaved as 'candidate')
#       [--sink-rate BYTES_PER_S]     (s4: the hub's storage sink, default 100 MB/s)
#   bash tests/bench/run.sh --multinode [--reps N]   (4 daemons x 4 shards against one daemon
#       pushing all 16: aggregate bytes/s, one commit each, the ratio; see multinode.py)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
size=full reps=3 pass=() multinode=
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) size=quick ;;
    --smoke) size=smoke reps=1 ;;
    --multinode) multinode=1 ;;
    --reps) reps=$2; shift ;;
    --only|--only-clients|--max-rate|--compare|--sink-rate) pass+=("$1" "$2"); shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
for tool in curl openssl node python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: '$tool' is required" >&2; exit 2; }
done
daemon=${CKPTPUSHD_BENCH:-}
if [ -z "$daemon" ]; then
    # Release: the numbers are about the shipped build, not the Debug one tests use
    build=$src/build-bench
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$build" -j2 --target ckptpushd ckptblake3 >/dev/null
    daemon=$build/ckptpushd
    # the hub's Xet CAS (s4) hashes with the build's BLAKE3
    export CKPT_BLAKE3_LIB=${CKPT_BLAKE3_LIB:-$build/lib/libckptblake3.so}
fi
if [ ! -d "$src/tests/hub/node_modules/@huggingface/hub" ] && [ "$size" != smoke ]; then
    npm ci --prefix "$src/tests/hub" --no-audit --no-fund >/dev/null
fi
if [ -n "$multinode" ]; then
    CKPTPUSHD="$daemon" exec python3 "$here/multinode.py" --reps "$reps"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 "$here/bench.py" --work "$work" --daemon "$daemon" --size "$size" --reps "$reps" \
    ${pass[@]+"${pass[@]}"}
