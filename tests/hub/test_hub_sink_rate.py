#!/usr/bin/env python3
"""Tests of the test hub's --sink-rate (the WAN stand-in of benchmark s4), over real sockets.

Owns: that LFS PUT, part PUT and xorb POST bodies, from several connections at once, together
arrive no faster than the rate, and that other routes are not paced. Starts hub.py with
--sink-rate on a temp data dir (HubProc of test_hub_protocol); stopped in tearDownModule.
"""

import base64
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_hub_protocol import TOKEN, HubProc, ndjson, request  # noqa: E402

RATE = 2_000_000  # bytes/s
HUBP = None
TMP = None


def setUpModule():
    global HUBP, TMP
    TMP = tempfile.mkdtemp(prefix="ckpt-hub-sink-")
    HUBP = HubProc(os.path.join(TMP, "data"), extra=["--sink-rate", str(RATE)])


def tearDownModule():
    if HUBP:
        HUBP.stop()
    shutil.rmtree(TMP, ignore_errors=True)


def call(method, path, body=None, token=TOKEN, headers=None):
    return request(HUBP.base, method, path, body, token, headers, timeout=60)


class TestSinkRate(unittest.TestCase):
    def new_repo(self, name):
        r = call("POST", "/api/repos/create", {"name": name, "type": "model"})
        self.assertEqual(r.status, 200, r.body)
        return "alice/" + name

    def put_href(self, rid, data):
        oid = hashlib.sha256(data).hexdigest()
        r = call("POST", "/%s.git/info/lfs/objects/batch" % rid, {
            "operation": "upload", "transfers": ["basic"],
            "objects": [{"oid": oid, "size": len(data)}]})
        self.assertEqual(r.status, 200, r.body)
        return r.json()["objects"][0]["actions"]["upload"]["href"]

    def test_lfs_puts_share_one_rate(self):
        rid = self.new_repo("sink-lfs")
        blobs = [os.urandom(RATE // 2) for _ in range(4)]  # 2 s of bytes in all
        hrefs = [self.put_href(rid, b) for b in blobs]
        status = []

        def put(href, data):
            status.append(call("PUT", href, data, token=None).status)

        t0 = time.monotonic()
        threads = [threading.Thread(target=put, args=a) for a in zip(hrefs, blobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        self.assertEqual(status, [200] * 4)
        # 4 connections at once: each alone would take 0.25 s; together they share the rate
        # (one 50 ms burst allowed)
        self.assertGreaterEqual(took, 2 * RATE / RATE - 0.1, "bodies not paced: %.2f s" % took)
        puts = [r for r in HUBP.log_lines() if r["route"] == "lfs_put"]
        self.assertEqual(sum(r["bytes_in"] for r in puts[-4:]), 2 * RATE)

    def test_other_routes_not_paced(self):
        rid = self.new_repo("sink-commit")
        text = ("x" * 99 + "\n") * (RATE * 3 // 4 // 100)
        body = ndjson({"key": "header", "value": {"summary": "big text"}},
                      {"key": "file", "value": {"path": "notes.txt", "content":
                                                base64.b64encode(text.encode()).decode(),
                                                "encoding": "base64"}})
        self.assertGreater(len(body), RATE)  # over 1 s of bytes, were it paced
        t0 = time.monotonic()
        r = call("POST", "/api/models/%s/commit/main" % rid, body,
                 headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200, r.body)
        self.assertLess(time.monotonic() - t0, 0.9)

    def test_xorb_bodies_paced(self):
        rid = self.new_repo("sink-xorb")
        r = call("GET", "/api/models/%s/xet-write-token/main" % rid)
        if r.status in (404, 501):
            self.skipTest("hub runs with Xet off: %s" % r.body[:200])
        self.assertEqual(r.status, 200, r.body)
        tok = r.json()["accessToken"]
        t0 = time.monotonic()
        # not a valid xorb: the hub reads the whole body (paced) before it parses it
        r = request(HUBP.base, "POST", "/cas/v1/xorbs/default/" + "ab" * 32,
                    os.urandom(RATE), headers={"Authorization": "Bearer " + tok}, timeout=60)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 400, r.body)
        self.assertGreaterEqual(took, 0.9, "xorb body not paced: %.2f s" % took)


if __name__ == "__main__":
    unittest.main()
