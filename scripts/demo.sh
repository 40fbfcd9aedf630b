#!/usr/bin/env bash
# The product demo: builds ckptpushd if needed, starts the embedded test hub on a free port as a
# local Hub, starts the daemon on a temporary output directory, replays the save pattern a real
# transformers Trainer run recorded (4 checkpoints, save_total_limit=2 rotation, final model) at
# its real speed, prints each checkpoint as it is sealed and committed, then the remote repo's
# files and commit history. Stops everything it started; exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "$0")/.."
here=$(pwd)

# True while the process exists and is not a zombie waiting to be reaped.
running() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $st != Z* ]]
}
step() { printf '\n== %s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

if [[ -f scripts/install-deps.sh ]]; then
    bash scripts/install-deps.sh
fi
step "building ckptpushd"
if [[ ! -f build/CMakeCache.txt ]]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build build -j"$(nproc)" >/dev/null
daemon_bin="${CKPTPUSHD:-$here/build/ckptpushd}"
[[ -x $daemon_bin ]] || die "$daemon_bin was not built"

tmp=$(mktemp -d -t ckptpush-demo.XXXXXX)
pids=()
cleanup() {
    local rc=$? pid
    for pid in "${pids[@]}"; do
        # Each child leads its own process group (setsid): stop the group.
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do
            running "$pid" || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo: process $pid is still running" >&2
            rc=1
        fi
    done
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

user=demo
repo="$user/tiny-trainer-run"
# A local, throw-away token: the hub only knows this one.
token="hf_demo$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

step "starting the local test hub (the embedded target; no account needed)"
setsid python3 tests/hub/hub.py --data "$tmp/hub-data" --port 0 --port-file "$tmp/hub.port" \
    --log "$tmp/hub.log" --user "$user:$token" >"$tmp/hub.out" 2>&1 &
pids+=($!)
hub_pid=$!
for _ in $(seq 200); do
    [[ -s $tmp/hub.port ]] && break
    kill -0 "$hub_pid" 2>/dev/null || break
    sleep 0.05
done
[[ -s $tmp/hub.port ]] || {
    cat "$tmp/hub.out" >&2
    die "the test hub did not start"
}
port=$(grep -o '[0-9]*' "$tmp/hub.port" | tail -n1)
endpoint="http://127.0.0.1:$port"
echo "hub listening on $endpoint"

out="$tmp/output"
mkdir -p "$out"
step "starting ckptpushd --watch $out --repo $repo"
HF_TOKEN="$token" setsid "$daemon_bin" --watch "$out" --repo "$repo" --endpoint "$endpoint" \
    --quiet-ms 500 --log-level info 2>"$tmp/daemon.log" &
pids+=($!)
daemon_pid=$!

# Turns the daemon's log into friendly lines as it grows. Exits 0 once `want` commits are
# seen (or, with want=0, once `ready` is), 1 on push-failed, an error, the daemon's exit or time out.
cat >"$tmp/follow.py" <<'EOF'
import os, re, sys, time
log, pid, want, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic()
kv = re.compile(r"(\w+)=('[^']*'|\S+)")
def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def size(n):
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
commits = 0
pos = 0
while True:
    with open(log, errors="replace") as f:
        f.seek(pos)
        chunk = f.read()
        pos = f.tell()
    for line in chunk.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        level, event = parts[1], parts[2]
        d = {k: v.strip("'") for k, v in kv.findall(parts[3] if len(parts) > 3 else "")}
        name = d.get("ckpt", "")
        label = name if name else "final model (output root)"
        g = lambda k, dflt="?": d.get(k, dflt)
        if event == "ready":
            if want == 0:
                print(f"  ready: watching {g('watch')}, pushing to {g('repo')}")
                sys.exit(0)
        elif event == "sealed":
            print(f"  sealed     {label:28} {g('files')} files "
                  f"({g('layout')}: {g('rule', '')})")
        elif event == "committed":
            commits += 1
            print(f"  committed  {label:28} {g('commit')[:12]}  "
                  f"'{g('message', '')}'  {g('files')} files, {size(g('bytes', 0))} in {g('seconds')} s")
        elif event == "push-failed" or level == "error":
            print(f"  FAILED     {line}", file=sys.stderr)
            sys.exit(1)
        elif level == "warn":
            print(f"  warning    {line}", file=sys.stderr)
    sys.stdout.flush()
    if want and commits >= want:
        sys.exit(0)
    if not alive():
        print("demo: ckptpushd exited early", file=sys.stderr)
        sys.exit(1)
    if time.monotonic() - t0 > limit:
        print("demo: timed out waiting for the daemon", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
EOF
if ! python3 "$tmp/follow.py" "$tmp/daemon.log" "$daemon_pid" 0 20; then
    tail -n 20 "$tmp/daemon.log" >&2
    die "ckptpushd did not become ready"
fi

step "training (replaying a recorded transformers Trainer run: save_steps=10, save_total_limit=2)"
python3 tests/tools/replay.py tests/fixtures/traces/hf-trainer-5.17-save-steps.jsonl \
    --into "$out" --speed 1 --manifest "$tmp/manifest.json" \
    --content trainer_state.json=tests/fixtures/trainer-output/trainer_state.json \
    --content checkpoint-40/trainer_state.json=tests/fixtures/trainer-output/checkpoint-40.trainer_state.json \
    --content all_results.json=tests/fixtures/trainer-output/all_results.json \
    --content README.md=tests/fixtures/trainer-output/README.generated-by-trainer.md \
    || die "the replay failed"
echo "  training finished; output directory now holds:"
(cd "$out" && find . -path ./.ckptpush -prune -o -type f -print | sed 's|^\./|    |' | sort)

step "waiting for the pushes (4 checkpoints + End of training)"
if ! python3 "$tmp/follow.py" "$tmp/daemon.log" "$daemon_pid" 5 120; then
    tail -n 30 "$tmp/daemon.log" >&2
    die "the pushes did not complete"
fi

step "remote repository $repo: files"
curl -fsS -H "Authorization: Bearer $token" \
    "$endpoint/api/models/$repo/tree/main?recursive=true" >"$tmp/tree.json" ||
    die "cannot list the remote files"
python3 - "$tmp/tree.json" <<'EOF'
import json, sys
for e in sorted(json.load(open(sys.argv[1])), key=lambda e: e["path"]):
    if e.get("type") == "file":
        lfs = "  (LFS sha256 " + e["lfs"]["oid"][:12] + ")" if e.get("lfs") else ""
        print(f"  {e['size']:>10}  {e['path']}{lfs}")
EOF

step "remote repository $repo: commit history (newest first)"
curl -fsS -H "Authorization: Bearer $token" \
    "$endpoint/api/models/$repo/commits/main" >"$tmp/commits.json" ||
    die "cannot list the remote commits"
python3 - "$tmp/commits.json" <<'EOF'
import json, sys
for c in json.load(open(sys.argv[1])):
    title = c.get("title") or (c.get("message") or "").split("\n")[0]
    print(f"  {c['id'][:12]}  {c.get('date', ''):25}  {title}")
EOF

step "remote repository $repo: the model card (README.md, front matter and first sections)"
curl -fsSL -H "Authorization: Bearer $token" "$endpoint/$repo/resolve/main/README.md" \
    >"$tmp/README.md" || die "cannot download the model card"
sed -n '1,/ckptpush:end description/p' "$tmp/README.md" | sed 's/^/    /'
echo "    ... ($(wc -l <"$tmp/README.md") lines in all; curves in training_curves.svg)"

step "stopping"
# SIGTERM: the daemon seals what is complete, finishes queued pushes and exits 0.
kill -TERM "$daemon_pid"
for _ in $(seq 900); do
    running "$daemon_pid" || break
    sleep 0.1
done
if running "$daemon_pid"; then
    tail -n 20 "$tmp/daemon.log" >&2
    die "ckptpushd did not stop within 90 s of SIGTERM"
fi
rc=0
wait "$daemon_pid" || rc=$?
[[ $rc -eq 0 ]] || {
    tail -n 20 "$tmp/daemon.log" >&2
    die "ckptpushd exited with status $rc"
}
echo "  ckptpushd stopped cleanly"
echo "demo: done"
