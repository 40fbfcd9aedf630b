"""Chaos: while a run of checkpoints with multipart objects is pushed, at random (seeded) moments
ckptpushd is SIGKILLed and restarted, the test hub is restarted on the same data directory and
port (the daemon must reconnect), and faults are injected (part 500s, resets in the middle of a
part body, 429 + Retry-After on the commit, expired part and completion URLs). After a calm phase
and a drain every checkpoint has exactly one commit whose files have the local SHA-256. Prints the
seed and a report: kills, hub restarts, faults, retries, bytes sent again.

CKPT_CHAOS_SEED fixes the seed (default: from the clock, printed first), CKPT_CHAOS_S the length
of the chaos phase (default 30 s)."""

import json
import os
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402
from test_kill_resume import write_checkpoint  # noqa: E402

MiB = 1 << 20
STEPS = tuple(range(100, 900, 100))  # 8 checkpoints
SAVE_EVERY_S = 3.0
KEEP = 2  # checkpoints kept on disk (save_total_limit): older ones are rotated once sealed
RATE = 2 * MiB  # --max-rate: stretches transfers so that events land in them
CHAOS_S = float(os.environ.get("CKPT_CHAOS_S", "30"))


def fault_for(rng):
    """One random fault of the kinds the Hub and S3 really produce."""
    kind = rng.choice(("part500", "part_reset", "part_expired", "commit429", "complete_expired",
                       "batch503", "commit_dropped"))
    if kind == "part500":
        return {"route": "part_put", "count": rng.randint(1, 3), "status": 500}
    if kind == "part_reset":
        return {"route": "part_put", "count": rng.randint(1, 2),
                "reset_after_bytes": rng.randrange(64 << 10, 900 << 10)}
    if kind == "part_expired":
        return {"route": "part_put", "count": 1, "expire_urls": True}
    if kind == "commit429":
        return {"route": "commit", "count": 1, "status": 429, "retry_after": 1}
    if kind == "complete_expired":
        return {"route": "complete", "count": 1, "expire_urls": True}
    if kind == "commit_dropped":  # the commit is made, its answer lost: no second commit
        return {"route": "commit", "count": 1, "drop_response": True}
    return {"route": "lfs_batch", "count": 1, "status": 503, "retry_after": 1}


def resent_bytes(hub, sizes):
    """Part and single PUT bytes the hub read beyond each object's size, from its request log
    (resets and killed transfers count with what was read). Returns (resent, sent, objects,
    finished parts sent again)."""
    done = os.path.join(hub.data, "multipart", "done")
    sid_oid = {}
    for sid in os.listdir(done) if os.path.isdir(done) else ():
        with open(os.path.join(done, sid), encoding="utf-8") as f:
            sid_oid[sid] = json.load(f)["oid"]
    per_oid = {}
    for r in hub.log_records():
        route = r.get("route")
        path = r.get("path", "").split("?", 1)[0]
        if route == "part_put":
            oid = sid_oid.get(path.split("/")[3])
        elif route == "lfs_put":
            oid = path.rsplit("/", 1)[1]
        else:
            continue
        if oid is None:  # a session that never completed: everything it got was wasted
            oid = "?" + path
        per_oid[oid] = per_oid.get(oid, 0) + int(r.get("bytes_in") or 0)
    sent = sum(per_oid.values())
    finished = {}
    for r in hub.log_records():
        if r.get("route") in ("part_put", "lfs_put") and r.get("status") == 200:
            key = r["path"].split("?", 1)[0]
            finished[key] = finished.get(key, 0) + 1
    again = sum(n - 1 for n in finished.values())
    resent = sum(n - sizes.get(oid, 0) for oid, n in per_oid.items())
    return resent, sent, len(per_oid), again


