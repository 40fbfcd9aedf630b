"""ckptpushd killed with SIGKILL at 20+ random moments while it pushes a run of checkpoints with
multipart objects, restarted each time: at the end every checkpoint has its commit, the remote
bytes equal the local ones (SHA-256), and the hub's request log shows at most one finished part
sent again per kill. Prints the figures (kills, parts re-sent, parts resumed, retries).

Uploads are stretched with --max-rate so that kills land in the middle of transfers; the test hub
cuts objects of 1 MiB and more into 1 MiB parts. A checkpoint is rotated away (deleted) once it
was sealed, so some are pushed from their pins only."""

import hashlib
import os
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

MiB = 1 << 20
STEPS = (10, 20, 30, 40, 50, 60)
KILLS = int(os.environ.get("CKPT_KILLS", "22"))
RATE = 1536 * 1024  # bytes per second, all transfers together
KEEP = 2  # checkpoints kept on disk (save_total_limit)
MODEL_FILES = ("model.safetensors", "config.json")


def write_checkpoint(root, step, rng):
    """A Trainer-like checkpoint: weights, optimizer, config, then trainer_state.json last.
    Returns {file: sha256} of the files every_save pushes."""
    d = os.path.join(root, f"checkpoint-{step}")
    os.mkdir(d)
    out = {}
    for name, size in (("model.safetensors", 3 * MiB + rng.randrange(MiB)),
                       ("optimizer.pt", MiB // 2), ("config.json", 300)):
        data = rng.randbytes(size) if name != "config.json" else \
            (b'{"step": %d, "pad": "' % step + b"x" * 250 + b'"}\n')
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        out[name] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d}\n' % step)
    return {k: v for k, v in out.items() if k in MODEL_FILES}


class KillResume(unittest.TestCase):
    def test_kill_and_resume(self):
        hub = h.Hub(args=["--multipart-threshold", str(MiB), "--chunk-size", str(MiB)])
        root, watch = h.job_dir("ckpt-kill-")
        repo = f"{h.USER}/kill-resume-{os.getpid()}"
        args = ["--quiet-ms", "300", "--transfer", "lfs",
                "--max-rate", str(RATE), "--max-transfers", "3",
                "--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(int(os.environ.get("CKPT_SEED", "4")))
        expected = {}
        sealed = set()
        daemons = h.Restarts(watch, repo=repo, endpoint=hub.url, args=args, log_level="info")

        stop_writer = threading.Event()

        def writer():
            # one checkpoint every ~2.5 s; checkpoint k-KEEP is deleted once it was sealed
            for i, step in enumerate(STEPS):
                if stop_writer.wait(2.5 if i else 1.0):
                    return
                expected[step] = write_checkpoint(watch, step, rng)
                sealed.update(h.rotate_sealed(
                    watch, [f"checkpoint-{old}" for old in STEPS[:max(0, i + 1 - KEEP)]],
                    daemons.sealed_names()))

        t = threading.Thread(target=writer, daemon=True)
        d = daemons.start()
        t.start()
        kills = 0
        while kills < KILLS:
            time.sleep(rng.uniform(0.4, 1.6))
            d.stop(signal.SIGKILL, 5)
            kills += 1
            d = daemons.start()
        t.join(60)
        self.assertFalse(t.is_alive())
        # Let the last daemon finish: every step committed.
        deadline = time.monotonic() + 90
        titles = []
        while time.monotonic() < deadline:
            titles = [h.commit_title(c) for c in hub.commits(repo)]
            if all(f"Training in progress, step {s}" in titles for s in STEPS) and \
                    d.events("recovery"):
                break
            time.sleep(0.5)
        # settle: nothing left in the queue
        time.sleep(1.0)
        rc = d.stop(signal.SIGTERM, 60)
        self.assertEqual(rc, 0, d.tail())

        # 1. every checkpoint has exactly one commit whose tree holds its model files' bytes
        commits = hub.commits(repo)
        for step in STEPS:
            mine = [c for c in commits if h.commit_title(c) == f"Training in progress, step {step}"]
            self.assertEqual(len(mine), 1, f"step {step}: {[h.commit_title(c) for c in commits]}")
            tree = hub.tree(repo, mine[0]["id"])
            for name, sha in expected[step].items():
                self.assertIn(name, tree, f"step {step}")
                self.assertEqual(hub.sha256_at(repo, mine[0]["id"], name), sha,
                                 f"step {step} '{name}'")
            self.assertNotIn("optimizer.pt", tree)
        # the commits are in save order
        order = [h.commit_title(c) for c in reversed(commits)
                 if h.commit_title(c).startswith("Training in progress")]
        self.assertEqual(order, [f"Training in progress, step {s}" for s in STEPS])
        # the final remote files are the last checkpoint's
        for name, sha in expected[STEPS[-1]].items():
            self.assertEqual(hub.sha256_at(repo, "main", name), sha)

        # 2. finished parts sent again: at most one per kill
        done = {}
        for r in hub.log_records():
            if r.get("route") in ("part_put", "lfs_put") and r.get("status") == 200:
                key = r["path"].split("?", 1)[0]
                done[key] = done.get(key, 0) + 1
        resent = sum(n - 1 for n in done.values() if n > 1)
        parts_total = len(done)
        # parts an earlier run had finished, found in the journal and not sent again
        resumed = sum(int(r["kv"].get("parts_done", 0)) for r in daemons.events("upload-resume"))
        hash_skipped = sum(int(r["kv"].get("hash_skipped", 0))
                           for r in daemons.events("committed"))
        retries = len(daemons.events("push-retry-later"))
        recovered = len(daemons.events("recovered")) + len(daemons.events("recovered-unsealed"))
        already = len(daemons.events("already-pushed"))
        corrupt = len(daemons.events("journal-corrupt"))
        print(f"\nFIGURES kill_resume: kills={kills} checkpoints={len(STEPS)} "
              f"parts_finished={parts_total} parts_resent={resent} "
              f"parts_resumed_from_journal={resumed} hash_skipped={hash_skipped} "
              f"recovered={recovered} already_pushed_skips={already} "
              f"queue_retries={retries} journal_corrupt_lines={corrupt} "
              f"rotated_before_push={len(sealed)}", flush=True)
        self.assertLessEqual(resent, kills, f"{resent} finished parts sent again for {kills} kills")
        with open(os.path.join(watch, ".ckptpush", "journal"), "rb") as f:
            self.assertNotIn(h.TOKEN.encode(), f.read())  # presigned URLs only, never the token
        self.assertEqual(daemons.events("push-failed"), [], d.tail())
        hub.stop()

    def test_corrupt_journal_is_reported_and_rebuilt_from_the_pins(self):
        hub = h.Hub()
        root, watch = h.job_dir("ckpt-corrupt-")
        repo = f"{h.USER}/corrupt-{os.getpid()}"
        args = ["--quiet-ms", "200", "--transfer", "lfs", "--max-rate", "300000",
                "--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(12)
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, args=args, log_level="info")
        d.wait_event("ready", timeout=20)
        exp1 = write_checkpoint(watch, 1, rng)
        d.wait_event("sealed", timeout=20, ckpt="checkpoint-1")
        exp2 = write_checkpoint(watch, 2, rng)
        d.wait_event("sealed", timeout=20, ckpt="checkpoint-2")
        d.stop(signal.SIGKILL, 5)  # checkpoint 1 is still uploading (300 kB/s)
        # checkpoint 1 rotated away: only its pins are left; then the journal is destroyed
        c1 = os.path.join(watch, "checkpoint-1")
        for f in os.listdir(c1):
            os.unlink(os.path.join(c1, f))
        os.rmdir(c1)
        journal = os.path.join(watch, ".ckptpush", "journal")
        self.assertTrue(os.path.getsize(journal) > 0)
        with open(journal, "r+b") as f:
            f.write(rng.randbytes(os.path.getsize(journal)))
        d2 = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                      args=["--quiet-ms", "200", "--transfer", "lfs",
                            "--socket", os.path.join(root, "ctl.sock"),
                            "--staging-max", "100000"])
        bad = d2.wait_event("journal-corrupt", timeout=20)
        self.assertEqual(bad[0]["kv"].get("file"), journal)
        self.assertEqual(bad[0]["kv"].get("offset"), "0")
        # checkpoint 1's bytes live only in its pins now: reported against --staging-max
        full = d2.wait_event("staging-full", timeout=20)
        self.assertGreater(int(full[0]["kv"]["bytes_held"]), 3 << 20)
        d2.wait_event("committed", timeout=60, ckpt="checkpoint-2")
        unknown = d2.wait_event("recovered-unknown", timeout=20)
        name = unknown[0]["kv"]["name"]
        d2.wait_event("committed", timeout=60, ckpt=name)
        self.assertEqual(d2.stop(signal.SIGTERM, 30), 0, d2.tail())
        # checkpoint 1 is not lost: its bytes are on the Hub under a folder of its own
        self.assertEqual(hub.sha256_at(repo, "main", f"{name}/model.safetensors"),
                         exp1["model.safetensors"])
        c2 = [c for c in hub.commits(repo)
              if h.commit_title(c) == "Training in progress, step 2"]
        self.assertEqual(len(c2), 1)
        self.assertEqual(hub.sha256_at(repo, c2[0]["id"], "model.safetensors"),
                         exp2["model.safetensors"])
        self.assertEqual(d2.events("push-failed"), [])
        hub.stop()

    def test_restart_skips_hashing_and_finished_parts(self):
        """One 12 MiB object in 1 MiB parts: killed after some parts, the next start neither
        hashes the file again (same inode, size, mtime) nor sends the finished parts."""
        hub = h.Hub(args=["--multipart-threshold", str(MiB), "--chunk-size", str(MiB)])
        root, watch = h.job_dir("ckpt-resume-")
        repo = f"{h.USER}/resume-{os.getpid()}"
        sock = ["--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(5)
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "200", "--transfer", "lfs", "--max-rate", str(2 * MiB),
                           "--max-transfers", "2"] + sock)
        d.wait_event("ready", timeout=20)
        ck = os.path.join(watch, "checkpoint-7")
        os.mkdir(ck)
        big = rng.randbytes(12 * MiB + 777)
        with open(os.path.join(ck, "model.safetensors"), "wb") as f:
            f.write(big)
        with open(os.path.join(ck, "trainer_state.json"), "w") as f:
            f.write('{"global_step": 7}\n')

        def parts_done():
            return [r for r in hub.log_records() if r.get("route") == "part_put"
                    and r.get("status") == 200]
        deadline = time.monotonic() + 30
        while len(parts_done()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        d.stop(signal.SIGKILL, 5)
        before = len(parts_done())
        self.assertGreaterEqual(before, 5)
        self.assertLess(before, 13)
        d2 = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                      args=["--quiet-ms", "200", "--transfer", "lfs"] + sock)
        rec = d2.wait_event("committed", timeout=30, ckpt="checkpoint-7")[0]["kv"]
        self.assertEqual(d2.stop(signal.SIGTERM, 30), 0, d2.tail())
        self.assertEqual(rec["hash_skipped"], "1", d2.tail())
        resumed = sum(int(r["kv"]["parts_done"]) for r in d2.events("upload-resume"))
        self.assertGreaterEqual(resumed, before - 1)  # a part may finish after its last record
        keys = [r["path"].split("?", 1)[0] for r in parts_done()]
        self.assertEqual(len(set(keys)), 13)  # ceil((12 MiB + 777) / 1 MiB)
        self.assertLessEqual(len(keys) - 13, 1, "finished parts sent again")
        self.assertEqual(hub.sha256_at(repo, "main", "model.safetensors"),
                         hashlib.sha256(big).hexdigest())
        print(f"\nFIGURES resume: parts_before_kill={before} parts_resumed={resumed} "
              f"parts_sent_total={len(keys)} hash_skipped={rec['hash_skipped']}", flush=True)
        hub.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
