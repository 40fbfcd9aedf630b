"""A rule of the user's own (--rule GLOB:MARKER:QUIET_MS) seals a folder no built-in layout knows
only once its marker is closed, and --layout restricts detection to one built-in layout."""

import contextlib
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402


def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))


class CustomRule(unittest.TestCase):
    @contextlib.contextmanager
    def dry_run(self, prefix, *args):
        """A --dry-run daemon, ready, on a fresh folder; it must exit 0 when stopped."""
        watch = h.tempdir(prefix)
        d = h.Daemon(watch, repo="alice/x", args=["--dry-run", "--quiet-ms", "200", *args])
        try:
            d.wait_event("ready", timeout=20)
            yield watch, d
        finally:
            self.assertEqual(d.stop(), 0, d.tail())

    def test_marker_rule(self):
        with self.dry_run("ckpt-rule-", "--rule", "exports/snap-*:DONE:100") as (watch, d):
            write(os.path.join(watch, "exports/snap-1/weights.npz"), 4096)
            write(os.path.join(watch, "exports/snap-1/meta.txt"), 10)
            time.sleep(0.8)  # well past both quiet periods: no marker, no seal
            self.assertEqual(d.events("sealed"), [], d.tail())
            write(os.path.join(watch, "exports/snap-1/DONE"), 0)
            sealed = d.wait_event("sealed", timeout=10, ckpt="exports/snap-1")
            self.assertEqual(sealed[0]["kv"]["files"], "3", d.tail())

    def test_forced_layout_ignores_others(self):
        with self.dry_run("ckpt-layout-", "--layout", "torch-dcp") as (watch, d):
            write(os.path.join(watch, "checkpoint-5/model.safetensors"), 1000)
            write(os.path.join(watch, "checkpoint-5/trainer_state.json"), 10)
            write(os.path.join(watch, "step-9/__0_0.distcp"), 1000)
            write(os.path.join(watch, "step-9/.metadata"), 100)
            d.wait_event("sealed", timeout=10, ckpt="step-9")
            time.sleep(0.6)
            self.assertEqual([r["kv"]["ckpt"] for r in d.events("sealed")], ["step-9"], d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
