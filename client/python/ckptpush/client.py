"""The control protocol of ckptpushd (daemon/ipc_proto.h), client side.

Newline-delimited JSON on a Unix stream socket. Requests {"v":1,"id":N,"type":...}, replies
{"v":1,"id":N,"ok":true,...} or {"ok":false,"error":{"code","message"}}, events (after
subscribe) {"v":1,"event":...}. Blocking sockets; one Client per thread.
"""

import json
import math
import os
import re
import socket
import time

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024  # a request line, newline included
MAX_REPLY = 1024 * 1024  # a reply or event line
MAX_JOB = 64
DEFAULT_TIMEOUT = 30.0

_JOB_BAD = re.compile(r"[^A-Za-z0-9._-]")


class CkptpushError(Exception):
    """An error answer of the daemon, or a failure to reach it. `code` is the protocol's error
    code (or a local one: 'no-daemon', 'protocol', 'timeout'); `kind` the failure class."""

    exit_code = 4

    def __init__(self, message, code="protocol", kind=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


class DaemonNotRunning(CkptpushError):
    exit_code = 3


class OperationFailed(CkptpushError):
    exit_code = 1


class ProtocolError(CkptpushError):
    exit_code = 4


class Timeout(CkptpushError, TimeoutError):
    exit_code = 5


def _error_for(code, message, kind=None):
    if code in ("failed", "shutting-down"):
        return OperationFailed(message, code, kind)
    if code == "timeout":
        return Timeout(message, code, kind)
    if code in ("forbidden", "busy"):
        return DaemonNotRunning(message, code, kind)
    return ProtocolError(message, code or "protocol", kind)


def job_name(name_or_dir):
    """The job name rule of ipc_proto_job_name: last path component, bytes outside
    [A-Za-z0-9._-] become '_', no leading '.', at most 64 bytes, empty -> 'default'."""
    base = os.path.basename(str(name_or_dir or "").rstrip("/"))
    raw = base.encode("utf-8", "surrogateescape")[:MAX_JOB]
    out = []
    for i, b in enumerate(raw):
        ch = chr(b)
        if b >= 0x80 or _JOB_BAD.match(ch) or (i == 0 and ch == "."):
            ch = "_"
        out.append(ch)
    return "".join(out) or "default"


def socket_dir():
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "ckptpush")
    return f"/tmp/ckptpush-{os.geteuid()}"


def default_socket_path(job):
    return os.path.join(socket_dir(), job_name(job) + ".sock")


def find_socket(socket_path=None, job=None, hint_dir=None):
    """Which socket to use: socket_path, $CKPTPUSH_SOCKET, job, $CKPTPUSH_JOB, the job named
    after hint_dir (a training output directory) when its socket exists, else the only socket
    in socket_dir(). Raises DaemonNotRunning when there is none, ProtocolError when several."""
    path = socket_path or os.environ.get("CKPTPUSH_SOCKET")
    if path:
        return path
    job = job or os.environ.get("CKPTPUSH_JOB")
    if job:
        return default_socket_path(job)
    if hint_dir:
        path = default_socket_path(hint_dir)
        if os.path.exists(path):
            return path
    d = socket_dir()
    try:
        socks = sorted(f for f in os.listdir(d) if f.endswith(".sock"))
    except OSError:
        socks = []
    if len(socks) == 1:
        return os.path.join(d, socks[0])
    if not socks:
        raise DaemonNotRunning(f"no daemon is running (no socket in '{d}')", "no-daemon")
    names = ", ".join(s[:-5] for s in socks)
    raise ProtocolError(f"several daemons are running ({names}): pass job= or socket_path=",
                        "ambiguous")


def _clean(value, depth=0):
    """JSON-safe copy: non-finite floats -> None, tensors and numpy scalars -> numbers, other
    objects -> str. Keeps training objects from breaking the request."""
    if depth > 20:
        return None
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_clean(v, depth + 1) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _clean(item(), depth + 1)
        except Exception:  # a tensor with more than one element
            pass
    if hasattr(value, "value") and type(value).__module__ == "enum":
        return _clean(value.value, depth + 1)
    return str(value)


