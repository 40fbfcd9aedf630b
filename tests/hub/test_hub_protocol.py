#!/usr/bin/env python3
"""Protocol tests of tests/hub/hub.py over real sockets (stdlib only).

Owns: what the hub must check (docs/hub-protocol.md section 13), its persistence across a
restart, fault injection and the request log. Starts hub.py as a subprocess on a temp data dir;
every test process it starts is stopped in tearDown/tearDownModule.
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
HUB = os.path.join(HERE, "hub.py")
TOKEN = "hf_alice_token"
TOKEN_B = "hf_bob_token"
CHUNK = 65536
THRESHOLD = 100000


class HubProc:
    def __init__(self, data, port=0, extra=(), env=None):
        self.data = data
        self.dir = os.path.dirname(data)
        self.log = os.path.join(self.dir, "requests.jsonl")
        pf = os.path.join(self.dir, "port")
        if os.path.exists(pf):
            os.unlink(pf)
        cmd = [sys.executable, HUB, "--data", data, "--port", str(port), "--port-file", pf,
               "--log", self.log, "--user", "alice:" + TOKEN, "--user", "bob:" + TOKEN_B,
               "--multipart-threshold", str(THRESHOLD), "--chunk-size", str(CHUNK),
               *extra]
        # stderr to a file: a pipe nobody drains could block the hub
        self.errpath = os.path.join(self.dir, "hub-stderr.txt")
        self.err = open(self.errpath, "ab")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err,
                                  env=dict(os.environ, **(env or {})))
        line = self.p.stdout.readline().decode()
        if "hub listening on" not in line:
            self.p.kill()
            self.p.wait()
            with open(self.errpath) as f:
                raise RuntimeError("hub did not start: %r %s" % (line, f.read()))
        with open(pf) as f:
            self.port = int(f.read())
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()
        self.err.close()
        return self.p.returncode

    def log_lines(self):
        with open(self.log) as f:
            return [json.loads(x) for x in f if x.strip()]


class Resp:
    def __init__(self, r, body):
        self.status = r.status
        self.headers = r.headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def h(self, name):
        return self.headers.get(name)


def request(base, method, path, body=None, token=None, headers=None, timeout=30):
    """One request on its own connection. path may be absolute (presigned URLs)."""
    if path.startswith("http"):
        u = urllib.parse.urlsplit(path)
        host, port = u.hostname, u.port
        path = u.path + ("?" + u.query if u.query else "")
    else:
        u = urllib.parse.urlsplit(base)
        host, port = u.hostname, u.port
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return Resp(r, r.read())
    finally:
        c.close()


def ndjson(*objs, trailing=True):
    s = "\n".join(json.dumps(o) for o in objs)
    return (s + ("\n" if trailing else "")).encode()


def git_blob(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


HUBP = None
TMP = None


def setUpModule():
    global HUBP, TMP
    TMP = tempfile.mkdtemp(prefix="ckpt-hub-test-")
    HUBP = HubProc(os.path.join(TMP, "data"), extra=["--page-size", "3"])


def tearDownModule():
    if HUBP:
        HUBP.stop()
    shutil.rmtree(TMP, ignore_errors=True)


class Base(unittest.TestCase):
    counter = 0

    def call(self, method, path, body=None, token=TOKEN, headers=None):
        return request(HUBP.base, method, path, body, token, headers)

    def new_repo(self, private=False):
        Base.counter += 1
        name = "r%d-%s" % (Base.counter, self._testMethodName.replace("_", "-")[:40])
        r = self.call("POST", "/api/repos/create", {"name": name, "type": "model",
                                                     "private": private})
        self.assertEqual(r.status, 200, r.body)
        return "alice/" + name

    def head(self, rid):
        r = self.call("GET", "/api/models/%s/revision/main" % rid)
        self.assertEqual(r.status, 200, r.body)
        return r.json()["sha"]

    def commit(self, rid, *ops, summary="c", parent=None, rev="main", query="",
               trailing=True):
        hdr = {"summary": summary}
        if parent:
            hdr["parentCommit"] = parent
        body = ndjson({"key": "header", "value": hdr}, *ops, trailing=trailing)
        return self.call("POST", "/api/models/%s/commit/%s%s" % (rid, rev, query), body,
                         headers={"Content-Type": "application/x-ndjson"})

    def batch(self, rid, objs, transfers=("basic", "multipart")):
        r = self.call("POST", "/%s.git/info/lfs/objects/batch" % rid, {
            "operation": "upload", "transfers": list(transfers), "hash_algo": "sha256",
            "objects": [{"oid": o, "size": s} for o, s in objs], "ref": {"name": "main"}},
            headers={"Accept": "application/vnd.git-lfs+json"})
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def upload_basic(self, rid, data):
        oid = hashlib.sha256(data).hexdigest()
        b = self.batch(rid, [(oid, len(data))], transfers=("basic",))
        obj = b["objects"][0]
        if "actions" in obj:
            r = self.call("PUT", obj["actions"]["upload"]["href"], data, token=None)
            self.assertEqual(r.status, 200, r.body)
        return oid

    def put_parts(self, hdr, data, nums):
        chunk = int(hdr["chunk_size"])
        etags = {}
        for n in nums:
            r = self.call("PUT", hdr["%05d" % n], data[(n - 1) * chunk:n * chunk], token=None)
            self.assertEqual(r.status, 200, r.body)
            etags[n] = r.h("ETag")
        return etags


class TestAuthRepos(Base):
    def test_whoami(self):
        r = self.call("GET", "/api/whoami-v2", token=None)
        self.assertEqual(r.status, 401)
        r = self.call("GET", "/api/whoami-v2", token="hf_wrong")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.h("X-Error-Message"), "Invalid credentials in Authorization header")
        self.assertTrue(r.h("X-Request-Id"))
        self.assertEqual(r.h("Content-Type"), "application/json")
        r = self.call("GET", "/api/whoami-v2")
        self.assertEqual(r.status, 200)
        j = r.json()
        self.assertEqual(j["name"], "alice")
        self.assertIn("accessToken", j["auth"])
        self.assertIn("ckptpush-org", [o["name"] for o in j["orgs"]])

    def test_create_repo(self):
        rid = self.new_repo()
        name = rid.split("/")[1]
        r = self.call("POST", "/api/repos/create", {"name": name, "type": "model"})
        self.assertEqual(r.status, 409)
        for bad in ["a--b", "a..b", "-a", "a.", "x" * 97, "a b", "a/b/c", ""]:
            r = self.call("POST", "/api/repos/create", {"name": bad, "organization": "alice"})
            self.assertEqual(r.status, 400, bad)
            self.assertIn("error", r.json())
        r = self.call("POST", "/api/repos/create", {"name": "x1", "organization": "bob"})
        self.assertEqual(r.status, 403)
        r = self.call("POST", "/api/repos/create", {"name": "x1"}, token=None)
        self.assertEqual(r.status, 401)
        r = self.call("POST", "/api/repos/create", {"name": "orgrepo", "organization":
                                                     "ckptpush-org", "type": "dataset",
                                                     "visibility": "private"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["url"], HUBP.base + "/datasets/ckptpush-org/orgrepo")
        # private: bob (other user, also org member) can read org repos, not alice's
        priv = self.new_repo(private=True)
        self.assertEqual(self.call("GET", "/api/models/" + priv, token=TOKEN_B).status, 404)
        self.assertEqual(self.call("GET", "/api/models/" + priv, token=None).status, 401)
        r = self.call("GET", "/api/models/" + priv)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.json()["private"])
        # initial commit holds the default .gitattributes
        j = self.call("GET", "/api/models/%s?blobs=true" % rid).json()
        self.assertEqual([s["rfilename"] for s in j["siblings"]], [".gitattributes"])
        r = self.call("GET", "/%s/resolve/main/.gitattributes" % rid)
        self.assertIn(b"*.safetensors filter=lfs", r.body)
        self.assertEqual(r.h("ETag"), '"%s"' % git_blob(r.body))
        r = self.call("GET", "/api/models/%s/revision/HEAD?expand[]=likes" % rid)
        self.assertEqual(set(r.json()), {"_id", "id", "likes"})
        r = self.call("GET", "/api/models/%s?expand=bogus" % rid)
        self.assertEqual(r.status, 400)
        self.assertIn('"expand" must be one of', r.json()["error"])
        self.assertEqual(self.call("GET", "/api/models/alice/nope").h("X-Error-Code"),
                         "RepoNotFound")

    def test_branches_refs_commits(self):
        rid = self.new_repo()
        r = self.call("POST", "/api/models/%s/branch/dev" % rid, {})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.call("POST", "/api/models/%s/branch/dev" % rid, {}).status, 409)
        r = self.commit(rid, {"key": "file", "value": {"path": "x.txt", "content":
                                                       base64.b64encode(b"x\n").decode()}},
                        rev="dev", summary="on dev")
        self.assertEqual(r.status, 200, r.body)
        refs = self.call("GET", "/api/models/%s/refs" % rid).json()
        names = {b["name"]: b["targetCommit"] for b in refs["branches"]}
        self.assertEqual(names["dev"], r.json()["commitOid"])
        c = self.call("GET", "/api/models/%s/commits/dev" % rid).json()
        self.assertEqual([x["title"] for x in c], ["on dev", "initial commit"])
        self.assertEqual(c[0]["authors"], [{"user": "alice"}])
        self.assertEqual(self.call("DELETE", "/api/models/%s/branch/dev" % rid).status, 200)
        self.assertEqual(self.call("DELETE", "/api/models/%s/branch/main" % rid).status, 403)
        r = self.commit(rid, rev="dev")
        self.assertEqual((r.status, r.h("X-Error-Code")), (404, "RevisionNotFound"))

    def test_validate_yaml(self):
        good = ("---\nlicense: mit\ntags: [a, b]\nmodel-index:\n- name: m\n  results:\n"
                "  - task:\n      type: text-generation\n    dataset:\n      name: d\n"
                "      type: d\n    metrics:\n    - type: acc\n      value: 0.5\n---\n# hi\n")
        r = self.call("POST", "/api/validate-yaml", {"content": good, "repoType": "model"})
        self.assertEqual((r.status, r.json()), (200, {"warnings": []}))
        bad = "---\nmodel-index:\n- name: m\n  results:\n  - task: {}\n---\n"
        r = self.call("POST", "/api/validate-yaml", {"content": bad, "repoType": "model"})
        self.assertEqual(r.status, 400)
        self.assertTrue(r.json()["errors"][0]["message"])
        r = self.call("POST", "/api/validate-yaml", {"content": "---\n- a\n---\n"})
        self.assertEqual(r.status, 400)


class TestUploads(Base):
    def test_preupload_modes(self):
        rid = self.new_repo()
        oid = self.upload_basic(rid, b"\0weights")
        r = self.commit(rid, {"key": "file", "value": {"path": "a.txt", "content":
                                                       base64.b64encode(b"hi\n").decode()}},
                        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                     "oid": oid, "size": 8}})
        self.assertEqual(r.status, 200, r.body)
        txt = base64.b64encode(b"plain text").decode()
        files = [
            {"path": "a.txt", "size": 10, "sample": txt},
            {"path": "m.safetensors", "size": 10, "sample": txt},
            {"path": "saved_model/x/y.pb2", "size": 10, "sample": txt},
            {"path": "blob.dat", "size": 10, "sample": base64.b64encode(b"ab\0cd").decode()},
            {"path": "big.txt", "size": 11 * 1024 * 1024, "sample": txt},
            {"path": "empty.bin", "size": 0, "sample": ""},
            {"path": "w.bin", "size": 8, "sample": txt},
        ]
        r = self.call("POST", "/api/models/%s/preupload/main" % rid, {"files": files})
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(j["commitOid"], r.json()["commitOid"])
        self.assertEqual(j["commitOid"], self.head(rid))
        modes = {f["path"]: f["uploadMode"] for f in j["files"]}
        self.assertEqual(modes, {"a.txt": "regular", "m.safetensors": "lfs",
                                 "saved_model/x/y.pb2": "lfs", "blob.dat": "lfs",
                                 "big.txt": "lfs", "empty.bin": "regular", "w.bin": "lfs"})
        oids = {f["path"]: f.get("oid") for f in j["files"]}
        self.assertEqual(oids["a.txt"], git_blob(b"hi\n"))
        self.assertEqual(oids["w.bin"], oid)
        self.assertIsNone(oids["m.safetensors"])
        self.assertTrue(all(f["shouldIgnore"] is False for f in j["files"]))
        # request gitAttributes and gitIgnore win over the repo's
        r = self.call("POST", "/api/models/%s/preupload/main" % rid, {
            "files": [{"path": "m.safetensors", "size": 3, "sample": txt},
                      {"path": "logs/x.log", "size": 3, "sample": txt}],
            "gitAttributes": "*.log filter=lfs diff=lfs merge=lfs -text\n",
            "gitIgnore": "*.tmp\nlogs/\n"})
        got = {f["path"]: (f["uploadMode"], f["shouldIgnore"]) for f in r.json()["files"]}
        self.assertEqual(got, {"m.safetensors": ("regular", False), "logs/x.log": ("lfs", True)})
        r = self.call("POST", "/api/models/%s/preupload/main" % rid,
                      {"files": [{"path": "f%d" % i, "size": 1, "sample": ""}
                                 for i in range(257)]})
        self.assertEqual(r.status, 413)
        r = self.call("POST", "/api/models/%s/preupload/nobranch" % rid, {"files": []})
        self.assertEqual((r.status, r.h("X-Error-Code")), (404, "RevisionNotFound"))

    def test_basic_put_checks(self):
        rid = self.new_repo()
        data = os.urandom(5000)
        oid = hashlib.sha256(data).hexdigest()
        b = self.batch(rid, [(oid, len(data)), ("ABC", 1)], transfers=("basic",))
        self.assertEqual(b["transfer"], "basic")
        obj = b["objects"][0]
        href = obj["actions"]["upload"]["href"]
        self.assertTrue(href.startswith(HUBP.base + "/_storage/"))
        self.assertIn("verify", obj["actions"])
        self.assertEqual(b["objects"][1]["error"]["code"], 422)
        bad = bytearray(data)
        bad[0] ^= 1
        r = self.call("PUT", href, bytes(bad), token=None)
        self.assertEqual(r.status, 400)
        self.assertIn(b"BadDigest", r.body)
        r = self.call("PUT", href, data[:-1], token=None)
        self.assertEqual(r.status, 400)
        # chunked (no Content-Length) is refused like S3 does
        r = self.call("PUT", href, iter([data]), token=None,
                      headers={"Transfer-Encoding": "chunked"})
        self.assertEqual(r.status, 411)
        # nothing stored: the batch still asks for an upload, verify says 404
        self.assertIn("actions", self.batch(rid, [(oid, len(data))])["objects"][0])
        vhref = obj["actions"]["verify"]["href"]
        self.assertEqual(self.call("POST", vhref, {"oid": oid, "size": len(data)}).status, 404)
        # tampered signature
        r = self.call("PUT", href.replace("size=5000", "size=5001"), data, token=None)
        self.assertEqual(r.status, 403)
        self.assertIn(b"SignatureDoesNotMatch", r.body)
        r = self.call("PUT", href, data, token=None)
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn("actions", self.batch(rid, [(oid, len(data))])["objects"][0])
        self.assertEqual(self.call("POST", vhref, {"oid": oid, "size": len(data)}).status, 200)
        self.assertEqual(self.call("POST", vhref, {"oid": oid, "size": 1}).status, 404)
        # the object is scoped to the repo: another repo must upload it again
        other = self.new_repo()
        self.assertIn("actions", self.batch(other, [(oid, len(data))])["objects"][0])
        r = self.commit(other, {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                            "oid": oid, "size": len(data)}})
        self.assertEqual(r.status, 422)

    def test_multipart_full_cycle(self):
        rid = self.new_repo()
        data = os.urandom(3 * CHUNK + 1234)
        oid = hashlib.sha256(data).hexdigest()
        b = self.batch(rid, [(oid, len(data))])
        self.assertEqual(b["transfer"], "multipart")
        up = b["objects"][0]["actions"]["upload"]
        hdr = up["header"]
        self.assertEqual(hdr["chunk_size"], str(CHUNK))
        self.assertEqual([k for k in hdr if k.isdigit()], ["00001", "00002", "00003", "00004"])
        # basic-only client gets basic even for a big object
        b2 = self.batch(rid, [(oid, len(data))], transfers=("basic",))
        self.assertEqual(b2["transfer"], "basic")
        # wrong part size
        r = self.call("PUT", hdr["00001"], data[:CHUNK - 1], token=None)
        self.assertEqual(r.status, 400)
        r = self.call("PUT", hdr["00004"], data[3 * CHUNK:] + b"x", token=None)
        self.assertEqual(r.status, 400)
        etags = self.put_parts(hdr, data, [4, 2, 1, 3])
        for n, e in etags.items():
            chunk = data[(n - 1) * CHUNK:n * CHUNK]
            self.assertEqual(e, '"%s"' % hashlib.md5(chunk).hexdigest())
        parts = [{"partNumber": n, "etag": etags[n]} for n in range(1, 5)]

        def complete(body):
            return self.call("POST", up["href"], body, token=None,
                             headers={"Content-Type": "application/vnd.git-lfs+json"})

        bad_etag = [dict(p) for p in parts]
        bad_etag[1]["etag"] = '"0000"'
        self.assertEqual(complete({"oid": oid, "parts": bad_etag}).status, 400)
        self.assertEqual(complete({"oid": oid, "parts": [parts[1], parts[0]] + parts[2:]})
                         .status, 400)
        self.assertEqual(complete({"oid": oid, "parts": parts[:3]}).status, 400)
        self.assertEqual(complete({"oid": oid, "parts": parts + [parts[3]]}).status, 400)
        # a part re-PUT with other content replaces it; the hash then fails
        r = self.call("PUT", hdr["00002"], os.urandom(CHUNK), token=None)
        self.assertEqual(r.status, 200)
        p2 = [dict(p) for p in parts]
        p2[1]["etag"] = r.h("ETag")
        r = complete({"oid": oid, "parts": p2})
        self.assertEqual(r.status, 400)
        self.assertIn("sha256", r.json()["error"])
        etags.update(self.put_parts(hdr, data, [2]))
        parts = [{"partNumber": n, "etag": etags[n]} for n in range(1, 5)]
        r = complete({"oid": oid, "parts": parts})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(complete({"oid": oid, "parts": parts}).status, 200)
        self.assertNotIn("actions", self.batch(rid, [(oid, len(data))])["objects"][0])
        self.check_commit_and_download(rid, "ckpt/model.safetensors", oid, data)

    def check_commit_and_download(self, rid, path, oid, data):
        r = self.commit(rid, {"key": "lfsFile", "value": {"path": path, "algo": "sha256",
                                                          "oid": oid, "size": len(data)}},
                        trailing=False)
        self.assertEqual(r.status, 200, r.body)
        commit = r.json()["commitOid"]
        self.assertEqual(r.json()["commitUrl"], "%s/%s/commit/%s" % (HUBP.base, rid, commit))
        tree = self.call("GET", "/api/models/%s/tree/main/%s" % (rid, path.rsplit("/", 1)[0]))
        ent = [e for e in tree.json() if e["path"] == path][0]
        self.assertEqual(ent["lfs"]["oid"], oid)
        self.assertEqual(ent["size"], len(data))
        r = self.call("GET", "/%s/resolve/main/%s" % (rid, path))
        self.assertEqual(r.status, 302)
        self.assertEqual(r.h("X-Linked-Etag"), '"%s"' % oid)
        self.assertEqual(r.h("X-Linked-Size"), str(len(data)))
        self.assertEqual(r.h("X-Repo-Commit"), commit)
        loc = r.h("Location")
        self.assertTrue(loc.startswith(HUBP.base + "/_storage/"))
        r = self.call("GET", loc, token=None, headers={"Range": "bytes=0-0"})
        self.assertEqual(r.status, 206)
        self.assertEqual(r.h("Content-Range"), "bytes 0-0/%d" % len(data))
        self.assertEqual(r.body, data[:1])
        r = self.call("GET", loc, token=None, headers={"Range": "bytes=100-"})
        self.assertEqual((r.status, r.body), (206, data[100:]))
        r = self.call("GET", loc, token=None)
        self.assertEqual(r.status, 200)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), oid)
        self.assertEqual(r.h("ETag"), '"%s"' % oid)
        r = self.call("GET", "/%s/raw/main/%s" % (rid, path))
        self.assertTrue(r.body.startswith(b"version https://git-lfs.github.com/spec/v1\n"))
        self.assertEqual(ent["oid"], git_blob(r.body))
        ga = self.call("GET", "/%s/raw/main/.gitattributes" % rid).body.decode()
        if path.endswith(".dat"):
            self.assertIn(path + " filter=lfs", ga)

    def test_lfs_file_unknown_oid(self):
        rid = self.new_repo()
        r = self.commit(rid, {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                          "oid": "ab" * 32, "size": 3}})
        self.assertEqual(r.status, 422)
        self.assertIn("LFS pointer pointed to a file that does not exist", r.json()["error"])
        oid = self.upload_basic(rid, b"abc")
        r = self.commit(rid, {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                          "oid": oid, "size": 4}})
        self.assertEqual(r.status, 422)

    def test_commit_rules(self):
        rid = self.new_repo()
        h0 = self.head(rid)
        f = {"key": "file", "value": {"path": "a.txt", "content":
                                      base64.b64encode(b"one\n").decode()}}
        r = self.commit(rid, f, parent=h0[:7])
        self.assertEqual(r.status, 200, r.body)
        r = self.commit(rid, f, parent=h0)
        self.assertEqual(r.status, 412)
        self.assertIn("The branch was updated since you opened this page", r.json()["error"])
        self.assertEqual(self.commit(rid, f, parent="xyz12").status, 412)
        for bad in ["../x", "/abs", "a//b", "..\\ddd", ".git/config", "a/./b", "d/../e",
                    "bad\nname", "ctl\x01.txt", "del\x7f"]:
            r = self.commit(rid, {"key": "file", "value": {"path": bad, "content": ""}})
            self.assertEqual(r.status, 422, bad)
        r = self.commit(rid, {"key": "deletedFile", "value": {"path": "missing.txt"}})
        self.assertEqual((r.status, r.h("X-Error-Code")), (404, "EntryNotFound"))
        self.assertIn("A file with this name doesn't exist", r.json()["error"])
        r = self.commit(rid, {"key": "file", "value": {"path": "b.bin", "content":
                                                       base64.b64encode(b"a\0b").decode()}})
        self.assertEqual(r.status, 400)
        self.assertIn("binary files", r.json()["error"])
        r = self.commit(rid, {"key": "file", "value": {"path": "c", "content": "!!notb64"}})
        self.assertEqual(r.status, 400)
        r = self.call("POST", "/api/models/%s/commit/main" % rid,
                      ndjson({"key": "header", "value": {"summary": ""}}))
        self.assertEqual(r.status, 400)
        r = self.call("POST", "/api/models/%s/commit/main" % rid, ndjson(f), token=None)
        self.assertEqual(r.status, 401)
        r = self.call("POST", "/api/models/%s/commit/main" % rid,
                      ndjson({"key": "header", "value": {"summary": "x"}}), token=TOKEN_B)
        self.assertEqual(r.status, 403)
        r = self.commit(rid, {"key": "deletedFile", "value": {"path": "a.txt"}})
        self.assertEqual(r.status, 200)
        # PR
        r = self.commit(rid, f, query="?create_pr=1", summary="pr")
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json()["pullRequestUrl"].endswith("/%s/discussions/1" % rid))
        refs = self.call("GET", "/api/models/%s/refs?include_prs=1" % rid).json()
        self.assertEqual(refs["pullRequests"][0]["ref"], "refs/pr/1")
        for rev in ["refs%2Fpr%2F1", "refs/pr/1"]:
            t = self.call("GET", "/api/models/%s/tree/%s" % (rid, rev))
            self.assertEqual(t.status, 200, rev)
            self.assertIn("a.txt", [e["path"] for e in t.json()])
        r = self.call("GET", "/%s/resolve/refs%%2Fpr%%2F1/a.txt" % rid)
        self.assertEqual(r.body, b"one\n")
        self.assertNotIn("a.txt", [e["path"] for e in self.call(
            "GET", "/api/models/%s/tree/main" % rid).json()])

    def test_tree_pagination_paths_info_git_oids(self):
        rid = self.new_repo()
        ops = [{"key": "file", "value": {"path": p, "content":
                                         base64.b64encode(p.encode() + b"\n").decode()}}
               for p in ["d1/a.txt", "d1/sub/b.txt", "d2/c.txt", "top.txt", "d1/sub/x y.txt"]]
        r = self.commit(rid, *ops)
        self.assertEqual(r.status, 200, r.body)
        url = "/api/models/%s/tree/main?recursive=true" % rid
        seen, pages = [], 0
        while url:
            r = self.call("GET", url)
            self.assertEqual(r.status, 200, r.body)
            seen += r.json()
            pages += 1
            link = r.h("Link")
            url = None
            if link:
                self.assertRegex(link, r'^<http://127\.0\.0\.1:\d+/.*>; rel="next"$')
                url = link[1:link.index(">")]
        paths = sorted(e["path"] for e in seen)
        self.assertEqual(paths, sorted([".gitattributes", "d1", "d1/a.txt", "d1/sub",
                                        "d1/sub/b.txt", "d1/sub/x y.txt", "d2", "d2/c.txt",
                                        "top.txt"]))
        self.assertEqual(pages, 3)
        r = self.call("GET", "/api/models/%s/tree/main/d1%%2Fsub" % rid)
        self.assertEqual(sorted(e["path"] for e in r.json()), ["d1/sub/b.txt",
                                                                "d1/sub/x y.txt"])
        r = self.call("GET", "/api/models/%s/tree/main/nope" % rid)
        self.assertEqual((r.status, r.h("X-Error-Code")), (404, "EntryNotFound"))
        r = self.call("GET", "/api/models/%s/tree/main/d1?expand=true" % rid)
        self.assertTrue(all("lastCommit" in e for e in r.json()))
        # paths-info, JSON and form
        r = self.call("POST", "/api/models/%s/paths-info/main" % rid,
                      {"paths": ["d1/a.txt", "d2", "missing"], "expand": False})
        self.assertEqual(sorted(e["path"] for e in r.json()), ["d1/a.txt", "d2"])
        r = self.call("POST", "/api/models/%s/paths-info/main" % rid,
                      b"paths=top.txt&paths=d1%2Fsub%2Fb.txt&expand=false",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(sorted(e["path"] for e in r.json()), ["d1/sub/b.txt", "top.txt"])
        r = self.call("POST", "/api/models/%s/paths-info/main" % rid,
                      {"paths": ["p%d" % i for i in range(1001)]})
        self.assertEqual(r.status, 413)
        # git object ids agree with git itself
        ent = [e for e in seen if e["path"] == "d1/a.txt"][0]
        out = subprocess.run(["git", "hash-object", "--stdin"], input=b"d1/a.txt\n",
                             capture_output=True, check=True).stdout.decode().strip()
        self.assertEqual(ent["oid"], out)
        r = self.call("GET", "/%s/resolve/main/d1/a.txt" % rid, headers={"Range": "bytes=1-3"})
        self.assertEqual((r.status, r.body, r.h("ETag")), (206, b"1/a", '"%s"' % out))
        # rebuild the whole commit in a real git repository: same tree and commit ids
        sha = self.head(rid)
        g = os.path.join(TMP, "gitcheck")
        subprocess.run(["git", "init", "-q", "--bare", g], check=True)
        objdir = os.path.join(HUBP.data, "git")
        import zlib
        for d in os.listdir(objdir):
            for f in os.listdir(os.path.join(objdir, d)):
                if f.startswith(".tmp"):
                    continue
                with open(os.path.join(objdir, d, f), "rb") as fh:
                    raw = fh.read()
                os.makedirs(os.path.join(g, "objects", d), exist_ok=True)
                with open(os.path.join(g, "objects", d, f), "wb") as fh:
                    fh.write(zlib.compress(raw))
        r = subprocess.run(["git", "--git-dir", g, "fsck", "--strict", sha],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        ls = subprocess.run(["git", "--git-dir", g, "ls-tree", "-r", "--name-only", sha],
                            capture_output=True, check=True).stdout.decode().split("\n")
        self.assertIn("d1/sub/x y.txt", ls)
        r = self.call("HEAD", "/%s/resolve/main/missing.txt" % rid)
        self.assertEqual((r.status, r.h("X-Error-Code"), r.h("X-Repo-Commit")),
                         (404, "EntryNotFound", sha))
        r = self.call("HEAD", "/%s/resolve/nobranch/top.txt" % rid)
        self.assertEqual(r.h("X-Error-Code"), "RevisionNotFound")

    def test_expect_continue_and_keepalive(self):
        rid = self.new_repo()
        data = b"0123456789" * 100
        oid = hashlib.sha256(data).hexdigest()
        href = self.batch(rid, [(oid, len(data))])["objects"][0]["actions"]["upload"]["href"]
        u = urllib.parse.urlsplit(href)
        s = socket.create_connection(("127.0.0.1", HUBP.port), timeout=10)
        try:
            s.sendall(("PUT %s?%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
                       "Expect: 100-continue\r\n\r\n" % (u.path, u.query, HUBP.port,
                                                         len(data))).encode())
            got = s.recv(100)
            self.assertTrue(got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got)
            s.sendall(data)
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"HTTP/1.1 200"))
            while f.readline() not in (b"\r\n", b""):
                pass
            # same connection, second request (keep-alive)
            s.sendall(b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\n\r\n")
            self.assertTrue(f.readline().startswith(b"HTTP/1.1 200"))
        finally:
            s.close()


class TestConcurrency(Base):
    def test_parallel_commits_and_client_abort(self):
        import threading
        rid = self.new_repo()
        results = []

        def one(i):
            r = self.commit(rid, {"key": "file", "value": {
                "path": "f%02d.txt" % i, "content": base64.b64encode(b"%d\n" % i).decode()}},
                summary="c%02d" % i)
            results.append(r.status)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(results, [200] * 12)
        c = self.call("GET", "/api/models/%s/commits/main" % rid).json()
        self.assertEqual(len(c), 3)  # page size 3 in this run; history is linear
        files = self.call("GET", "/api/models/%s?blobs=true" % rid).json()["siblings"]
        self.assertEqual(len(files), 13)
        # a client that dies mid-body leaves nothing behind and the hub keeps serving
        data = os.urandom(CHUNK)
        oid = hashlib.sha256(data).hexdigest()
        href = self.batch(rid, [(oid, len(data))], transfers=("basic",))["objects"][0][
            "actions"]["upload"]["href"]
        u = urllib.parse.urlsplit(href)
        s = socket.create_connection(("127.0.0.1", HUBP.port), timeout=10)
        s.sendall(("PUT %s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % (u.path, u.query, len(data))).encode() + data[:1000])
        s.close()
        time.sleep(0.2)
        self.assertIn("actions", self.batch(rid, [(oid, len(data))])["objects"][0])
        self.assertEqual(os.listdir(os.path.join(HUBP.data, "tmp")), [])
        self.assertEqual(self.call("GET", "/api/whoami-v2").status, 200)


class TestRestartExpiryFaults(Base):
    def test_restart_mid_multipart(self):
        global HUBP
        rid = self.new_repo()
        data = os.urandom(2 * CHUNK + 99)
        oid = hashlib.sha256(data).hexdigest()
        up = self.batch(rid, [(oid, len(data))])["objects"][0]["actions"]["upload"]
        etags = self.put_parts(up["header"], data, [1, 2])
        port = HUBP.port
        self.assertEqual(HUBP.stop(), 0)
        HUBP = HubProc(HUBP.data, port=port, extra=["--page-size", "3"])
        etags.update(self.put_parts(up["header"], data, [3]))
        r = self.call("POST", up["href"], {"oid": oid, "parts": [
            {"partNumber": n, "etag": etags[n]} for n in (1, 2, 3)]}, token=None)
        self.assertEqual(r.status, 200, r.body)
        TestUploads.check_commit_and_download(self, rid, "deep/dir/state.dat", oid, data)

    def test_expired_urls(self):
        d = tempfile.mkdtemp(prefix="ckpt-hub-ttl-", dir=TMP)
        h = HubProc(os.path.join(d, "data"), extra=["--url-ttl", "0"],
                    env={"CKPT_HUB_FAULTS": json.dumps([{"route": "whoami", "status": 500}])})
        try:
            self.assertEqual(request(h.base, "GET", "/api/whoami-v2", token=TOKEN).status, 500)
            self.assertEqual(request(h.base, "GET", "/api/whoami-v2", token=TOKEN).status, 200)
            r = request(h.base, "POST", "/api/repos/create", {"name": "t"}, token=TOKEN)
            self.assertEqual(r.status, 200)
            oid = hashlib.sha256(b"abc").hexdigest()
            r = request(h.base, "POST", "/alice/t.git/info/lfs/objects/batch", {
                "operation": "upload", "objects": [{"oid": oid, "size": 3}]}, token=TOKEN)
            href = r.json()["objects"][0]["actions"]["upload"]["href"]
            time.sleep(1.05)
            r = request(h.base, "PUT", href, b"abc")
            self.assertEqual(r.status, 403)
            self.assertIn(b"Request has expired", r.body)
        finally:
            h.stop()
        # fault-driven expiry on the main hub
        rid = self.new_repo()
        oid = hashlib.sha256(b"xyz").hexdigest()
        href = self.batch(rid, [(oid, 3)])["objects"][0]["actions"]["upload"]["href"]
        self.fault({"route": "lfs_put", "expire_urls": True})
        r = self.call("PUT", href, b"xyz", token=None)
        self.assertEqual(r.status, 403)
        self.assertIn(b"expired", r.body)
        self.assertEqual(self.call("PUT", href, b"xyz", token=None).status, 200)

    def fault(self, f):
        r = self.call("POST", "/_admin/faults", f, token=None)
        self.assertEqual(r.status, 200, r.body)

    def test_fault_status_and_admin(self):
        rid = self.new_repo()
        self.fault({"route": "preupload", "status": 503, "retry_after": 2, "count": 2})
        self.fault({"route": "lfs_batch", "status": 429, "ratelimit_t": 7})
        r = self.call("GET", "/_admin/faults", token=None)
        self.assertEqual([f["route"] for f in r.json()["faults"]], ["preupload", "lfs_batch"])
        body = {"files": [{"path": "a", "size": 1, "sample": ""}]}
        for _ in range(2):
            r = self.call("POST", "/api/models/%s/preupload/main" % rid, body)
            self.assertEqual((r.status, r.h("Retry-After")), (503, "2"))
        self.assertEqual(self.call("POST", "/api/models/%s/preupload/main" % rid, body).status,
                         200)
        r = self.call("POST", "/%s.git/info/lfs/objects/batch" % rid,
                      {"operation": "upload", "objects": []})
        self.assertEqual(r.status, 429)
        self.assertEqual(r.h("RateLimit"), '"api";r=0;t=7')
        self.assertIn("q=", r.h("RateLimit-Policy"))
        self.fault({"route": "commit", "status": 500})
        self.assertEqual(self.call("DELETE", "/_admin/faults", token=None).json()["cleared"], 1)
        self.assertEqual(self.call("POST", "/_admin/faults", {"route": "nope"}, token=None)
                         .status, 400)

    def test_fault_reset_mid_body(self):
        rid = self.new_repo()
        data = os.urandom(2 * CHUNK)
        oid = hashlib.sha256(data).hexdigest()
        hdr = self.batch(rid, [(oid, len(data))])["objects"][0]["actions"]["upload"]["header"]
        self.fault({"route": "part_put", "reset_after_bytes": 1000})
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            self.call("PUT", hdr["00001"], data[:CHUNK], token=None)
        self.assertEqual(len(self.put_parts(hdr, data, [1, 2])), 2)
        self.fault({"route": "commit", "reset_after_bytes": 10})
        h0 = self.head(rid)
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            self.commit(rid, {"key": "file", "value": {"path": "x", "content": "eA=="}})
        self.assertEqual(self.head(rid), h0)

    def test_fault_drop_response_then_head(self):
        rid = self.new_repo()
        h0 = self.head(rid)
        self.fault({"route": "commit", "drop_response": True})
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            self.commit(rid, {"key": "file", "value": {"path": "x.txt", "content": "eA=="}},
                        summary="lost answer", parent=h0)
        h1 = self.head(rid)
        self.assertNotEqual(h0, h1)
        c = self.call("GET", "/api/models/%s/commits/main" % rid).json()
        self.assertEqual(c[0]["title"], "lost answer")
        r = self.commit(rid, {"key": "file", "value": {"path": "x.txt", "content": "eA=="}},
                        summary="retry", parent=h0)
        self.assertEqual(r.status, 412)

    def test_fault_slow_body(self):
        self.fault({"route": "whoami", "slow_bytes_per_s": 1500})
        t0 = time.time()
        r = self.call("GET", "/api/whoami-v2")
        dt = time.time() - t0
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["name"], "alice")
        self.assertGreater(dt, 0.25)

    def test_fault_delay_answer_after_the_work(self):
        """delay_answer_s: the commit is made at once, its answer comes that much later."""
        rid = self.new_repo()
        h0 = self.head(rid)
        self.fault({"route": "commit", "delay_answer_s": 1.0})
        got = {}
        t = threading.Thread(target=lambda: got.update(r=self.commit(
            rid, {"key": "file", "value": {"path": "late.txt", "content": "eA=="}},
            summary="late answer", parent=h0)))
        t.start()
        deadline = time.time() + 10
        while self.head(rid) == h0:
            self.assertLess(time.time(), deadline)
            time.sleep(0.02)
        self.assertTrue(t.is_alive(), "answered before the delay")
        t.join(10)
        self.assertEqual(got["r"].status, 200)

    def test_request_log(self):
        rid = self.new_repo()
        oid = hashlib.sha256(b"leak").hexdigest()
        href = self.batch(rid, [(oid, 4)])["objects"][0]["actions"]["upload"]["href"]
        r = self.call("PUT", href, b"leak", token=TOKEN)
        self.assertEqual(r.status, 200)
        lines = HUBP.log_lines()
        for ln in lines:
            for k in ("t", "method", "path", "status", "bytes_in", "bytes_out", "auth", "route"):
                self.assertIn(k, ln)
        put = [ln for ln in lines if ln["route"] == "lfs_put" and oid in ln["path"]]
        self.assertEqual(len(put), 1)
        self.assertTrue(put[0]["auth"])
        self.assertTrue(put[0]["auth_on_presigned"])
        self.assertEqual(put[0]["bytes_in"], 4)
        self.assertEqual(put[0]["status"], 200)
        with open(HUBP.errpath) as f:
            self.assertIn("Authorization header sent to presigned URL", f.read())
        cr = [ln for ln in lines if ln["route"] == "repo_create" and ln["status"] == 200]
        self.assertTrue(cr and all(ln["auth"] for ln in cr))
        routes = {ln["route"] for ln in lines}
        self.assertTrue({"repo_create", "lfs_batch", "lfs_put", "revision"} <= routes, routes)


if __name__ == "__main__":
    unittest.main(verbosity=2)
