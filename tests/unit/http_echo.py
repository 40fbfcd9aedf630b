#!/usr/bin/env python3
"""A tiny HTTP/1.1 server for test_http.c: echoes what it received and injects failures.

GET|POST|PUT /echo                     -> 200 {"method","len","sha256","auth","content_type","expect"}
ANY /status/<code>[?retry_after=N&ratelimit_t=N]   -> <code> after reading the body
ANY /flaky/<key>/<n>/<code>[?retry_after=N]       -> <code> for the first n calls of key, then echo
ANY /reset/<key>/<n>/<bytes>           -> the first n calls of key read <bytes> then reset; then echo
GET /big/<n>                           -> n bytes
GET /slow                              -> answers after 20 s
ANY /late/<ms>                         -> reads the body, waits <ms>, then echoes
POST /_canned {"status","headers","body"} queues an answer; any /hub/... request pops one (FIFO)
GET /_last                             -> the last /hub/... request: method, path, headers, body
Standard library only. Prints the port to --port-file.
"""
import argparse
import hashlib
import json
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

counters = {}
lock = threading.Lock()
canned = []
last = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def read_body(self, limit=None):
        n = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            n = min(n, limit)
        h = hashlib.sha256()
        got = 0
        while got < n:
            d = self.rfile.read(min(65536, n - got))
            if not d:
                break
            h.update(d)
            got += len(d)
        return got, h.hexdigest()

    def reply(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "req-1")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def echo(self):
        n, sha = self.read_body()
        self.reply(200, {"method": self.command, "len": n, "sha256": sha,
                         "auth": "Authorization" in self.headers,
                         "content_type": self.headers.get("Content-Type"),
                         "expect": self.headers.get("Expect"),
                         "chunked": "chunked" in (self.headers.get("Transfer-Encoding") or "")})

    def count(self, key):
        with lock:
            counters[key] = counters.get(key, 0) + 1
            return counters[key]

    def handle_any(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        s = [p for p in u.path.split("/") if p]
        extra = {}
        if "retry_after" in q:
            extra["Retry-After"] = q["retry_after"][0]
        if "ratelimit_t" in q:
            extra["RateLimit"] = f'"api";r=0;t={q["ratelimit_t"][0]}'
        if s[:1] == ["echo"]:
            return self.echo()
        if s[:1] == ["_canned"]:
            n = int(self.headers.get("Content-Length") or 0)
            with lock:
                canned.append(json.loads(self.rfile.read(n)))
            return self.reply(200, {})
        if s[:1] == ["_last"]:
            with lock:
                return self.reply(200, dict(last))
        if s[:1] == ["hub"]:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            with lock:
                last.clear()
                last.update({"method": self.command, "path": self.path,
                             "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": body.decode("utf-8", "replace")})
                c = canned.pop(0) if canned else {"status": 500, "body": "{}"}
            data = c.get("body", "").encode()
            self.send_response(int(c.get("status", 200)))
            self.send_header("Content-Length", str(len(data)))
            for k, v in c.get("headers", {"Content-Type": "application/json"}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            return
        if s[:1] == ["status"]:
            self.read_body()
            return self.reply(int(s[1]), {"error": f"status {s[1]}"}, extra)
        if s[:1] == ["flaky"]:
            if self.count(s[1]) <= int(s[2]):
                self.read_body()
                return self.reply(int(s[3]), {"error": "flaky"}, extra)
            return self.echo()
        if s[:1] == ["reset"]:
            if self.count(s[1]) <= int(s[2]):
                self.read_body(int(s[3]))
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            return self.echo()
        if s[:1] == ["big"]:
            n = int(s[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(b"x" * n)
            return
        if s[:1] == ["late"]:
            n, sha = self.read_body()
            time.sleep(int(s[1]) / 1000)
            return self.reply(200, {"method": self.command, "len": n, "sha256": sha})
        if s[:1] == ["slow"]:
            time.sleep(20)
            return self.reply(200, {})
        self.read_body()
        self.reply(404, {"error": "no such route"})

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{srv.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    srv.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
