"""No silent loss, no silent skip (issue 14): what a new user met on main, each against the real
daemon, the real test hub and real files.

- The watched directory deleted and made again (`rm -rf out; mkdir out`), or moved away
  (`mv out out.old`) and replaced: the daemon logs root-lost, says so in status and metrics,
  watches the new directory (root-rewatched), pushes what is complete there; a checkpoint whose
  pins went with the deleted directory fails loudly (push-failed, status, exit 1); one whose
  pins moved along is pushed from them.
- A FIFO named model.safetensors in a checkpoint fails that checkpoint naming the file (never a
  commit of the rest), whether it was there before the daemon started or made while it ran.
- Symlinks (to a file inside, to a file outside, to a directory) and a hidden file are left out,
  each named in a `skipped` line and counted in status and metrics; a writer's temporary is not.
- A name with a control character is refused up front (skipped reason=bad-name), the rest of
  the checkpoint is committed.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402


def write_ckpt(root, step, extra=None, model=True):
    """checkpoint-STEP/ with model.safetensors, config.json, then trainer_state.json last;
    extra(dir) adds files before the marker."""
    d = os.path.join(root, f"checkpoint-{step}")
    os.mkdir(d)
    if model:
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(os.urandom(4096))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"step": %d}\n' % step)
    if extra is not None:
        extra(d)
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d}\n' % step)
    return d


def read_metrics(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class NoSilentLoss(h.HubTestCase):
    def start(self, watch, *args, strategy="all_checkpoints"):
        repo = f"{h.USER}/quiet-{os.getpid()}-{self._testMethodName[5:]}"
        self.sock = os.path.join(h.tempdir("ckpt-sock-"), "job.sock")
        self.prom = os.path.join(h.tempdir("ckpt-prom-"), "ckptpush.prom")
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url,
                     args=["--quiet-ms", "200", "--socket", self.sock, "--strategy", strategy,
                           "--metrics-path", self.prom, *args])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=30)
        return d, repo

    def client(self, *args, check=True):
        p = subprocess.run([h.client_path(), "--socket", self.sock, *args], capture_output=True,
                           text=True, timeout=30)
        if check:
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p

    def status(self):
        return json.loads(self.client("status", "--json").stdout)["daemon"]

    def wait_metric(self, name, value, timeout=10.0):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            if os.path.exists(self.prom):
                got = read_metrics(self.prom).get(name)
                if got == value:
                    return
            time.sleep(0.1)
        self.fail(f"metric {name}: {got}, expected {value}")

    # ---- 1: the watched directory deleted or moved away, and made again -----------------------

    def test_root_deleted_and_made_again(self):
        _, watch = h.job_dir("ckpt-rootdel-")
        d, repo = self.start(watch)
        write_ckpt(watch, 10)
        d.wait_event("committed", ckpt="checkpoint-10", timeout=30)
        # checkpoint-20 is sealed and pinned, waiting (paused): rm -rf takes its pins along.
        self.client("pause")
        write_ckpt(watch, 20)
        d.wait_event("sealed", ckpt="checkpoint-20", timeout=30)
        shutil.rmtree(watch)
        lost = d.wait_event("root-lost", timeout=10)[0]
        self.assertEqual(lost["kv"]["how"], "deleted")
        self.assertEqual(lost["level"], "warn")
        failed = d.wait_event("push-failed", ckpt="checkpoint-20", timeout=10)[0]
        self.assertEqual(failed["kv"]["kind"], "root-lost")
        d.wait_event("push-state", ckpt="checkpoint-20", state="failed", timeout=10)
        st = self.status()
        self.assertTrue(st["root_missing"], st)
        self.assertEqual(st["failed"], 1, st)
        self.assertIn("watched directory is missing", self.client("status").stdout)
        self.wait_metric("ckptpush_watch_root_missing", 1)

        os.mkdir(watch)
        back = d.wait_event("root-rewatched", timeout=10)[0]
        self.assertEqual(back["kv"]["staging"], "new")
        self.assertFalse(self.status()["root_missing"])
        self.wait_metric("ckptpush_watch_root_missing", 0)
        self.client("resume")
        # The new run starts over: the same names again, pushed again.
        new10 = write_ckpt(watch, 10)
        d.wait_event("committed", ckpt="checkpoint-10", count=2, timeout=30)
        write_ckpt(watch, 30)
        d.wait_event("committed", ckpt="checkpoint-30", timeout=30)
        tree = self.hub.tree(repo)
        self.assertIn("checkpoint-30/model.safetensors", tree)
        self.assertNotIn("checkpoint-20/model.safetensors", tree)
        with open(os.path.join(new10, "model.safetensors"), "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(self.hub.sha256_at(repo, "main", "checkpoint-10/model.safetensors"), want)
        # The staging directory and the journal are made again in the new root.
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(watch, ".ckptpush", "journal")):
            self.assertLess(time.monotonic(), deadline, "no journal in the new root")
            time.sleep(0.1)
        self.wait_metric('ckptpush_checkpoints_total{result="failed"}', 1)
        self.assertEqual(d.stop(signal.SIGTERM, 30), 1, d.tail())

    def test_root_moved_away_and_replaced(self):
        root, watch = h.job_dir("ckpt-rootmv-")
        d, repo = self.start(watch)
        self.client("pause")
        write_ckpt(watch, 10)
        d.wait_event("sealed", ckpt="checkpoint-10", timeout=30)
        # The new directory arrives whole, with a complete checkpoint already in it.
        fresh = os.path.join(root, "output.new")
        os.mkdir(fresh)
        write_ckpt(fresh, 20)
        os.rename(watch, os.path.join(root, "output.old"))
        lost = d.wait_event("root-lost", timeout=10)[0]
        self.assertEqual(lost["kv"]["how"], "moved")
        self.assertEqual(lost["kv"]["to"], os.path.join(root, "output.old"))
        self.assertTrue(self.status()["root_missing"])
        os.rename(fresh, watch)
        back = d.wait_event("root-rewatched", timeout=10)[0]
        self.assertEqual(back["kv"]["staging"], "moved-back")
        self.client("resume")
        d.wait_event("committed", ckpt="checkpoint-10", timeout=30)
        d.wait_event("committed", ckpt="checkpoint-20", timeout=30)
        tree = self.hub.tree(repo)
        self.assertIn("checkpoint-10/model.safetensors", tree)
        self.assertIn("checkpoint-20/model.safetensors", tree)
        self.assertEqual(d.events("push-failed"), [])
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    # ---- 2: a FIFO where a file should be ----------------------------------------------------

    def check_fifo_fails(self, d, repo):
        failed = d.wait_event("push-failed", ckpt="checkpoint-5", timeout=30)[0]
        self.assertEqual(failed["kv"]["kind"], "unpushable", d.tail())
        self.assertIn("model.safetensors", failed["kv"]["reason"])
        self.assertIn("FIFO", failed["kv"]["reason"])
        self.assertEqual(d.events("committed", ckpt="checkpoint-5"), [])
        # Counted once the failure is journaled, a moment after its log line.
        d.wait_event("push-state", ckpt="checkpoint-5", state="failed", timeout=10)
        self.assertEqual(self.status()["failed"], 1)
        tree = self.hub.tree(repo) if self.repo_exists(repo) else {}
        self.assertFalse([p for p in tree if p.startswith("checkpoint-5/")], tree)
        self.assertEqual(d.stop(signal.SIGTERM, 30), 1, d.tail())

    def repo_exists(self, repo):
        status, _, _ = self.hub.request("GET", f"/api/models/{repo}")
        return status == 200

    def test_fifo_there_before_start(self):
        watch = h.tempdir("ckpt-fifo1-")
        write_ckpt(watch, 5, model=False,
                   extra=lambda d: os.mkfifo(os.path.join(d, "model.safetensors")))
        d, repo = self.start(watch)
        self.check_fifo_fails(d, repo)

    def test_fifo_made_while_running(self):
        watch = h.tempdir("ckpt-fifo2-")
        d, repo = self.start(watch)
        write_ckpt(watch, 5, model=False,
                   extra=lambda d: os.mkfifo(os.path.join(d, "model.safetensors")))
        self.check_fifo_fails(d, repo)

    # ---- 3: symlinks and hidden files are left out, and said so ------------------------------

    def test_symlinks_and_hidden_files_named(self):
        watch = h.tempdir("ckpt-skip-")
        outside = os.path.join(h.tempdir("ckpt-outside-"), "blob.bin")
        with open(outside, "wb") as f:
            f.write(b"outside")
        os.mkdir(os.path.join(watch, "common"))

        def extra(dd):
            os.symlink("model.safetensors", os.path.join(dd, "pytorch_model.bin"))
            os.symlink(outside, os.path.join(dd, "outside.bin"))
            os.symlink("../common", os.path.join(dd, "shared-dir"))
            with open(os.path.join(dd, ".notes"), "w") as f:
                f.write("hidden\n")
            with open(os.path.join(dd, ".tmpab12cd"), "w") as f:
                f.write("a writer's temporary\n")

        # One checkpoint there before the start (found by the scan), one made while running.
        write_ckpt(watch, 5, extra=extra)
        d, repo = self.start(watch)
        d.wait_event("committed", ckpt="checkpoint-5", timeout=30)
        write_ckpt(watch, 6, extra=extra)
        d.wait_event("committed", ckpt="checkpoint-6", timeout=30)
        # a link inside the checkpoint is pushed with the bytes it names; one leaving it is not
        expect = {"outside.bin": "symlink",
                  "shared-dir": "symlink-dir", ".notes": "hidden"}
        for step in (5, 6):
            got = {r["kv"]["path"].split("/", 1)[1]: r["kv"]["reason"]
                   for r in d.events("skipped", ckpt=f"checkpoint-{step}") if "path" in r["kv"]}
            self.assertEqual(got, expect, f"checkpoint-{step}:\n" + d.tail())
            self.assertEqual({r["level"] for r in d.events("skipped", ckpt=f"checkpoint-{step}")
                              if "path" in r["kv"]}, {"warn"})
        tree = self.hub.tree(repo)
        for step in (5, 6):
            self.assertEqual(sorted(p for p in tree if p.startswith(f"checkpoint-{step}/")),
                             [f"checkpoint-{step}/{n}" for n in
                              ("config.json", "model.safetensors", "pytorch_model.bin",
                               "trainer_state.json")])
            self.assertEqual(self.hub.sha256_at(repo, "main", f"checkpoint-{step}/pytorch_model.bin"),
                             self.hub.sha256_at(repo, "main", f"checkpoint-{step}/model.safetensors"))
        st = self.status()
        self.assertEqual(st["files_skipped"], 6, st)
        self.assertIn("6 files skipped", self.client("status").stdout)
        self.wait_metric("ckptpush_files_skipped_total", 6)
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())

    # ---- 4: a name the Hub refuses -----------------------------------------------------------

    def test_control_character_name_refused_rest_pushed(self):
        watch = h.tempdir("ckpt-badname-")
        d, repo = self.start(watch)

        def extra(dd):
            for name in ("bad\nname.json", "ctl\x01.txt"):
                with open(os.path.join(dd, name), "w") as f:
                    f.write("x\n")

        write_ckpt(watch, 5, extra=extra)
        d.wait_event("committed", ckpt="checkpoint-5", timeout=30)
        got = sorted(r["kv"]["path"] for r in d.events("skipped", reason="bad-name"))
        self.assertEqual(got, ["checkpoint-5/bad\\x0aname.json", "checkpoint-5/ctl\\x01.txt"])
        tree = self.hub.tree(repo)
        self.assertEqual(sorted(p for p in tree if p.startswith("checkpoint-5/")),
                         ["checkpoint-5/config.json", "checkpoint-5/model.safetensors",
                          "checkpoint-5/trainer_state.json"])
        self.assertEqual(self.status()["files_skipped"], 2)
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
