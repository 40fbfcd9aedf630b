"""Remote retention (--keep-last K) with strategy all_checkpoints, end to end: a replayed Trainer
run (four checkpoints) pushed with keep_last=2 leaves exactly the newest two checkpoint folders;
each older folder went in the very commit that added a newer whole one (so no commit of the
history holds fewer whole checkpoints than it could); repo content this job did not push, a
foreign checkpoint-5/ folder included, is untouched; what an earlier run of the job pushed is
retired after a restart (the journal remembers it); a bad value is refused with a clear message
before anything starts."""

import base64
import json
import os
import random
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

TRACE = "hf-trainer-5.17-save-steps.jsonl"
STEPS = (10, 20, 30, 40)
KEEP = 2
# pushed by someone else before the job starts: never touched
FOREIGN = {"eval/results.json": b'{"accuracy": 0.5}\n', "NOTES.md": b"notes\n",
           "checkpoint-5/NOTES.md": b"a folder of another run\n"}


def folders(tree):
    """{checkpoint folder: set of its file names} in a tree ({path: entry})."""
    out = {}
    for p in tree:
        top, _, rest = p.partition("/")
        if rest and top.startswith("checkpoint-"):
            out.setdefault(top, set()).add(rest)
    return out


class KeepLast(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()
        root, cls.watch = h.job_dir("ckpt-keep-")
        cls.repo = f"{h.USER}/keep-last-{os.getpid()}"
        status, _, body = cls.hub.request("POST", "/api/repos/create",
                                          body={"name": cls.repo, "private": True})
        assert status == 200, body
        lines = [{"key": "header", "value": {"summary": "Add notes"}}]
        lines += [{"key": "file", "value": {"path": p, "encoding": "base64",
                                            "content": base64.b64encode(d).decode()}}
                  for p, d in FOREIGN.items()]
        status, _, body = cls.hub.request(
            "POST", f"/api/models/{cls.repo}/commit/main",
            body="\n".join(json.dumps(x) for x in lines).encode(),
            headers={"Content-Type": "application/x-ndjson"})
        assert status == 200, body
        cls.daemon = h.Daemon(cls.watch, repo=cls.repo, endpoint=cls.hub.url, log_level="info",
                              args=["--strategy", "all_checkpoints", "--keep-last", str(KEEP),
                                    "--quiet-ms", "200",
                                    "--socket", os.path.join(root, "ctl.sock")])
        cls.daemon.wait_event("ready", timeout=20)
        cls.manifest = h.replay(h.trace_path(TRACE), cls.watch, speed=0.2, seed=5)
        cls.daemon.wait_event("committed", timeout=120, count=len(STEPS) + 1)
        cls.rc = cls.daemon.stop(signal.SIGTERM, 60)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def checkpoint_files(self, step):
        """The file names of checkpoint-STEP as the run wrote them."""
        pre = f"checkpoint-{step}/"
        return {p[len(pre):] for p in self.manifest["files"] if p.startswith(pre)}

    def test_final_tree_holds_the_newest_two(self):
        self.assertEqual(self.rc, 0, self.daemon.tail())
        self.assertEqual(self.daemon.events("push-failed"), [], self.daemon.tail())
        got = folders(self.hub.tree(self.repo))
        want = {f"checkpoint-{s}": self.checkpoint_files(s) for s in STEPS[-KEEP:]}
        want["checkpoint-5"] = {"NOTES.md"}
        self.assertEqual(got, want)

    def test_each_deletion_rides_the_commit_that_adds_a_newer_whole_one(self):
        commits = list(reversed(self.hub.commits(self.repo)))  # oldest first
        by_title = {h.commit_title(c): c["id"] for c in commits}
        for i, s in enumerate(STEPS):
            tree = folders(self.hub.tree(self.repo, by_title[f"Training in progress, step {s}"]))
            tree.pop("checkpoint-5")
            kept = STEPS[max(0, i + 1 - KEEP):i + 1]
            self.assertEqual(tree, {f"checkpoint-{k}": self.checkpoint_files(k) for k in kept},
                             f"at step {s}")
        # no other commit touched the checkpoint folders: the deletes rode those commits
        titles = [h.commit_title(c) for c in commits]
        self.assertEqual(titles[2:], [f"Training in progress, step {s}" for s in STEPS] +
                         ["End of training"])
        retiring = [(r["kv"]["ckpt"], r["kv"]["folder"]) for r in self.daemon.events("retiring")]
        self.assertEqual(retiring, [("checkpoint-30", "checkpoint-10"),
                                    ("checkpoint-40", "checkpoint-20")], self.daemon.tail())

    def test_unrelated_files_untouched(self):
        tree = self.hub.tree(self.repo)
        for p, data in FOREIGN.items():
            self.assertIn(p, tree)
            status, _, body = self.hub.request("GET", f"/{self.repo}/resolve/main/{p}")
            self.assertEqual((status, body), (200, data), p)

    def test_across_a_restart_with_a_smaller_k(self):
        # the journal remembers what an earlier run of the job pushed; that run kept 3, this one
        # keeps 1: the commit of checkpoint-3 deletes checkpoint-2 (now beyond the newest 1) and
        # names checkpoint-1 again, which was beyond it already and never deleted
        root, watch = h.job_dir("ckpt-keep-restart-")
        repo = f"{h.USER}/keep-last-restart-{os.getpid()}"
        args = ["--strategy", "all_checkpoints", "--quiet-ms", "200",
                "--socket", os.path.join(root, "ctl.sock")]
        for keep, steps in ((3, (1, 2)), (1, (3,))):
            d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="debug",
                         args=args + ["--keep-last", str(keep)])
            d.wait_event("ready", timeout=20)
            for s in steps:
                h.write_checkpoint(watch, s, 3000, random.Random(s))
                d.wait_event("committed", timeout=30, ckpt=f"checkpoint-{s}")
            self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())
            self.assertEqual(sorted(folders(self.hub.tree(repo))),
                             [f"checkpoint-{n}" for n in range(1, 4)[-keep:] if n <= steps[-1]])
        self.assertEqual([(r["kv"]["ckpt"], r["kv"]["folder"]) for r in d.events("retiring")],
                         [("checkpoint-3", "checkpoint-2")], d.tail())
        (again,) = d.events("retiring-again")
        self.assertEqual((again["kv"]["ckpt"], again["kv"]["folders"]), ("checkpoint-3", "1"))

    def test_bad_values_refused(self):
        watch = h.job_dir("ckpt-keep-bad-")[1]
        env = dict(os.environ, HF_TOKEN=h.TOKEN, HF_HOME=h.tempdir("ckpt-hfhome-"))
        base = [h.daemon_path(), "--watch", watch, "--repo", "alice/x", "--endpoint",
                self.hub.url]
        r = subprocess.run(base + ["--strategy", "all_checkpoints", "--keep-last", "two"],
                           capture_output=True, text=True, timeout=20, env=env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("--keep-last: 'two' is not a number from 0 to 100000", r.stderr)
        r = subprocess.run(base + ["--keep-last", "2"], capture_output=True, text=True,
                           timeout=20, env=env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("keep_last: 2 needs strategy all_checkpoints", r.stderr)
        r = subprocess.run(base + ["--strategy", "all_checkpoints"], capture_output=True,
                           text=True, timeout=20, env=dict(env, CKPTPUSH_KEEP_LAST="-3"))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("CKPTPUSH_KEEP_LAST: '-3' is not a number", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
