#!/usr/bin/env bash
# Runs every libFuzzer target for a while: tests/fuzz/run.sh [--seconds N] [--build DIR] [TARGET...]
# Builds them first (clang, -DCKPT_FUZZ=ON, in build-fuzz/ unless --build says). Default: 20 s
# each, the CI run; longer on demand (--seconds 3600). Each target starts from its committed seeds
# (corpus/<target>/) and regressions, and grows a working corpus outside the repo. A crash stops
# that target: its input is copied to tests/fuzz/regressions/<target>/ (fix the bug, keep the
# file: ctest replays it in every build), and the script exits non-zero after all targets ran.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
seconds=20
build="$src/build-fuzz"
targets=()
while (($#)); do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
    esac
done

if ! command -v clang >/dev/null; then
    echo "fuzz: clang is missing (scripts/install-deps.sh installs it)" >&2
    exit 2
fi
CC=clang cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCKPT_FUZZ=ON \
    -DBUILD_TESTING=ON >/dev/null
if ((${#targets[@]} == 0)); then
    for f in "$here"/fuzz_*.c; do
        targets+=("$(basename "$f" .c)")
    done
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    bin=$(find "$build" -type f -name "$t" -perm -u+x | head -n1)
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
    seeds=("$here/corpus/$t")
    [[ -d $here/regressions/$t ]] && seeds+=("$here/regressions/$t")
    start=$(date +%s)
    # ASan's leak check runs at exit and in each crash report; -rss_limit guards runaway inputs.
    if (cd "$work/$t" && "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" \
        "$work/$t/corpus" "${seeds[@]}" >"$work/$t/log" 2>&1); then
        stats=$(grep -E '^stat::number_of_executed_units' "$work/$t/log" | awk '{print $2}')
        cov=$(grep -oE 'cov: [0-9]+' "$work/$t/log" | tail -n1)
        echo "fuzz: $t ok: ${stats:-?} runs, ${cov:-cov: ?}, $(($(date +%s) - start)) s"
    else
        failed+=("$t")
        mkdir -p "$here/regressions/$t"
        for a in "$work/$t/artifacts"/*; do
            [[ -f $a ]] || continue
            name="$(basename "$a")"
            cp "$a" "$here/regressions/$t/$name"
            echo "fuzz: $t FAILED: input kept as tests/fuzz/regressions/$t/$name" >&2
        done
        grep -A30 -E '^==[0-9]+==ERROR|runtime error|deadly signal' "$work/$t/log" | head -n 40 >&2
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]}; reproduce with build-fuzz/tests/fuzz/replay_<target> FILE" >&2
    exit 1
fi
