"""Detection against every recorded trace: ckptpushd --dry-run watches a temporary directory while
tests/tools/replay.py replays the trace into it five times faster than recorded; each expected
candidate must be sealed exactly once, with the expected layout, and never before the replay's
last write into it (wall clocks: the manifest's started_at_unix plus its relative times against
the daemon's UTC log time, which has millisecond resolution)."""

import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

SPEED = 0.2  # time scale: the trace runs 5x faster than recorded
QUIET_MS = 200
SETTLE_S = 1.5  # after the last expected seal, time for a duplicate seal to show up

# Per trace: {candidate: expected layout}; ckpt '' is the output-root model. A layout of None is
# not checked; NOT_TRAINER means anything but 'trainer'. "files": expected files= per candidate.
NOT_TRAINER = object()
EXPECTED = {
    "hf-trainer-5.17-save-steps.jsonl": {
        "sealed": {"checkpoint-10": "transformers-trainer", "checkpoint-20": "transformers-trainer",
                   "checkpoint-30": "transformers-trainer", "checkpoint-40": "transformers-trainer", "": None},
        "files": {"checkpoint-10": 10, "checkpoint-20": 10, "checkpoint-30": 10,
                  "checkpoint-40": 10},
    },
    # save_pretrained into out/: a model folder, 7 shards + index + config/tokenizer files.
    "hf-save-pretrained-sharded.jsonl": {
        "sealed": {"out": NOT_TRAINER},
        "files": {"out": 12},
    },
    # torch.distributed.checkpoint: complete when .metadata is renamed into place.
    "torch-dcp-save.jsonl": {
        "sealed": {"step-100": NOT_TRAINER},
        "files": {"step-100": 2},
    },
}


class DetectTraces(unittest.TestCase):
    def test_every_trace_has_expectations(self):
        self.assertEqual(sorted(EXPECTED), h.all_traces(),
                         "add the new trace's expected candidates to EXPECTED")

    def run_trace(self, name):
        exp = EXPECTED[name]
        root = h.tempdir("ckpt-detect-")
        watch = os.path.join(root, "output")
        os.mkdir(watch)
        d = h.Daemon(watch, repo=f"{h.USER}/detect-test", token=h.TOKEN,
                     args=["--dry-run", "--quiet-ms", str(QUIET_MS)])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        (ready,) = d.wait_event("ready", timeout=15)
        self.assertEqual(os.path.realpath(ready["kv"].get("watch", "")),
                         os.path.realpath(watch), ready["line"])

        manifest = h.replay(h.trace_path(name), watch, speed=SPEED, seed=1)
        for ckpt in exp["sealed"]:
            d.wait_event("sealed", timeout=15, ckpt=ckpt)
        time.sleep(SETTLE_S)
        rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, 0, "daemon exit status after SIGTERM\n" + d.tail())

        sealed = d.events("sealed")
        names = [r["kv"].get("ckpt") for r in sealed]
        for ckpt in exp["sealed"]:
            self.assertEqual(names.count(ckpt), 1,
                             f"'{ckpt}' sealed {names.count(ckpt)} times\n{d.tail()}")
        self.assertEqual(sorted(set(names)), sorted(exp["sealed"]),
                         f"unexpected candidates sealed\n{d.tail()}")
        for rec in sealed:
            ckpt = rec["kv"]["ckpt"]
            layout = exp["sealed"][ckpt]
            if layout is NOT_TRAINER:
                self.assertNotEqual(rec["kv"].get("layout"), "transformers-trainer", rec["line"])
            elif layout is not None:
                self.assertEqual(rec["kv"].get("layout"), layout, rec["line"])
            if ckpt in exp.get("files", {}):
                self.assertEqual(int(rec["kv"].get("files", -1)), exp["files"][ckpt],
                                 rec["line"])
            # The log time is truncated to milliseconds: allow that much.
            last = h.last_write_unix(manifest, ckpt)
            self.assertGreaterEqual(rec["time"] + 0.001, last,
                                    f"sealed {last - rec['time']:.3f}s before the last write "
                                    f"into '{ckpt}': {rec['line']}")
        # Dry run: nothing pushed.
        self.assertEqual(d.events("committed"), [])
        return d, manifest


def _make(name):
    def test(self):
        self.run_trace(name)
    test.__doc__ = f"dry-run detection of {name}"
    return test


for _name in EXPECTED:
    _slug = _name.removesuffix(".jsonl").replace("-", "_").replace(".", "_")
    setattr(DetectTraces, f"test_{_slug}", _make(_name))


if __name__ == "__main__":
    unittest.main(verbosity=2)
