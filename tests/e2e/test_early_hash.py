"""A file is hashed as soon as its writer closes it, before its checkpoint is sealed, and what is
pushed is still exactly what the checkpoint holds at its seal: a file written again after its
early hash (same size, new bytes) reaches the Hub with its final content."""

import hashlib
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

MIB = 1 << 20


def write(path, data, truncate=True):
    """Writes data into path; without truncate, over the existing bytes (same inode)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


class EarlyHash(h.HubTestCase):
    def start(self, name, *args, watch=None, quiet_ms=1500):
        if watch is None:
            _, watch = h.job_dir(f"ckpt-early-{name}-")
        repo = f"{h.USER}/early-{name}-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, token=h.TOKEN,
                     args=["--quiet-ms", str(quiet_ms), "--log-level", "debug", *args])
        d.wait_event("ready", timeout=20)
        self.addCleanup(d.stop)
        return watch, repo, d

    def test_hashed_before_the_seal_and_pushed_as_sealed(self):
        watch, repo, d = self.start("ok")
        ckpt = os.path.join(watch, "checkpoint-10")
        weights = os.path.join(ckpt, "model.safetensors")
        first = write(weights, os.urandom(6 * MIB))
        d.wait_event("hash-early", timeout=10, file="model.safetensors")
        # written again in place after its early hash: same size and inode, other bytes
        time.sleep(0.05)
        final = write(weights, os.urandom(6 * MIB), truncate=False)
        self.assertNotEqual(first, final)
        write(os.path.join(ckpt, "config.json"), b'{"model_type": "gpt2"}')
        write(os.path.join(ckpt, "trainer_state.json"), b'{"global_step": 10}')
        d.wait_event("committed", timeout=30, ckpt="checkpoint-10")

        lines = [r["kv"].get("file") for r in d.events("hash-early")]
        self.assertGreaterEqual(lines.count("model.safetensors"), 2, d.tail())
        self.assertIn("trainer_state.json", lines, d.tail())
        sealed_at = d.events("sealed", ckpt="checkpoint-10")[0]["time"]
        first_early = d.events("hash-early", file="model.safetensors")[0]["time"]
        self.assertLess(first_early, sealed_at)
        self.assertEqual(self.hub.sha256_at(repo, "main", "model.safetensors"), final)

    def test_a_file_closed_before_its_folder_is_watched(self):
        """The daemon adds a folder's watch after the folder exists: a file written and closed
        before that is found by the folder's listing, never seen closing. Stopping the daemon
        while the trainer writes makes that certain (a busy loop does it by chance)."""
        watch, repo, d = self.start("unseen", quiet_ms=3000)
        ckpt = os.path.join(watch, "checkpoint-10")
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            weights = write(os.path.join(ckpt, "model.safetensors"), os.urandom(2 * MIB))
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        d.wait_event("hash-early", timeout=10, file="model.safetensors")
        self.assertEqual(d.events("sealed"), [], d.tail())
        write(os.path.join(ckpt, "trainer_state.json"), b'{"global_step": 10}')
        d.wait_event("committed", timeout=30, ckpt="checkpoint-10")
        self.assertEqual(self.hub.sha256_at(repo, "main", "model.safetensors"), weights)

    def test_nothing_hashed_early_under_the_end_strategy(self):
        watch, _, d = self.start("end", "--strategy", "end")
        ckpt = os.path.join(watch, "checkpoint-10")
        write(os.path.join(ckpt, "model.safetensors"), os.urandom(MIB))
        write(os.path.join(ckpt, "trainer_state.json"), b'{"global_step": 10}')
        d.wait_event("sealed", timeout=20, ckpt="checkpoint-10")
        self.assertEqual(d.events("hash-early"), [], d.tail())

    def test_checkpoints_found_at_start_are_not_hashed_early(self):
        """A restart finds the checkpoints pushed before: hashing them all again would be a
        burst of work for nothing. The journal owns them: the scan skips them. Without the
        journal the scan finds them, and still does not hash them early."""
        watch, _, d = self.start("restart", quiet_ms=200)
        for step in (10, 20):
            ckpt = os.path.join(watch, f"checkpoint-{step}")
            write(os.path.join(ckpt, "model.safetensors"), os.urandom(2 * MIB))
            write(os.path.join(ckpt, "trainer_state.json"), b'{"global_step": %d}' % step)
            d.wait_event("committed", timeout=30, ckpt=f"checkpoint-{step}")
        self.assertEqual(d.stop(), 0, d.tail())
        _, _, again = self.start("restart", watch=watch, quiet_ms=200)
        time.sleep(1.0)  # several quiet periods after the scan
        self.assertEqual(again.events("sealed"), [], again.tail())
        self.assertEqual(again.events("hash-early"), [], again.tail())
        self.assertEqual(again.stop(), 0, again.tail())
        os.unlink(os.path.join(watch, ".ckptpush", "journal"))
        _, _, third = self.start("restart", watch=watch, quiet_ms=200)
        third.wait_event("sealed", timeout=20, ckpt="checkpoint-20")
        self.assertEqual(third.events("hash-early"), [], third.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
