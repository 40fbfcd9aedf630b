"""After SIGKILL, recovery owns what the journal holds: the restarted daemon does not detect, pin
or seal again a checkpoint the journal knows (its first scan skips it). The checkpoint killed in
the middle of its push is recovered from the journal (one `recovered` line), never sealed a second
time, and committed exactly once; the one fully pushed before the kill makes no new commit.

Real hub, real daemon processes, real files; the upload is stretched with --max-rate so that the
kill lands while parts are being sent."""

import hashlib
import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

MiB = 1 << 20
# The kill must land between multipart parts, which only the LFS path has (Xet: test_xet_kill).
LFS = ["--transfer", "lfs"]
SETTLE_S = 1.5  # after the commit: several quiet periods for a second seal to show up


class KillResumeOwned(unittest.TestCase):
    def test_recovered_checkpoint_is_not_detected_again(self):
        hub = h.Hub(args=["--multipart-threshold", str(MiB), "--chunk-size", str(MiB)])
        root, watch = h.job_dir("ckpt-owned-")
        repo = f"{h.USER}/owned-{os.getpid()}"
        sock = ["--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(9)
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "200", "--max-rate", str(MiB)] + LFS + sock)
        d.wait_event("ready", timeout=20)
        h.write_checkpoint(watch, 1, 100_000, rng)
        d.wait_event("committed", timeout=30, ckpt="checkpoint-1")
        exp2 = h.write_checkpoint(watch, 2, 12 * MiB + 99, rng)  # above HASH_GIT_SHA1_MAX
        d.wait_event("sealed", timeout=20, ckpt="checkpoint-2")

        def parts_done():
            return [r for r in hub.log_records() if r.get("route") == "part_put"
                    and r.get("status") == 200]
        deadline = time.monotonic() + 30
        while len(parts_done()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        d.stop(signal.SIGKILL, 5)
        self.assertGreaterEqual(len(parts_done()), 2, d.tail())
        before = [h.commit_title(c) for c in hub.commits(repo)]
        self.assertIn("Training in progress, step 1", before)
        self.assertNotIn("Training in progress, step 2", before, "killed too late")

        d2 = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="debug",
                      args=["--quiet-ms", "200"] + LFS + sock)
        d2.wait_event("committed", timeout=60, ckpt="checkpoint-2")
        time.sleep(SETTLE_S)
        self.assertEqual(d2.stop(signal.SIGTERM, 30), 0, d2.tail())

        # recovered once from the journal, never detected, pinned or sealed again
        self.assertEqual([r["kv"].get("ckpt") for r in d2.events("recovered")],
                         ["checkpoint-2"], d2.tail())
        self.assertEqual(d2.events("sealed"), [], d2.tail())
        self.assertEqual(d2.events("pinned"), [], d2.tail())
        for ev in ("already-pushed", "already-skipped", "superseded", "push-failed"):
            self.assertEqual(d2.events(ev), [], f"{ev}\n{d2.tail()}")
        # the journal's hash of the big file was used, not computed again
        rec = d2.events("committed", ckpt="checkpoint-2")[0]["kv"]
        self.assertGreaterEqual(int(rec.get("hash_skipped", "0")), 1, d2.tail())
        self.assertEqual(rec.get("recovered"), "yes")

        # one commit per checkpoint; the restart made exactly one, checkpoint-2's
        after = [h.commit_title(c) for c in hub.commits(repo)]
        self.assertEqual(after.count("Training in progress, step 1"), 1, after)
        self.assertEqual(after.count("Training in progress, step 2"), 1, after)
        self.assertEqual(len(after), len(before) + 1, after)
        self.assertEqual(hub.sha256_at(repo, "main", "model.safetensors"),
                         exp2["model.safetensors"])
        self.assertEqual(len(d2.events("committed")), 1, d2.tail())
        hub.stop()

    def test_pushed_checkpoint_makes_no_commit_after_restart(self):
        """Killed while idle, everything pushed: the restart leaves the repo as it was."""
        hub = h.Hub()
        root, watch = h.job_dir("ckpt-owned-idle-")
        repo = f"{h.USER}/owned-idle-{os.getpid()}"
        sock = ["--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(10)
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "200"] + sock)
        d.wait_event("ready", timeout=20)
        for step in (1, 2):
            h.write_checkpoint(watch, step, 50_000, rng)
            d.wait_event("committed", timeout=30, ckpt=f"checkpoint-{step}")
        with open(os.path.join(watch, "last.pt"), "wb") as f:
            f.write(rng.randbytes(10_000))
        d.wait_event("committed", timeout=30, ckpt="last.pt")
        d.stop(signal.SIGKILL, 5)
        before = [c["id"] for c in hub.commits(repo)]

        d2 = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="debug",
                      args=["--quiet-ms", "200"] + sock)
        d2.wait_event("recovery", timeout=20)
        d2.wait_event("ready", timeout=20)
        time.sleep(SETTLE_S)
        # a file written after the restart is still a new checkpoint
        data = rng.randbytes(10_000)
        with open(os.path.join(watch, "last.pt"), "wb") as f:
            f.write(data)
        d2.wait_event("committed", timeout=30, ckpt="last.pt")
        self.assertEqual(d2.stop(signal.SIGTERM, 30), 0, d2.tail())
        self.assertEqual([r["kv"].get("ckpt") for r in d2.events("sealed")], ["last.pt"],
                         d2.tail())
        self.assertEqual(d2.events("already-pushed"), [], d2.tail())
        after = [c["id"] for c in hub.commits(repo)]
        self.assertEqual(after[1:], before, "the restart made commits of its own")
        self.assertEqual(len(after), len(before) + 1)
        self.assertEqual(hub.sha256_at(repo, "main", "last.pt"), hashlib.sha256(data).hexdigest())
        hub.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
