"""A replayed transformers Trainer run pushed to the test hub: ckptpushd (every_save) must make one
commit per checkpoint and an 'End of training' commit, with exactly the bytes the run wrote,
including checkpoint-10's weights, which rotation deleted shortly after they were complete.
Downloads go through the official JS client (@huggingface/hub) when it is installed."""

import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

TRACE = "hf-trainer-5.17-save-steps.jsonl"
SPEED = 0.2
QUIET_MS = 200
STEPS = (10, 20, 30, 40)
# every_save: the checkpoint's model files go to the repo root.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "training_args.bin")
NEVER_PUSHED = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


def version_at(manifest, path, t_unix):
    """The manifest version of `path` that was complete most recently before t_unix."""
    best = None
    for v in manifest["files"].get(path, []):
        if manifest["started_at_unix"] + v["closed_at"] <= t_unix + 0.001:
            best = v
    return best


class TrainerPush(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()
        root, cls.watch = h.job_dir("ckpt-push-")
        cls.repo = f"{h.USER}/trainer-run-{os.getpid()}"
        cls.daemon = h.Daemon(cls.watch, repo=cls.repo, endpoint=cls.hub.url, token=h.TOKEN,
                              args=["--quiet-ms", str(QUIET_MS)])
        cls.daemon.wait_event("ready", timeout=20)
        cls.manifest = h.replay(h.trace_path(TRACE), cls.watch, speed=SPEED, seed=11)
        cls.committed = cls.daemon.wait_event("committed", timeout=90, count=5)
        cls.rc = cls.daemon.stop(signal.SIGTERM, 60)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def commit_of(self, ckpt):
        recs = [r for r in self.committed if r["kv"].get("ckpt") == ckpt]
        self.assertEqual(len(recs), 1, f"committed lines for '{ckpt}'\n{self.daemon.tail()}")
        return recs[0]

    def test_exit_and_no_push_failures(self):
        self.assertEqual(self.rc, 0, self.daemon.tail())
        self.assertEqual(self.daemon.events("push-failed"), [], self.daemon.tail())
        self.assertEqual(len(self.daemon.events("committed")), 5, self.daemon.tail())

    def test_commit_lines(self):
        for step in STEPS:
            rec = self.commit_of(f"checkpoint-{step}")
            self.assertRegex(rec["kv"].get("commit", ""), r"^[0-9a-f]{40}$")
            self.assertEqual(rec["kv"].get("message"), f"Training in progress, step {step}")
        final = self.commit_of("")
        self.assertEqual(final["kv"].get("message"), "End of training")
        ids = [r["kv"]["commit"] for r in self.committed]
        self.assertEqual(len(set(ids)), 5)

    def test_hub_commit_history(self):
        commits = self.hub.commits(self.repo)  # newest first
        titles = [h.commit_title(c) for c in reversed(commits)]
        want = [f"Training in progress, step {s}" for s in STEPS] + ["End of training"]
        self.assertEqual(len(titles), 6, titles)  # plus the repo's initial commit
        self.assertEqual(titles[1:], want)
        # The daemon reported the ids the hub holds, in the same order.
        by_ckpt = {r["kv"]["ckpt"]: r["kv"]["commit"] for r in self.committed}
        order = [f"checkpoint-{s}" for s in STEPS] + [""]
        self.assertEqual([c["id"] for c in reversed(commits)][1:], [by_ckpt[k] for k in order])

    def test_each_step_commit_has_its_checkpoint_model_files(self):
        for step in STEPS:
            rec = self.commit_of(f"checkpoint-{step}")
            commit = rec["kv"]["commit"]
            tree = self.hub.tree(self.repo, commit)
            for name in MODEL_FILES:
                self.assertIn(name, tree, f"step {step}: tree {sorted(tree)}")
                v = version_at(self.manifest, f"checkpoint-{step}/{name}", rec["time"])
                self.assertIsNotNone(v)
                got = self.hub.sha256_at(self.repo, commit, name)
                self.assertEqual(got, v["sha256"], f"step {step}: '{name}'")
                if "lfs" in tree[name]:
                    self.assertEqual(tree[name]["lfs"]["oid"], v["sha256"])
            for name in NEVER_PUSHED + ("trainer_state.json",):
                self.assertNotIn(name, tree, f"step {step}")
            self.assertFalse([p for p in tree if p.startswith("checkpoint-")], sorted(tree))

    def test_rotated_checkpoint_10_reached_the_hub(self):
        (v,) = self.manifest["files"]["checkpoint-10/model.safetensors"]
        self.assertTrue(v["deleted"])  # rotation removed it from disk
        self.assertFalse(os.path.exists(os.path.join(self.watch, "checkpoint-10")))
        commit = self.commit_of("checkpoint-10")["kv"]["commit"]
        tree = self.hub.tree(self.repo, commit)
        self.assertEqual(tree["model.safetensors"]["size"], v["size"])
        self.assertEqual(self.hub.sha256_at(self.repo, commit, "model.safetensors"),
                         v["sha256"])

    @unittest.skipUnless(h.js_available(), "node or tests/hub/node_modules missing "
                         "(npm ci --prefix tests/hub)")
    def test_final_repo_via_official_js_client(self):
        out = h.tempdir("ckpt-js-")
        files = h.js_download(self.hub.url, h.TOKEN, self.repo, out)
        final = self.commit_of("")
        for name in MODEL_FILES:
            self.assertIn(name, files, sorted(files))
            v = version_at(self.manifest, name, final["time"])
            self.assertIsNotNone(v, name)
            self.assertEqual(files[name], v["sha256"], name)
        for name in NEVER_PUSHED:
            self.assertFalse([p for p in files if p.rsplit("/", 1)[-1] == name], sorted(files))
        self.assertFalse([p for p in files if p.startswith("checkpoint-")], sorted(files))
        # Whatever else the final commit carries from the output root is the run's last version.
        for path, sha in files.items():
            if path in self.manifest["files"] and path != "README.md":
                self.assertEqual(sha, self.manifest["files"][path][-1]["sha256"], path)


if __name__ == "__main__":
    unittest.main(verbosity=2)
