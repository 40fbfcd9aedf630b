"""Detection against every trace (recorded ones and tests/fixtures/traces/synthetic/): ckptpushd
--dry-run watches a temporary directory while tests/tools/replay.py replays the trace into it;
each expected candidate must be sealed the expected number of times (once, or once per complete
version of a file replaced in place), with the expected layout and file count, and never before
the replay's last write into it (wall clocks: the manifest's started_at_unix plus its relative
times against the daemon's UTC log time, which has millisecond resolution).

Two modes: recorded timing five times faster (one daemon per trace), and the gaps scaled to zero
(--speed 0) with 20 replays of the trace at once into rep-<i>/ subdirectories of one watched
directory, to catch races."""

import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

SPEED = 0.2  # time scale: the trace runs 5x faster than recorded
QUIET_MS = 200
SETTLE_S = 1.5  # after the last expected seal, time for a duplicate seal to show up
# Speed-0 replays at once per trace: 20 with CKPT_SPEED0=full, else a few (test_detect_speed0.py
# runs them in ctest).
REPEAT = 20 if os.environ.get("CKPT_SPEED0") == "full" else 4

NOT_TRAINER = object()
ANY = None
# Per trace: {candidate: layout}; '' is the output-root model. "files": expected files= per
# candidate; "count": seals per candidate when not 1 (a replaced file, once per version; at
# speed 0 versions may be coalesced, so a range).
EXPECTED = {
    "hf-trainer-5.17-save-steps.jsonl": {
        "sealed": {"checkpoint-10": "transformers-trainer", "checkpoint-20": "transformers-trainer",
                   "checkpoint-30": "transformers-trainer", "checkpoint-40": "transformers-trainer",
                   "": ANY},
        "files": {"checkpoint-10": 10, "checkpoint-20": 10, "checkpoint-30": 10,
                  "checkpoint-40": 10},
    },
    # save_pretrained into out/: a model folder, 7 shards + index + config/tokenizer files.
    "hf-save-pretrained-sharded.jsonl": {
        "sealed": {"out": "model-dir"},
        "files": {"out": 12},
    },
    # torch.distributed.checkpoint: complete when .metadata is renamed into place.
    "torch-dcp-save.jsonl": {
        "sealed": {"step-100": "torch-dcp"},
        "files": {"step-100": 2},
    },
    "synthetic/deepspeed-save-checkpoint.jsonl": {
        "sealed": {"global_step10": "deepspeed", "global_step20": "deepspeed"},
        "files": {"global_step10": 3, "global_step20": 3},
    },
    "synthetic/orbax-save.jsonl": {
        "sealed": {"100/default": "orbax", "200/default": "orbax"},
        "files": {"100/default": 3, "200/default": 3},
    },
    "synthetic/nemo-unfinished-marker.jsonl": {
        "sealed": {"ckpts/megatron--step=100": "nemo", "ckpts/megatron--step=200": "nemo"},
        "files": {"ckpts/megatron--step=100": 3, "ckpts/megatron--step=200": 3},
        # At speed 0 the marker can be gone before the folder is first seen: then it is what
        # is left, a distributed checkpoint (with NeMo's context/ in it).
        "layout0": {"ckpts/megatron--step=100": ("nemo", "torch-dcp"),
                    "ckpts/megatron--step=200": ("nemo", "torch-dcp")},
    },
    "synthetic/torchsnapshot-take.jsonl": {
        "sealed": {"snap-30": "torchsnapshot"},
        "files": {"snap-30": 3},
    },
    "synthetic/accelerate-save-state.jsonl": {
        "sealed": {f"checkpoints/checkpoint_{i}": "accelerate" for i in range(3)},
        "files": {f"checkpoints/checkpoint_{i}": 2 for i in range(3)},
    },
    # One save: its epoch file and the last.ckpt written after it. The trace's last save gets no
    # last.ckpt although the folder had one: it waits for it (a minute), so the SIGTERM's drain
    # seals it ("drain"). At speed 0 a last.ckpt listed before any save is a checkpoint alone,
    # and which save a listed last.ckpt joins is a matter of timing: no file counts then.
    "synthetic/lightning-model-checkpoint.jsonl": {
        "sealed": {f"lightning_logs/version_0/checkpoints/{n}": "lightning"
                   for n in ("epoch=0-step=50.ckpt", "epoch=1-step=100.ckpt",
                             "epoch=2-step=150.ckpt", "last.ckpt")},
        "files": {"lightning_logs/version_0/checkpoints/epoch=0-step=50.ckpt": 2,
                  "lightning_logs/version_0/checkpoints/epoch=1-step=100.ckpt": 2,
                  "lightning_logs/version_0/checkpoints/epoch=2-step=150.ckpt": 1},
        "files0": {},
        "count": {"lightning_logs/version_0/checkpoints/last.ckpt": (0, 0)},
        "count0": {"lightning_logs/version_0/checkpoints/last.ckpt": (0, 2),
                   "lightning_logs/version_0/checkpoints/epoch=2-step=150.ckpt": (0, 1)},
        "drain": {"lightning_logs/version_0/checkpoints/epoch=2-step=150.ckpt"},
    },
    # Trainer variants (SOURCES.md): checkpoint-<global_step>/ sealed on trainer_state.json.
    "synthetic/trainer-save-epoch.jsonl": {
        "sealed": {f"checkpoint-{s}": "transformers-trainer" for s in (63, 126, 189)},
        "files": {f"checkpoint-{s}": 10 for s in (63, 126, 189)},
    },
    "synthetic/trainer-peft-adapter.jsonl": {
        "sealed": {f"checkpoint-{s}": "transformers-trainer" for s in (50, 100)},
        "files": {f"checkpoint-{s}": 10 for s in (50, 100)},
    },
    "synthetic/trainer-save-only-model.jsonl": {
        "sealed": {f"checkpoint-{s}": "transformers-trainer" for s in (10, 20, 30)},
        "files": {f"checkpoint-{s}": 7 for s in (10, 20, 30)},
    },
    "synthetic/trainer-load-best.jsonl": {
        "sealed": {f"checkpoint-{s}": "transformers-trainer" for s in (10, 20, 30, 40)},
        "files": {f"checkpoint-{s}": 10 for s in (10, 20, 30, 40)},
    },
    "synthetic/plain-torch-save.jsonl": {
        "sealed": {"ckpt/step_100.pt": "single-file", "ckpt/step_200.pt": "single-file",
                   "ckpt/latest.pt": "single-file"},
        "count0": {"ckpt/latest.pt": (1, 2)},
    },
}


