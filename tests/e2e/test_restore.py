"""`ckptpush restore` (C client) and `python3 -m ckptpush restore` (Python package) against the
test hub: a run pushed by ckptpushd with each strategy (checkpoint, all_checkpoints, every_save)
comes back byte for byte as DIR/checkpoint-<step>; a C client killed with SIGKILL mid-download
(the hub slowed down) continues with a Range request and fetches no finished file again; a
corrupted object on the hub is detected, named and its download deleted; a newer local checkpoint
is kept; a same-named incomplete one is refused; missing repo, refused token, a repo with no
checkpoint, a server answering garbage and a regular file that is not the git blob the listing
says each get a clear message and their exit code, and
--missing-ok (a job's first start) turns "not there yet" into exit 0."""

import hashlib
import http.server
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

PYTHON_PKG = os.path.join(h.SOURCE_DIR, "client", "python")
sys.path.insert(0, PYTHON_PKG)
from ckptpush import restore as restore_mod  # noqa: E402


def write(d, files):
    os.makedirs(d, exist_ok=True)
    for name, data in files:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def checkpoint(watch, step, rng, model_size=200000):
    write(os.path.join(watch, f"checkpoint-{step}"), [
        ("model.safetensors", rng.randbytes(model_size)),
        ("config.json", b'{"step": %d}\n' % step),
        ("optimizer.pt", rng.randbytes(50000)),
        ("trainer_state.json", b'{"global_step": %d, "epoch": 1.0}\n' % step),  # last: seals
    ])


def files_of(d):
    """{relative path: sha256} of every file under d."""
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def env():
    e = dict(os.environ, HF_TOKEN=h.TOKEN, HF_HOME=h.tempdir("ckpt-hfhome-"))
    e.pop("HF_ENDPOINT", None)
    e["PYTHONPATH"] = PYTHON_PKG
    return e


