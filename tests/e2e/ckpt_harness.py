"""Shared helpers of the end-to-end tests: start and stop the test hub and ckptpushd, read the
daemon's log events, replay traces, talk to the hub over HTTP.

Owns: child processes of a test (each in its own process group, all killed at exit even when a
test fails), their temporary directories. Not: assertions (the tests make them).
Runs on the test's main thread, plus one reader thread per daemon for its stderr.
Python 3.11 standard library only.
"""

import atexit
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CKPT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("CKPT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
TRACES_DIR = os.path.join(SOURCE_DIR, "tests", "fixtures", "traces")
REPLAY = os.path.join(SOURCE_DIR, "tests", "tools", "replay.py")
HUB = os.path.join(SOURCE_DIR, "tests", "hub", "hub.py")
HUB_NODE_MODULES = os.path.join(SOURCE_DIR, "tests", "hub", "node_modules")
JS_DOWNLOAD = os.path.join(HERE, "js_download.mjs")

USER = "alice"
TOKEN = "hf_alice_token"

_children = []
_tempdirs = []


def _kill_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _cleanup():
    for p in list(_children):
        if p.poll() is None:
            _kill_group(p, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    _children.clear()
    for d in list(_tempdirs):
        shutil.rmtree(d, ignore_errors=True)
    _tempdirs.clear()


atexit.register(_cleanup)


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


# ctest kills a test that runs past its timeout with SIGTERM: take the children along.
signal.signal(signal.SIGTERM, _on_signal)


def spawn(argv, **kw):
    """Popen in a new process group, registered for cleanup."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=10.0):
    """Send sig to p's group, wait; SIGKILL if it does not exit in time. Returns the exit code
    (negative signal number when killed by a signal)."""
    if p.poll() is None:
        _kill_group(p, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p, signal.SIGKILL)
            p.wait(5)
    else:
        # The leader exited; its group may still hold children.
        _kill_group(p, signal.SIGKILL)
    if p in _children:
        _children.remove(p)
    return p.returncode


def tempdir(prefix="ckpt-e2e-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tempdirs.append(d)
    return d


def job_dir(prefix="ckpt-e2e-"):
    """A temporary directory holding a training job's output folder: (root, root/output)."""
    root = tempdir(prefix)
    watch = os.path.join(root, "output")
    os.mkdir(watch)
    return root, watch


def rotate_sealed(watch, names, sealed):
    """Deletes the checkpoint folders among names that the daemon has sealed, as
    save_total_limit would: returns the names deleted."""
    gone = []
    for name in names:
        p = os.path.join(watch, name)
        if os.path.isdir(p) and name in sealed:
            for f in os.listdir(p):
                os.unlink(os.path.join(p, f))
            os.rmdir(p)
            gone.append(name)
    return gone


def _built(env, rel):
    path = os.environ.get(env) or os.path.join(BUILD_DIR, rel)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"{os.path.basename(rel)} not found at '{path}' (set {env} or build "
                           "first)")
    return path


def daemon_path():
    return _built("CKPTPUSHD", "ckptpushd")


def client_path():
    return _built("CKPTPUSH", os.path.join("client", "ckptpush"))


def trace_path(name):
    return os.path.join(TRACES_DIR, name)


def all_traces():
    return sorted(f for f in os.listdir(TRACES_DIR) if f.endswith(".jsonl"))


# ---- log lines ------------------------------------------------------------------------------
_LINE = re.compile(r"^(\S+) (debug|info|warn|error) (\S+)(?: (.*))?$")


def parse_kv(text):
    """Parse `key=value key='quoted value' ...`. A quoted value ends at a quote followed by a
    space or the end of the line, so a quote inside a value does not end it early."""
    out = {}
    i, n = 0, len(text or "")
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            out[text[i:].split(" ", 1)[0]] = True
            break
        key = text[i:eq]
        if " " in key:  # a bare word without '='
            word, _ = key.split(" ", 1)
            out[word] = True
            i += len(word)
            continue
        j = eq + 1
        if j < n and text[j] == "'":
            k = j + 1
            while True:
                k = text.find("'", k)
                if k < 0:
                    k = n
                    break
                if k + 1 >= n or text[k + 1] == " ":
                    break
                k += 1
            out[key] = text[j + 1:k]
            i = k + 1
        else:
            sp = text.find(" ", j)
            sp = n if sp < 0 else sp
            out[key] = text[j:sp]
            i = sp
    return out


def parse_time(stamp):
    """`2026-01-02T03:04:05.678Z` (UTC) -> Unix time as float."""
    s = stamp.rstrip("Z")
    dt = datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def parse_line(line):
    """One daemon log line -> {"time", "level", "event", "kv", "line"}, or None."""
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    try:
        when = parse_time(m.group(1))
    except ValueError:
        return None
    return {"time": when, "level": m.group(2), "event": m.group(3),
            "kv": parse_kv(m.group(4) or ""), "line": line.rstrip("\n")}


# ---- the daemon -----------------------------------------------------------------------------
class Daemon:
    """ckptpushd as a child process; its stderr is read line by line on a thread."""

    def __init__(self, watch, repo=None, endpoint=None, token=TOKEN, args=(), env=None,
                 log_level="debug"):
        self.lines = []
        self.records = []
        self.cond = threading.Condition()
        argv = [daemon_path(), "--watch", watch]
        if repo:
            argv += ["--repo", repo]
        if endpoint:
            argv += ["--endpoint", endpoint]
        if log_level:
            argv += ["--log-level", log_level]
        argv += list(args)
        e = dict(os.environ)
        for k in ("HF_TOKEN", "HF_ENDPOINT", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
            e.pop(k, None)
        e["HF_HOME"] = tempdir("ckpt-hfhome-")  # never the user's real token
        # A private socket directory: tests running side by side never share a control socket.
        e["XDG_RUNTIME_DIR"] = tempdir("ckpt-run-")
        if token is not None:
            e["HF_TOKEN"] = token
        if env:
            e.update(env)
        # CKPT_VALGRIND=1: under valgrind, any memory error or definite leak exits 99 (see
        # test_valgrind.py); the report goes to self.valgrind_log.
        self.valgrind_log = None
        if os.environ.get("CKPT_VALGRIND") == "1":
            self.valgrind_log = os.path.join(tempdir("ckpt-valgrind-"), "valgrind.log")
            argv = ["valgrind", "--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite",
                    "--error-exitcode=99", "--track-fds=no", f"--log-file={self.valgrind_log}",
                    *argv]
        self.argv = argv
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e)
        self.stdout_thread = threading.Thread(target=self._drain_stdout, daemon=True)
        self.stdout_thread.start()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _drain_stdout(self):
        for _ in self.proc.stdout:
            pass

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            rec = parse_line(line)
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                if rec:
                    self.records.append(rec)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def events(self, name, **match):
        with self.cond:
            return [r for r in self.records if r["event"] == name and
                    all(r["kv"].get(k) == v for k, v in match.items())]

    def wait_event(self, name, timeout=20.0, count=1, **match):
        """Wait until `count` events `name` whose kv has every `match` item; returns them.
        Raises AssertionError with the log tail when the time runs out or the daemon exits."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [r for r in self.records if r["event"] == name and
                       all(r["kv"].get(k) == v for k, v in match.items())]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                exited = self.proc.poll() is not None and not self.thread.is_alive()
                if left <= 0 or exited:
                    why = f"exited with {self.proc.returncode}" if exited else "timed out"
                    about = ""
                    if "ckpt" in match:  # everything the log says of it, not only the tail
                        said = [ln for ln in self.lines if f"'{match['ckpt']}'" in ln or
                                f"'{match['ckpt']}/" in ln]
                        about = (f"\n--- every line naming '{match['ckpt']}' "
                                 f"({len(said)}):\n" + "\n".join(said[-200:]))
                    raise AssertionError(
                        f"waiting for {count} '{name}' {match}: daemon {why}; "
                        f"got {len(got)}{about}\n--- daemon log tail:\n" + self.tail())
                self.cond.wait(min(left, 0.2))

    def tail(self, n=60):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        rc = stop_process(self.proc, sig, timeout)
        self.thread.join(5)
        self.stdout_thread.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed and not self.thread.is_alive():
                f.close()
        return rc


class Restarts:
    """Daemons started one after another on the same job (killed, started again), every one kept
    so that a report can read events across all of them. start() may race a reader thread."""

    def __init__(self, watch, **daemon_kw):
        self.watch = watch
        self.daemon_kw = daemon_kw
        self.daemons = []
        self.lock = threading.Lock()

    def start(self, ready_timeout=30.0):
        d = Daemon(self.watch, **self.daemon_kw)
        with self.lock:
            self.daemons.append(d)
        d.wait_event("ready", timeout=ready_timeout)
        return d

    def events(self, name):
        with self.lock:
            ds = list(self.daemons)
        return [r for d in ds for r in d.events(name)]

    def sealed_names(self):
        """Checkpoints any of them sealed, or recovered sealed from the journal."""
        return {r["kv"].get("ckpt") for r in self.events("sealed") + self.events("recovered")}

    def __len__(self):
        with self.lock:
            return len(self.daemons)


# ---- the test hub ---------------------------------------------------------------------------
def socket_daemon(watch, repo, hub, quiet_ms, timeout=20.0):
    """A daemon pushing watch to repo on hub with its control socket in a fresh directory.
    Returns (daemon, socket path) once it is ready and the socket exists."""
    sock = os.path.join(tempdir("ckpt-sock-"), "job.sock")
    daemon = Daemon(watch, repo=repo, endpoint=hub.url, token=TOKEN,
                    args=["--quiet-ms", str(quiet_ms), "--socket", sock])
    daemon.wait_event("ready", timeout=timeout)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if time.monotonic() > deadline:
            raise AssertionError("daemon made no socket at --socket\n" + daemon.tail())
        time.sleep(0.05)
    return daemon, sock


class Hub:
    """tests/hub/hub.py on a free port with a temporary data directory."""

    def __init__(self, users=(f"{USER}:{TOKEN}",), data=None, timeout=20.0, args=(), env=None):
        if not os.path.isfile(HUB):
            raise RuntimeError(f"test hub not found at '{HUB}'")
        self.dir = tempdir("ckpt-hub-")
        self.data = data or os.path.join(self.dir, "data")
        self.port_file = os.path.join(self.dir, "port")
        self.log = os.path.join(self.dir, "hub.log")
        self.out = os.path.join(self.dir, "stdout")
        argv = [sys.executable, HUB, "--data", self.data, "--port", "0", "--port-file",
                self.port_file, "--log", self.log]
        for u in users:
            argv += ["--user", u]
        argv += list(args)
        self.argv = argv
        self.env = dict(os.environ, **(env or {}))
        with open(self.out, "wb") as out:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, env=self.env)
        self.url = self._wait_url(timeout)

    def _wait_url(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.out, encoding="utf-8", errors="replace") as f:
                    m = re.search(r"hub listening on (http://\S+)", f.read())
                if m:
                    return m.group(1).rstrip("/")
            except FileNotFoundError:
                pass
            try:
                with open(self.port_file, encoding="utf-8") as f:
                    txt = f.read().strip()
                if txt:
                    m = re.search(r"(\d+)\s*$", txt)
                    if m:
                        return f"http://127.0.0.1:{m.group(1)}"
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.out, encoding="utf-8", errors="replace") as f:
            raise RuntimeError(f"test hub did not start (rc={self.proc.poll()}):\n{f.read()}")

    def stop(self):
        return stop_process(self.proc, signal.SIGTERM, 10)

    def restart(self, down_s=0.0, timeout=20.0):
        """Stop the hub and start it again on the same port and data: its state survives."""
        self.stop()
        time.sleep(down_s)
        port = self.url.rsplit(":", 1)[1]
        argv = list(self.argv)
        argv[argv.index("--port") + 1] = port
        for f in (self.port_file, self.out):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        with open(self.out, "wb") as out:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, env=self.env)
        self.url = self._wait_url(timeout)

    def log_records(self):
        """The hub's request log, one dict per request."""
        out = []
        try:
            with open(self.log, encoding="utf-8") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except FileNotFoundError:
            pass
        return out

    def fault(self, spec):
        """Queue faults (one dict or a list) on the hub."""
        status, _, body = self.request("POST", "/_admin/faults", token=None, body=spec)
        if status != 200:
            raise AssertionError(f"faults: HTTP {status}: {body[:300]!r}")

    # HTTP helpers -----------------------------------------------------------------------------
    def request(self, method, path, token=TOKEN, body=None, headers=None):
        """Returns (status, headers, body bytes); follows redirects."""
        url = path if path.startswith("http") else self.url + path
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_json(self, path, token=TOKEN):
        status, _, body = self.request("GET", path, token)
        if status != 200:
            raise AssertionError(f"GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def get_pages(self, url):
        """The JSON lists of url and of every page after it (Link: rel="next"), joined."""
        out = []
        while url:
            status, headers, body = self.request("GET", url)
            if status != 200:
                raise AssertionError(f"GET {url}: HTTP {status}: {body[:500]!r}")
            out += json.loads(body)
            m = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("Link", "") or "")
            url = m.group(1) if m else None
        return out

    def commits(self, repo, rev="main"):
        """Commit list of the branch, newest first."""
        return self.get_pages(f"/api/models/{repo}/commits/{rev}")

    def tree(self, repo, rev="main"):
        """{path: entry} of every file at rev (recursive)."""
        entries = self.get_pages(f"/api/models/{repo}/tree/{rev}?recursive=true")
        return {e["path"]: e for e in entries if e.get("type") == "file"}

    def sha256_at(self, repo, rev, path):
        """SHA-256 of the file's content at rev, downloaded through /resolve."""
        status, _, body = self.request("GET", f"/{repo}/resolve/{rev}/{path}")
        if status != 200:
            raise AssertionError(f"resolve {rev}/{path}: HTTP {status}: {body[:300]!r}")
        return hashlib.sha256(body).hexdigest()


class HubTestCase(unittest.TestCase):
    """A test class with one test hub (cls.hub) for all its tests."""

    @classmethod
    def setUpClass(cls):
        cls.hub = Hub()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()


def split_card(text):
    """(front matter YAML, body) of a model card README."""
    assert text.startswith("---\n"), text[:80]
    end = text.index("\n---\n", 4)
    return text[4:end + 1], text[end + 5:]


def commit_title(c):
    return c.get("title") or (c.get("message") or "").split("\n", 1)[0]


def write_checkpoint(root, step, model_size, rng):
    """A Trainer-like checkpoint-STEP/: model.safetensors (model_size random bytes of rng),
    config.json, then trainer_state.json last (what seals it). Returns {file: sha256} of the
    files every_save pushes."""
    d = os.path.join(root, f"checkpoint-{step}")
    os.mkdir(d)
    out = {}
    for name, data in (("model.safetensors", rng.randbytes(model_size)),
                       ("config.json", b'{"step": %d}\n' % step)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        out[name] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d}\n' % step)
    return out


# ---- replay and the JS client ---------------------------------------------------------------
def replay(trace, into, speed=1.0, seed=None, size_scale=None, timeout=120, frozen=None):
    """Replay a trace into `into` (blocking); returns the manifest."""
    d = tempdir("ckpt-replay-")
    manifest = os.path.join(d, "manifest.json")
    argv = [sys.executable, REPLAY, trace, "--into", into, "--speed", str(speed),
            "--manifest", manifest, "--events", os.path.join(d, "events.jsonl")]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if size_scale is not None:
        argv += ["--size-scale", str(size_scale)]
    if frozen is not None:
        argv += ["--frozen", str(frozen)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"replay failed ({r.returncode}): {r.stderr}")
    with open(manifest, encoding="utf-8") as f:
        return json.load(f)


def last_write_unix(manifest, ckpt):
    """Wall time of the candidate's last write/close/rename; ckpt '' is the output root."""
    rel = manifest["root_last_write_at"] if ckpt == "" else \
        manifest["candidates"][ckpt]["last_write_at"]
    return manifest["started_at_unix"] + rel


def js_available():
    return shutil.which("node") is not None and \
        os.path.isdir(os.path.join(HUB_NODE_MODULES, "@huggingface", "hub"))


def js_download(hub_url, token, repo, out_dir, revision=None, timeout=120):
    """Download every file of the repo with the official JS client; returns {path: sha256}."""
    argv = ["node", JS_DOWNLOAD, hub_url, token, repo, out_dir]
    if revision:
        argv.append(revision)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, CKPT_SOURCE_DIR=SOURCE_DIR))
    if r.returncode != 0:
        raise AssertionError(f"js_download failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout)
