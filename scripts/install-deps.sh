#!/usr/bin/env bash
# Installs everything ckptpush needs to build, test and run its demo on Debian 12: the C
# toolchain and libraries (apt) and the pinned official JS Hub client the tests compare against
# (npm, from tests/hub/package-lock.json). Idempotent and quiet when everything is there.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
packages=(build-essential cmake pkg-config git python3 curl ca-certificates
          libuv1-dev libcurl4-openssl-dev libcjson-dev libssl-dev zlib1g-dev inotify-tools
          clang-format valgrind python3-yaml nodejs npm
          librust-blake3-dev liblz4-dev # Xet: BLAKE3 C source, LZ4 (daemon; the test hub via ctypes)
          clang libclang-rt-14-dev) # libFuzzer and the sanitizer runtimes (tests/fuzz/run.sh)

missing=()
for p in "${packages[@]}"; do
    # nodejs/npm may come from elsewhere (a newer node on PATH is fine).
    if [[ $p == nodejs ]] && command -v node >/dev/null; then continue; fi
    if [[ $p == npm ]] && command -v npm >/dev/null; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

hub_dir="$here/tests/hub"
if [[ -f $hub_dir/package-lock.json ]]; then
    stamp="$hub_dir/node_modules/.ckptpush-lock.sha256"
    want=$(sha256sum "$hub_dir/package-lock.json" | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        echo "install-deps: installing the pinned @huggingface/hub client (npm ci)"
        npm ci --prefix "$hub_dir" --no-audit --no-fund --loglevel=error >/dev/null
        echo "$want" >"$stamp"
    fi
fi