class Client:
    """One connection to ckptpushd, opened at the first request. Methods return the reply's
    fields (without v/id/ok) and raise a CkptpushError subclass on error answers."""

    def __init__(self, socket_path=None, job=None, timeout=DEFAULT_TIMEOUT, hint_dir=None):
        self._socket_arg = socket_path
        self._job = job
        self._hint_dir = hint_dir
        self.timeout = timeout
        self.path = None
        self._sock = None
        self._buf = b""
        self._next_id = 0
        self.events = []  # events that arrived while waiting for a reply

    # -- connection ---------------------------------------------------------------------------
    def connect(self):
        if self._sock is not None:
            return self
        self.path = find_socket(self._socket_arg, self._job, self._hint_dir)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # CLOEXEC by default (PEP 446)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            s.close()
            raise DaemonNotRunning(f"no daemon is listening on '{self.path}'", "no-daemon") from e
        except OSError as e:
            s.close()
            raise DaemonNotRunning(f"cannot connect to '{self.path}': {e.strerror}",
                                   "no-daemon") from e
        self._sock = s
        self._buf = b""
        return self

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def _send(self, obj):
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        if len(data) > MAX_MESSAGE:
            raise ProtocolError(f"request is {len(data)} bytes, over the {MAX_MESSAGE} limit",
                                "too-large")
        try:
            self._sock.sendall(data)
        except OSError as e:
            self.close()
            raise ProtocolError(f"cannot send to the daemon: {e}") from e

    def _read(self, deadline):
        """Next JSON object from the daemon; deadline None waits forever."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ProtocolError("daemon sent a line that is not JSON") from e
                if not isinstance(obj, dict):
                    raise ProtocolError("daemon sent a line that is not an object")
                return obj
            if len(self._buf) > MAX_REPLY:
                raise ProtocolError(f"daemon sent a line over {MAX_REPLY} bytes")
            if deadline is None:
                self._sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("no answer from the daemon in time", "timeout")
                self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise Timeout("no answer from the daemon in time", "timeout") from None
            except OSError as e:
                self.close()
                raise ProtocolError(f"connection to the daemon failed: {e}") from e
            if not chunk:
                self.close()
                raise ProtocolError("daemon closed the connection")
            self._buf += chunk

    # -- requests -----------------------------------------------------------------------------
    def request(self, type_, timeout=None, **fields):
        """Send one request; return its reply fields. timeout: seconds (None: self.timeout;
        a negative number waits forever)."""
        self.connect()
        self._next_id += 1
        rid = self._next_id
        msg = {"v": PROTOCOL_VERSION, "id": rid, "type": type_}
        msg.update({k: v for k, v in fields.items() if v is not None})
        self._send(msg)
        t = self.timeout if timeout is None else timeout
        deadline = None if t is None or t < 0 else time.monotonic() + t
        while True:
            try:
                obj = self._read(deadline)
            except Timeout:
                # The reply may still come later on this connection: start afresh.
                self.close()
                raise
            if "event" in obj:
                if len(self.events) < 10000:
                    self.events.append(obj)
                continue
            if obj.get("id") not in (rid, None):
                continue
            if obj.get("ok") is True:
                return {k: v for k, v in obj.items() if k not in ("v", "id", "ok")}
            err = obj.get("error") or {}
            raise _error_for(err.get("code"), err.get("message") or "request refused",
                             err.get("kind"))

    def status(self):
        """The daemon's state and its checkpoints. Among the "daemon" fields: "committed" and
        "failed" (checkpoints), "files_skipped" (files left out of their checkpoints: symlinks,
        hidden files, names the Hub refuses; each is named in the daemon's log) and
        "root_missing" (the watched directory is deleted or moved away just now)."""
        return self.request("status")

    def push(self, path, message=None):
        """Seal path and push it now. message: the title of its commit instead of the daemon's
        (one line, at most 200 bytes; the daemon answers bad-request otherwise)."""
        return self.request("push", path=os.path.abspath(os.fspath(path)), message=message)

    def final(self, metrics=None, hparams=None, wait=False, timeout=None):
        """Start the end-of-training push. wait=True returns once it is committed (the reply
        has "commit") and raises OperationFailed when it failed; timeout bounds the wait (None:
        forever when waiting, else self.timeout)."""
        if timeout is None and wait:
            timeout = -1
        return self.request("final", timeout=timeout,
                            metrics=_clean(metrics) if metrics is not None else None,
                            hparams=_clean(hparams) if hparams is not None else None,
                            wait=bool(wait))

    def pause(self):
        return self.request("pause")

    def resume(self):
        return self.request("resume")

    def flush(self, timeout_s=None):
        wait = (600 if timeout_s is None else timeout_s) + 5
        return self.request("flush", timeout=wait, timeout_s=timeout_s)

    def shutdown(self):
        return self.request("shutdown")

    def subscribe(self, timeout=None):
        """Iterate over events on a connection of their own. timeout: seconds without any
        event before Timeout is raised (None: wait forever)."""
        sub = Client(self._socket_arg, self._job, self.timeout, self._hint_dir)
        try:
            sub.request("subscribe")
            for ev in sub.events:
                yield ev
            sub.events = []
            while True:
                deadline = None if timeout is None else time.monotonic() + timeout
                obj = sub._read(deadline)
                if "event" in obj:
                    yield obj
        finally:
            sub.close()