class Restore(h.HubTestCase):
    def push(self, strategy, steps, final=False, model_size=200000, transfer="auto"):
        """Runs ckptpushd over checkpoints `steps` (and the final model with its
        trainer_state.json at the root); returns (repo, watched dir). transfer 'auto' stores the
        files through Xet on the test hub (restore reads them through the Hub's bridge); 'lfs'
        for the tests that reach into the hub's LFS storage or its lfs_get route."""
        root, watch = h.job_dir(f"ckpt-restore-{strategy}-")
        repo = f"{h.USER}/restore-{strategy.replace('_', '-')}-{len(steps)}-{os.getpid()}"
        rng = random.Random(strategy)
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, log_level="info",
                     args=["--strategy", strategy, "--quiet-ms", "200", "--transfer", transfer,
                           "--socket", os.path.join(root, "ctl.sock")])
        d.wait_event("ready", timeout=20)
        for s in steps:
            time.sleep(0.3)
            checkpoint(watch, s, rng, model_size)
            d.wait_event("committed", timeout=60, ckpt=f"checkpoint-{s}")
        if final:
            time.sleep(0.3)
            write(watch, [("config.json", b'{"final": true}\n'),
                          ("model.safetensors", rng.randbytes(150000)),
                          ("trainer_state.json", b'{"global_step": %d}\n' % steps[-1])])
            d.wait_event("committed", timeout=60, ckpt="")
        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())
        return repo, watch

    def c_restore(self, repo, dest, *extra, e=None):
        return subprocess.run([h.client_path(), "restore", "--repo", repo, "--endpoint",
                               self.hub.url, *extra, dest], capture_output=True, text=True,
                              timeout=120, env=e or env())

    def py_restore(self, repo, dest, *extra, e=None):
        return subprocess.run([sys.executable, "-m", "ckptpush", "restore", "--repo", repo,
                               "--endpoint", self.hub.url, *extra, dest], capture_output=True,
                              text=True, timeout=120, env=e or env())

    def both_restore(self, repo, step, original):
        """Restores with both clients into fresh dirs; each must equal original."""
        for run in (self.c_restore, self.py_restore):
            dest = os.path.join(h.tempdir("ckpt-restored-"), "output")
            r = run(repo, dest)
            self.assertEqual(r.returncode, 0, f"{run.__name__}: {r.stdout}{r.stderr}")
            self.assertEqual(os.listdir(dest), [f"checkpoint-{step}"], run.__name__)
            self.assertEqual(files_of(os.path.join(dest, f"checkpoint-{step}")), original,
                             run.__name__)
            self.assertIn(f"restored {dest}/checkpoint-{step}", r.stdout, run.__name__)

    def test_checkpoint_strategy(self):
        repo, watch = self.push("checkpoint", (1, 2, 3))
        self.both_restore(repo, 3, files_of(os.path.join(watch, "checkpoint-3")))

    def test_all_checkpoints_strategy(self):
        repo, watch = self.push("all_checkpoints", (4, 12))
        self.both_restore(repo, 12, files_of(os.path.join(watch, "checkpoint-12")))
        # the Python function itself
        dest = h.tempdir("ckpt-restored-")
        quiet = io.StringIO()
        got = restore_mod.restore(repo, dest, endpoint=self.hub.url, token=h.TOKEN, out=quiet)
        self.assertEqual(got, os.path.join(dest, "checkpoint-12"))
        self.assertEqual(files_of(got), files_of(os.path.join(watch, "checkpoint-12")))
        self.assertIsNone(restore_mod.restore(repo, dest, endpoint=self.hub.url, token=h.TOKEN,
                                              out=quiet))
        self.assertIn("is already there: nothing restored", quiet.getvalue())
        with self.assertRaises(restore_mod.RestoreError) as cm:
            restore_mod.restore(repo, dest, endpoint=self.hub.url, token="hf_bad")
        self.assertEqual(cm.exception.exit_code, 1)

    def test_every_save_root_with_trainer_state(self):
        repo, watch = self.push("every_save", (1, 5), final=True)
        want = {n: v for n, v in files_of(watch).items()
                if "/" not in n}  # the output root's own files
        for run in (self.c_restore, self.py_restore):
            dest = h.tempdir("ckpt-restored-")
            r = run(repo, dest)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            got = files_of(os.path.join(dest, "checkpoint-5"))
            self.assertIn("README.md", got)  # the model card the daemon wrote
            del got["README.md"]
            self.assertEqual(got, want, run.__name__)

    def test_every_save_without_trainer_state_is_refused(self):
        repo, _ = self.push("every_save", (1,))
        for run in (self.c_restore, self.py_restore):
            dest = h.tempdir("ckpt-restored-")
            r = run(repo, dest)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("no trainer_state.json that says their step", r.stderr)
            self.assertEqual(os.listdir(dest), [])

    def kill_and_resume(self, strategy, step):
        size = 6 * 1024 * 1024
        repo, watch = self.push(strategy, (step,), model_size=size, transfer="lfs")
        original = files_of(os.path.join(watch, f"checkpoint-{step}"))
        # the two LFS downloads (optimizer.pt, then model.safetensors) trickle
        self.hub.fault({"route": "lfs_get", "count": 2, "slow_bytes_per_s": 1500000})
        before = len(self.hub.log_records())
        dest = h.tempdir("ckpt-restored-")
        tmp = os.path.join(dest, f".ckptpush-restore-{step}")
        part = os.path.join(tmp, "model.safetensors.ckptpush-part")
        p = h.spawn([h.client_path(), "restore", "--repo", repo, "--endpoint", self.hub.url,
                     dest], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        deadline = time.monotonic() + 60
        while not (os.path.exists(part) and os.path.getsize(part) > 1024 * 1024):
            self.assertIsNone(p.poll(), "the restore ended before it was killed")
            self.assertLess(time.monotonic(), deadline, "the big file never started")
            time.sleep(0.02)
        self.assertEqual(h.stop_process(p, signal.SIGKILL), -signal.SIGKILL)
        have = os.path.getsize(part)
        self.assertLess(have, size)
        # finished before the kill (smallest first)
        done = sorted(n for n in os.listdir(tmp) if not n.endswith(".ckptpush-part"))
        self.assertEqual(done, ["config.json", "optimizer.pt", "trainer_state.json"])
        self.hub.request("DELETE", "/_admin/faults", token=None)
        first = self.hub.log_records()[before:]
        resolved = [x["path"].rsplit("/", 1)[1] for x in first if x["route"] == "resolve"]
        self.assertEqual(sorted(resolved), sorted(set(resolved)), "a file fetched twice")

        r = self.c_restore(repo, dest)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("3 already there", r.stdout)
        self.assertEqual(files_of(os.path.join(dest, f"checkpoint-{step}")), original)
        self.assertEqual(os.listdir(dest), [f"checkpoint-{step}"])
        second = self.hub.log_records()[before + len(first):]
        # only the big file was asked for again, and only its missing bytes came
        resolved = [x["path"].rsplit("/", 1)[1] for x in second if x["route"] == "resolve"]
        self.assertEqual(resolved, ["model.safetensors"], second)
        gets = [x for x in second if x["route"] == "lfs_get"]
        self.assertEqual([(x["status"], x["bytes_out"]) for x in gets], [(206, size - have)])
        self.assertFalse([x for x in first + second if x.get("auth_on_presigned")])

    def test_kill_mid_download_then_resume(self):
        self.kill_and_resume("all_checkpoints", 7)

    def test_kill_mid_download_then_resume_last_checkpoint(self):
        # the step comes from last-checkpoint/trainer_state.json: fetched once, kept
        self.kill_and_resume("checkpoint", 8)

    def test_corrupted_object_is_detected(self):
        repo, watch = self.push("all_checkpoints", (3,), transfer="lfs")
        oid = files_of(os.path.join(watch, "checkpoint-3"))["optimizer.pt"]
        path = os.path.join(self.hub.data, "lfs", oid[:2], oid)  # the hub stores lfs/<2 hex>/<oid>
        with open(path, "r+b") as f:  # one byte flipped, same size
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 0xFF]))
        try:
            for run in (self.c_restore, self.py_restore):
                dest = h.tempdir("ckpt-restored-")
                r = run(repo, dest)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn("'checkpoint-3/optimizer.pt' does not match the Hub's SHA-256",
                              r.stderr)
                self.assertIn(oid, r.stderr)
                tmp = os.path.join(dest, ".ckptpush-restore-3")
                self.assertEqual(sorted(os.listdir(tmp)), ["config.json", "trainer_state.json"],
                                 run.__name__)  # the bad download deleted, nothing renamed
                self.assertFalse(os.path.exists(os.path.join(dest, "checkpoint-3")))
        finally:
            with open(path, "r+b") as f:
                f.seek(1000)
                f.write(b)

    def test_local_checkpoints_are_never_replaced(self):
        repo, _ = self.push("checkpoint", (2,))
        for run in (self.c_restore, self.py_restore):
            dest = h.tempdir("ckpt-restored-")
            write(os.path.join(dest, "checkpoint-9"), [("trainer_state.json", b"{}")])
            r = run(repo, dest + "/")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn(f"{dest}/checkpoint-9 is newer than the Hub's checkpoint-2: kept",
                          r.stdout)
            self.assertEqual(sorted(os.listdir(dest)), ["checkpoint-9"])
            # the same step, incomplete: an error naming it
            dest = h.tempdir("ckpt-restored-")
            write(os.path.join(dest, "checkpoint-2"), [("model.safetensors", b"half")])
            r = run(repo, dest)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(f"'{dest}/checkpoint-2' exists but is incomplete", r.stderr)
            self.assertEqual(os.listdir(os.path.join(dest, "checkpoint-2")),
                             ["model.safetensors"])
        # the same step, complete: nothing to do
        dest = h.tempdir("ckpt-restored-")
        self.assertEqual(self.c_restore(repo, dest).returncode, 0)
        r = self.c_restore(repo, dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("is already there: nothing restored", r.stdout)

    def test_errors(self):
        repo, _ = self.push("checkpoint", (1,))
        for run in (self.c_restore, self.py_restore):
            dest = h.tempdir("ckpt-restored-")
            r = run(f"{h.USER}/no-such-repo", dest)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("repo 'alice/no-such-repo' not found (HTTP 404)", r.stderr)
            r = run(repo, dest, e=dict(env(), HF_TOKEN="hf_wrong_token"))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("the Hub refused the token (HTTP 401)", r.stderr)
            self.assertNotIn("hf_wrong_token", r.stdout + r.stderr)
            r = run(repo, dest, "--revision", "nope")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("revision 'nope' not found", r.stderr)
            self.assertEqual(os.listdir(dest), [])
            # a job's first start: --missing-ok makes "not there yet" exit 0
            r = run(f"{h.USER}/no-such-repo", dest, "--missing-ok")
            self.assertEqual((r.returncode, r.stdout), (0, "nothing to restore: repo not found\n"),
                             r.stderr)
            r = run(repo, dest, "--missing-ok", "--revision", "nope")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("nothing to restore: revision not found", r.stdout)
        # a repo with nothing but its first commit
        empty = f"{h.USER}/restore-empty-{os.getpid()}"
        status, _, body = self.hub.request("POST", "/api/repos/create", body={"name": empty})
        self.assertEqual(status, 200, body)
        for run in (self.c_restore, self.py_restore):
            r = run(empty, h.tempdir("ckpt-restored-"))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("holds no checkpoint", r.stderr)
            r = run(empty, h.tempdir("ckpt-restored-"), "--missing-ok")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("holds no checkpoint yet", r.stdout)

    def test_server_answering_garbage(self):
        class Garbage(http.server.BaseHTTPRequestHandler):
            mode = "html"  # then "tree": a listing naming a path outside the checkpoint

            def do_GET(self):
                state = b'{"global_step": 1}\n'
                if Garbage.mode == "html":
                    body = b"<html>not the Hub</html>"
                elif "/revision/" in self.path:
                    body = json.dumps({"sha": "0" * 40}).encode()
                elif Garbage.mode == "tree":
                    body = json.dumps([{"type": "file", "path": "../../etc/x", "size": 1,
                                        "oid": "0" * 40}]).encode()
                elif "/tree/" in self.path:
                    oid = {"blob": "1" * 40}.get(Garbage.mode, hashlib.sha1(
                        b"blob %d\0" % len(state) + state).hexdigest())
                    size = len(state) - (Garbage.mode == "long")  # "long": one byte too many
                    body = json.dumps([{"type": "file", "size": size, "oid": oid,
                                        "path": "checkpoint-1/trainer_state.json"}]).encode()
                else:  # resolve: the whole file, whatever Range asked for
                    body = state
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        try:
            # "norange": a partial file of other bytes is there, and the server answers a Range
            # request with the whole file (200): the client starts the file over
            Garbage.mode = "norange"
            dest = h.tempdir("ckpt-restored-")
            for cmd in ([h.client_path(), "restore"], [sys.executable, "-m", "ckptpush",
                                                       "restore"]):
                shutil.rmtree(os.path.join(dest, "checkpoint-1"), ignore_errors=True)
                write(os.path.join(dest, ".ckptpush-restore-1"),
                      [("trainer_state.json.ckptpush-part", b"XXXXX")])
                r = subprocess.run(cmd + ["--repo", "a/b", "--endpoint", url, dest],
                                   capture_output=True, text=True, timeout=60, env=env())
                self.assertEqual(r.returncode, 0, r.stderr)
                with open(os.path.join(dest, "checkpoint-1", "trainer_state.json"), "rb") as f:
                    self.assertEqual(f.read(), b'{"global_step": 1}\n')
            for mode, why, code in (
                    ("html", "the Hub's answer is not valid JSON", 4),
                    ("tree", "refusing the path '../../etc/x'", 4),
                    ("blob", "'checkpoint-1/trainer_state.json' does not match the Hub's git "
                             f"blob id (expected {'1' * 40}, got ", 1),
                    ("long", "the Hub sent more bytes than it announced", 4)):
                Garbage.mode = mode
                for cmd in ([h.client_path(), "restore"],
                            [sys.executable, "-m", "ckptpush", "restore"]):
                    dest = h.tempdir("ckpt-restored-")
                    r = subprocess.run(cmd + ["--repo", "a/b", "--endpoint", url, dest],
                                       capture_output=True, text=True, timeout=60, env=env())
                    self.assertEqual(r.returncode, code, r.stderr)
                    self.assertIn(why, r.stderr)
                    self.assertFalse(os.path.exists(os.path.join(dest, "checkpoint-1")))
                    if mode in ("blob", "long"):  # deleted, nothing renamed into place
                        self.assertEqual(os.listdir(os.path.join(dest, ".ckptpush-restore-1")),
                                         [])
                    else:
                        self.assertEqual(os.listdir(dest), [])
        finally:
            srv.shutdown()
            srv.server_close()

    def test_unreachable_hub_and_usage(self):
        for cmd in ([h.client_path(), "restore"], [sys.executable, "-m", "ckptpush", "restore"]):
            r = subprocess.run(cmd + ["--repo", "a/b", "--endpoint", "http://127.0.0.1:1",
                                      h.tempdir("ckpt-restored-")],
                               capture_output=True, text=True, timeout=120, env=env())
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("cannot reach the Hub at 'http://127.0.0.1:1'", r.stderr)
            r = subprocess.run(cmd + ["--repo", "a/b"], capture_output=True, text=True,
                               timeout=20, env=env())
            self.assertEqual(r.returncode, 2, r.stderr)


class RestorePaged(h.HubTestCase):
    """A hub answering tree listings three entries a page (Link: rel="next")."""

    push, c_restore, py_restore, both_restore = (Restore.push, Restore.c_restore,
                                                 Restore.py_restore, Restore.both_restore)

    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(args=["--page-size", "3"])

    def test_paged_listing(self):
        repo, watch = self.push("all_checkpoints", (2, 6))
        self.both_restore(repo, 6, files_of(os.path.join(watch, "checkpoint-6")))
        pages = [x for x in self.hub.log_records() if x["route"] == "tree" and
                 "cursor=" in x["path"]]
        self.assertTrue(pages, "the listing took more than one page")


if __name__ == "__main__":
    unittest.main(verbosity=2)
