"""The Trainer replay push (test_trainer_push.py) with ckptpushd under valgrind: any invalid
read or write, use of uninitialised memory, or definitely lost block makes the daemon exit 99
(CKPT_VALGRIND=1 in ckpt_harness.Daemon), which the push test's exit-status check catches; the
report is printed on failure. Skipped without valgrind and for sanitizer builds (ASan and
valgrind cannot share a process)."""

import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["CKPT_VALGRIND"] = "1"
import ckpt_harness as h  # noqa: E402
import test_trainer_push as push  # noqa: E402


def sanitizer_build():
    cache = os.path.join(h.BUILD_DIR, "CMakeCache.txt")
    try:
        with open(cache, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    return any(f"{opt}:BOOL=ON" in text for opt in ("CKPT_SANITIZE", "CKPT_FUZZ"))


@unittest.skipIf(shutil.which("valgrind") is None, "valgrind is not installed")
@unittest.skipIf(sanitizer_build(), "sanitizer build: valgrind cannot run ASan binaries")
class TrainerPushUnderValgrind(push.TrainerPush):
    @classmethod
    def setUpClass(cls):
        # Valgrind runs the daemon some 20x slower: replay the run 50x slower (the recorded
        # 1.5 s take 15 s), so that pinning keeps up with rotation as it does natively.
        push.SPEED = 10.0
        super().setUpClass()

    def test_valgrind_clean(self):
        log = self.daemon.valgrind_log
        with open(log, encoding="utf-8", errors="replace") as f:
            report = f.read()
        self.assertNotEqual(self.rc, 99, f"valgrind found errors:\n{report}")
        self.assertEqual(self.rc, 0, self.daemon.tail())
        self.assertNotIn("definitely lost", report, report)
        self.assertNotIn("Invalid read", report, report)
        self.assertNotIn("Invalid write", report, report)


if __name__ == "__main__":
    # Only the subclass: the imported TrainerPush runs in its own ctest entry.
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(TrainerPushUnderValgrind)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
