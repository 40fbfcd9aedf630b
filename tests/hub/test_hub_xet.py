#!/usr/bin/env python3
"""Xet and bucket tests of tests/hub/hub.py over real sockets (stdlib + ctypes BLAKE3).

Owns: the hash functions against xet-core's reference vectors, and what the CAS must refuse
or keep: a xorb with one flipped byte (400), a shard naming a missing xorb or a wrong
verification hash (400), expired, foreign and wrong-scope tokens (401/403), a hub restart
keeping a Xet file downloadable, global dedup answers, faults on the new routes, and a bucket
batch naming an unknown Xet hash. Objects are built here from the spec, not by a client.
"""

import hashlib
import os
import shutil
import struct
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import xet_hash as xh  # noqa: E402
import xet_objects as xo  # noqa: E402
from test_hub_protocol import TOKEN, TOKEN_B, HubProc, ndjson, request  # noqa: E402

REASON = xh.load()


def lz4_frame_raw(data):
    """An LZ4 frame whose one block is stored uncompressed (valid LZ4, no compressor needed)."""
    return (struct.pack("<I", xo.LZ4_FRAME_MAGIC) + bytes([0x60, 0x70, 0x73])
            + struct.pack("<I", len(data) | 0x80000000) + data + struct.pack("<I", 0))


