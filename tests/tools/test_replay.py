"""Tests of tests/tools/replay.py: replays the recorded traces into real temporary directories
and checks the tree left behind, the manifest, and (with inotifywait from inotify-tools, when
installed) that the kernel reported the events a watcher relies on. Python 3.11 stdlib only."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CKPT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
TRACES = os.path.join(SOURCE_DIR, "tests", "fixtures", "traces")
REPLAY = os.path.join(HERE, "replay.py")
TRAINER = os.path.join(TRACES, "hf-trainer-5.17-save-steps.jsonl")
SHARDED = os.path.join(TRACES, "hf-save-pretrained-sharded.jsonl")
DCP = os.path.join(TRACES, "torch-dcp-save.jsonl")

CKPT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "training_args.bin", "optimizer.pt", "scheduler.pt",
              "rng_state.pth", "trainer_state.json"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def recorded_final_sizes(trace):
    """Last non-null size recorded for each path, from the trace alone."""
    sizes = {}
    for ev in load(trace):
        if ev["size"] is not None and "ISDIR" not in ev["ev"] and "DELETE" not in ev["ev"]:
            sizes[ev["path"]] = ev["size"]
    return sizes


def tree(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ReplayCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="replay-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def replay(self, trace, *extra, into=None):
        into = into or os.path.join(self.tmp, "out")
        manifest = os.path.join(self.tmp, "manifest.json")
        events = os.path.join(self.tmp, "events.jsonl")
        r = subprocess.run([sys.executable, REPLAY, trace, "--into", into, "--manifest", manifest,
                            "--events", events, *extra], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(manifest, encoding="utf-8") as f:
            m = json.load(f)
        return into, m, load(events)

    def assert_current_versions_match_disk(self, into, m):
        for path, versions in m["files"].items():
            live = [v for v in versions if not v["deleted"] and not v["superseded"]]
            if os.path.isfile(os.path.join(into, path)):
                self.assertEqual(len(live), 1, path)
                self.assertEqual(live[0]["sha256"], sha256(os.path.join(into, path)), path)
                self.assertEqual(live[0]["size"], os.path.getsize(os.path.join(into, path)))
            else:
                self.assertEqual(live, [], path)

    def test_trainer_final_tree_and_manifest(self):
        into, m, evs = self.replay(TRAINER, "--speed", "0", "--seed", "7")
        t = tree(into)
        sizes = recorded_final_sizes(TRAINER)
        for ck in ("checkpoint-30", "checkpoint-40"):
            files = {p.split("/", 1)[1]: s for p, s in t.items() if p.startswith(ck + "/")}
            self.assertEqual(set(files), CKPT_FILES, ck)
            for name, size in files.items():
                self.assertEqual(size, sizes[f"{ck}/{name}"], f"{ck}/{name}")
        self.assertFalse(os.path.exists(os.path.join(into, "checkpoint-10")))
        self.assertFalse(os.path.exists(os.path.join(into, "checkpoint-20")))
        root = {p for p in t if "/" not in p}
        self.assertEqual(root, {"config.json", "generation_config.json", "model.safetensors",
                                "tokenizer.json", "tokenizer_config.json", "training_args.bin",
                                "trainer_state.json", "train_results.json", "all_results.json",
                                "eval_results.json", "README.md"})
        self.assertEqual(t["all_results.json"], 340)
        with open(os.path.join(into, "README.md"), "rb") as f:
            self.assertTrue(f.read().isascii())
        self.assertEqual(t["model.safetensors"], 1679496)
        self.assertEqual(t, m["final_tree"])
        # No temporary file survives, nothing is written outside DIR.
        self.assertFalse([p for p in t if os.path.basename(p).startswith(".tmp")])
        self.assertEqual(sorted(os.listdir(self.tmp)), ["events.jsonl", "manifest.json", "out"])

        # Rotation deleted checkpoint-10, but the manifest keeps what it held.
        for name in CKPT_FILES:
            (v,) = m["files"][f"checkpoint-10/{name}"]
            self.assertTrue(v["deleted"])
            self.assertEqual(len(v["sha256"]), 64)
            self.assertEqual(v["size"], sizes[f"checkpoint-10/{name}"])
        # The .tmp weights were never complete under their temporary name.
        self.assertFalse([p for p in m["files"] if ".tmp" in p])
        # all_results.json was written twice: two versions, the first superseded.
        v1, v2 = m["files"]["all_results.json"]
        self.assertEqual((v1["size"], v1["superseded"], v2["size"]), (198, True, 340))
        self.assertNotEqual(v1["sha256"], v2["sha256"])
        self.assert_current_versions_match_disk(into, m)

        # Candidates: checkpoints complete in recorded order.
        last = [m["candidates"][f"checkpoint-{n}"]["last_write_at"] for n in (10, 20, 30, 40)]
        self.assertEqual(last, sorted(last))
        self.assertGreater(m["root_last_write_at"], last[-1])
        for v in m["files"]["checkpoint-10/trainer_state.json"]:
            self.assertLessEqual(v["closed_at"], last[0])
        self.assertGreater(m["started_at_unix"], time.time() - 120)

        # The weights were renamed into place while still open, then closed under the new name.
        ops = [(e["op"], e["path"]) for e in evs if e["path"].startswith("checkpoint-10/")]
        i = ops.index(("rename", "checkpoint-10/model.safetensors"))
        self.assertEqual(ops[i + 1], ("close", "checkpoint-10/model.safetensors"))
        self.assertFalse([o for o in ops[:i] if o[0] == "close" and ".tmp" in o[1]])

    def test_seed_makes_content_reproducible(self):
        _, m1, _ = self.replay(DCP, "--speed", "0", "--seed", "3",
                               into=os.path.join(self.tmp, "a"))
        _, m2, _ = self.replay(DCP, "--speed", "0", "--seed", "3",
                               into=os.path.join(self.tmp, "b"))
        _, m3, _ = self.replay(DCP, "--speed", "0", "--seed", "4",
                               into=os.path.join(self.tmp, "c"))
        h = lambda m: {p: [v["sha256"] for v in vs] for p, vs in m["files"].items()}
        self.assertEqual(h(m1), h(m2))
        self.assertNotEqual(h(m1), h(m3))

    def test_dcp_metadata_renamed_into_place(self):
        into, m, evs = self.replay(DCP, "--speed", "0")
        self.assertEqual(tree(into), {"step-100/__0_0.distcp": 1779365,
                                      "step-100/.metadata": 7833})
        (meta,) = m["files"]["step-100/.metadata"]
        (tmp,) = m["files"]["step-100/.metadata.tmp"]
        self.assertEqual(meta["sha256"], tmp["sha256"])
        self.assertTrue(tmp["deleted"])
        self.assertEqual(evs[-1]["op"], "rename")
        self.assertEqual(evs[-1]["path"], "step-100/.metadata")
        self.assertGreaterEqual(m["candidates"]["step-100"]["last_write_at"], meta["closed_at"])

    def test_sharded_and_size_scale(self):
        into, m, _ = self.replay(SHARDED, "--speed", "0", "--size-scale", "0.01")
        t = tree(into)
        sizes = recorded_final_sizes(SHARDED)
        self.assertEqual(set(t), set(sizes) - {p for p in sizes if ".tmp" in p})
        for p, s in t.items():
            self.assertEqual(s, max(1, round(sizes[p] * 0.01)), p)
        # config.json had only CLOSE_WRITE recorded: it is still created with its size.
        self.assertIn("out/config.json", m["files"])
        self.assert_current_versions_match_disk(into, m)

    def test_synthetic_patterns(self):
        """Patterns the recorded traces lack: renamed in from outside, ATTRIB, rewrite in
        place, moved out, directory rename."""
        trace = os.path.join(self.tmp, "synthetic.jsonl")
        evs = [
            {"t": 0.0, "ev": ["MOVED_TO"], "path": "last.ckpt", "cookie": 0, "size": 5000},
            {"t": 0.01, "ev": ["ATTRIB"], "path": "last.ckpt", "cookie": 0, "size": 5000},
            {"t": 0.02, "ev": ["MOVED_TO"], "path": "last.ckpt", "cookie": 0, "size": 6000},
            {"t": 0.03, "ev": ["CREATE", "ISDIR"], "path": "a.tmp", "cookie": 0, "size": 4096},
            {"t": 0.04, "ev": ["CLOSE_WRITE"], "path": "a.tmp/x/w.bin", "cookie": 0, "size": 10},
            {"t": 0.05, "ev": ["MOVED_FROM", "ISDIR"], "path": "a.tmp", "cookie": 9, "size": None},
            {"t": 0.05, "ev": ["MOVED_TO", "ISDIR"], "path": "a", "cookie": 9, "size": 4096},
            {"t": 0.06, "ev": ["CREATE"], "path": "gone.bin", "cookie": 0, "size": 0},
            {"t": 0.06, "ev": ["CLOSE_WRITE"], "path": "gone.bin", "cookie": 0, "size": 3},
            {"t": 0.07, "ev": ["MOVED_FROM"], "path": "gone.bin", "cookie": 5, "size": None},
            {"t": 0.3, "ev": ["DELETE_SELF"], "path": "zzz", "cookie": 0, "size": None},
        ]
        with open(trace, "w", encoding="utf-8") as f:
            for e in evs:
                f.write(json.dumps(e) + "\n")
        start = time.monotonic()
        into, m, ops = self.replay(trace, "--speed", "0.5")
        self.assertGreaterEqual(time.monotonic() - start, 0.15)  # 0.3 s recorded at 0.5
        self.assertEqual(tree(into), {"last.ckpt": 6000, "a/x/w.bin": 10})
        v1, v2 = m["files"]["last.ckpt"]
        self.assertEqual((v1["size"], v1["superseded"], v2["size"]), (5000, True, 6000))
        self.assertEqual(m["files"]["a/x/w.bin"][0]["sha256"],
                         m["files"]["a.tmp/x/w.bin"][0]["sha256"])
        self.assertTrue(m["files"]["gone.bin"][0]["deleted"])
        self.assertIn(("utime", "last.ckpt"), [(e["op"], e["path"]) for e in ops])
        # The outside directory was a sibling of DIR and is gone.
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         ["events.jsonl", "manifest.json", "out", "synthetic.jsonl"])

    @unittest.skipUnless(shutil.which("inotifywait"), "inotify-tools not installed")
    def test_kernel_sees_trainer_events(self):
        into = os.path.join(self.tmp, "out")
        os.mkdir(into)
        log = os.path.join(self.tmp, "inotify.log")
        with open(log, "w") as out:
            w = subprocess.Popen(["inotifywait", "-m", "-r", "--format", "%e|%w%f", into],
                                 stdout=out, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        self.addCleanup(w.stderr.close)
        self.addCleanup(lambda: (w.poll() is None and os.killpg(w.pid, signal.SIGTERM),
                                 w.wait(10)))
        # Wait until watches are established before causing anything.
        line = w.stderr.readline()
        while line and "Watches established" not in line:
            line = w.stderr.readline()
        self.assertIn("Watches established", line)
        # Recorded timing: inotifywait -r adds a watch only after it sees a directory's CREATE.
        self.replay(TRAINER, "--speed", "1", into=into)
        time.sleep(0.3)
        os.killpg(w.pid, signal.SIGTERM)
        w.wait(10)
        seen = set()
        with open(log) as f:
            for line in f:
                ev, path = line.rstrip("\n").split("|", 1)
                for name in ev.split(","):
                    seen.add((name, os.path.relpath(path, into)))
        want = [("CREATE", "checkpoint-10"), ("CREATE", "checkpoint-40"),
                ("MOVED_FROM", "checkpoint-10/" + next(
                    e["path"].split("/")[1] for e in load(TRAINER)
                    if e["ev"] == ["MOVED_FROM"] and e["path"].startswith("checkpoint-10/"))),
                ("MOVED_TO", "checkpoint-10/model.safetensors"),
                ("CLOSE_WRITE", "checkpoint-10/model.safetensors"),
                ("CLOSE_WRITE", "checkpoint-10/trainer_state.json"),
                ("CLOSE_WRITE", "checkpoint-40/trainer_state.json"),
                ("DELETE", "checkpoint-10/model.safetensors"),
                ("DELETE", "checkpoint-10"), ("DELETE", "checkpoint-20"),
                ("MOVED_TO", "model.safetensors"), ("CLOSE_WRITE", "model.safetensors"),
                ("CLOSE_WRITE", "README.md"), ("MODIFY", "all_results.json")]
        missing = [x for x in want if x not in seen]
        self.assertEqual(missing, [], f"kernel did not report {missing}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
