"""The four hub strategies transformers users know, end to end against the test hub: the remote
layout and the commit messages of every_save, checkpoint (last-checkpoint/, a superseded
checkpoint logged and not pushed), all_checkpoints (each under its own folder, with --exclude),
end (only the end of training), and --revision (checkpoints on a branch, the end on main)."""

import hashlib
import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

MODEL = ("model.safetensors", "config.json")
STATE = ("optimizer.pt", "trainer_state.json")


def write_files(d, files):
    os.makedirs(d, exist_ok=True)
    out = {}
    for name, data in files:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def checkpoint(root, step, rng, extra=()):
    return write_files(os.path.join(root, f"checkpoint-{step}"), [
        ("model.safetensors", rng.randbytes(200000)),
        ("config.json", b'{"step": %d}\n' % step),
        ("optimizer.pt", rng.randbytes(50000)),
        *[(name, rng.randbytes(1000)) for name in extra],
        ("trainer_state.json", b'{"global_step": %d}\n' % step),  # last: seals it
    ])


def final_model(root, rng):
    return write_files(root, [("config.json", b'{"final": true}\n'),
                              ("model.safetensors", rng.randbytes(200000))])


class Strategies(h.HubTestCase):
    def run_case(self, strategy, extra=(), prewrite=(), steps=(1, 2), extra_files=None):
        """Checkpoints `prewrite` exist before the daemon starts; `steps` are written one by one
        while it runs; then the final model at the root. Returns (daemon, repo, sha by path)."""
        root, watch = h.job_dir(f"ckpt-strat-{strategy}-")
        repo = f"{h.USER}/strategy-{strategy.replace('_', '-')}-{len(extra)}-{os.getpid()}"
        rng = random.Random(strategy)
        sha = {}
        extra_files = extra_files or {}
        for s in prewrite:
            sha[s] = checkpoint(watch, s, rng, extra_files.get(s, ()))
        if prewrite:
            # the hub answers the first whoami after 1 s: every checkpoint found by the scan is
            # sealed and queued before pushing starts
            self.hub.fault({"route": "whoami", "count": 1, "status": 503, "retry_after": 1})
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                     args=["--strategy", strategy, "--quiet-ms", "200",
                           "--socket", os.path.join(root, "ctl.sock"), *extra])
        d.wait_event("ready", timeout=20)
        for s in steps:
            time.sleep(0.3)
            sha[s] = checkpoint(watch, s, rng, extra_files.get(s, ()))
            name = f"checkpoint-{s}"
            d.wait_event("committed" if strategy != "end" else "skipped", timeout=30, ckpt=name)
        time.sleep(0.3)
        sha["final"] = final_model(watch, rng)
        d.wait_event("committed", timeout=30, ckpt="")
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())
        self.assertEqual(d.events("push-failed"), [], d.tail())
        return d, repo, sha

    def titles(self, repo, rev="main"):
        return [h.commit_title(c) for c in reversed(self.hub.commits(repo, rev))][1:]

    def check_root_model(self, repo, sha, rev="main"):
        for name in MODEL:
            self.assertEqual(self.hub.sha256_at(repo, rev, name), sha["final"][name], name)

    def test_every_save(self):
        _, repo, sha = self.run_case("every_save")
        self.assertEqual(self.titles(repo), ["Training in progress, step 1",
                                             "Training in progress, step 2", "End of training"])
        tree = self.hub.tree(repo)
        self.assertFalse([p for p in tree if "/" in p], sorted(tree))
        self.assertNotIn("optimizer.pt", tree)
        self.check_root_model(repo, sha)

    def test_checkpoint_last_checkpoint_folder_and_superseded(self):
        # checkpoint 2 has a file checkpoint 3 lacks: it must leave last-checkpoint/ with it
        d, repo, sha = self.run_case("checkpoint", prewrite=(1, 2), steps=(3,),
                                     extra_files={2: ("rng_state_1.pth",)})
        sup = d.events("superseded")
        self.assertEqual([r["kv"].get("ckpt") for r in sup], ["checkpoint-1"], d.tail())
        self.assertEqual(self.titles(repo), ["Training in progress, step 2",
                                             "Training in progress, step 3", "End of training"])
        tree = self.hub.tree(repo)
        last = sorted(p for p in tree if p.startswith("last-checkpoint/"))
        self.assertEqual(last, sorted(f"last-checkpoint/{n}" for n in MODEL + STATE))
        for n in MODEL + STATE:  # the latest checkpoint, whole
            self.assertEqual(self.hub.sha256_at(repo, "main", f"last-checkpoint/{n}"), sha[3][n])
        # step 2's commit already had its own last-checkpoint/, moved in one commit
        c2 = [c for c in self.hub.commits(repo)
              if h.commit_title(c) == "Training in progress, step 2"][0]["id"]
        self.assertEqual(self.hub.sha256_at(repo, c2, "last-checkpoint/optimizer.pt"),
                         sha[2]["optimizer.pt"])
        self.assertIn("last-checkpoint/rng_state_1.pth", self.hub.tree(repo, c2))
        self.assertNotIn("last-checkpoint/rng_state_1.pth", tree)
        self.assertFalse([p for p in tree if p.startswith("checkpoint-")], sorted(tree))
        self.check_root_model(repo, sha)

    def test_all_checkpoints_with_exclude(self):
        _, repo, sha = self.run_case("all_checkpoints", extra=("--exclude", "*/optimizer.pt"))
        self.assertEqual(self.titles(repo), ["Training in progress, step 1",
                                             "Training in progress, step 2", "End of training"])
        tree = self.hub.tree(repo)
        for s in (1, 2):
            got = sorted(p for p in tree if p.startswith(f"checkpoint-{s}/"))
            self.assertEqual(got, sorted(f"checkpoint-{s}/{n}" for n in
                                         ("model.safetensors", "config.json",
                                          "trainer_state.json")))
            self.assertEqual(self.hub.sha256_at(repo, "main", f"checkpoint-{s}/model.safetensors"),
                             sha[s]["model.safetensors"])
        self.assertFalse([p for p in tree if p.endswith("optimizer.pt")])
        self.check_root_model(repo, sha)

    def test_end(self):
        d, repo, sha = self.run_case("end")
        self.assertEqual(self.titles(repo), ["End of training"])
        self.assertEqual(len(d.events("skipped")), 2, d.tail())
        tree = self.hub.tree(repo)
        self.assertFalse([p for p in tree if "/" in p], sorted(tree))
        self.check_root_model(repo, sha)

    def test_revision_branch_for_checkpoints_main_for_the_end(self):
        d, repo, sha = self.run_case("every_save", extra=("--revision", "training"))
        self.assertTrue(d.events("branch-ready"), d.tail())
        self.assertEqual(self.titles(repo, "training"),
                         ["Training in progress, step 1", "Training in progress, step 2"])
        self.assertEqual(self.titles(repo, "main"), ["End of training"])
        self.assertEqual(self.hub.sha256_at(repo, "training", "model.safetensors"),
                         sha[2]["model.safetensors"])
        self.check_root_model(repo, sha)

    def test_commit_budget_coalesces_and_the_rest_resumes(self):
        root, watch = h.job_dir("ckpt-budget-")
        repo = f"{h.USER}/budget-{os.getpid()}"
        rng = random.Random(3)
        sha = {}
        args = ["--quiet-ms", "200", "--socket", os.path.join(root, "ctl.sock")]
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                     args=args + ["--commits-per-hour", "2", "--drain-timeout", "1"])
        d.wait_event("ready", timeout=20)
        for s in (1, 2):
            sha[s] = checkpoint(watch, s, rng)
            d.wait_event("committed", timeout=30, ckpt=f"checkpoint-{s}")
        for s in (3, 4, 5):
            sha[s] = checkpoint(watch, s, rng)
            time.sleep(0.4)
        d.wait_event("coalesced", timeout=20, count=2)
        self.assertEqual([r["kv"]["ckpt"] for r in d.events("coalesced")],
                         ["checkpoint-3", "checkpoint-4"], d.tail())
        self.assertTrue(d.events("commit-budget"), d.tail())
        # the drain cannot finish within the budget: the pins stay for the next start
        self.assertEqual(d.stop(signal.SIGTERM, 30), 1, d.tail())
        # A restart does not start a fresh hour: the repo's commits of the last hour (steps 1
        # and 2; not the first commit, made by the repo's creation) count, read from the Hub.
        made = len(self.hub.commits(repo, "main")) - 1
        self.assertEqual(made, 2)
        d1 = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                      args=args + ["--commits-per-hour", str(made), "--drain-timeout", "1"])
        (hist,) = d1.wait_event("commit-history", timeout=20)
        self.assertEqual(hist["kv"]["commits_last_hour"], str(made), hist["line"])
        d1.wait_event("commit-budget", timeout=20)
        self.assertEqual(len(self.hub.commits(repo, "main")), made + 1, d1.tail())
        self.assertEqual(d1.stop(signal.SIGTERM, 30), 1, d1.tail())
        d2 = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info", args=args)
        d2.wait_event("committed", timeout=30, ckpt="checkpoint-5")
        time.sleep(1.0)  # the scan finds 1-5 again: nothing more may be pushed
        self.assertEqual(d2.stop(signal.SIGTERM, 30), 0, d2.tail())
        # (the drain's end-of-training commit carries the model card)
        self.assertEqual([t for t in self.titles(repo) if t != "End of training"],
                         [f"Training in progress, step {s}" for s in (1, 2, 5)])
        self.assertEqual(self.hub.sha256_at(repo, "main", "model.safetensors"),
                         sha[5]["model.safetensors"])
        self.assertEqual([r["kv"]["ckpt"] for r in d2.events("committed") if r["kv"]["ckpt"]],
                         ["checkpoint-5"], d2.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
