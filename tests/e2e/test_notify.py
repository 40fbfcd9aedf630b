"""ckptpushd under systemd's notification protocol, without systemd: the test owns the datagram
socket named in NOTIFY_SOCKET (abstract and path forms) and checks READY=1 only after the hub
check, STATUS= lines naming what is pushed, WATCHDOG=1 at half of WATCHDOG_USEC while the loop
runs, and STOPPING=1 when SIGTERM starts the drain. Also: journald mode (JOURNAL_STREAM) and the
JSON log format."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

WATCHDOG_USEC = 200_000  # pings every 100 ms


class Listener:
    """A datagram socket collecting (monotonic time, message) pairs."""

    def __init__(self, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if abstract:
            name = f"ckpt-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = h.tempdir("ckpt-notify-")
            path = os.path.join(self.dir, "notify.sock")
            self.sock.bind(path)
            self.env = path
        self.sock.settimeout(0.1)
        self.messages = []

    def poll(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def wait_for(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, m in self.messages:
                if pred(m):
                    return t, m
            self.poll(0.1)
        raise AssertionError(f"no matching notification in {timeout}s; got {self.messages!r}")

    def with_key(self, key):
        return [(t, m) for t, m in self.messages if any(
            line.startswith(key) for line in m.split("\n"))]

    def close(self):
        self.sock.close()


def write_checkpoint(watch, step, size=300_000):
    d = os.path.join(watch, f"checkpoint-{step}")
    os.mkdir(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "test"}, f)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(os.urandom(size))
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step, "log_history": []}, f)


class Notify(h.HubTestCase):
    def test_ready_status_watchdog_stopping(self):
        lst = Listener(abstract=True)
        self.addCleanup(lst.close)
        watch = h.tempdir("ckpt-notify-watch-")
        repo = f"{h.USER}/notify-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url, args=["--quiet-ms", "200"],
                     env={"NOTIFY_SOCKET": lst.env, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        self.addCleanup(d.stop, signal.SIGKILL, 5)

        _, ready = lst.wait_for(lambda m: "READY=1" in m.split("\n"), 20)
        # Ready means the hub check passed: the repo exists, the daemon said so first.
        self.assertTrue(d.events("authenticated"), d.tail())
        self.assertIn("STATUS=Watching '", ready)
        self.assertIn(repo, ready)

        # The loop is alive: pings at about half the interval.
        lst.poll(0.8)
        pings = lst.with_key("WATCHDOG=1")
        self.assertGreaterEqual(len(pings), 4, lst.messages)
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), WATCHDOG_USEC / 1e6, gaps)

        write_checkpoint(watch, 5)
        lst.wait_for(lambda m: m.startswith("STATUS=Pushing 'checkpoint-5' to " + repo), 20)
        _, idle = lst.wait_for(lambda m: m.startswith("STATUS=Idle: 1 checkpoint(s) pushed"), 30)
        # The log line is read on a thread: it may come in after the notify datagram.
        (committed,) = d.wait_event("committed", timeout=10)
        commit = committed["kv"].get("commit", "")
        self.assertIn(commit[:12], idle)

        t_term = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        _, stopping = lst.wait_for(lambda m: "STOPPING=1" in m.split("\n"), 10)
        self.assertIn("STATUS=Draining after SIGTERM", stopping)
        self.assertEqual(d.proc.wait(20), 0, d.tail())
        # No ping after the loop has let go of its handles.
        lst.poll(0.3)
        last_ping = max(t for t, _ in lst.with_key("WATCHDOG=1"))
        self.assertLess(last_ping, t_term + 2)
        for _, m in lst.messages:
            self.assertNotIn(h.TOKEN, m)

    def test_path_socket_dry_run_no_watchdog_for_other_pid(self):
        lst = Listener(abstract=False)
        self.addCleanup(lst.close)
        watch = h.tempdir("ckpt-notify-dry-")
        d = h.Daemon(watch, token=None, args=["--dry-run"],
                     env={"NOTIFY_SOCKET": lst.env, "WATCHDOG_USEC": str(WATCHDOG_USEC),
                          "WATCHDOG_PID": "1"})
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        _, ready = lst.wait_for(lambda m: "READY=1" in m.split("\n"), 20)
        self.assertIn("dry run", ready)
        lst.poll(0.5)
        self.assertEqual(lst.with_key("WATCHDOG=1"), [], "the watchdog belongs to pid 1")
        self.assertEqual(d.stop(signal.SIGTERM, 20), 0, d.tail())
        lst.poll(0.3)  # what the daemon sent before it exited is queued on our socket
        self.assertTrue(lst.with_key("STOPPING=1"), lst.messages)

    def test_journal_stream_and_json_format(self):
        watch = h.tempdir("ckpt-journal-")
        env = dict(os.environ)
        env.pop("HF_TOKEN", None)
        env["HF_HOME"] = h.tempdir("ckpt-hfhome-")
        r, w = os.pipe()
        st = os.fstat(w)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        p = h.spawn([h.daemon_path(), "--watch", watch, "--dry-run", "--log-format", "json"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w, env=env)
        os.close(w)
        out = b""
        deadline = time.monotonic() + 20
        os.set_blocking(r, False)
        while b" ready" not in out and b'"ready"' not in out and time.monotonic() < deadline:
            try:
                out += os.read(r, 65536)
            except BlockingIOError:
                time.sleep(0.05)
        self.assertEqual(h.stop_process(p, signal.SIGTERM, 20), 0)
        os.set_blocking(r, True)
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
        os.close(r)
        lines = out.decode().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[3467]>\{")
            rec = json.loads(line[3:])
            self.assertNotIn("time", rec)  # journald stamps lines itself
            self.assertIn(rec["level"], ("debug", "info", "warn", "error"))
        ready = [json.loads(x[3:]) for x in lines if '"event":"ready"' in x]
        self.assertEqual(len(ready), 1, lines)
        self.assertEqual(ready[0]["watch"], os.path.realpath(watch))
        self.assertEqual(ready[0]["dry_run"], "yes")
        self.assertTrue(lines[0].startswith("<6>"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
