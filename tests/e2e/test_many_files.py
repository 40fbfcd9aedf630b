"""A checkpoint of several thousand small files is pushed whole in one commit: one commit per
checkpoint against the repo's commit budget (--commits-per-hour), not a commit per hundred files
(a 10,000-file checkpoint used to make 101 commits in under a minute, with no budget line). The
commit history on the hub has exactly one commit for it, and every file is there with its bytes.
Prints the figures (files, commits, seconds)."""

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
