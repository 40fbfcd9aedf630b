"""push's "message": the commit title a client chooses for the checkpoint it pushes, as Trainer
titles its own pushes ("Training in progress, epoch N"). Against a real ckptpushd and the test
hub: the C client's --message on a checkpoint the watcher sealed and that waits (paused), the
Python client's message on a path outside the watched tree, a title that comes after the commit
(logged as ignored, the history unchanged) or while the upload runs (used), and titles and strings the daemon must refuse
(newline, too long, empty, an escaped NUL in any string) without pushing anything.

Needs ckptpushd with --socket (CKPTPUSHD) and ckptpush (CKPTPUSH, or build/client/ckptpush)."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ckpt_harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
import ckptpush  # noqa: E402

# Long enough that only a push (or the pause below) decides when a checkpoint is sealed.
QUIET_MS = 3000
MAX_MESSAGE = 200  # daemon/ipc_proto.h IPC_MAX_PUSH_MESSAGE


def raw_request(sock_path, line):
    """One request line on a fresh connection; returns the answer object."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        s.sendall(line + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before an answer to {line!r}")
            buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])
    finally:
        s.close()


class PushMessage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ckptpush = h.client_path()
        cls.hub = h.Hub()
        _, cls.watch = h.job_dir("ckpt-msg-")
        cls.repo = f"{h.USER}/push-message-{os.getpid()}"
        cls.daemon, cls.sock = h.socket_daemon(cls.watch, cls.repo, cls.hub, QUIET_MS)
        cls.py = ckptpush.Client(socket_path=cls.sock, timeout=20)
        cls.rng = random.Random(7)

    @classmethod
    def tearDownClass(cls):
        cls.py.close()
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def cli(self, *args):
        r = subprocess.run([self.ckptpush, "--socket", self.sock, *args], capture_output=True,
                           text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def titles(self):
        return [h.commit_title(c) for c in self.hub.commits(self.repo)]

    def test_1_cli_message_on_waiting_checkpoint(self):
        # Paused: the push seals the checkpoint and it waits, so the title reaches an item that
        # is queued but not yet planned, the usual case when a Trainer callback pushes.
        rc, _, err = self.cli("pause")
        self.assertEqual(rc, 0, err)
        h.write_checkpoint(self.watch, 10, 4096, self.rng)
        ckpt = os.path.join(self.watch, "checkpoint-10")
        title = "Training in progress, epoch 1"
        rc, out, err = self.cli("push", ckpt, "--message", title)
        self.assertEqual(rc, 0, f"{err}\n{self.daemon.tail()}")
        self.assertIn("queued", out)
        self.daemon.wait_event("push-message", timeout=10, ckpt="checkpoint-10", message=title)
        rc, _, err = self.cli("resume")
        self.assertEqual(rc, 0, err)
        done = self.daemon.wait_event("committed", timeout=30, ckpt="checkpoint-10")
        self.assertEqual(done[0]["kv"].get("message"), title)
        self.assertEqual(self.titles()[0], title)
        self.assertEqual(self.daemon.events("push-message-ignored"), [])

    def test_2_python_message_outside_tree(self):
        out = h.tempdir("ckpt-msg-extra-")
        path = os.path.join(out, "weights.safetensors")
        with open(path, "wb") as f:
            f.write(os.urandom(2048))
        title = "Training in progress, step 70"
        reply = self.py.push(path, message=title)
        self.assertTrue(reply.get("queued"), reply)
        self.daemon.wait_event("committed", timeout=30, ckpt="weights.safetensors")
        self.daemon.wait_event("push-message", timeout=5, ckpt="weights.safetensors",
                               message=title)
        self.assertEqual(self.titles()[0], title)

    def test_3_too_late_is_ignored(self):
        before = self.titles()
        self.assertIn("Training in progress, epoch 1", before)
        ckpt = os.path.join(self.watch, "checkpoint-10")
        rc, _, err = self.cli("push", ckpt, "--message", "A title that comes too late")
        self.assertEqual(rc, 0, err)  # the push is answered: the checkpoint is pushed already
        ignored = self.daemon.wait_event("push-message-ignored", timeout=10,
                                         ckpt="checkpoint-10")
        self.assertIn("committed", ignored[0]["kv"].get("reason", ""))
        rc, _, err = self.cli("flush", "--timeout", "30")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.titles(), before)

    def test_4_message_while_uploading(self):
        # The Hub answers the preupload slowly: the title comes while the upload runs, before
        # its commit is asked for, and still names that commit.
        self.hub.fault({"route": "preupload", "count": 1, "slow_bytes_per_s": 100})
        h.write_checkpoint(self.watch, 30, 4096, self.rng)
        ckpt = os.path.join(self.watch, "checkpoint-30")
        rc, _, err = self.cli("push", ckpt)
        self.assertEqual(rc, 0, err)
        self.daemon.wait_event("push-state", timeout=10, ckpt="checkpoint-30", state="uploading")
        title = "Training in progress, epoch 3"
        rc, _, err = self.cli("push", ckpt, "--message", title)
        self.assertEqual(rc, 0, err)
        self.daemon.wait_event("push-message", timeout=10, ckpt="checkpoint-30", message=title)
        self.daemon.wait_event("committed", timeout=30, ckpt="checkpoint-30")
        self.assertEqual(self.titles()[0], title)

    def test_5_bad_messages_refused(self):
        # Outside the watched tree: only a push could push it, and every push below is refused.
        out = h.tempdir("ckpt-msg-refused-")
        h.write_checkpoint(out, 20, 4096, self.rng)
        ckpt = os.path.join(out, "checkpoint-20")
        before = len(self.hub.commits(self.repo))

        # The C client refuses before connecting, with the daemon's rule.
        for bad, why in (("two\nlines", "control characters"), ("", "empty"),
                         ("x" * (MAX_MESSAGE + 1), f"at most {MAX_MESSAGE} bytes")):
            rc, _, err = self.cli("push", ckpt, "--message", bad)
            self.assertEqual(rc, 2, err)
            self.assertIn(why, err)
        rc, _, err = self.cli("push", ckpt, "--message")
        self.assertEqual(rc, 2, err)

        # The daemon refuses the same, naming the field, whatever client sent it.
        def push_line(**fields):
            return json.dumps({"v": 1, "id": 1, "type": "push", **fields}).encode()

        for fields, want in (
                ({"path": ckpt, "message": "two\nlines"}, "control characters"),
                ({"path": ckpt, "message": "x" * (MAX_MESSAGE + 1)},
                 f"at most {MAX_MESSAGE} bytes"),
                ({"path": ckpt, "message": ""}, "empty"),
                ({"path": ckpt, "message": 3}, "must be a string")):
            ans = raw_request(self.sock, push_line(**fields))
            self.assertFalse(ans["ok"], ans)
            self.assertEqual(ans["error"]["code"], "bad-request", ans)
            self.assertIn("'message'", ans["error"]["message"])
            self.assertIn(want, ans["error"]["message"])
        # json.dumps escapes NUL as \u0000, which cJSON would cut the string at.
        for fields in ({"path": ckpt, "message": "epoch 1\x00; rm"},
                       {"path": ckpt + "\x00/../elsewhere"}):
            ans = raw_request(self.sock, push_line(**fields))
            self.assertEqual(ans["error"]["code"], "bad-request", ans)
            self.assertIn("NUL", ans["error"]["message"])
        with self.assertRaises(ckptpush.ProtocolError) as cm:
            self.py.push(ckpt, message="x" * (MAX_MESSAGE + 1))
        self.assertEqual(cm.exception.code, "bad-request")

        self.assertIn("daemon:", self.cli("status")[1])  # every answer above is in the log now
        for event in ("ipc-push", "push-requested"):
            self.assertEqual([r for r in self.daemon.events(event)
                              if r["kv"].get("path", "").startswith(ckpt)], [])
        self.assertEqual(len(self.hub.commits(self.repo)), before)
        self.assertIn("daemon:", self.cli("status")[1])
        self.assertIsNone(self.daemon.proc.poll())


if __name__ == "__main__":
    unittest.main(verbosity=2)
