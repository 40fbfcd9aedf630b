"""No checkpoint ends unpushed without counting as a failure. A checkpoint rotation deletes
before the daemon could pin any of its files (pin-lost on every file) is lost: the daemon says so
('lost', an error), and it counts as failed everywhere a person or a script looks: the exit code
(1, README "Exit codes"), `ckptpush status` (its JSON: daemon.failed and the checkpoint's state
and error), the metrics file (ckptpush_checkpoints_total{result="failed"}) and the summary line
('stopped ... failed=1'). It used to end skipped, with exit 0 and failed=0.

How the loss is made, without timing luck: the checkpoint folder is made first and the test waits
until the daemon's inotify instance watches it (listed in /proc/PID/fdinfo), so every file event
inside it is seen; then the daemon is stopped (SIGSTOP), the whole checkpoint is written and
deleted, and the daemon continued (SIGCONT): it reads the creates, the closes and the deletes at
once, and each link of a pin finds the file gone."""

import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
import ckptpush  # noqa: E402

EXIT_PUSH_FAILED = 1
EXIT_WRAPPED_PUSH_FAILED = 7


def watched_inodes(pid):
    """Inode numbers the process's inotify instances watch (proc(5), /proc/PID/fdinfo)."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("inotify "):
                        fields = dict(kv.split(":", 1) for kv in line.split()[1:] if ":" in kv)
                        out.add(int(fields["ino"], 16))
        except OSError:
            continue
    return out


def metrics(path):
    with open(path, encoding="utf-8") as f:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in f.read().splitlines() if line and not line.startswith("#")}


class SilentLoss(unittest.TestCase):
    def test_a_lost_checkpoint_counts_as_failed(self):
        hub = h.Hub()
        self.addCleanup(hub.stop)
        root, watch = h.job_dir("ckpt-lost-")
        repo = f"{h.USER}/lost-{os.getpid()}"
        sock = os.path.join(root, "ctl.sock")
        prom = os.path.join(root, "ckptpush.prom")
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "300", "--socket", sock, "--metrics-path", prom])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        rng = random.Random(5)
        h.write_checkpoint(watch, 1, 4096, rng)
        d.wait_event("committed", timeout=30, ckpt="checkpoint-1")

        ckpt = os.path.join(watch, "checkpoint-2")
        os.mkdir(ckpt)
        deadline = time.monotonic() + 10
        while os.stat(ckpt).st_ino not in watched_inodes(d.proc.pid):
            self.assertLess(time.monotonic(), deadline, "the daemon never watched the folder\n" +
                            d.tail())
            time.sleep(0.02)
        d.proc.send_signal(signal.SIGSTOP)
        try:  # a save and its rotation while the daemon cannot run
            for name, data in (("model.safetensors", rng.randbytes(4096)),
                               ("config.json", b'{"step": 2}\n'),
                               ("trainer_state.json", b'{"global_step": 2}\n')):
                with open(os.path.join(ckpt, name), "wb") as f:
                    f.write(data)
            for name in os.listdir(ckpt):
                os.unlink(os.path.join(ckpt, name))
            os.rmdir(ckpt)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        lost = d.wait_event("lost", timeout=30, ckpt="checkpoint-2")[0]
        self.assertEqual(lost["level"], "error", lost["line"])
        self.assertTrue(d.events("pin-lost"), d.tail())

        with ckptpush.Client(socket_path=sock, timeout=20) as client:
            deadline = time.monotonic() + 10  # its pins are released, then it ends failed
            while True:
                st = client.status()
                if [c for c in st["checkpoints"]
                        if c["name"] == "checkpoint-2" and c["state"] == "failed"]:
                    break
                self.assertLess(time.monotonic(), deadline, st)
                time.sleep(0.05)
        self.assertEqual(st["daemon"]["failed"], 1, st["daemon"])
        self.assertEqual(st["daemon"]["committed"], 1, st["daemon"])
        c2 = [c for c in st["checkpoints"] if c["name"] == "checkpoint-2"]
        self.assertEqual([c["state"] for c in c2], ["failed"], st["checkpoints"])
        self.assertIn("gone before it could be pinned", c2[0]["error"])

        deadline = time.monotonic() + 10
        while metrics(prom).get('ckptpush_checkpoints_total{result="failed"}') != 1:
            self.assertLess(time.monotonic(), deadline, metrics(prom))
            time.sleep(0.1)
        self.assertEqual(metrics(prom)['ckptpush_checkpoints_total{result="skipped"}'], 0)

        rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, EXIT_PUSH_FAILED, d.tail())
        stopped = d.events("stopped")[-1]["kv"]
        self.assertEqual((stopped["exit"], stopped["failed"], stopped["committed"]),
                         ("1", "1", "1"), d.tail())
        self.assertEqual(metrics(prom)['ckptpush_checkpoints_total{result="failed"}'], 1)
        titles = [h.commit_title(c) for c in hub.commits(repo)]
        self.assertNotIn("Training in progress, step 2", titles)
    def test_a_drain_cut_short_says_what_is_left(self):
        """Run mode: the command succeeds, its checkpoint cannot be pushed within
        --drain-timeout (--max-rate is slow). The exit code is the one of run mode for a push
        that did not finish (7, README "Exit codes"), not 1, and the summary line says that a
        checkpoint and the end-of-training commit are left ('pending=2'), where it used to say failed=0 and nothing more."""
        hub = h.Hub()
        self.addCleanup(hub.stop)
        _, watch = h.job_dir("ckpt-cut-")
        repo = f"{h.USER}/cut-{os.getpid()}"
        script = ("import os, sys\n"
                  "d = os.path.join(sys.argv[1], 'checkpoint-1')\n"
                  "os.mkdir(d)\n"
                  "open(os.path.join(d, 'model.safetensors'), 'wb').write(os.urandom(3 << 20))\n"
                  "open(os.path.join(d, 'config.json'), 'w').write('{}')\n"
                  "open(os.path.join(d, 'trainer_state.json'), 'w').write('{}')\n")
        d = h.Daemon(watch, repo=repo, endpoint=hub.url, log_level="info",
                     args=["--quiet-ms", "200", "--max-rate", "200000", "--drain-timeout", "2",
                           "run", "--", sys.executable, "-c", script, watch])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        rc = d.proc.wait(timeout=30)
        d.stop()
        self.assertTrue(d.events("drain-timeout"), d.tail())
        self.assertEqual(rc, EXIT_WRAPPED_PUSH_FAILED, d.tail())
        stopped = d.events("stopped")[-1]["kv"]
        # the checkpoint, and the end-of-training commit (the model card) behind it: also when
        # the command ended before the hub was known usable (its card used to be forgotten then)
        self.assertEqual((stopped["exit"], stopped["pending"]), ("7", "2"), d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
