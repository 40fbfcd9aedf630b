"""ckptpushd pushing through Xet, killed with SIGKILL at 20 random moments while xorbs are in
flight (uploads held to 1 MiB/s with --max-rate, and the hub's answers to xorb POSTs trickled by
a fault, so that some kills land after the CAS took a xorb but before the daemon heard it),
restarted each time: at the end every
checkpoint has its commit, every file reads back whole through the official JS client over Xet
(SHA-256), and the hub's request log shows at most one xorb sent again per kill per transfer slot
(a xorb the CAS accepted is journaled and never rebuilt differently: files pack into xorbs alone
and in order, so the same files give the same xorbs). Prints the figures."""

import hashlib
import os
import re
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

KiB = 1 << 10
STEPS = (10, 20, 30, 40, 50, 60)
KILLS = int(os.environ.get("CKPT_KILLS", "20"))
RATE = 1024 * KiB  # bytes per second, all transfers together
SLOTS = 2  # --max-transfers: xorbs in flight
KEEP = 2
SHARDS = 3  # model-0000k-of-00003.safetensors: one xorb each


def write_checkpoint(root, step, rng):
    """Weights in SHARDS files, optimizer (not pushed), config, trainer_state.json last.
    Returns {repo path: sha256} of what every_save pushes."""
    d = os.path.join(root, f"checkpoint-{step}")
    os.mkdir(d)
    out = {}
    files = [(f"model-{k:05d}-of-{SHARDS:05d}.safetensors", rng.randrange(400, 800) * KiB)
             for k in range(1, SHARDS + 1)]
    files += [("optimizer.pt", 256 * KiB), ("config.json", 0)]
    for name, size in files:
        data = rng.randbytes(size) if size else b'{"step": %d}\n' % step
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        if name != "optimizer.pt":
            out[name] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d}\n' % step)
    return out


@unittest.skipUnless(h.js_available(), "node or tests/hub/node_modules missing")
class XetKill(unittest.TestCase):
    def test_kill_during_xorb_upload_and_resume(self):
        hub = h.Hub(args=["--xet", "on"])
        hub.fault({"route": "xorb", "count": 10000, "slow_bytes_per_s": 100})
        root, watch = h.job_dir("ckpt-xkill-")
        repo = f"{h.USER}/xet-kill-{os.getpid()}"
        args = ["--quiet-ms", "300", "--max-rate", str(RATE), "--max-transfers", str(SLOTS),
                "--transfer", "xet", "--socket", os.path.join(root, "ctl.sock")]
        rng = random.Random(int(os.environ.get("CKPT_SEED", "7")))
        expected = {}
        daemons = h.Restarts(watch, repo=repo, endpoint=hub.url, args=args, log_level="info")
        stop_writer = threading.Event()

        def writer():
            for i, step in enumerate(STEPS):
                if stop_writer.wait(2.0 if i else 0.5):
                    return
                expected[step] = write_checkpoint(watch, step, rng)
                old = [f"checkpoint-{s}" for s in STEPS[:max(0, i + 1 - KEEP)]]
                h.rotate_sealed(watch, old, daemons.sealed_names())

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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            titles = [h.commit_title(c) for c in hub.commits(repo)]
            if all(f"Training in progress, step {s}" in titles for s in STEPS):
                break
            time.sleep(0.5)
        time.sleep(1.0)
        self.assertEqual(d.stop(signal.SIGTERM, 60), 0, d.tail())

        # 1. every checkpoint committed once, each file whole through the JS client over Xet
        commits = hub.commits(repo)
        for step in STEPS:
            mine = [c for c in commits if h.commit_title(c) == f"Training in progress, step {step}"]
            self.assertEqual(len(mine), 1, f"step {step}: {[h.commit_title(c) for c in commits]}")
            files = h.js_download(hub.url, h.TOKEN, repo, h.tempdir("ckpt-js-"),
                                  revision=mine[0]["id"])
            for name, sha in expected[step].items():
                self.assertEqual(files.get(name), sha, f"step {step} '{name}'")
        routes = [r.get("route") for r in hub.log_records()]
        self.assertIn("reconstruction", routes)
        self.assertNotIn("xet_get", routes)  # not the LFS bridge

        # 2. xorbs sent again: at most one per kill per transfer slot
        posts, accepted = {}, {}
        for r in hub.log_records():
            if r.get("route") == "xorb" and r.get("method") == "POST":
                key = r["path"].split("?", 1)[0]
                posts[key] = posts.get(key, 0) + 1
                if r.get("status") == 200:
                    accepted[key] = accepted.get(key, 0) + 1
        resent = sum(n - 1 for n in posts.values())
        reaccepted = sum(n - 1 for n in accepted.values())
        resumed = len(daemons.events("xet_xorb_resumed"))
        print(f"\nFIGURES xet_kill: kills={kills} slots={SLOTS} xorbs={len(posts)} "
              f"xorb_posts={sum(posts.values())} resent={resent} accepted_twice={reaccepted} "
              f"resumed_from_journal={resumed} "
              f"retries={len(daemons.events('push-retry-later'))}", flush=True)
        self.assertLessEqual(resent, kills * SLOTS, posts)
        self.assertEqual(len(accepted), len(posts), "a xorb never accepted")
        self.assertEqual(daemons.events("push-failed"), [], d.tail())
        # the journal names xorbs, never a token (the Hub's or the CAS's)
        with open(os.path.join(watch, ".ckptpush", "journal"), "rb") as f:
            journal = f.read()
        cas_token = re.compile(rb"xet_[A-Za-z0-9_=-]{16,}\.[0-9a-f]{64}")  # the hub's format
        self.assertNotIn(h.TOKEN.encode(), journal)
        self.assertIsNone(cas_token.search(journal))
        logs = "\n".join(line for dd in daemons.daemons for line in dd.lines).encode()
        self.assertIsNone(cas_token.search(logs))
        self.assertNotIn(h.TOKEN.encode(), logs)
        hub.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
