"""A small file whose first 512 bytes look like text but which holds a NUL byte further on is
pushed as an LFS (or Xet) object, not as a regular file. The Hub picks a file's mode from that
512-byte sample; committed as regular, such a file makes the Hub refuse the whole commit ("contains
binary files"), and the checkpoint could never be pushed. Random bytes do this too: about one
8 MiB random shard in seven has no NUL in its first 512 bytes (seen: 17 such shards of a DCP
checkpoint failed every try). Both transfer paths, on the test hub (which refuses a regular file
with a NUL, as the Hub does)."""

import hashlib
import os
import random
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402


def text_then_nul(size, seed):
    rng = random.Random(seed)
    head = b"".join(b"%d," % rng.randrange(1000) for _ in range(400))[:4096]
    tail = rng.randbytes(size - len(head))
    return head + tail.replace(b"\0", b"\1")[:-1] + b"\0"


class BinaryRegular(unittest.TestCase):
    def check(self, transfer):
        hub = h.Hub()
        self.addCleanup(hub.stop)
        _, watch = h.job_dir(f"ckpt-binreg-{transfer}-")
        repo = f"{h.USER}/binreg-{transfer}-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="debug",
                     args=["--quiet-ms", "300", "--strategy", "all_checkpoints",
                           "--transfer", transfer])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        ckpt = os.path.join(watch, "checkpoint-1")
        os.makedirs(ckpt)
        data = text_then_nul(3 * 1024 * 1024 + 5, 7)
        with open(os.path.join(ckpt, "__0_0.distcp"), "wb") as f:
            f.write(data)
        with open(os.path.join(ckpt, "trainer_state.json"), "w") as f:
            f.write('{"global_step": 1}\n')
        d.wait_event("committed", timeout=60, ckpt="checkpoint-1")
        self.assertEqual(d.events("push-failed"), [], d.tail())
        self.assertEqual([e["kv"]["path"] for e in d.events("binary-as-lfs")],
                         ["checkpoint-1/__0_0.distcp"], d.tail())
        self.assertEqual(hub.sha256_at(repo, "main", "checkpoint-1/__0_0.distcp"),
                         hashlib.sha256(data).hexdigest())
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    def test_lfs(self):
        self.check("lfs")

    def test_xet(self):
        self.check("xet")


if __name__ == "__main__":
    unittest.main(verbosity=2)
