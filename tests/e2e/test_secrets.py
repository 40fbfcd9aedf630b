"""The token goes to the Hub's Authorization header and nowhere else. A full Trainer replay push
with a known token, a push refused with an injected 401, status over the control socket (raw and
`ckptpush status --json`) and the metrics file; then every place the daemon writes is searched
for the token: its stderr, the staging directory (every file, as bytes: pins, journal), the
status answers, the metrics file, its argv, and the hub's request log (no Authorization on a
presigned URL, the token in no path or query).

Run mode: the daemon never adds the token to the wrapped command's environment. A token read
from a file (--token-path, HF_TOKEN_PATH, LoadCredential) stays out of it; HF_TOKEN set by the
user in the environment is inherited like every other variable, since the trainer may need it
(Trainer push_to_hub, gated base model downloads) and already had it."""

import json
import os
import signal
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

SECRET = "hf_SECRETsecretSECRET1234567890"
TRACE = "hf-trainer-5.17-save-steps.jsonl"


def files_containing(root, needle):
    found = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            try:
                with open(p, "rb") as f:
                    if needle in f.read():
                        found.append(p)
            except OSError:
                pass
    return found


class Secrets(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(users=(f"{h.USER}:{SECRET}",),
                        args=["--multipart-threshold", "500000", "--chunk-size", "262144"])
        root = h.tempdir("ckpt-secrets-")
        cls.root = root
        cls.watch = os.path.join(root, "output")
        os.mkdir(cls.watch)
        cls.sock = os.path.join(root, "ctl.sock")
        cls.metrics = os.path.join(root, "ckptpush.prom")
        cls.repo = f"{h.USER}/secrets-{os.getpid()}"
        cls.daemon = h.Daemon(cls.watch, repo=cls.repo, endpoint=cls.hub.url, token=SECRET,
                              args=["--quiet-ms", "200", "--transfer", "lfs", "--socket", cls.sock,
                                    "--metrics-path", cls.metrics])
        cls.daemon.wait_event("ready", timeout=30)
        with open(f"/proc/{cls.daemon.proc.pid}/cmdline", "rb") as f:
            cls.cmdline = f.read()
        # The first checkpoint's preupload is refused: a failed push with the Hub's 401 message.
        cls.hub.fault({"route": "preupload", "status": 401, "count": 1})
        h.replay(h.trace_path(TRACE), cls.watch, speed=0.2, seed=3)
        cls.daemon.wait_event("committed", timeout=90, ckpt="")
        cls.status_raw = cls.raw_status()
        r = subprocess.run([h.client_path(), "--socket", cls.sock, "status", "--json"],
                           capture_output=True, timeout=30)
        cls.status_cli = r.stdout + r.stderr
        cls.status_rc = r.returncode
        cls.rc = cls.daemon.stop(signal.SIGTERM, 60)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    @classmethod
    def raw_status(cls):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(cls.sock)
            s.sendall(b'{"v":1,"id":1,"type":"status"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return buf

    def test_push_happened_with_a_failure(self):
        self.assertEqual(len(self.daemon.events("push-failed")), 1, self.daemon.tail())
        self.assertGreaterEqual(len(self.daemon.events("committed")), 4, self.daemon.tail())
        routes = {r.get("route") for r in self.hub.log_records()}
        self.assertTrue(routes & {"lfs_put", "part_put"}, routes)
        self.assertIn(b'"checkpoints"', self.status_raw)
        self.assertEqual(self.status_rc, 0, self.status_cli)

    def test_not_in_the_daemon_log(self):
        log = "\n".join(self.daemon.lines)
        self.assertIn("401", log)  # the failure was logged...
        self.assertNotIn(SECRET, log)  # ...without the token
        self.assertNotIn(SECRET[3:], log)

    def test_not_in_staging_journal_or_pins(self):
        staging = os.path.join(self.watch, ".ckptpush")
        self.assertTrue(os.path.isdir(staging))
        self.assertEqual(files_containing(staging, SECRET.encode()), [])
        self.assertEqual(files_containing(self.watch, SECRET.encode()), [])

    def test_not_in_status_or_metrics(self):
        self.assertNotIn(SECRET.encode(), self.status_raw)
        self.assertNotIn(SECRET.encode(), self.status_cli)
        with open(self.metrics, "rb") as f:
            self.assertNotIn(SECRET.encode(), f.read())

    def test_not_in_argv(self):
        self.assertNotIn(SECRET.encode(), self.cmdline)

    def test_hub_saw_it_only_as_authorization(self):
        recs = self.hub.log_records()
        self.assertTrue(recs)
        self.assertEqual([r for r in recs if r.get("auth_on_presigned")], [])
        self.assertNotIn(SECRET, json.dumps(recs))
        with open(self.hub.out, "rb") as f:
            self.assertNotIn(SECRET.encode(), f.read())


class RunModeEnvironment(unittest.TestCase):
    def run_child_env(self, token_env, token_file):
        root, watch = h.job_dir("ckpt-secrets-run-")
        env_out = os.path.join(root, "child.env")
        args = ["--dry-run", "--quiet-ms", "100"]
        if token_file:
            path = os.path.join(root, "token")
            with open(path, "w") as f:
                f.write(SECRET + "\n")
            os.chmod(path, 0o600)
            args += ["--token-path", path]
        args += ["run", "--", "/bin/sh", "-c", f"cat /proc/self/environ > '{env_out}'"]
        d = h.Daemon(watch, repo=f"{h.USER}/run-env", token=SECRET if token_env else None,
                     args=args)
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.proc.wait(60)
        with open(env_out, "rb") as f:
            return f.read(), "\n".join(d.lines)

    def test_token_from_a_file_stays_out_of_the_child(self):
        env, log = self.run_child_env(token_env=False, token_file=True)
        self.assertIn(b"PATH=", env)
        self.assertNotIn(SECRET.encode(), env)
        self.assertNotIn(SECRET, log)

    def test_token_from_the_environment_is_inherited(self):
        env, log = self.run_child_env(token_env=True, token_file=False)
        self.assertIn(f"HF_TOKEN={SECRET}".encode(), env.split(b"\0"))
        self.assertNotIn(SECRET, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