def trace_names():
    names = [f for f in os.listdir(h.TRACES_DIR) if f.endswith(".jsonl")]
    syn = os.path.join(h.TRACES_DIR, "synthetic")
    names += [f"synthetic/{f}" for f in os.listdir(syn) if f.endswith(".jsonl")]
    return sorted(names)


def deleted_in_replay(manifest, name, prefix):
    """Every version of every file of the candidate was deleted (rotation) during the replay.
    Manifest paths are relative to the replay's own directory (prefix not included)."""
    del prefix
    full = name
    versions = [v for path, vs in manifest["files"].items()
                if path == full or path.startswith(full + "/") for v in vs]
    return bool(versions) and all(v["deleted"] or v["superseded"] for v in versions) and not any(
        p == full or p.startswith(full + "/") for p in manifest["final_tree"])


def last_write(manifest, name, prefix=""):
    """Latest close or rename into the candidate (relative to the start). Manifest paths are
    relative to the replay's own directory: prefix is not part of them."""
    del prefix
    if name == "":
        return manifest["root_last_write_at"]
    full = name
    t = None
    for path, versions in manifest["files"].items():
        if path == full or path.startswith(full + "/"):
            for v in versions:
                t = v["closed_at"] if t is None else max(t, v["closed_at"])
    return t