def lz4_frame_repeat(unit, total):
    """An LZ4 frame of `unit` repeated to `total` bytes: literals, an overlapping match, and
    the 5 closing literals LZ4 requires."""
    want = (unit * (total // len(unit) + 1))[:total]
    mlen = total - len(unit) - 5 - 4
    assert len(unit) < 15 and mlen >= 0
    blk = bytes([(len(unit) << 4) | min(mlen, 15)]) + unit + struct.pack("<H", len(unit))
    if mlen >= 15:
        rest = mlen - 15
        blk += b"\xff" * (rest // 255) + bytes([rest % 255])
    blk += bytes([5 << 4]) + want[-5:]
    return (struct.pack("<I", xo.LZ4_FRAME_MAGIC) + bytes([0x60, 0x70, 0x73])
            + struct.pack("<I", len(blk)) + blk + struct.pack("<I", 0))


def chunk_bytes(data, scheme=0, payload=None):
    payload = data if payload is None else payload
    return (bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme])
            + len(data).to_bytes(3, "little") + payload)


def make_xorb(pieces):
    """(xorb bytes, hash hex, [(chunk hash, len)], xorb length) from [(data, scheme, payload)]."""
    body = b"".join(chunk_bytes(*p) for p in pieces)
    chunks = [(xh.chunk_hash(p[0]), len(p[0])) for p in pieces]
    return body, xh.to_hex(xh.xorb_hash(chunks)), chunks


def make_shard(files, xorbs):
    """files: [(file chunks [(h, n)], [(xorb hash raw, chunks of xorb, start, end)], sha|None)];
    xorbs: [(xorb hash raw, chunks, serialized size)]. No footer, as the spec asks."""
    out = bytearray(xo.SHARD_TAG + struct.pack("<QQ", 2, 0))
    for fchunks, terms, sha in files:
        flags = xo.FLAG_VERIFICATION | (xo.FLAG_METADATA_EXT if sha else 0)
        out += xh.file_hash(fchunks) + struct.pack("<IIQ", flags, len(terms), 0)
        for xhash, xchunks, a, b in terms:
            out += xhash + struct.pack("<IIII", 0, sum(n for _, n in xchunks[a:b]), a, b)
        for xhash, xchunks, a, b in terms:
            out += xh.verification_hash([h for h, _ in xchunks[a:b]]) + bytes(16)
        if sha:
            out += xh.from_hex(sha) + bytes(16)
    out += xo.BOOKEND
    for xhash, xchunks, size in xorbs:
        out += xhash + struct.pack("<IIII", 0, len(xchunks), sum(n for _, n in xchunks), size)
        start = 0
        for h, n in xchunks:
            out += h + struct.pack("<IIQ", start, n, 0)
            start += n
    out += xo.BOOKEND
    return bytes(out)


@unittest.skipIf(REASON, f"BLAKE3 library unavailable: {REASON}")
class HashVectors(unittest.TestCase):
    """Reference values of xet-core (merklehash aggregated_hashes tests) and the spec."""

    H = ["cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6",
         "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72",
         "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37",
         "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784",
         "4ac202caf347fc1e9c874b1ef6a1c5e619141eb775a6f43f0f0124ccd0060d9e",
         "b3b28636f65c149ea52eb1f94669466f70f033b54cea792824c696ba6ef3c389",
         "0e2c1a002aae913d2c0fc8ddfa4e9e14b7b311b3b0d458726d5d9f6a6318013c"]

    def seq(self, idx):
        return [(xh.from_hex("0" * 64 if i == 0 else self.H[i - 1]), 100 * i) for i in idx]

    def test_hex_form(self):
        # the api doc example, whose printed string drops the "10" of the third group
        self.assertEqual(xh.to_hex(bytes(range(32))),
                         "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918")

    def test_xorb_and_file_hashes(self):
        cases = [
            ([1, 2, 3], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc",
             "54e55dccc6653c612bdb5576c5d3cb34bb31bc4e100248abccf4c908b3ef7715"),
            ([1, 1, 1, 1], "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b",
             "2cdba690d0e09563596e0cda626d43eb4c96ef1e994fe72d9b2f5a83cfcd36dd"),
            ([3, 4, 5, 5, 5],
             "2c1fd1eca47e284512fcb40fcf45a1874939f9b91c774d46aeba5d004d9d263d",
             "0799ba7ee2c3fed173a8e8d832cd13970ddc16070ffbc8aa6dcd77476f66dc73"),
            ([i % 8 for i in range(64)],
             "6554007c9b5d0a5e7918f79596a1b68815c1407535585435f5735db761f21b88",
             "a8640ab81d48854e00078e12b1ea8be5d90be0ffb5f73a15b7009981d093ddd8"),
            ([1] * 32, "0a0123c1617921883b7e13902095fcb86676e77c49120c33b233003b0af0e0a6",
             "53af4711fd1d5e5bdc7f931b6be932314d8d673cb16ad2482f6f5222eaf9e63d"),
        ]
        for idx, want_xorb, want_file in cases:
            c = self.seq(idx)
            self.assertEqual(xh.to_hex(xh.xorb_hash(c)), want_xorb, idx)
            self.assertEqual(xh.to_hex(xh.file_hash(c)), want_file, idx)
        salt = xh.from_hex("b286606709ef32a1cfede1e603a39f83fef56772d8234c0e35d8920071d80b69")
        self.assertEqual(xh.to_hex(xh.file_hash(self.seq([1, 2, 3]), salt)),
                         "337f1f046e4cfc1057f0f3edbd87cf977fdfaf3c2b0c0031ca2d1d2a34aa2270")
        self.assertEqual(xh.file_hash([]), bytes(32))

    def test_lz4_and_byte_grouping(self):
        saved = (xo._lz4frame, xo._liblz4_block)
        try:
            for decoders in (saved, (None, saved[1]), (None, None)):  # each decoder in turn
                xo._lz4frame, xo._liblz4_block = decoders
                self.assertEqual(xo.lz4_frame_decompress(lz4_frame_repeat(b"abc", 1000), 1000),
                                 b"abc" * 333 + b"a")
                self.assertEqual(xo.lz4_frame_decompress(lz4_frame_raw(b"xyz"), 3), b"xyz")
                with self.assertRaises(xo.XetFormatError):
                    xo.lz4_frame_decompress(lz4_frame_repeat(b"abc", 1000), 999)
        finally:
            xo._lz4frame, xo._liblz4_block = saved
        data = bytes(range(11))
        grouped = data[0::4] + data[1::4] + data[2::4] + data[3::4]
        self.assertEqual(xo.bg4_regroup(grouped), data)


@unittest.skipIf(REASON, f"BLAKE3 library unavailable: {REASON}")
class XetHub(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ckpt-hub-xet-")
        self.hub = HubProc(os.path.join(self.tmp, "data"), extra=["--xet", "on"])
        self.base = self.hub.base
        self.repo = "alice/xet-neg"
        r = request(self.base, "POST", "/api/repos/create", {"name": "xet-neg"}, token=TOKEN)
        self.assertEqual(r.status, 200, r.body)

    def tearDown(self):
        self.hub.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def token(self, mode="write", repo=None, tok=TOKEN):
        r = request(self.base, "GET", f"/api/models/{repo or self.repo}/xet-{mode}-token/main",
                    token=tok)
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(j["casUrl"], self.base + "/cas")
        self.assertTrue(j["exp"] > time.time())
        self.assertEqual(r.h("X-Xet-Access-Token"), j["accessToken"])
        return j["accessToken"]

    def cas(self, method, path, body=None, tok=None, headers=None):
        h = dict(headers or {})
        if tok:
            h["Authorization"] = "Bearer " + tok
        return request(self.base, method, "/cas" + path, body, headers=h)

    def upload_file(self, data, tok, pieces=None):
        """Xorb + shard for data; returns (file hash hex, xorb hash hex, sha256 hex)."""
        if pieces is None:
            half = len(data) // 2
            pieces = [(data[:half], 0, None), (data[half:], 1, lz4_frame_raw(data[half:]))]
        body, xhex, chunks = make_xorb(pieces)
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok)
        self.assertEqual(r.status, 200, r.body)
        sha = hashlib.sha256(data).hexdigest()
        shard = make_shard([(chunks, [(xh.from_hex(xhex), chunks, 0, len(chunks))], sha)],
                           [(xh.from_hex(xhex), chunks, len(body))])
        r = self.cas("POST", "/v1/shards", shard, tok)
        self.assertEqual(r.status, 200, r.body)
        return xh.to_hex(xh.file_hash(chunks)), xhex, sha

    def test_xorb_upload_verifies_and_is_idempotent(self):
        tok = self.token()
        data = os.urandom(3000)
        body, xhex, _ = make_xorb([(data[:1000], 0, None), (b"q" * 2000, 1,
                                                            lz4_frame_repeat(b"q", 2000))])
        flipped = bytearray(body)
        flipped[20] ^= 1
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", bytes(flipped), tok)
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("xorb hash mismatch", r.json()["error"])
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok)
        self.assertEqual((r.status, r.json()), (200, {"was_inserted": True}))
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok)
        self.assertEqual((r.status, r.json()), (200, {"was_inserted": False}))
        bad_hdr = bytearray(body)
        bad_hdr[4] = 7  # unknown compression scheme
        _, xhex2, _ = make_xorb([(b"z" * 10, 0, None)])
        r = self.cas("POST", f"/v1/xorbs/default/{xhex2}", bytes(bad_hdr), tok)
        self.assertEqual(r.status, 400)
        self.assertIn("compression scheme", r.json()["error"])

    def test_tokens(self):
        data = os.urandom(500)
        body, xhex, _ = make_xorb([(data, 0, None)])
        path = f"/v1/xorbs/default/{xhex}"
        self.assertEqual(self.cas("POST", path, body).status, 401)  # none
        self.assertEqual(self.cas("POST", path, body, TOKEN).status, 401)  # a Hub token
        forged = self.token()[:-4] + "0000"
        self.assertEqual(self.cas("POST", path, body, forged).status, 401)
        self.assertEqual(self.cas("POST", path, body, self.token("read")).status, 403)
        # bob cannot get a write token for alice's repo
        r = request(self.base, "GET", f"/api/models/{self.repo}/xet-write-token/main",
                    token=TOKEN_B)
        self.assertEqual(r.status, 403)
        r = request(self.base, "GET", f"/api/models/{self.repo}/xet-write-token/nobranch",
                    token=TOKEN)
        self.assertEqual(r.status, 404)

    def test_expired_token(self):
        self.hub.stop()
        self.hub = HubProc(os.path.join(self.tmp, "data"),
                           extra=["--xet", "on", "--xet-token-ttl", "1"])
        self.base = self.hub.base
        tok = self.token()
        time.sleep(2.1)
        data = os.urandom(100)
        body, xhex, _ = make_xorb([(data, 0, None)])
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok)
        self.assertEqual(r.status, 401)
        self.assertIn("expired", r.json()["error"])

    def test_shard_checks(self):
        tok = self.token()
        data = os.urandom(2000)
        body, xhex, chunks = make_xorb([(data, 0, None)])
        xraw = xh.from_hex(xhex)
        files = [(chunks, [(xraw, chunks, 0, 1)], hashlib.sha256(data).hexdigest())]
        shard = make_shard(files, [(xraw, chunks, len(body))])
        r = self.cas("POST", "/v1/shards", shard, tok)  # xorb never uploaded
        self.assertEqual(r.status, 400)
        self.assertIn("never uploaded", r.json()["error"])
        self.assertEqual(self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok).status, 200)
        wrong_sha = [(chunks, [(xraw, chunks, 0, 1)], "ab" * 32)]
        r = self.cas("POST", "/v1/shards", make_shard(wrong_sha, []), tok)
        self.assertEqual(r.status, 400)
        self.assertIn("sha256", r.json()["error"])
        bad_range = [(chunks, [(xraw, chunks, 0, 2)], hashlib.sha256(data).hexdigest())]
        r = self.cas("POST", "/v1/shards", make_shard(bad_range, []), tok)
        self.assertEqual(r.status, 400)
        tampered = bytearray(shard)
        tampered[48 + 48 + 48 + 3] ^= 1  # inside the verification hash
        r = self.cas("POST", "/v1/shards", bytes(tampered), tok)
        self.assertEqual(r.status, 400)
        self.assertIn("verification", r.json()["error"])
        r = self.cas("POST", "/v1/shards", shard, tok)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.cas("POST", "/v1/shards", shard, tok).json(), {"result": 0})

    def commit_xet(self, sha, size, path="w.bin"):
        r = request(self.base, "POST", f"/api/models/{self.repo}/commit/main", ndjson(
            {"key": "header", "value": {"summary": "xet file"}},
            {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha,
                                         "size": size}}), token=TOKEN,
            headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200, r.body)

    def download(self, path, size):
        r = request(self.base, "GET", f"/{self.repo}/resolve/main/{path}", token=TOKEN)
        self.assertEqual(r.status, 302, r.body)
        fhex = r.h("X-Xet-Hash")
        self.assertEqual(r.h("X-Linked-Size"), str(size))
        self.assertIn('rel="xet-auth"', r.h("Link"))
        got = request(self.base, "GET", r.h("Location"))
        self.assertEqual(got.status, 200)
        # and through the CAS: reconstruction then the presigned xorb range
        tok = self.token("read")
        rec = self.cas("GET", f"/v2/reconstructions/{fhex}", tok=tok)
        self.assertEqual(rec.status, 200, rec.body)
        parts = []
        for t in rec.json()["terms"]:
            ent = rec.json()["xorbs"][t["hash"]][0]
            b = ent["ranges"][0]["bytes"]
            x = request(self.base, "GET", ent["url"],
                        headers={"Range": f"bytes={b['start']}-{b['end']}"})
            self.assertEqual(x.status, 206)
            p = 0
            while p < len(x.body):
                data, p = xo.decode_chunk(x.body, p, 0)
                parts.append(data)
        self.assertEqual(b"".join(parts), got.body)
        return got.body

    def test_lfs_commit_of_xet_file_and_restart(self):
        tok = self.token()
        data = os.urandom(5000)
        fhex, _, sha = self.upload_file(data, tok)
        self.commit_xet(sha, len(data))
        r = request(self.base, "POST", f"/api/models/{self.repo}/paths-info/main",
                    {"paths": ["w.bin"]}, token=TOKEN)
        self.assertEqual(r.json()[0]["xetHash"], fhex)
        self.assertEqual(self.download("w.bin", len(data)), data)
        self.hub.stop()
        self.hub = HubProc(os.path.join(self.tmp, "data"), extra=["--xet", "on"])
        self.base = self.hub.base
        self.assertEqual(self.download("w.bin", len(data)), data)
        # the chunk index came back too
        first = xh.to_hex(xh.chunk_hash(data[:2500]))
        r = self.cas("GET", f"/v1/chunks/default-merkledb/{first}", tok=self.token("read"))
        self.assertEqual(r.status, 200)
        _, xorbs, footer = xo.parse_shard(r.body)
        self.assertIsNotNone(footer)
        key = r.body[len(r.body) - 200 + 72:len(r.body) - 200 + 104]
        self.assertIn(xh.hmac(xh.chunk_hash(data[:2500]), key), [c[0] for c in xorbs[0].chunks])
        r = self.cas("GET", "/v1/chunks/default-merkledb/" + "1" * 64, tok=self.token("read"))
        self.assertEqual(r.status, 404)

    def test_foreign_repo_token_and_range(self):
        tok = self.token()
        data = os.urandom(4000)
        fhex, _, sha = self.upload_file(data, tok)
        r = request(self.base, "POST", "/api/repos/create", {"name": "other"}, token=TOKEN_B)
        self.assertEqual(r.status, 200)
        other = self.token("read", repo="bob/other", tok=TOKEN_B)
        r = self.cas("GET", f"/v1/reconstructions/{fhex}", tok=other)
        self.assertEqual(r.status, 401)
        r = self.cas("GET", f"/v1/reconstructions/{fhex}", tok=self.token("read"),
                     headers={"Range": "bytes=2100-2999"})
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(len(j["terms"]), 1)
        self.assertEqual(j["terms"][0]["range"], {"start": 1, "end": 2})
        self.assertEqual(j["offset_into_first_range"], 100)
        self.assertIn("url_range", j["fetch_info"][j["terms"][0]["hash"]][0])
        r = self.cas("GET", f"/v1/reconstructions/{fhex}", tok=self.token("read"),
                     headers={"Range": "bytes=4000-4001"})
        self.assertEqual(r.status, 416)

    def test_faults_on_xet_routes(self):
        tok = self.token()
        r = request(self.base, "POST", "/_admin/faults",
                    [{"route": "xorb", "status": 503, "retry_after": 1},
                     {"route": "shard", "drop_response": True}])
        self.assertEqual(r.status, 200, r.body)
        data = os.urandom(300)
        body, xhex, chunks = make_xorb([(data, 0, None)])
        r = self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok)
        self.assertEqual((r.status, r.h("Retry-After")), (503, "1"))
        self.assertEqual(self.cas("POST", f"/v1/xorbs/default/{xhex}", body, tok).status, 200)
        shard = make_shard([(chunks, [(xh.from_hex(xhex), chunks, 0, 1)],
                             hashlib.sha256(data).hexdigest())],
                           [(xh.from_hex(xhex), chunks, len(body))])
        with self.assertRaises(Exception):
            self.cas("POST", "/v1/shards", shard, tok)
        # the dropped answer's work was done: the retry finds the shard already there
        self.assertEqual(self.cas("POST", "/v1/shards", shard, tok).json(), {"result": 0})
        routes = [x["route"] for x in self.hub.log_lines() if "fault" in x]
        self.assertEqual(routes, ["xorb", "shard"])

    def test_lfs_batch_offers_xet_only_when_asked(self):
        objs = [{"oid": "ab" * 32, "size": 10}]
        hdr = {"Accept": "application/vnd.git-lfs+json"}
        r = request(self.base, "POST", f"/{self.repo}.git/info/lfs/objects/batch",
                    {"operation": "upload", "transfers": ["basic", "multipart", "xet"],
                     "objects": objs, "hash_algo": "sha_256", "ref": {"name": "main"}},
                    token=TOKEN, headers=hdr)
        j = r.json()
        self.assertEqual(j["transfer"], "xet")
        up = j["objects"][0]["actions"]["upload"]
        self.assertTrue(up["href"].endswith(f"/api/models/{self.repo}/xet-write-token/main"))
        for k in ("X-Xet-Cas-Url", "X-Xet-Access-Token", "X-Xet-Token-Expiration",
                  "X-Xet-Session-Id"):
            self.assertIn(k, up["header"])
        r = request(self.base, "POST", f"/{self.repo}.git/info/lfs/objects/batch",
                    {"operation": "upload", "transfers": ["basic", "multipart"],
                     "objects": objs}, token=TOKEN, headers=hdr)
        self.assertEqual(r.json()["transfer"], "basic")

    def test_bucket_batch_refuses_unknown_hash(self):
        r = request(self.base, "POST", "/api/buckets/alice/b1", {}, token=TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(request(self.base, "POST", "/api/buckets/alice/b1", {},
                                 token=TOKEN).status, 409)
        r = request(self.base, "GET", "/api/buckets/alice/b1/xet-write-token", token=TOKEN)
        tok = r.json()["accessToken"]
        data = os.urandom(1000)
        fhex, _, _ = self.upload_file(data, tok)
        r = request(self.base, "POST", "/api/buckets/alice/b1/batch", ndjson(
            {"type": "addFile", "path": "a/x.bin", "xetHash": fhex},
            {"type": "addFile", "path": "y.bin", "xetHash": "cd" * 32}), token=TOKEN,
            headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["succeeded"], 1)
        self.assertEqual([f["path"] for f in r.json()["failed"]], ["y.bin"])
        r = request(self.base, "GET", "/api/buckets/alice/b1/tree?recursive=true", token=TOKEN)
        self.assertEqual([(e["type"], e["path"]) for e in r.json()],
                         [("directory", "a"), ("file", "a/x.bin")])
        r = request(self.base, "POST", "/api/buckets/alice/b1/batch", ndjson(
            {"type": "addFile", "path": "z.bin", "xetHash": fhex}), token=TOKEN_B,
            headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 403)


class XetOff(unittest.TestCase):
    """--xet off keeps the LFS-only hub: no xet transfer, token routes 501, no buckets."""

    def test_off(self):
        tmp = tempfile.mkdtemp(prefix="ckpt-hub-xetoff-")
        hub = HubProc(os.path.join(tmp, "data"), extra=["--xet", "off"])
        try:
            base = hub.base
            request(base, "POST", "/api/repos/create", {"name": "plain"}, token=TOKEN)
            r = request(base, "GET", "/api/models/alice/plain/xet-write-token/main", token=TOKEN)
            self.assertEqual(r.status, 501)
            r = request(base, "POST", "/alice/plain.git/info/lfs/objects/batch",
                        {"operation": "upload", "transfers": ["basic", "multipart", "xet"],
                         "objects": [{"oid": "ab" * 32, "size": 10}]}, token=TOKEN)
            self.assertEqual(r.json()["transfer"], "basic")
            self.assertEqual(request(base, "POST", "/api/buckets/alice/b", {},
                                     token=TOKEN).status, 404)
            r = request(base, "GET", "/api/models/alice/plain?expand=xetEnabled", token=TOKEN)
            self.assertEqual(r.json()["xetEnabled"], False)
        finally:
            hub.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
