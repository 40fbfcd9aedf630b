"""Several nodes against one: NODES daemons (ranks 0..NODES-1, one coordinating) each pushing its
SHARDS shards of a DCP checkpoint, against one daemon pushing all NODES x SHARDS, on this machine
and the test hub. Prints the wall time from the checkpoint's appearance (folders renamed into the
watched directories at once) to its commit, the aggregate bytes per second, the commits made
(1 each), and the ratio multi/single. Each run uses fresh random bytes and a fresh repo.

  python3 tests/bench/multinode.py [--nodes 4] [--shards 4] [--shard-mib 12] [--reps 2]
  (CKPTPUSHD=... picks the daemon; run.sh passes its Release build)"""

import argparse
import os
import secrets
import shutil
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import ckpt_harness as h  # noqa: E402

MiB = 1 << 20
QUIET_MS = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage(root, name, shards, size, metadata):
    """A complete DCP folder outside the watched tree, to be renamed in at once."""
    d = os.path.join(root, name)
    os.makedirs(d)
    for k in shards:
        with open(os.path.join(d, f"__{k}_0.distcp"), "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
    if metadata:
        with open(os.path.join(d, ".metadata"), "wb") as f:
            f.write(b"metadata " + secrets.token_bytes(16))
    return d


def run(hub, nodes, total_nodes, shards, size, tag):
    """One checkpoint of nodes*shards shards over `nodes` daemons (1: a plain daemon).
    Returns (seconds, bytes, commits)."""
    repo = f"{h.USER}/bench-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    port = free_port()
    secret = secrets.token_hex(16)
    daemons, staged, watches = [], [], []
    try:
        for r in range(nodes):
            root, watch = h.job_dir(f"ckpt-bench-n{r}-")
            args = ["--quiet-ms", str(QUIET_MS), "--socket", os.path.join(root, "ctl.sock"),
                    "--nice", "0"]
            if nodes > 1:
                args += ["--nodes", str(nodes), "--node-rank", str(r), "--coordinator",
                         f"127.0.0.1:{port}"]
            d = h.Daemon(watch, repo=repo, endpoint=hub.url, args=args, log_level="info",
                         env={"CKPTPUSH_JOB_SECRET": secret})
            daemons.append(d)
            watches.append(watch)
            # one daemon gets every node's shards; each of several its own
            mine = range(0, shards * total_nodes) if nodes == 1 else \
                range(r * shards, (r + 1) * shards)
            staged.append(stage(root, "step-1", mine, size, r == 0))
        for d in daemons:
            d.wait_event("ready", timeout=60)
        before = len(hub.commits(repo))
        total = sum(os.path.getsize(os.path.join(s, f)) for s in staged for f in os.listdir(s))
        t0 = time.monotonic()
        for s, watch in zip(staged, watches):
            os.rename(s, os.path.join(watch, "step-1"))
        if nodes > 1:
            daemons[0].wait_event("coord-committed", timeout=120, ckpt="step-1")
        else:
            daemons[0].wait_event("committed", timeout=120, ckpt="step-1")
        dt = time.monotonic() - t0
        commits = len(hub.commits(repo)) - before
        return dt, total, commits
    finally:
        for d in daemons:
            d.stop()
        for w in watches:
            shutil.rmtree(os.path.dirname(w), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--shards", type=int, default=4, help="per node")
    ap.add_argument("--shard-mib", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    hub = h.Hub(args=["--fast-parts"])
    size = a.shard_mib * MiB
    rows = {"single": [], "multi": []}
    try:
        for rep in range(a.reps):
            for mode in ("single", "multi") if rep % 2 == 0 else ("multi", "single"):
                n = 1 if mode == "single" else a.nodes
                dt, total, commits = run(hub, n, a.nodes, a.shards, size, mode)
                rows[mode].append((dt, total, commits))
                print(f"rep {rep + 1} {mode:6s}: {total / MiB:.0f} MiB in {dt:.2f} s = "
                      f"{total / dt / MiB:.1f} MiB/s, commits={commits}", flush=True)
    finally:
        hub.stop()
    med = {}
    for mode, rs in rows.items():
        med[mode] = statistics.median(r[0] for r in rs)
        total = rs[0][1]
        print(f"{mode:6s} ({1 if mode == 'single' else a.nodes} daemon(s)): median "
              f"{med[mode]:.2f} s, {total / med[mode] / MiB:.1f} MiB/s aggregate, commits "
              f"{sorted(set(r[2] for r in rs))}")
    print(f"ratio multi/single (aggregate bytes/s): {med['single'] / med['multi']:.2f}")
    bad = [r for rs in rows.values() for r in rs if r[2] != 1]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
