#!/usr/bin/env python3
"""Regenerates the seed corpora in tests/fuzz/corpus/<target>/ from real inputs: answers of the
test hub (tests/hub/hub.py, started here on loopback), the recorded inotify traces and the Trainer
output fixtures (tests/fixtures), the example configuration and the requests the clients send.
Run it from anywhere after changing what a fuzzer reads; the output is committed."""

import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
TOKEN = "hf_fuzz_seed_token"

# Must match tests/fuzz/fuzz_hub.c: the operation arguments the answers are parsed against.
OBJ_MULTI = b"w" * 7000
OBJ_BASIC = b"x" * 100
KINDS = {"whoami": 0, "head": 1, "preupload": 2, "batch": 3, "put": 4, "complete": 5,
         "commit": 6, "ensure": 7, "commits": 8, "xet_token": 9}
STATUSES = [200, 201, 400, 401, 403, 404, 409, 412, 413, 422, 429, 500, 503]


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def hub_seed(name, kind, status, body, error_code=False):
    sel = STATUSES.index(status) | (0x80 if error_code else 0)
    put("fuzz_hub", name, bytes([KINDS[kind], sel]) + body)


def request(url, method="GET", body=None, token=TOKEN, ctype="application/json"):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def hub_seeds():
    tmp = tempfile.mkdtemp(prefix="ckpt-seeds-")
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([sys.executable, os.path.join(SRC, "tests", "hub", "hub.py"),
                             "--data", os.path.join(tmp, "data"), "--port", "0", "--port-file",
                             port_file, "--user", f"alice:{TOKEN}", "--multipart-threshold",
                             "1000", "--chunk-size", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.05)
        port = re.search(r"(\d+)\s*$", open(port_file).read()).group(1)
        base = f"http://127.0.0.1:{port}"
        rid = "alice/fuzz"
        st, b = request(f"{base}/api/repos/create", "POST",
                        json.dumps({"name": "fuzz", "type": "model"}).encode())
        hub_seed("ensure-created", "ensure", st, b)
        st, b = request(f"{base}/api/repos/create", "POST",
                        json.dumps({"name": "fuzz", "type": "model"}).encode())
        hub_seed("ensure-exists", "ensure", st, b)
        st, b = request(f"{base}/api/whoami-v2")
        hub_seed("whoami", "whoami", st, b)
        st, b = request(f"{base}/api/whoami-v2", token="hf_wrong")
        hub_seed("whoami-401", "whoami", st, b)
        st, b = request(f"{base}/api/models/alice/nope/revision/main")
        hub_seed("head-404", "head", st, b, error_code=True)
        files = [{"path": "config.json", "size": 12,
                  "sample": base64.b64encode(b'{"a": 1}\n   ').decode()},
                 {"path": "model.safetensors", "size": len(OBJ_MULTI),
                  "sample": base64.b64encode(OBJ_MULTI[:512]).decode()}]
        st, b = request(f"{base}/api/models/{rid}/preupload/main", "POST",
                        json.dumps({"files": files}).encode())
        hub_seed("preupload", "preupload", st, b)
        objs = [{"oid": hashlib.sha256(o).hexdigest(), "size": len(o)}
                for o in (OBJ_MULTI, OBJ_BASIC)]
        st, b = request(f"{base}/{rid}.git/info/lfs/objects/batch", "POST",
                        json.dumps({"operation": "upload", "transfers": ["basic", "multipart"],
                                    "objects": objs, "hash_algo": "sha256"}).encode(),
                        ctype="application/vnd.git-lfs+json")
        hub_seed("batch", "batch", st, b)
        stored = json.loads(b)
        for o in stored.get("objects", []):
            o.pop("actions", None)
        hub_seed("batch-stored", "batch", 200, json.dumps(stored).encode())
        bad = json.loads(b)
        bad["objects"][0]["error"] = {"code": 422, "message": "Invalid oid"}
        hub_seed("batch-error", "batch", 200, json.dumps(bad).encode())
        # Xet (the hub's --xet auto turns it on where the build's BLAKE3 library loads)
        st, b = request(f"{base}/{rid}.git/info/lfs/objects/batch", "POST",
                        json.dumps({"operation": "upload",
                                    "transfers": ["basic", "multipart", "xet"],
                                    "objects": objs, "hash_algo": "sha256"}).encode(),
                        ctype="application/vnd.git-lfs+json")
        hub_seed("batch-xet", "batch", st, b)
        st, b = request(f"{base}/api/models/{rid}/xet-write-token/main")
        hub_seed("xet-token", "xet_token", st, b)
        ndjson = "\n".join(json.dumps(x) for x in [
            {"key": "header", "value": {"summary": "seed", "description": ""}},
            {"key": "file", "value": {"path": "config.json", "encoding": "base64",
                                      "content": base64.b64encode(b'{"a": 1}\n   ').decode()}},
        ]).encode()
        st, b = request(f"{base}/api/models/{rid}/commit/main", "POST", ndjson,
                        ctype="application/x-ndjson")
        hub_seed("commit", "commit", st, b)
        st, b = request(f"{base}/api/models/{rid}/revision/main")
        hub_seed("head", "head", st, b)
        st, b = request(f"{base}/api/models/{rid}/commits/main")
        hub_seed("commits", "commits", st, b)
        st, b = request(f"{base}/api/models/{rid}/commits/training")
        hub_seed("commits-404", "commits", st, b, error_code=True)
        st, b = request(f"{base}/api/models/{rid}/commit/main", "POST", b"{}",
                        ctype="application/x-ndjson")
        hub_seed("commit-400", "commit", st, b)
        hub_seed("put-200", "put", 200, b"")
        hub_seed("complete-403", "complete", 403, b"<Error><Code>AccessDenied</Code></Error>")
        hub_seed("rate-limited", "preupload", 429, b'{"error":"slow down"}')
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


# Must match tests/fuzz/fuzz_watch.c: the directories it watches (wd 1 is the root).
WATCH_DIRS = ["", "checkpoint-10", "out", "step-100"]
IN_BITS = {"ACCESS": 0x1, "MODIFY": 0x2, "ATTRIB": 0x4, "CLOSE_WRITE": 0x8,
           "CLOSE_NOWRITE": 0x10, "OPEN": 0x20, "MOVED_FROM": 0x40, "MOVED_TO": 0x80,
           "CREATE": 0x100, "DELETE": 0x200, "DELETE_SELF": 0x400, "MOVE_SELF": 0x800,
           "Q_OVERFLOW": 0x4000, "IGNORED": 0x8000, "ISDIR": 0x40000000}


def inotify_record(wd, mask, cookie, name):
    raw = name.encode()
    if raw:
        raw += b"\0"
        raw += b"\0" * (-len(raw) % 16)
    return struct.pack("iIII", wd, mask, cookie, len(raw)) + raw


def watch_seeds():
    tdir = os.path.join(SRC, "tests", "fixtures", "traces")
    for fn in sorted(os.listdir(tdir)):
        if not fn.endswith(".jsonl"):
            continue
        recs = []
        for line in open(os.path.join(tdir, fn)):
            ev = json.loads(line)
            parent, _, name = ev["path"].rpartition("/")
            wd = WATCH_DIRS.index(parent) + 1 if parent in WATCH_DIRS else 2
            mask = 0
            for e in ev["ev"]:
                mask |= IN_BITS.get(e, 0)
            recs.append(inotify_record(wd, mask, ev.get("cookie") or 0, name))
        # First byte: where the fuzzer splits the buffer into two reads.
        for i in range(0, len(recs), 48):
            chunk = b"".join(recs[i:i + 48])
            put("fuzz_watch", f"{fn[:-6]}-{i // 48:02d}", bytes([len(chunk) // 2 % 256]) + chunk)
    put("fuzz_watch", "overflow", b"\0" + inotify_record(-1, 0x4000, 0, ""))
    put("fuzz_watch", "moved-pending", b"\xff" + inotify_record(1, 0x40 | 0x40000000, 7, "tmp"))


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def card_seeds():
    # Fields in the order of tests/fuzz/fuzz_card.c, separated by NUL bytes.
    fx = os.path.join(SRC, "tests", "fixtures", "trainer-output")
    config = json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                         "n_layer": 2, "n_embd": 64, "vocab_size": 1000})
    fields = [
        config,
        text(os.path.join(fx, "trainer_state.json")),
        text(os.path.join(fx, "all_results.json")),
        json.dumps({"eval_loss": 1.25, "train_runtime": 10.5}),
        json.dumps({"learning_rate": 5e-5, "num_train_epochs": 3, "seed": 42}),
        json.dumps({"license": "apache-2.0", "language": ["en"], "tags": ["fuzz"],
                    "datasets": "wikitext"}),
        "lr: 0.001\nbatch_size: 8\n",
        "epoch,step,train_loss,val_loss\n0,10,2.5,\n0,10,,2.4\n1,20,2.1,2.0\n",
        text(os.path.join(fx, "README.generated-by-trainer.md")),
        json.dumps({"transformers": "5.17.0", "torch": "2.9.0"}),
        json.dumps({"__metadata__": {"format": "pt"},
                    "w": {"dtype": "F32", "shape": [64, 1000], "data_offsets": [0, 256000]}}),
    ]
    put("fuzz_card", "trainer-full", "\0".join(fields))
    put("fuzz_card", "trainer-state-only", "\0" + fields[1])
    put("fuzz_card", "readme-only", "\0" * 8 + fields[8])
    put("fuzz_card", "checkpoint-state", "\0" + text(os.path.join(fx,
                                                        "checkpoint-40.trainer_state.json")))


def ipc_seeds():
    reqs = [
        {"v": 1, "id": 1, "type": "status"},
        {"v": 1, "id": "a", "type": "push", "path": "/tmp/out/checkpoint-10"},
        {"v": 1, "id": 3, "type": "final", "metrics": {"eval_loss": 1.5},
         "hparams": {"lr": 0.1}, "wait": True},
        {"v": 1, "type": "pause"}, {"v": 1, "type": "resume"},
        {"v": 1, "id": 4, "type": "flush", "timeout_s": 30},
        {"v": 1, "type": "subscribe"}, {"v": 1, "type": "shutdown"},
        {"v": 2, "type": "status"}, {"v": 1, "type": "push"}, {"v": 1, "type": "nope"},
        {"v": 1, "id": 5, "type": "push", "path": "checkpoint-20",
         "message": "Training in progress, epoch 2"},
        {"v": 1, "id": 6, "type": "push", "path": "checkpoint-30", "message": "a\nb\u0000c"},
    ]
    # First byte: the fuzzer's read size and mode (see fuzz_ipc.c).
    put("fuzz_ipc", "all-types", b"\x07" + b"".join(json.dumps(r).encode() + b"\n"
                                                    for r in reqs))
    for i, r in enumerate(reqs):
        put("fuzz_ipc", f"req-{i:02d}", b"\x00" + json.dumps(r).encode() + b"\r\n")
    put("fuzz_ipc", "garbage", b"\x01\n\n{\nnot json\n[1,2]\n{\"v\":1,\"id\":1.5}\n")
    put("fuzz_ipc", "too-large", b"\xc1" + b"x" * 100 + b"\n" + json.dumps(reqs[0]).encode()
        + b"\n")


def config_seeds():
    put("fuzz_config", "example.jsonc", text(os.path.join(SRC, "config",
                                                          "ckptpushd.example.jsonc")))
    put("fuzz_config", "minimal.json", json.dumps({"watch": "/data/out", "repo": "alice/run"}))
    put("fuzz_config", "all-kinds.json", json.dumps({
        "watch": "/data/out", "repo": "alice/run", "endpoint": "http://127.0.0.1:1/",
        "private": True, "quiet_ms": 2000, "drain_timeout_s": 60, "dry_run": False,
        "log_level": "debug", "log_format": "json", "metrics_path": "/m.prom",
        "socket": "/run/x.sock", "job": "j-1", "token_path": "/t", "strategy": "every_save"}))
    put("fuzz_config", "bad.json", '{"watch": 1, "repo": "a//b", "unknown": null, /* c */ "x":')


def journal_seeds():
    """A real journal: the Trainer replay pushed by the built daemon (CKPTPUSHD or build/)."""
    sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
    import ckpt_harness as h
    hub = h.Hub(args=["--multipart-threshold", "500000", "--chunk-size", "262144"])
    try:
        watch = os.path.join(h.tempdir("ckpt-seeds-"), "output")
        os.mkdir(watch)
        d = h.Daemon(watch, repo=f"{h.USER}/seeds", endpoint=hub.url, args=["--quiet-ms", "200"])
        d.wait_event("ready", timeout=20)
        h.replay(h.trace_path("hf-trainer-5.17-save-steps.jsonl"), watch, speed=0.2, seed=1)
        d.wait_event("committed", timeout=60, count=5)
        d.stop()
        with open(os.path.join(watch, ".ckptpush", "journal"), "rb") as f:
            raw = f.read()
    finally:
        hub.stop()
    put("fuzz_journal", "trainer-run.raw", b"\x01" + raw)
    put("fuzz_journal", "trainer-run-torn.raw", b"\x01" + raw[:len(raw) * 2 // 3])
    payloads, off = [], 0
    while off + 12 <= len(raw):
        n = struct.unpack_from("<I", raw, off)[0]
        payloads.append(raw[off + 12:off + 12 + n])
        off += 12 + n
    put("fuzz_journal", "trainer-run.lines", b"\x00" + b"\n".join(payloads))
    put("fuzz_journal", "trainer-run-torn.lines", b"\x02" + b"\n".join(payloads))


def xet_seeds():
    """Shards and xorbs for fuzz_xet, written here from the spec's layout (not by the C code
    under test): byte 0 is 0 for a shard, 1 for a xorb."""
    import lz4.frame

    def h(seed):
        return hashlib.sha256(b"xet seed %d" % seed).digest()

    bookend = b"\xff" * 32 + bytes(16)
    tag = b"HFRepoMetaData\0" + bytes([85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217,
                                        92, 205, 209, 74, 169])

    def shard(files, xorbs, key=bytes(32)):
        body = b""
        for fhash, terms, sha in files:
            flags = 0x80000000 | (0x40000000 if sha else 0)
            body += fhash + struct.pack("<IIQ", flags, len(terms), 0)
            for xh, unpacked, start, end in terms:
                body += xh + struct.pack("<IIII", 0, unpacked, start, end)
            body += b"".join(h(100 + i) + bytes(16) for i in range(len(terms)))
            if sha:
                body += sha + bytes(16)
        cas_off = 48 + len(body) + 48
        cas = b""
        for xh, chunks, packed in xorbs:
            cas += xh + struct.pack("<IIII", 0, len(chunks), sum(c[1] for c in chunks), packed)
            off = 0
            for ch, n in chunks:
                cas += ch + struct.pack("<IIII", off, n, 0, 0)
                off += n
        footer_off = cas_off + len(cas) + 48
        footer = struct.pack("<QQQ", 1, 48, cas_off) + bytes(48) + key
        footer += struct.pack("<QQ", 1700000000, 0) + bytes(48) + struct.pack("<QQQQ", 0, 0, 0, footer_off)
        head = tag + struct.pack("<QQ", 2, len(footer))
        return head + body + bookend + cas + bookend + footer

    xorbs = [(h(1), [(h(2), 1000), (h(3), 70000)], 40000), (h(4), [(h(5), 65536)], 65544)]
    files = [(h(6), [(h(1), 71000, 0, 2), (h(4), 65536, 0, 1)], h(7)), (h(8), [(h(1), 70000, 1, 2)], None)]
    put("fuzz_xet", "shard-files-xorbs", b"\0" + shard(files, xorbs))
    put("fuzz_xet", "shard-keyed-dedup-answer", b"\0" + shard([], xorbs, key=h(9)))
    put("fuzz_xet", "shard-empty", b"\0" + shard([], []))

    def chunk(data, scheme):
        if scheme == 0:
            stored = data
        else:
            src = data if scheme == 1 else b"".join(data[k::4] for k in range(4))
            stored = lz4.frame.compress(src, block_size=lz4.frame.BLOCKSIZE_MAX64KB,
                                        block_linked=False, content_checksum=False)
        n, m = len(stored), len(data)
        return bytes([0, n & 255, n >> 8 & 255, n >> 16, scheme, m & 255, m >> 8 & 255, m >> 16]) + stored

    floats = bytes((i * 7919) & 255 if i % 4 < 2 else 0x3c + i % 3 for i in range(9001))
    put("fuzz_xet", "xorb-three-schemes",
        b"\1" + chunk(b"".join(h(200 + i) for i in range(94)), 0) + chunk(b"a" * 20000, 1) + chunk(floats, 2))


def coord_seeds():
    """fuzz_coord: byte 0 bit 0 = seal the body with the fuzzer's key; bits 1-3 = nodes - 1."""
    import hmac
    key = b"fuzz-job-secret-0123456789"
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    report = {"v": 1, "type": "report", "nonce": "00112233445566778899aabbccddeeff", "seq": 1,
              "rank": 2, "ckpt": "step-100", "step": 100, "message": "step 100",
              "files": [{"path": "step-100/__2_0.distcp", "size": 10, "sha256": sha, "via": "lfs"},
                        {"path": "step-100/.metadata", "size": 3, "sha256": sha, "via": "hub"}]}
    body = json.dumps(report, separators=(",", ":"))
    put("fuzz_coord", "report-sealed", bytes([1 | (3 << 1)]) + body.encode())
    bad = dict(report, rank=9, files=[{"path": "../x", "size": -1, "sha256": "ABC", "via": "ftp"}])
    put("fuzz_coord", "bad-report-sealed", bytes([1 | (3 << 1)]) + json.dumps(bad).encode())
    mac = hmac.new(key, b"ckptpush-coord-v1n\n" + body.encode(), hashlib.sha256).hexdigest()
    put("fuzz_coord", "report-wire",
        bytes([3 << 1]) + (body[:-1] + ',"mac":"' + mac + '"}').encode())
    put("fuzz_coord", "wrong-mac", bytes([0]) + (body[:-1] + ',"mac":"' + "0" * 64 + '"}').encode())
    put("fuzz_coord", "garbage", b"\x00{\"mac\":\"x\"}")


def main():
    for t in ("fuzz_hub", "fuzz_watch", "fuzz_card", "fuzz_ipc", "fuzz_config", "fuzz_journal",
              "fuzz_xet", "fuzz_coord"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    hub_seeds()
    watch_seeds()
    card_seeds()
    ipc_seeds()
    config_seeds()
    journal_seeds()
    xet_seeds()
    coord_seeds()
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds")


if __name__ == "__main__":
    main()
