"""ckptpushd driven only through its control socket, by the C client (ckptpush) and the Python
client (client/python): status while checkpoints wait and push, push of a path outside the
watched tree, pause/resume, flush, events, final --wait, shutdown; garbage, truncated,
oversized and other-user messages leave the daemon serving.

Needs ckptpushd with --socket (CKPTPUSHD) and ckptpush (CKPTPUSH, or build/client/ckptpush)."""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ckpt_harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
import ckptpush  # noqa: E402

TRACE = "hf-trainer-5.17-save-steps.jsonl"
QUIET_MS = 200


def raw_lines(sock, n, timeout=10.0):
    """Read n lines from a raw socket (fewer if it closes); returns (objects, closed)."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        while b"\n" in buf and len(out) < n:
            line, buf = buf.split(b"\n", 1)
            out.append(json.loads(line))
        if len(out) >= n:
            break
        chunk = sock.recv(65536)
        if not chunk:
            return out, True
        buf += chunk
    return out, False


def other_user_refused(path):
    """Connects as uid 65534 (keeping CAP_DAC_OVERRIDE to pass the 0700 directory) in a forked
    child; True when the daemon answered 'forbidden' and closed. None when we cannot switch."""
    if os.geteuid() != 0:
        return None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_KEEPCAPS, CAP_DAC_OVERRIDE = 8, 1
            if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
                os._exit(3)
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
            data = (ctypes.c_uint32 * 6)(1 << CAP_DAC_OVERRIDE, 1 << CAP_DAC_OVERRIDE, 0, 0, 0, 0)
            if libc.capset(hdr, data) != 0:
                os._exit(3)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            lines, closed = raw_lines(s, 2, 10)
            ok = (len(lines) == 1 and lines[0]["error"]["code"] == "forbidden" and closed)
            os.write(w, json.dumps(lines).encode())
            code = 0 if ok else 1
        except BaseException:  # noqa: BLE001 - the child must never return into the test
            code = 4
        os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    os.close(r)
    code = os.waitstatus_to_exitcode(status)
    if code == 3:
        return None
    return code == 0


class IpcClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ckptpush = h.client_path()
        cls.hub = h.Hub()
        root, cls.watch = h.job_dir("ckpt-ipc-")
        cls.repo = f"{h.USER}/ipc-run-{os.getpid()}"
        cls.daemon, cls.sock = h.socket_daemon(cls.watch, cls.repo, cls.hub, QUIET_MS)
        cls.py = ckptpush.Client(socket_path=cls.sock, timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.py.close()
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def cli(self, *args, timeout=60):
        r = subprocess.run([self.ckptpush, "--socket", self.sock, *args], capture_output=True,
                           text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def cli_json(self, *args):
        rc, out, err = self.cli("--json", *args)
        self.assertEqual(rc, 0, f"ckptpush {args}: {err}\n{self.daemon.tail()}")
        return json.loads(out)

    def wait_status(self, pred, timeout=30.0, what="status"):
        deadline = time.monotonic() + timeout
        while True:
            st = self.cli_json("status")
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never seen; last status {st}\n" + self.daemon.tail())
            time.sleep(0.1)

    def assert_serving(self):
        rc, out, err = self.cli("status")
        self.assertEqual(rc, 0, err)
        self.assertIn("daemon:", out)

    def test_1_protocol_abuse(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        s.sendall(b"hello\n" + b"x" * (100 * 1024) + b"\n" +
                  b'{"v":1,"id":3,"type":"nope"}\n{"v":1,"id":4,"type":"push","path":1}\n'
                  b'{"v":1,"id":5,"type":"status"}\n')
        lines, closed = raw_lines(s, 5)
        self.assertFalse(closed)
        self.assertEqual([x.get("error", {}).get("code") for x in lines],
                         ["bad-json", "too-large", "unknown-type", "bad-request", None])
        self.assertIn("'path'", lines[3]["error"]["message"])
        self.assertTrue(lines[4]["ok"])
        self.assertEqual(lines[4]["id"], 5)
        # Truncated request, then end of input: answered, then closed.
        s.sendall(b'{"v":1,"type":"sta')
        s.shutdown(socket.SHUT_WR)
        lines, closed = raw_lines(s, 2)
        self.assertEqual(lines[0]["error"]["code"], "bad-json")
        self.assertTrue(closed)
        s.close()
        # Wrong version: answered naming both versions, then closed.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        s.sendall(b'{"v":7,"id":1,"type":"status"}\n{"v":1,"id":2,"type":"status"}\n')
        lines, closed = raw_lines(s, 2)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["error"]["code"], "bad-version")
        self.assertIn("7", lines[0]["error"]["message"])
        self.assertIn("1", lines[0]["error"]["message"])
        self.assertTrue(closed)
        s.close()
        # A connection that dies mid-line.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        s.sendall(b'{"v":1,"type":"status"')
        s.close()
        refused = other_user_refused(self.sock)
        if refused is not None:
            self.assertTrue(refused, "another user was not refused")
            # the log line may still be on its way to our reader thread
            self.daemon.wait_event("ipc-peer-refused", timeout=10)
        self.assert_serving()
        self.assertIsNone(self.daemon.proc.poll())

    def test_2_push_pause_resume_final(self):
        # Paused: checkpoints are sealed and wait, status shows them.
        rc, out, err = self.cli("pause")
        self.assertEqual((rc, out.strip()), (0, "paused"), err)
        self.assertTrue(self.py.status()["daemon"]["paused"])
        h.replay(h.trace_path(TRACE), self.watch, speed=0.2, seed=3)
        st = self.wait_status(lambda s: any(c["state"] == "waiting" for c in s["checkpoints"]),
                              what="a waiting checkpoint")
        self.assertEqual(st["daemon"]["state"], "paused")
        waiting = [c for c in st["checkpoints"] if c["state"] == "waiting"]
        self.assertTrue(all(c["files"] > 0 for c in waiting), waiting)
        rc, out, err = self.cli("status")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"checkpoint-\d+\s+waiting")
        self.assertEqual(self.py.status()["daemon"]["state"], "paused")

        # A path outside the watched tree, pushed on request.
        extra = os.path.join(h.tempdir("ckpt-extra-"), "eval-results")
        os.mkdir(extra)
        with open(os.path.join(extra, "scores.json"), "w") as f:
            json.dump({"accuracy": 0.5}, f)
        rc, out, err = self.cli("push", extra)
        self.assertEqual(rc, 0, err)
        self.assertIn(extra, out)
        self.daemon.wait_event("push-requested", timeout=10, path=extra)

        # Events, while resumed pushes run; status polled meanwhile.
        events = []

        def follow():
            try:
                for ev in self.py.subscribe(timeout=60):
                    events.append(ev)
                    if ev["event"] == "committed" and ev.get("name") == "eval-results":
                        return
            except ckptpush.CkptpushError:
                pass

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        time.sleep(0.3)  # the subscription is in before anything moves
        rc, out, err = self.cli("resume")
        self.assertEqual((rc, out.strip()), (0, "resumed"), err)
        states = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = self.py.status()
            states.update(c["state"] for c in st["checkpoints"])
            if st["daemon"]["state"] == "idle":
                break
            time.sleep(0.02)
        rc, out, err = self.cli("flush", "--timeout", "60", timeout=90)
        self.assertEqual((rc, out.strip()), (0, "flushed"), err + self.daemon.tail())
        t.join(30)
        kinds = [e["event"] for e in events]
        self.assertIn("committed", kinds, events)
        self.assertTrue(states & {"waiting", "pinning", "uploading"}, states)
        st = self.py.status()
        names = {c["name"]: c for c in st["checkpoints"]}
        self.assertEqual(names["eval-results"]["state"], "committed", names)
        self.assertRegex(names["eval-results"]["commit"], r"^[0-9a-f]{40}$")
        tree = self.hub.tree(self.repo)
        self.assertTrue(any(p.endswith("scores.json") for p in tree), sorted(tree))

        # final --wait: answered with the commit once the end-of-training push is done.
        metrics = os.path.join(h.tempdir("ckpt-metrics-"), "m.json")
        with open(metrics, "w") as f:
            json.dump({"eval_loss": 0.25}, f)
        rc, out, err = self.cli("final", "--wait", "--timeout", "60", "--metrics-json", metrics,
                                timeout=90)
        self.assertEqual(rc, 0, err + self.daemon.tail())
        self.assertRegex(out.strip(), r"^committed [0-9a-f]{40}$")
        r = self.py.final(metrics={"eval_loss": 0.25}, hparams={"lr": 1e-4}, wait=True,
                          timeout=60)
        self.assertRegex(r.get("commit") or "", r"^[0-9a-f]{40}$")
        self.assert_serving()

    def test_3_usage_and_shutdown(self):
        rc, _, err = self.cli("push")
        self.assertEqual(rc, 2)
        self.assertIn("usage:", err)
        rc, out, _ = self.cli("final", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("--wait", out)
        rc, out, err = self.cli("shutdown")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.daemon.proc.wait(60), 0, self.daemon.tail())
        self.assertFalse(os.path.exists(self.sock))
        rc, _, err = self.cli("status")
        self.assertEqual(rc, 3, err)
        with self.assertRaises(ckptpush.DaemonNotRunning):
            ckptpush.Client(socket_path=self.sock).status()


if __name__ == "__main__":
    unittest.main(verbosity=2)
