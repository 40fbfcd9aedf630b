"""Lightning's ModelCheckpoint pushed for real: each save (epoch=E-step=S.ckpt, then last.ckpt) is
one commit titled 'Training in progress, epoch E, step S' holding that save's bytes of both files,
however fast the saves come; save_top_k rotation deletes older epoch files on disk (they reached
the hub first); with save_last="link" last.ckpt is a symlink and the hub gets the bytes it names.

The files are written as Lightning writes them (lightning/pytorch/callbacks/model_checkpoint.py
_save_topk_checkpoint then _save_last_checkpoint, each through fabric's _atomic_save: fsspec writes
a temporary file elsewhere and moves it into place, a rename on one filesystem or a copy across
two; _link_checkpoint removes last.ckpt and makes it a relative symlink). Real hub, real daemon,
real files."""

import hashlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

CKPT_DIR = "lightning_logs/version_0/checkpoints"
SIZE = 150_000


class Lightning:
    """One ModelCheckpoint writing into watch/CKPT_DIR; tmp is fsspec's temporary place."""

    def __init__(self, watch, tmp, rng, top_k=1, link=False, copy=False):
        self.dir = os.path.join(watch, CKPT_DIR)
        self.tmp, self.rng, self.top_k, self.link, self.copy = tmp, rng, top_k, link, copy
        self.kept = []
        self.saves = []  # (epoch, step, sha of the epoch file, sha of last.ckpt)

    def atomic_save(self, name):
        data = self.rng.randbytes(SIZE)
        dst = os.path.join(self.dir, name)
        fd, tmp = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if self.copy:  # shutil.move across filesystems: copy2, then the temporary goes
            shutil.copy2(tmp, dst)
            os.unlink(tmp)
        else:
            os.rename(tmp, dst)
        os.chmod(dst, 0o644)
        return hashlib.sha256(data).hexdigest()

    def save(self, epoch, step):
        os.makedirs(self.dir, exist_ok=True)
        name = f"epoch={epoch}-step={step}.ckpt"
        sha = self.atomic_save(name)
        self.kept.append(name)
        if len(self.kept) > self.top_k:  # _remove_checkpoint of the one pushed out
            os.remove(os.path.join(self.dir, self.kept.pop(0)))
        last = os.path.join(self.dir, "last.ckpt")
        if self.link:
            if os.path.lexists(last):
                os.remove(last)
            os.symlink(name, last)
            last_sha = sha
        else:
            last_sha = self.atomic_save("last.ckpt")
        self.saves.append((epoch, step, sha, last_sha))