class Chaos(unittest.TestCase):
    def test_chaos(self):
        seed = int(os.environ.get("CKPT_CHAOS_SEED") or time.time_ns() % 1000000)
        print(f"\nchaos seed={seed} (CKPT_CHAOS_SEED={seed} replays the same choices)", flush=True)
        rng = random.Random(seed)
        data_rng = random.Random(seed + 1)  # file contents: independent of the event choices

        hub = h.Hub(args=["--multipart-threshold", str(MiB), "--chunk-size", str(MiB)])
        root, watch = h.job_dir("ckpt-chaos-")
        repo = f"{h.USER}/chaos-{os.getpid()}"
        args = ["--quiet-ms", "300", "--transfer", "lfs", "--max-rate", str(RATE),
                "--max-transfers", "3",
                "--drain-timeout", "60", "--socket", os.path.join(root, "ctl.sock")]
        expected, sizes = {}, {}
        daemons = h.Restarts(watch, repo=repo, endpoint=hub.url, args=args, log_level="info")
        start, all_events, sealed_names = daemons.start, daemons.events, daemons.sealed_names

        stop_writer = threading.Event()
        rotated = []

        def writer():
            for i, step in enumerate(STEPS):
                if stop_writer.wait(SAVE_EVERY_S if i else 0.5):
                    return
                files = write_checkpoint(watch, step, data_rng)
                expected[step] = files
                sizes[files["model.safetensors"]] = os.path.getsize(
                    os.path.join(watch, f"checkpoint-{step}", "model.safetensors"))
                rotated.extend(h.rotate_sealed(
                    watch, [f"checkpoint-{old}" for old in STEPS[:max(0, i + 1 - KEEP)]],
                    sealed_names()))

        d = start()
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        kills = hub_restarts = 0
        restarts = []  # (daemon running then, when the hub was back)
        injected = {}
        chaos_end = time.monotonic() + CHAOS_S
        while time.monotonic() < chaos_end:
            time.sleep(rng.uniform(0.3, 2.0))
            what = rng.choices(("kill", "hub", "fault"), weights=(4, 2, 5))[0]
            if what == "kill":
                d.stop(signal.SIGKILL, 5)
                kills += 1
                d = start()
            elif what == "hub":
                hub.restart(down_s=rng.uniform(0.1, 1.5))
                hub_restarts += 1
                restarts.append((d, time.time()))
            else:
                spec = fault_for(rng)
                hub.fault(spec)
                kinds = ("status", "reset_after_bytes", "expire_urls", "drop_response")
                key = f"{spec['route']}:" + next(k for k in kinds if k in spec)
                injected[key] = injected.get(key, 0) + spec["count"]
            print(f"  t={CHAOS_S - (chaos_end - time.monotonic()):5.1f}s {what}", flush=True)
        t.join(SAVE_EVERY_S * len(STEPS) + 10)
        self.assertFalse(t.is_alive(), "the writer did not finish")
        # calm: no more faults pending, then a drain
        calm_t0 = time.monotonic()
        hub.request("DELETE", "/_admin/faults", token=None)
        want = [f"Training in progress, step {s}" for s in STEPS]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            titles = {h.commit_title(c) for c in hub.commits(repo)}
            if all(w in titles for w in want):
                break
            self.assertIsNone(d.proc.poll(), d.tail())
            time.sleep(0.5)
        calm_s = time.monotonic() - calm_t0
        rc = d.stop(signal.SIGTERM, 60)
        self.assertEqual(rc, 0, d.tail())

        # every checkpoint: exactly one commit, in save order, with the local bytes
        commits = hub.commits(repo)
        titles = [h.commit_title(c) for c in reversed(commits)]
        self.assertEqual([x for x in titles if x.startswith("Training in progress")], want,
                         "missing, duplicate or out-of-order commits")
        for step in STEPS:
            title = f"Training in progress, step {step}"
            c = next(c for c in commits if h.commit_title(c) == title)
            tree = hub.tree(repo, c["id"])
            for name, sha in expected[step].items():
                self.assertIn(name, tree, f"step {step}")
                self.assertEqual(hub.sha256_at(repo, c["id"], name), sha, f"step {step} '{name}'")

        # the report
        log = hub.log_records()
        applied, cut = {}, 0
        for r in log:
            if r.get("fault") == "client disconnected":  # a SIGKILL or a hub stop mid-body
                cut += 1
            elif r.get("fault"):
                key = f"{r.get('route')}:{r['fault'].split('=', 1)[0]}"
                applied[key] = applied.get(key, 0) + 1
        resent, sent, objects, parts_again = resent_bytes(hub, sizes)
        http_retries = len(all_events("http_retry"))
        later = len(all_events("push-retry-later"))
        rebatches = len(all_events("upload-rebatch"))
        resumed = sum(int(r["kv"].get("parts_resumed", 0)) for r in all_events("committed"))
        verified = len(all_events("upload_commit_verified"))
        failed = all_events("push-failed")
        # the same daemon process committed after the hub came back: it reconnected by itself
        reconnected = sum(1 for x, when in restarts
                          if any(r["time"] >= when for r in x.events("committed")))
        leaks = [r for r in log if r.get("auth_on_presigned") and
                 r.get("route") in ("part_put", "lfs_put", "complete")]
        print(f"FIGURES chaos: seed={seed} chaos_s={CHAOS_S:.0f} calm_s={calm_s:.1f} "
              f"checkpoints={len(STEPS)} commits={len(want)} kills={kills} "
              f"daemon_starts={len(daemons)} hub_restarts={hub_restarts} "
              f"(same daemon committed after: {reconnected}) "
              f"faults_injected={sum(injected.values())} {injected} "
              f"faults_applied={sum(applied.values())} {applied} transfers_cut={cut} "
              f"http_retries={http_retries} "
              f"checkpoint_retries={later} rebatches={rebatches} "
              f"parts_resumed_from_journal={resumed} commit_answers_lost_then_verified={verified} "
              f"rotated_before_push={len(rotated)} objects={objects} "
              f"object_bytes={sum(sizes.values())} put_bytes={sent} bytes_resent={resent} "
              f"({100.0 * resent / max(1, sum(sizes.values())):.1f}%) "
              f"finished_parts_sent_again={parts_again}", flush=True)
        print(f"  other commits: {[x for x in titles if not x.startswith('Training in progress')]}",
              flush=True)
        self.assertEqual(leaks, [])
        # a finished part goes again only when its journal record died with the daemon (a kill),
        # with the hub's answer (a restart), or with its URL (a rebatch)
        self.assertLessEqual(parts_again, kills + hub_restarts + rebatches)
        self.assertEqual(failed, [], "\n".join(r["line"] for r in failed))
        hub.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