class DetectTraces(unittest.TestCase):
    def test_every_trace_has_expectations(self):
        self.assertEqual(sorted(EXPECTED), trace_names(),
                         "add the new trace's expected candidates to EXPECTED")

    def start(self, quiet_ms):
        root, watch = h.job_dir("ckpt-detect-")
        d = h.Daemon(watch, repo=f"{h.USER}/detect-test", token=h.TOKEN,
                     args=["--dry-run", "--quiet-ms", str(quiet_ms)])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        (ready,) = d.wait_event("ready", timeout=15)
        self.assertEqual(os.path.realpath(ready["kv"].get("watch", "")),
                         os.path.realpath(watch), ready["line"])
        return d, watch

    def check(self, d, exp, manifest, prefix, counts, zero=False):
        sealed = [r for r in d.events("sealed") if r["kv"].get("ckpt", "").startswith(prefix)
                  or (prefix and r["kv"].get("ckpt") == prefix.rstrip("/"))]
        names = [r["kv"].get("ckpt") for r in sealed]
        want = {}
        for ckpt in exp["sealed"]:
            full = prefix + ckpt if ckpt else prefix.rstrip("/")
            lo, hi = counts.get(ckpt, (1, 1))
            if zero and ckpt == "":
                # The output root is saved again as one model folder by each save_pretrained. At
                # speed 0 the quiet period is 100 ms, and a replay stalled longer than that on a
                # loaded machine between the weights and the tokenizer files seals the root
                # first with the weights, then again with all of it: each version is pushed.
                hi = max(hi, 2)
            if zero and deleted_in_replay(manifest, ckpt, prefix):
                # Made, completed and deleted with no gap: it may be gone before the daemon's
                # first look (inotify reports nothing of a directory before its watch exists).
                lo = 0
            n = names.count(full)
            seals = "\n".join(r["line"] for r in sealed if r["kv"].get("ckpt") == full)
            self.assertTrue(lo <= n <= hi, f"'{full}' sealed {n} times:\n{seals}\n{d.tail()}")
            want[full] = ckpt
        self.assertEqual(sorted(set(names) - set(want)), [], f"unexpected seals\n{d.tail()}")
        for rec in sealed:
            full = rec["kv"]["ckpt"]
            ckpt = want[full]
            layout = exp["sealed"][ckpt]
            layouts = exp.get("layout0", {}).get(ckpt) if zero else None
            if layouts is not None:
                self.assertIn(rec["kv"].get("layout"), layouts, rec["line"])
            elif layout is not None and not (prefix and ckpt == ""):
                self.assertEqual(rec["kv"].get("layout"), layout, rec["line"])
            files = exp.get("files0", exp.get("files", {})) if zero else exp.get("files", {})
            if ckpt in files:
                self.assertEqual(int(rec["kv"].get("files", -1)), files[ckpt], rec["line"])
            if rec is not [r for r in sealed if r["kv"]["ckpt"] == full][-1]:
                continue  # sealed again: each seal follows its own version; the last all of it
            last = last_write(manifest, ckpt, prefix)
            if last is None:
                continue
            last += manifest["started_at_unix"]
            # The log time is truncated to milliseconds: allow that much.
            self.assertGreaterEqual(rec["time"] + 0.001, last,
                                    f"sealed {last - rec['time']:.3f}s before the last write "
                                    f"into '{full}': {rec['line']}")

    def run_trace(self, name):
        exp = EXPECTED[name]
        d, watch = self.start(QUIET_MS)
        manifest = h.replay(h.trace_path(name), watch, speed=SPEED, seed=1)
        for ckpt in exp["sealed"]:
            if exp.get("count", {}).get(ckpt, (1, 1))[0] > 0 and ckpt not in exp.get("drain", ()):
                d.wait_event("sealed", timeout=15, ckpt=ckpt)
        time.sleep(SETTLE_S)
        rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, 0, "daemon exit status after SIGTERM\n" + d.tail())
        self.check(d, exp, manifest, "", exp.get("count", {}))
        self.assertEqual(d.events("committed"), [])  # dry run: nothing pushed

    def run_trace_zero(self, name):
        """--speed 0, REPEAT replays at once into rep-<i>/."""
        exp = EXPECTED[name]
        d, watch = self.start(100)
        tmp = h.tempdir("ckpt-replay0-")
        procs = []
        for i in range(REPEAT):
            argv = [sys.executable, h.REPLAY, h.trace_path(name), "--into",
                    os.path.join(watch, f"rep-{i}"), "--speed", "0", "--seed", str(i),
                    "--manifest", os.path.join(tmp, f"m{i}.json")]
            procs.append(h.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for p in procs:
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
        import json
        manifests = []
        for i in range(REPEAT):
            with open(os.path.join(tmp, f"m{i}.json"), encoding="utf-8") as f:
                manifests.append(json.load(f))
        # Wait for each checkpoint that must be sealed, by name: a total count would be reached
        # early by seals of rotated checkpoints, which may or may not come (lo = 0).
        for i, m in enumerate(manifests):
            for c in exp["sealed"]:
                lo, hi = exp.get("count0", {}).get(c, (1, 1))
                if lo > 0 and not deleted_in_replay(m, c, f"rep-{i}/"):
                    full = f"rep-{i}/{c}" if c else f"rep-{i}"
                    d.wait_event("sealed", timeout=30, count=lo, ckpt=full)
        time.sleep(0.6)
        rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, 0, "daemon exit status after SIGTERM\n" + d.tail())
        for i, manifest in enumerate(manifests):
            with self.subTest(rep=i):
                self.check(d, exp, manifest, f"rep-{i}/", exp.get("count0", {}), zero=True)


def _make(name, zero):
    def test(self):
        (self.run_trace_zero if zero else self.run_trace)(name)
    test.__doc__ = f"dry-run detection of {name}" + (f" at speed 0, x{REPEAT}" if zero else "")
    return test


# Speed 0 runs from test_detect_speed0.py (its own ctest entry), or here with CKPT_SPEED0 set
# (CKPT_SPEED0=full: 20 replays a trace).
for _name in EXPECTED:
    _slug = _name.removesuffix(".jsonl").replace("-", "_").replace(".", "_").replace("/", "_")
    setattr(DetectTraces, f"test_{_slug}", _make(_name, False))
    if os.environ.get("CKPT_SPEED0") or os.environ.get("CKPT_SPEED0_ONLY"):
        setattr(DetectTraces, f"test_speed0_x{REPEAT}_{_slug}", _make(_name, True))


if __name__ == "__main__":
    unittest.main(verbosity=2)