class LayoutLightning(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def run_saves(self, name, quiet_ms, gap_s, n, **kw):
        root, watch = h.job_dir(f"ckpt-lightning-{name}-")
        tmp = os.path.join(root, "tmp")
        os.mkdir(tmp)
        repo = f"{h.USER}/lightning-{name}-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                     args=["--quiet-ms", str(quiet_ms), "--socket", os.path.join(root, "s")])
        d.wait_event("ready", timeout=20)
        lt = Lightning(watch, tmp, random.Random(len(name)), **kw)
        for k in range(n):
            lt.save(k, 50 * (k + 1))
            time.sleep(gap_s)
        last_name = f"{CKPT_DIR}/epoch={n - 1}-step={50 * n}.ckpt"
        d.wait_event("committed", timeout=60, ckpt=last_name)
        time.sleep(2 * quiet_ms / 1000)  # a duplicate seal or commit would show up by now
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())
        return d, repo, lt

    def check_commits(self, d, repo, lt):
        commits = list(reversed(self.hub.commits(repo)))[1:]  # oldest first, minus the repo's
        titles = [h.commit_title(c) for c in commits]
        want = [f"Training in progress, epoch {e}, step {s}" for e, s, _, _ in lt.saves]
        self.assertEqual(titles, want, d.tail())
        self.assertEqual(d.events("push-failed"), [], d.tail())
        for ev in d.events("sealed"):
            self.assertEqual(ev["kv"].get("layout"), "lightning", ev["line"])
            self.assertNotIn("coalesced", ev["kv"].get("rule", ""), ev["line"])
            self.assertEqual(ev["kv"].get("files"), "2", ev["line"])
        for c, (epoch, step, sha, last_sha) in zip(commits, lt.saves):
            tree = self.hub.tree(repo, c["id"])
            path = f"{CKPT_DIR}/epoch={epoch}-step={step}.ckpt"
            self.assertEqual(tree[path]["lfs"]["oid"] if "lfs" in tree[path] else
                             self.hub.sha256_at(repo, c["id"], path), sha, path)
            # last.ckpt at this commit is this save's version
            self.assertEqual(self.hub.sha256_at(repo, c["id"], f"{CKPT_DIR}/last.ckpt"),
                             last_sha, f"last.ckpt at '{h.commit_title(c)}'")

    def test_save_last_faster_than_quiet_period(self):
        """save_top_k=1, save_last=True, four saves 0.3 s apart, quiet period 1 s: four commits
        (not five), each with its own last.ckpt; rotated epoch files reached the hub."""
        d, repo, lt = self.run_saves("fast", 1000, 0.3, 4)
        self.check_commits(d, repo, lt)
        self.assertEqual(sorted(os.listdir(os.path.join(lt.dir))),
                         ["epoch=3-step=200.ckpt", "last.ckpt"])  # rotation happened on disk
        final = self.hub.tree(repo, "main")
        for e, s, _, _ in lt.saves:
            self.assertIn(f"{CKPT_DIR}/epoch={e}-step={s}.ckpt", final)

    def test_save_last_copied_across_filesystems(self):
        """The same through shutil.copy2 (fsspec's move across filesystems): CREATE, writes,
        CLOSE_WRITE, ATTRIB for each file; saves 0.8 s apart, quiet period 0.5 s."""
        d, repo, lt = self.run_saves("copy", 500, 0.8, 3, copy=True, top_k=2)
        self.check_commits(d, repo, lt)

    def test_save_last_link(self):
        """save_last="link": last.ckpt is a symlink to the newest epoch file; each commit holds
        the bytes it names as last.ckpt."""
        d, repo, lt = self.run_saves("link", 500, 1.2, 3, link=True, top_k=2)
        self.assertTrue(os.path.islink(os.path.join(lt.dir, "last.ckpt")))
        self.check_commits(d, repo, lt)

    def test_save_missing_a_rotated_file_pushes_the_rest(self):
        """Each file of a save is a whole checkpoint: one that rotation took before its pin (here
        its pin is deleted while the daemon is down) leaves the other pushed, not the save
        refused as half a checkpoint. The restart recovers the save from the journal and does
        not detect last.ckpt again."""
        sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
        import ckptpush
        root, watch = h.job_dir("ckpt-lightning-lost-")
        tmp = os.path.join(root, "tmp")
        os.mkdir(tmp)
        repo = f"{h.USER}/lightning-lost-{os.getpid()}"
        d, sock = h.socket_daemon(watch, repo, self.hub, 200)
        with ckptpush.Client(socket_path=sock, timeout=20) as client:
            client.pause()
        lt = Lightning(watch, tmp, random.Random(5))
        lt.save(0, 50)
        name = f"{CKPT_DIR}/epoch=0-step=50.ckpt"
        d.wait_event("sealed", timeout=20, ckpt=name)
        d.wait_event("push-state", timeout=20, ckpt=name, state="waiting")
        pins = os.path.join(watch, ".ckptpush", "pins")
        deadline = time.monotonic() + 10
        while True:  # both files linked
            found = [os.path.join(dp, f) for dp, _, fs in os.walk(pins) for f in fs]
            if len(found) == 2:
                break
            self.assertLess(time.monotonic(), deadline, f"pins: {found}\n{d.tail()}")
            time.sleep(0.05)
        d.stop(signal.SIGKILL)
        os.unlink(os.path.join(watch, name))  # rotation, and its pin gone with it
        os.unlink([p for p in found if p.endswith("epoch=0-step=50.ckpt")][0])

        again = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                         args=["--quiet-ms", "200"])
        com = again.wait_event("committed", timeout=30, ckpt=name)[0]["kv"]
        self.assertEqual(again.stop(signal.SIGTERM, 30), 0, again.tail())
        self.assertEqual(com.get("message"), "Training in progress, epoch 0, step 50")
        self.assertEqual(com.get("files"), "1")
        self.assertEqual(len(again.events("file-lost", ckpt=name)), 1, again.tail())
        self.assertEqual(again.events("push-failed"), [], again.tail())
        self.assertEqual(again.events("sealed"), [], again.tail())  # recovered, not re-detected
        tree = self.hub.tree(repo)
        self.assertNotIn(name, tree)
        self.assertEqual(self.hub.sha256_at(repo, "main", f"{CKPT_DIR}/last.ckpt"),
                         lt.saves[0][3])


if __name__ == "__main__":
    unittest.main(verbosity=2)
