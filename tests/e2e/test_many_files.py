"""A checkpoint of several thousand small files is pushed whole in one commit: one commit per
checkpoint against the repo's commit budget (--commits-per-hour), not a commit per hundred files
(a 10,000-file checkpoint used to make 101 commits in under a minute, with no budget line). The
commit history on the hub has exactly one commit for it, and every file is there with its bytes.
Prints the figures (files, commits, seconds).

A checkpoint one commit cannot carry (more than 128 MiB of files small enough to be regular,
base64 in the commit body) is cut into the fewest commits that limit forces, said in the log
('commit-split parts=2'), and each commit counts against the budget: with one commit an hour the
second waits ('commit-budget ... part=2'), a stop leaves it pending, and the next start pushes
the rest without committing the first part again."""

import base64
import hashlib
import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

N_FILES = 4000  # with the old cut at 100 files: 41 commits


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class ManyFiles(unittest.TestCase):
    def test_thousands_of_small_files_are_one_commit(self):
        hub = h.Hub()
        self.addCleanup(hub.stop)
        _, watch = h.job_dir("ckpt-many-")
        repo = f"{h.USER}/many-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, args=["--quiet-ms", "300"],
                     log_level="info")
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        rng = random.Random(14)
        ckpt = os.path.join(watch, "checkpoint-1")
        shards = os.path.join(ckpt, "shards")
        os.makedirs(shards)
        written = {}
        for i in range(N_FILES):
            data = b'{"shard": %d, "value": %d}\n' % (i, rng.randrange(1 << 30))
            with open(os.path.join(shards, f"s{i:05d}.json"), "wb") as f:
                f.write(data)
            written[f"shards/s{i:05d}.json"] = data
        data = b'{"step": 1}\n'
        with open(os.path.join(ckpt, "config.json"), "wb") as f:
            f.write(data)
        written["config.json"] = data
        with open(os.path.join(ckpt, "trainer_state.json"), "w") as f:
            f.write('{"global_step": 1}\n')
        t0 = time.monotonic()
        d.wait_event("sealed", timeout=120, ckpt="checkpoint-1")
        got = d.wait_event("committed", timeout=300, ckpt="checkpoint-1")[0]
        seconds = time.monotonic() - t0

        commits = hub.commits(repo)
        titles = [h.commit_title(c) for c in commits]
        print(f"\nFIGURES many-files: files={N_FILES + 1} commits={len(commits) - 1} "
              f"seal_to_commit_s={seconds:.2f} daemon_seconds={got['kv'].get('seconds')}",
              flush=True)
        self.assertEqual(len(commits), 2, f"the repo's first commit and one more: {titles}")
        self.assertEqual(titles[0], "Training in progress, step 1")
        self.assertEqual(d.events("committed-part") + d.events("commit-split"), [], d.tail())
        self.assertEqual(int(got["kv"]["files"]), N_FILES + 1, d.tail())
        tree = hub.tree(repo)
        missing = sorted(set(written) - set(tree))
        self.assertEqual(missing, [], f"{len(missing)} files missing")
        wrong = [p for p, b in written.items() if tree[p].get("oid") != git_blob_sha1(b)]
        self.assertEqual(wrong, [], "files whose content differs on the hub")
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    def test_a_checkpoint_one_commit_cannot_carry_is_split_within_the_budget(self):
        hub = h.Hub()
        self.addCleanup(hub.stop)
        _, watch = h.job_dir("ckpt-split-")
        repo = f"{h.USER}/split-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "300", "--commits-per-hour", "1", "--drain-timeout",
                           "2"])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        ckpt = os.path.join(watch, "checkpoint-1")
        os.makedirs(os.path.join(ckpt, "shards"))
        written = {}
        # 15 text files of 9 MiB: regular, 135 MiB in all; 14 fit in one commit's 128 MiB
        for i in range(15):
            data = base64.b64encode(random.Random(i).randbytes(9 * 3 * (1 << 18)))
            self.assertEqual(len(data), 9 << 20)
            with open(os.path.join(ckpt, "shards", f"s{i:02d}.txt"), "wb") as f:
                f.write(data)
            written[f"shards/s{i:02d}.txt"] = git_blob_sha1(data)
        with open(os.path.join(ckpt, "trainer_state.json"), "w") as f:
            f.write('{"global_step": 1}\n')
        split = d.wait_event("commit-split", timeout=120, ckpt="checkpoint-1")[0]["kv"]
        self.assertEqual(split["parts"], "2", d.tail())
        d.wait_event("committed-part", timeout=180, ckpt="checkpoint-1")
        waits = d.wait_event("commit-budget", timeout=30, ckpt="checkpoint-1")
        self.assertEqual(waits[0]["kv"]["part"], "2", d.tail())
        titles = [h.commit_title(c) for c in hub.commits(repo)]
        self.assertEqual(titles, ["Training in progress, step 1", "initial commit"])
        first = hub.tree(repo)
        self.assertEqual(sorted(p for p in first if p.startswith("shards/")),
                         sorted(written)[:14])
        self.assertEqual(d.stop(signal.SIGTERM, 30), 1, d.tail())
        stopped = d.events("stopped")[-1]["kv"]
        self.assertEqual(stopped["pending"], "1", d.tail())
        self.assertTrue(d.events("push-interrupted", ckpt="checkpoint-1"), d.tail())

        again = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                         args=["--quiet-ms", "300"])
        self.addCleanup(again.stop, signal.SIGKILL, 5)
        again.wait_event("committed", timeout=180, ckpt="checkpoint-1")
        self.assertEqual(again.stop(signal.SIGTERM, 30), 0, again.tail())
        titles = [h.commit_title(c) for c in hub.commits(repo)]
        self.assertEqual(titles, ["Training in progress, step 1 (part 2)",
                                  "Training in progress, step 1", "initial commit"])
        tree = hub.tree(repo)
        self.assertEqual({p: tree[p].get("oid") for p in written}, written)


if __name__ == "__main__":
    unittest.main(verbosity=2)
