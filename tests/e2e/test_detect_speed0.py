"""Detection races: every trace of test_detect_traces.py replayed with its gaps scaled to zero
(tests/tools/replay.py --speed 0), several replays at once into rep-<i>/ of one watched directory
(4 per trace here; CKPT_SPEED0=full: 20). Each checkpoint must be sealed once, after its last
write, with its files; one that was made and deleted with no gap may be gone before the daemon's
first look, and then must not be sealed at all (never half)."""

import os
import sys
import unittest

os.environ["CKPT_SPEED0_ONLY"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_detect_traces as t  # noqa: E402


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    for name in sorted(n for n in dir(t.DetectTraces) if n.startswith("test_speed0_")):
        suite.addTest(t.DetectTraces(name))
    return suite


if __name__ == "__main__":
    unittest.main(verbosity=2)
