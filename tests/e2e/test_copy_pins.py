"""Pins that cannot be hard links: the checkpoints are written on another filesystem than the
watched root's staging directory (a tmpfs mounted at <watch>/run), so every link fails with EXDEV
and the daemon copies the files instead. The copy must be taken when the checkpoint is sealed,
not when its turn to push comes: with the daemon paused, four checkpoints queue up, rotation
deletes the three older ones, and after the resume every one of them is on the hub with the
SHA-256 of what was written. With a small staging_max the later copies wait (copy-waiting) and
are taken as pushes free space; with a limit no copy fits under, a waiting copy runs when its
checkpoint's turn to push comes (copy-at-push). Everything still arrives.
Needs root (mount); skipped otherwise."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ckpt_harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
import ckptpush  # noqa: E402

MODEL_SIZE = 1024 * 1024
STEPS = (10, 20, 30, 40)


class CopyPins(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a tmpfs (checkpoints on another filesystem)")
        self.watch = h.tempdir("ckpt-copy-pins-")
        self.run_dir = os.path.join(self.watch, "run")
        os.mkdir(self.run_dir)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", self.run_dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.run_dir], capture_output=True)
        self.rng = random.Random(self.id())

    def start(self, repo, extra=()):
        """A paused daemon pushing every checkpoint under its own folder."""
        sock = os.path.join(h.tempdir("ckpt-sock-"), "job.sock")
        d = h.Daemon(self.watch, repo=repo, endpoint=self.hub.url,
                     args=["--quiet-ms", "300", "--strategy", "all_checkpoints",
                           "--socket", sock, *extra])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            self.assertLess(time.monotonic(), deadline, "no control socket\n" + d.tail())
            time.sleep(0.05)
        client = ckptpush.Client(socket_path=sock, timeout=20)
        self.addCleanup(client.close)
        client.pause()
        return d, client

    def write(self, step):
        return h.write_checkpoint(self.run_dir, step, MODEL_SIZE, self.rng)

    def assert_pushed(self, d, repo, written):
        """Every checkpoint committed, each file under its folder with the written bytes."""
        for step in written:
            d.wait_event("committed", timeout=60, ckpt=f"run/checkpoint-{step}")
        tree = self.hub.tree(repo)
        for step, files in written.items():
            for name, sha in files.items():
                path = [p for p in tree if p.endswith(f"checkpoint-{step}/{name}")]
                self.assertEqual(len(path), 1, f"checkpoint-{step}/{name} in {sorted(tree)}")
                self.assertEqual(self.hub.sha256_at(repo, "main", path[0]), sha,
                                 f"{path[0]}\n" + d.tail())
        self.assertFalse(d.events("file-lost") + d.events("pin-lost") + d.events("lost"),
                         d.tail())

    def test_1_copied_at_seal_survive_rotation(self):
        repo = f"{h.USER}/copy-pins-{os.getpid()}"
        d, client = self.start(repo)
        written = {}
        for step in STEPS:
            written[step] = self.write(step)
            # Copied while paused, as soon as it is sealed: no push is running.
            d.wait_event("pins-copied", timeout=30, ckpt=f"run/checkpoint-{step}")
        self.assertTrue(d.events("pin-copy"), "links did not fail: no copy was needed\n" +
                        d.tail())
        self.assertEqual(len(d.events("sealed")), len(STEPS), d.tail())
        self.assertFalse(d.events("push-state", state="pinning"), "pushed while paused\n" +
                         d.tail())
        st = client.status()
        copies = {c["name"]: c["copy"] for c in st["checkpoints"]}
        self.assertEqual(copies, {f"run/checkpoint-{s}": "copied" for s in STEPS}, st)

        # Rotation (save_total_limit=1) deletes all but the newest before any push starts.
        for step in STEPS[:-1]:
            shutil.rmtree(os.path.join(self.run_dir, f"checkpoint-{step}"))
        client.resume()
        self.assert_pushed(d, repo, written)
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    def test_2_staging_max_copies_wait(self):
        repo = f"{h.USER}/copy-pins-max-{os.getpid()}"
        # Room for about one checkpoint: the first two copies start (the second while the
        # measure is still below the limit), the later ones wait.
        limit = MODEL_SIZE + MODEL_SIZE // 2
        d, client = self.start(repo, ["--staging-max", str(limit)])
        written = {}
        for step in STEPS:
            written[step] = self.write(step)
            d.wait_event("sealed", timeout=30, ckpt=f"run/checkpoint-{step}")
        d.wait_event("pins-copied", timeout=30, ckpt=f"run/checkpoint-{STEPS[0]}")
        d.wait_event("pins-copied", timeout=30, ckpt=f"run/checkpoint-{STEPS[1]}")
        for step in STEPS[2:]:
            (w,) = d.wait_event("copy-waiting", timeout=30, ckpt=f"run/checkpoint-{step}")
            self.assertEqual(int(w["kv"]["max"]), limit, w["line"])
            self.assertGreater(int(w["kv"]["bytes_held"]), limit, w["line"])
        st = client.status()
        self.assertEqual(st["daemon"]["copies_waiting"], len(STEPS) - 2, st["daemon"])
        self.assertEqual(st["daemon"]["staging_max"], limit, st["daemon"])
        self.assertFalse(d.events("pins-copied", ckpt=f"run/checkpoint-{STEPS[2]}"), d.tail())

        # The copied ones may go; the waiting ones are not protected yet and stay.
        for step in STEPS[:2]:
            shutil.rmtree(os.path.join(self.run_dir, f"checkpoint-{step}"))
        client.resume()
        self.assert_pushed(d, repo, written)
        self.assertTrue(d.events("staging-ok"), d.tail())
        # Each waiting copy was taken, before or at its turn to push, before it was read.
        for step in STEPS[2:]:
            name = f"run/checkpoint-{step}"
            self.assertTrue(d.events("pins-copied", ckpt=name), f"{name}: no copy\n" + d.tail())
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    def test_3_waiting_copy_runs_at_its_turn(self):
        repo = f"{h.USER}/copy-pins-turn-{os.getpid()}"
        # No copy fits: only the first starts (nothing is held yet); the next one's turn to push
        # comes while the first one's pins still hold the space, so it is copied then.
        d, client = self.start(repo, ["--staging-max", "1"])
        written = {}
        for step in STEPS[:2]:
            written[step] = self.write(step)
            d.wait_event("sealed", timeout=30, ckpt=f"run/checkpoint-{step}")
        d.wait_event("pins-copied", timeout=30, ckpt=f"run/checkpoint-{STEPS[0]}")
        d.wait_event("copy-waiting", timeout=30, ckpt=f"run/checkpoint-{STEPS[1]}")
        shutil.rmtree(os.path.join(self.run_dir, f"checkpoint-{STEPS[0]}"))
        client.resume()
        self.assert_pushed(d, repo, written)
        d.wait_event("copy-at-push", timeout=5, ckpt=f"run/checkpoint-{STEPS[1]}")
        d.wait_event("pins-copied", timeout=5, ckpt=f"run/checkpoint-{STEPS[1]}", at="push")
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
