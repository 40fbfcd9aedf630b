"""A full disk under the staging directory: the watched directory (and so <watch>/.ckptpush,
pins and journal) lives on a small tmpfs. Checkpoint 1 is pushed; checkpoint 2 is written and the
filesystem filled to the last byte before it is sealed (the metrics textfile
is kept in the staging directory, so a write there is sure to meet ENOSPC). The daemon must say clearly that the disk
is full, checkpoint 1 must stay committed on the hub, and checkpoint 2 must be either pushed once
space is back or reported failed with its pins kept. Needs root (mount); skipped otherwise."""

import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402


def write_checkpoint(watch, step, size):
    d = os.path.join(watch, f"checkpoint-{step}")
    os.mkdir(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "gpt2", "step": %d}\n' % step)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(os.urandom(size))
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d, "log_history": []}\n' % step)


def fill(path):
    """Writes until ENOSPC; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * 65536
        while True:
            try:
                w = f.write(block)
            except OSError:
                break
            n += w
        while True:
            try:
                f.write(b"\0")
                n += 1
            except OSError:
                break
    return n


class FullDisk(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a tmpfs")
        self.mnt = h.tempdir("ckpt-fulldisk-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", self.mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], capture_output=True)

    def test_full_disk(self):
        watch = os.path.join(self.mnt, "output")
        os.mkdir(watch)
        hub = h.Hub()
        self.addCleanup(hub.stop)
        repo = f"{h.USER}/full-disk-{os.getpid()}"
        # The metrics textfile is rewritten (temp + rename: new pages) on every change, so the
        # full disk is met for sure; the journal appends may still fit in their last page.
        metrics = os.path.join(watch, ".ckptpush", "metrics.prom")
        d = h.Daemon(watch, repo=repo, endpoint=hub.url,
                     args=["--quiet-ms", "1500", "--metrics-path", metrics])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)

        write_checkpoint(watch, 1, 256 * 1024)
        (c1,) = d.wait_event("committed", timeout=30, ckpt="checkpoint-1")
        commit1 = c1["kv"]["commit"]

        write_checkpoint(watch, 2, 256 * 1024)
        filler = os.path.join(self.mnt, "filler")
        fill(filler)
        # Sealing, pinning and the journal now meet ENOSPC.
        deadline = time.monotonic() + 30
        said = []
        while time.monotonic() < deadline and not said:
            said = [ln for ln in d.lines if "no space left on device" in ln.lower()
                    or "ENOSPC" in ln]
            time.sleep(0.2)
        self.assertTrue(said, "no clear 'no space left on device' error\n" + d.tail())

        # Nothing already pushed is lost.
        self.assertIn(commit1, [c["id"] for c in hub.commits(repo)], d.tail())

        # Space comes back: checkpoint 2 is pushed, or it failed and its pins are still there.
        os.unlink(filler)
        try:
            d.wait_event("committed", timeout=30, ckpt="checkpoint-2")
        except AssertionError:
            failed = d.events("push-failed", ckpt="checkpoint-2")
            self.assertTrue(failed, "checkpoint-2 neither pushed nor reported failed\n" + d.tail())
            pins = os.path.join(watch, ".ckptpush", "pins")
            self.assertTrue(os.path.isdir(pins) and os.listdir(pins),
                            "checkpoint-2 failed and its pins are gone\n" + d.tail())
        rc = d.stop(signal.SIGTERM, 30)
        self.assertIn(rc, (0, 1), d.tail())
        self.assertIn(commit1, [c["id"] for c in hub.commits(repo)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
