#!/usr/bin/env python3
"""Local Hugging Face Hub emulation: the HTTP API subset ckptpushd and the official clients use.

Owns: repos, refs, real git objects, LFS objects, multipart sessions and presigned URLs, all
persisted under --data so a restarted hub serves the same state. Not a git server (no smart
HTTP). Xet CAS and Storage Buckets live in xet_cas.py and buckets.py (mixed into Handler).
Threads: one per connection (ThreadingHTTPServer); repo state changes under a
single lock, object bodies are streamed outside it. Spec: docs/hub-protocol.md (section 13).
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xet_cas  # noqa: E402  (this folder's modules)
import xet_hash  # noqa: E402
from buckets import BucketRoutes  # noqa: E402
from hub_errors import HubError  # noqa: E402

MIB = 1024 * 1024
REGULAR_MAX = 10 * MIB
PREUPLOAD_MAX_FILES = 256
BATCH_MAX_OBJECTS = 1000
PATHS_INFO_MAX = 1000
COMMIT_BODY_MAX = 1024 * MIB
JSON_BODY_MAX = 64 * MIB
DRAIN_MAX = 1 * MIB
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"
DEFAULT_USER = "ckptpush-demo"
DEFAULT_TOKEN = "hf_ckptpush_demo_token"
ORG = "ckptpush-org"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
SINGULAR_TO_T = {"model": "models", "dataset": "datasets", "space": "spaces"}
HEX_RE = re.compile(r"^[0-9a-f]+$")
OID_RE = re.compile(r"^[0-9a-f]{64}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
CONFLICT_MSG = "The branch was updated since you opened this page. Please refresh and try again."
BINARY_MSG = ("Your push was rejected because it contains binary files. Please use "
              "https://huggingface.co/docs/hub/xet to store binary files.")
TOO_LARGE_MSG = ("Your push was rejected because it contains files larger than 10 MiB. Please "
                 "use https://huggingface.co/docs/hub/xet to store large files.")
LFS_MISSING_MSG = "LFS pointer pointed to a file that does not exist"
INVALID_CREDS = "Invalid credentials in Authorization header"
EXPAND_FIELDS = [
    "author", "baseModels", "cardData", "childrenModelCount", "citation", "config",
    "createdAt", "description", "disabled", "downloads", "downloadsAllTime", "gated", "gguf",
    "inference", "inferenceProviderMapping", "lastModified", "library_name", "likes",
    "mask_token", "model-index", "paperswithcode_id", "pipeline_tag", "private",
    "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo",
    "trendingScore", "usedStorage", "widgetData", "xetEnabled",
]
LFS_EXTS = ["7z", "arrow", "bin", "bz2", "ckpt", "ftz", "gz", "h5", "joblib", "lfs.*",
            "mlmodel", "model", "msgpack", "npy", "npz", "onnx", "ot", "parquet", "pb",
            "pickle", "pkl", "pt", "pth", "rar", "safetensors"]
DEFAULT_GITATTRIBUTES = "".join(
    [f"*.{e} filter=lfs diff=lfs merge=lfs -text\n" for e in LFS_EXTS]
    + ["saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n"]
    + [f"*.{e} filter=lfs diff=lfs merge=lfs -text\n"
       for e in ["tar.*", "tar", "tflite", "tgz", "wasm", "xz", "zip", "zst"]]
    + ["*tfevents* filter=lfs diff=lfs merge=lfs -text\n"])
ROUTES = ["whoami", "repo_create", "repo_info", "revision", "preupload", "lfs_batch", "lfs_put",
          "part_put", "complete", "verify", "commit", "branch", "refs", "commits", "tree",
          "paths_info", "resolve", "raw", "lfs_get", "validate_yaml", "admin", "other",
          "xet_token", "xorb", "shard", "dedup", "reconstruction", "xorb_get", "xet_get",
          "bucket_create", "bucket_info", "bucket_delete", "bucket_batch", "bucket_tree",
          "bucket_paths_info", "bucket_resolve"]


class AbortConnection(Exception):
    """The connection was torn down on purpose (fault injection); send nothing more."""


# ---------------------------------------------------------------------------------------------
# files


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(d)


def read_json(path, default=None):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def now_iso(ts=None):
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % int(
        (ts % 1) * 1000)


# ---------------------------------------------------------------------------------------------
# gitattributes / gitignore patterns (git wildmatch subset)


def glob_to_regex(pat):
    out = []
    i = 0
    n = len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
                continue
            if pat.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            if pat.startswith("[[:space:]]", i):
                out.append(r"\s")
                i += len("[[:space:]]")
                continue
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
                continue
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def pattern_matches(pat, path):
    if pat.endswith("/"):
        pat = pat[:-1]
    if "/" in pat:
        rx = glob_to_regex(pat.lstrip("/"))
        return re.fullmatch(rx, path) is not None or re.match(rx + "/", path) is not None
    rx = glob_to_regex(pat)
    return any(re.fullmatch(rx, seg) for seg in path.split("/"))


def lfs_tracked(gitattributes, path):
    tracked = False
    for line in (gitattributes or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        pat, attrs = parts[0], parts[1:]
        if "/" not in pat.rstrip("/"):
            hit = re.fullmatch(glob_to_regex(pat), path.rsplit("/", 1)[-1]) is not None
        else:
            hit = re.fullmatch(glob_to_regex(pat.lstrip("/")), path) is not None
        if not hit:
            continue
        for a in attrs:
            if a == "filter=lfs":
                tracked = True
            elif a.startswith("filter=") or a in ("-filter", "!filter"):
                tracked = False
    return tracked


def git_ignored(gitignore, path):
    ignored = False
    for line in (gitignore or "").splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:]
        if pattern_matches(line, path):
            ignored = not neg
    return ignored


# ---------------------------------------------------------------------------------------------
# small YAML subset (README front matter)


class YamlError(Exception):
    pass


def yaml_scalar(s):
    s = s.strip()
    if s == "" or s in ("~", "null", "Null", "NULL"):
        return None
    if s[0] in "\"'":
        q = s[0]
        if len(s) < 2 or s[-1] != q:
            raise YamlError(f"unterminated quoted scalar {s!r}")
        body = s[1:-1]
        if q == '"':
            try:
                return json.loads('"' + body + '"')
            except ValueError:
                return body
        return body.replace("''", "'")
    if s[0] == "[":
        if s[-1] != "]":
            raise YamlError(f"unterminated flow sequence {s!r}")
        inner = s[1:-1].strip()
        return [yaml_scalar(x) for x in split_flow(inner)] if inner else []
    if s[0] == "{":
        if s[-1] != "}":
            raise YamlError(f"unterminated flow mapping {s!r}")
        inner = s[1:-1].strip()
        out = {}
        for item in split_flow(inner) if inner else []:
            if ":" not in item:
                raise YamlError(f"bad flow mapping item {item!r}")
            k, v = item.split(":", 1)
            out[str(yaml_scalar(k))] = yaml_scalar(v)
        return out
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def split_flow(s):
    items, depth, cur, q = [], 0, [], None
    for c in s:
        if q:
            cur.append(c)
            if c == q:
                q = None
            continue
        if c in "\"'":
            q = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
            continue
        cur.append(c)
    if "".join(cur).strip():
        items.append("".join(cur).strip())
    return items


def strip_comment(line):
    q = None
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
        elif c in "\"'":
            q = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def split_key(text):
    """'key: value' -> (key, value) or None when text is not a mapping entry."""
    m = re.match(r'^("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\s#\'"][^:]*?)\s*:(?:\s+(.*)|$)', text)
    if not m:
        return None
    key = m.group(1)
    if key[0] in "\"'":
        key = yaml_scalar(key)
    return key, (m.group(2) or "")


def yaml_parse(text):
    lines = []
    for n, raw in enumerate(text.split("\n"), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError(f"line {n}: tabs are not allowed for indentation")
        s = strip_comment(raw).rstrip()
        if s.strip():
            lines.append((len(s) - len(s.lstrip(" ")), s.strip(), n))
    if not lines:
        return None
    pos = [0]

    def block(indent):
        first_ind, first, n = lines[pos[0]]
        if first.startswith("- ") or first == "-":
            return seq(first_ind)
        if split_key(first) is not None:
            return mapping(first_ind)
        if len(lines) == 1:
            pos[0] += 1
            return yaml_scalar(first)
        raise YamlError(f"line {n}: expected a mapping or a list")

    def value_after(rest, ind, n):
        if rest.strip() in ("|", ">", "|-", ">-", "|+", ">+"):
            parts = []
            while pos[0] < len(lines) and lines[pos[0]][0] > ind:
                parts.append(lines[pos[0]][1])
                pos[0] += 1
            return "\n".join(parts)
        if rest.strip():
            return yaml_scalar(rest)
        if pos[0] < len(lines) and (lines[pos[0]][0] > ind or (
                lines[pos[0]][0] == ind and lines[pos[0]][1].startswith("-"))):
            return block(lines[pos[0]][0])
        return None

    def mapping(ind):
        out = {}
        while pos[0] < len(lines):
            li, text, n = lines[pos[0]]
            if li < ind:
                break
            if li > ind:
                raise YamlError(f"line {n}: bad indentation")
            kv = split_key(text)
            if kv is None:
                if text.startswith("-"):
                    break
                raise YamlError(f"line {n}: expected 'key: value'")
            pos[0] += 1
            k, rest = kv
            out[k] = value_after(rest, ind, n)
        return out

    def seq(ind):
        out = []
        while pos[0] < len(lines):
            li, text, n = lines[pos[0]]
            if li < ind or not (text.startswith("- ") or text == "-"):
                if li > ind:
                    raise YamlError(f"line {n}: bad indentation")
                break
            if li > ind:
                raise YamlError(f"line {n}: bad indentation")
            item = text[1:].strip()
            if not item:
                pos[0] += 1
                out.append(value_after("", ind, n))
                continue
            sub_ind = ind + (len(text) - len(item))
            if split_key(item) is not None and not item.startswith(("[", "{", '"', "'")) or (
                    item[0] in "\"'" and split_key(item) is not None):
                lines[pos[0]] = (sub_ind, item, n)
                out.append(mapping(sub_ind))
            elif item.startswith("- "):
                lines[pos[0]] = (sub_ind, item, n)
                out.append(seq(sub_ind))
            else:
                pos[0] += 1
                out.append(yaml_scalar(item))
        return out

    result = block(lines[0][0])
    if pos[0] < len(lines):
        raise YamlError(f"line {lines[pos[0]][2]}: unexpected content")
    return result


def validate_front_matter(content):
    """Returns a list of error messages for a README text."""
    text = content.replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return []
    end = re.search(r"^---\s*$", text[4:], re.M)
    if not end:
        return ["YAML front matter is not closed (missing '---')"]
    fm = text[4:4 + end.start()]
    try:
        data = yaml_parse(fm)
    except YamlError as e:
        return [f"Invalid YAML in README front matter: {e}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["YAML front matter must be a mapping"]
    errors = []
    mi = data.get("model-index")
    if "model-index" in data:
        if not isinstance(mi, list):
            return ['"model-index" must be an array']
        for i, m in enumerate(mi):
            p = f'"model-index[{i}]'
            if not isinstance(m, dict):
                errors.append(f'{p}" must be an object')
                continue
            if not isinstance(m.get("name"), str):
                errors.append(f'{p}.name" is required and must be a string')
            res = m.get("results")
            if not isinstance(res, list):
                errors.append(f'{p}.results" is required and must be an array')
                continue
            for j, r in enumerate(res):
                q = f"{p}.results[{j}]"
                if not isinstance(r, dict):
                    errors.append(f'{q}" must be an object')
                    continue
                task = r.get("task")
                if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                    errors.append(f'{q}.task.type" is required')
                ds = r.get("dataset")
                if not isinstance(ds, dict):
                    errors.append(f'{q}.dataset" is required')
                else:
                    for f in ("name", "type"):
                        if not isinstance(ds.get(f), str):
                            errors.append(f'{q}.dataset.{f}" is required')
                mets = r.get("metrics")
                if not isinstance(mets, list):
                    errors.append(f'{q}.metrics" is required and must be an array')
                    continue
                for k, met in enumerate(mets):
                    mq = f"{q}.metrics[{k}]"
                    if not isinstance(met, dict):
                        errors.append(f'{mq}" must be an object')
                        continue
                    if not isinstance(met.get("type"), str):
                        errors.append(f'{mq}.type" is required')
                    if "value" not in met or met["value"] is None:
                        errors.append(f'{mq}.value" is required')
    return errors


# ---------------------------------------------------------------------------------------------
# storage: git objects, LFS objects, repos


class Store:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.lock = threading.RLock()
        self.tmp = os.path.join(self.root, "tmp")
        for d in ("git", "lfs", "repos", "multipart", "tmp"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        # bodies that were being received when a previous run died
        for name in os.listdir(self.tmp):
            try:
                os.unlink(os.path.join(self.tmp, name))
            except OSError:
                pass
        keyf = os.path.join(self.root, "url-signing.key")
        with self.lock:
            if not os.path.exists(keyf):
                atomic_write(keyf, secrets.token_hex(32).encode())
        with open(keyf, "rb") as f:
            self.key = f.read().strip()
        self._walk_cache = {}
        self._obj_cache = {}
        self.cas = None  # xet_cas.CasStore when Xet is on

    # git objects, stored uncompressed as "<type> <len>\0<data>" named by their sha1

    def _obj_path(self, sha):
        return os.path.join(self.root, "git", sha[:2], sha[2:])

    def put_object(self, typ, data):
        raw = b"%s %d\0" % (typ.encode(), len(data)) + data
        sha = hashlib.sha1(raw).hexdigest()
        p = self._obj_path(sha)
        if not os.path.exists(p):
            atomic_write(p, raw)
        return sha

    def get_object(self, sha):
        hit = self._obj_cache.get(sha)
        if hit is not None:
            return hit
        with open(self._obj_path(sha), "rb") as f:
            raw = f.read()
        nul = raw.index(b"\0")
        typ = raw[:nul].split(b" ")[0].decode()
        res = (typ, raw[nul + 1:])
        if typ != "blob" or len(raw) < 4096:
            if len(self._obj_cache) > 200000:
                self._obj_cache.clear()
            self._obj_cache[sha] = res
        return res

    def has_object(self, sha):
        return bool(SHA1_RE.match(sha or "")) and os.path.exists(self._obj_path(sha))

    def blob_info(self, sha):
        """(content size, lfs dict or None) for a blob."""
        key = ("info", sha)
        hit = self._obj_cache.get(key)
        if hit is not None:
            return hit
        _, data = self.get_object(sha)
        lfs = parse_pointer(data)
        res = (lfs["size"] if lfs else len(data), lfs)
        self._obj_cache[key] = res
        return res

    def write_tree(self, files):
        """files: {path: blob sha} -> root tree sha (real git tree objects)."""
        root = {}
        for path, sha in files.items():
            node = root
            parts = path.split("/")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = sha

        def write(node):
            entries = []
            for name, v in node.items():
                if isinstance(v, dict):
                    entries.append((name + "/", b"40000", name, write(v)))
                else:
                    entries.append((name, b"100644", name, v))
            entries.sort(key=lambda e: e[0].encode())
            data = b"".join(m + b" " + n.encode() + b"\0" + binascii.unhexlify(s)
                            for _, m, n, s in entries)
            return self.put_object("tree", data)

        return write(root)

    def read_tree(self, sha):
        _, data = self.get_object(sha)
        out = []
        i = 0
        while i < len(data):
            sp = data.index(b" ", i)
            nul = data.index(b"\0", sp)
            mode = data[i:sp].decode()
            name = data[sp + 1:nul].decode()
            out.append((mode, name, binascii.hexlify(data[nul + 1:nul + 21]).decode()))
            i = nul + 21
        return out

    def read_commit(self, sha):
        typ, data = self.get_object(sha)
        if typ != "commit":
            raise KeyError(sha)
        head, _, msg = data.decode().partition("\n\n")
        c = {"tree": None, "parents": [], "author": "", "date": 0, "message": msg}
        for line in head.split("\n"):
            k, _, v = line.partition(" ")
            if k == "tree":
                c["tree"] = v
            elif k == "parent":
                c["parents"].append(v)
            elif k == "author":
                m = re.match(r"^(.*) <[^>]*> (\d+) ", v)
                if m:
                    c["author"], c["date"] = m.group(1), int(m.group(2))
        return c

    def write_commit(self, tree, parent, user, summary, description, ts=None):
        ts = int(time.time() if ts is None else ts)
        ident = f"{user} <{user}@users.noreply.huggingface.co> {ts} +0000"
        msg = summary + ("\n\n" + description if description else "") + "\n"
        body = f"tree {tree}\n" + (f"parent {parent}\n" if parent else "") + \
            f"author {ident}\ncommitter {ident}\n\n{msg}"
        return self.put_object("commit", body.encode())

    def walk(self, commit_sha):
        """(files {path: blob sha}, dirs {path: tree sha}) of a commit, cached (immutable)."""
        hit = self._walk_cache.get(commit_sha)
        if hit is not None:
            return hit
        files, dirs = {}, {}

        def rec(tsha, prefix):
            for mode, name, sha in self.read_tree(tsha):
                p = prefix + name
                if mode == "40000":
                    dirs[p] = sha
                    rec(sha, p + "/")
                else:
                    files[p] = sha

        rec(self.read_commit(commit_sha)["tree"], "")
        res = (files, dirs)
        if len(self._walk_cache) > 256:
            self._walk_cache.clear()
        self._walk_cache[commit_sha] = res
        return res

    # LFS objects, content-addressed by sha256

    def lfs_path(self, oid):
        return os.path.join(self.root, "lfs", oid[:2], oid)

    def lfs_size(self, oid):
        try:
            return os.path.getsize(self.lfs_path(oid))
        except OSError:
            return None

    def new_tmp(self):
        fd, p = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        return os.fdopen(fd, "wb"), p

    def lfs_commit_tmp(self, tmp, oid):
        dst = self.lfs_path(oid)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(tmp, dst)
        fsync_dir(os.path.dirname(dst))

    # repos

    def repo_dir(self, t, rid):
        ns, name = rid.split("/", 1)
        return os.path.join(self.root, "repos", t, ns, name)

    def repo_load(self, t, rid):
        return read_json(os.path.join(self.repo_dir(t, rid), "repo.json"))

    def repo_save(self, t, rid, meta):
        atomic_write(os.path.join(self.repo_dir(t, rid), "repo.json"),
                     json.dumps(meta, indent=1, sort_keys=True).encode())

    def repo_has_lfs(self, t, rid, oid):
        try:
            with open(os.path.join(self.repo_dir(t, rid), "lfs", oid), "rb") as f:
                size = int(f.read().decode())
        except (OSError, ValueError):
            return None
        if self.lfs_size(oid) != size and self.xet_size(oid) != size:
            return None
        return size

    def xet_file(self, oid):
        """Xet file hash holding the content of this sha256, or None."""
        return self.cas.file_for_sha256(oid) if self.cas is not None else None

    def xet_size(self, oid):
        fhex = self.xet_file(oid)
        return self.cas.file(fhex)["size"] if fhex else None

    def repo_add_lfs(self, t, rid, oid, size):
        atomic_write(os.path.join(self.repo_dir(t, rid), "lfs", oid), str(size).encode())


def parse_pointer(data):
    if len(data) > 1024 or not data.startswith(LFS_POINTER_PREFIX):
        return None
    m = re.match(rb"^version [^\n]+\noid sha256:([0-9a-f]{64})\nsize (\d+)\n", data)
    if not m:
        return None
    return {"oid": m.group(1).decode(), "size": int(m.group(2)), "pointerSize": len(data)}


def make_pointer(oid, size):
    return LFS_POINTER_PREFIX + b"oid sha256:%s\nsize %d\n" % (oid.encode(), size)


def git_blob_sha(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def validate_repo_path(p):
    if not isinstance(p, str) or not p:
        return "path must be a non-empty string"
    if p.startswith("/"):
        return f"Invalid path '{p}': must not start with '/'"
    if "\\" in p:
        return f"Invalid path '{p}': backslashes are not allowed"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in p):
        return f"Invalid path {p!r}: control characters are not allowed"
    for seg in p.split("/"):
        if seg == "":
            return f"Invalid path '{p}': empty segment"
        if seg in (".", ".."):
            return f"Invalid path '{p}': '.' and '..' segments are not allowed"
        if seg == ".git":
            return f"Invalid path '{p}': '.git' is reserved"
    if len(p.encode()) > 4096:
        return "path too long"
    return None


def validate_repo_name(name):
    if not isinstance(name, str) or not name:
        return "Repo name is required"
    if len(name) > 96:
        return "Repo name must be at most 96 characters long"
    if not NAME_RE.match(name):
        return ("Repo name can only contain alphanumeric characters, '-', '_' and '.' "
                f"(got '{name}')")
    if "--" in name or ".." in name:
        return f"Repo name cannot contain '--' or '..' (got '{name}')"
    if name[0] in ".-" or name[-1] in ".-":
        return f"Repo name cannot start or end with '-' or '.' (got '{name}')"
    return None


# ---------------------------------------------------------------------------------------------
# faults


class Faults:
    KEYS = {"route", "count", "status", "retry_after", "ratelimit_t", "reset_after_bytes",
            "slow_bytes_per_s", "drop_response", "expire_urls", "delay_answer_s"}

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = []

    def add(self, f):
        if not isinstance(f, dict) or f.get("route") not in ROUTES:
            raise HubError(400, f"fault needs a 'route' in {ROUTES}")
        bad = set(f) - self.KEYS
        if bad:
            raise HubError(400, f"unknown fault keys {sorted(bad)}")
        f = dict(f)
        f["count"] = int(f.get("count", 1))
        if f["count"] < 1:
            raise HubError(400, "count must be >= 1")
        with self.lock:
            self.pending.append(f)

    def take(self, route):
        with self.lock:
            for i, f in enumerate(self.pending):
                if f["route"] == route:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        del self.pending[i]
                    return dict(f)
        return None

    def list(self):
        with self.lock:
            return [dict(f) for f in self.pending]

    def clear(self):
        with self.lock:
            n = len(self.pending)
            self.pending = []
            return n


# ---------------------------------------------------------------------------------------------
# request body reading


class SinkRate:
    """--sink-rate: one token bucket shared by every connection, so the bodies the storage sink
    receives (LFS PUT, part PUT, xorb POST) together arrive at most at `rate` bytes/s, as over a
    WAN link. A reader takes what it got from the bucket and sleeps while the bucket is in debt;
    the socket buffers fill and TCP slows the sender down."""

    BURST_S = 0.05  # at most 50 ms of bytes go through unpaced after an idle moment

    def __init__(self, rate):
        self.rate = float(rate)
        self.lock = threading.Lock()
        self.tokens = self.rate * self.BURST_S
        self.t = time.monotonic()

    def take(self, n):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate * self.BURST_S, self.tokens + (now - self.t) * self.rate)
            self.t = now
            self.tokens -= n
            debt = -self.tokens
        if debt > 0:
            time.sleep(debt / self.rate)


SINK_ROUTES = ("lfs_put", "part_put", "xorb")


class Body:
    """Reads a request body (Content-Length or chunked), sending 100 Continue lazily."""

    def __init__(self, handler):
        self.h = handler
        te = (handler.headers.get("Transfer-Encoding") or "").lower()
        cl = handler.headers.get("Content-Length")
        self.chunked = "chunked" in te
        self.length = None
        if cl is not None and not self.chunked:
            try:
                self.length = int(cl)
                if self.length < 0:
                    raise ValueError
            except ValueError:
                raise HubError(400, "invalid Content-Length")
        self.remaining = self.length if self.length is not None else 0
        self.chunk_left = 0
        self.done = not self.chunked and not self.remaining
        self.read_bytes = 0
        self.continued = False
        sink = handler.server.hub.sink_rate if hasattr(handler.server, "hub") else None
        # the route is known only once the router ran: checked per read
        self.sink = (lambda: sink if sink and handler.route in SINK_ROUTES else None)

    @property
    def present(self):
        return self.chunked or self.length is not None

    def _continue(self):
        if not self.continued:
            self.continued = True
            if self.h.expect_continue:
                self.h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.h.wfile.flush()

    def _step(self):
        """Read size: under --sink-rate, about 10 ms worth, so the pacing is smooth."""
        sink = self.sink()
        return max(16384, int(sink.rate / 100)) if sink else 1 << 30

    def _pace(self, n):
        sink = self.sink()
        if sink:
            sink.take(n)

    def read(self, n=1 << 20):
        if self.done:
            return b""
        self._continue()
        if not self.chunked:
            data = self.h.rfile.read(min(n, self.remaining, self._step()))
            if not data:
                raise ConnectionError("client closed mid-body")
            self._pace(len(data))
            self.remaining -= len(data)
            self.read_bytes += len(data)
            if self.remaining == 0:
                self.done = True
            return data
        if self.chunk_left == 0:
            line = self.h.rfile.readline(1024)
            if not line:
                raise ConnectionError("client closed mid-body")
            try:
                self.chunk_left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HubError(400, "bad chunked encoding")
            if self.chunk_left == 0:
                while self.h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return b""
        data = self.h.rfile.read(min(n, self.chunk_left, self._step()))
        if not data:
            raise ConnectionError("client closed mid-body")
        self._pace(len(data))
        self.chunk_left -= len(data)
        self.read_bytes += len(data)
        if self.chunk_left == 0:
            self.h.rfile.readline(16)
        return data

    def readinto(self, mv):
        """Fixed-length bodies only: fills a prefix of mv; returns the count (0 at the end)."""
        if self.done:
            return 0
        self._continue()
        n = self.h.rfile.readinto(mv[:min(len(mv), self.remaining, self._step())])
        if not n:
            raise ConnectionError("client closed mid-body")
        self._pace(n)
        self.remaining -= n
        self.read_bytes += n
        if self.remaining == 0:
            self.done = True
        return n

    def read_all(self, limit):
        buf = io.BytesIO()
        while not self.done:
            d = self.read()
            buf.write(d)
            if buf.tell() > limit:
                raise HubError(413, f"request body too large (max {limit} bytes)")
        return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# the HTTP handler


class Handler(xet_cas.XetRoutes, BucketRoutes, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ckptpush-testhub/1.0"
    timeout = 300

    # helpers the Xet and bucket mixins use
    atomic_write = staticmethod(atomic_write)
    validate_repo_name = staticmethod(validate_repo_name)
    validate_repo_path = staticmethod(validate_repo_path)

    # quiet default logging; we write our own JSON log
    def log_message(self, fmt, *args):
        pass

    def send_error(self, code, message=None, explain=None):
        """Errors raised by http.server itself (bad request line, unknown method): JSON too."""
        msg = message or self.responses.get(code, ("error",))[0]
        body = json.dumps({"error": msg}).encode()
        self.close_connection = True
        self.send_response(code, msg)
        self.send_header("X-Request-Id", getattr(self, "req_id", None) or uuid.uuid4().hex)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Message", msg.encode("ascii", "replace").decode())
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def handle_expect_100(self):
        self.expect_continue = True
        return True

    def handle_one_request(self):
        self.expect_continue = False
        try:
            super().handle_one_request()
        except AbortConnection:
            self.close_connection = True
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def hub(self):
        return self.server.hub

    def dispatch(self):
        self.t0 = time.time()
        self.req_id = uuid.uuid4().hex
        self.route = "other"
        self.status = 0
        self.bytes_out = 0
        self.fault = None
        self.fault_note = None
        self.responded = False
        self.logged = False
        self.body = None
        self.user = None
        raw = self.path
        if raw.startswith("http://") or raw.startswith("https://"):
            raw = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        self.raw_path, _, self.query_string = raw.partition("?")
        self.query = urllib.parse.parse_qs(self.query_string, keep_blank_values=True)
        self.segs = [urllib.parse.unquote(s) for s in self.raw_path.split("/")[1:]]
        try:
            try:
                self.body = Body(self)
                handler, args = self.router()
                self.fault = None if self.route == "admin" else self.hub.faults.take(self.route)
                if self.fault:
                    self.apply_fault_before()
                handler(*args)
            except HubError as e:
                self.send_error_json(e)
            except AbortConnection:
                raise
            except (ConnectionError, socket.timeout, BrokenPipeError):
                self.close_connection = True
                self.status = self.status or 499
                if not self.fault_note:
                    self.fault_note = "client disconnected"
                raise
            except Exception as e:  # a hub bug: answer 500 and say why on stderr
                import traceback
                traceback.print_exc()
                if not self.responded:
                    self.send_error_json(HubError(500, f"internal error: {e}"))
            self.finish_body()
        finally:
            self.write_log()

    def finish_body(self):
        b = self.body
        if b is None or b.done:
            return
        if self.expect_continue and not b.continued:
            self.close_connection = True
            return
        if b.chunked or b.remaining > DRAIN_MAX:
            self.close_connection = True
            return
        try:
            while not b.done:
                b.read()
        except Exception:
            self.close_connection = True

    def write_log(self):
        """Logged before the answer goes out, so a client that saw it can read its line."""
        if self.logged:
            return
        self.logged = True
        rec = {"t": round(self.t0, 6), "method": self.command, "path": self.path,
               "status": self.status, "bytes_in": self.body.read_bytes if self.body else 0,
               "bytes_out": self.bytes_out, "auth": "Authorization" in self.headers,
               "route": self.route, "request_id": self.req_id}
        if self.fault_note:
            rec["fault"] = self.fault_note
        if self.route in ("lfs_put", "part_put", "complete", "lfs_get", "xorb_get",
                          "xet_get") and rec["auth"]:
            rec["auth_on_presigned"] = True
        if self.route in ("lfs_put", "part_put", "complete") and rec["auth"]:
            sys.stderr.write(f"hub: WARNING Authorization header sent to presigned URL "
                             f"{self.command} {self.raw_path}\n")
        self.hub.log(rec)

    def abort(self, note):
        """Tear the connection down with RST (SO_LINGER 0) and answer nothing."""
        self.fault_note = note
        self.write_log()
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        for f in (self.rfile, self.wfile, self.connection):
            try:
                f.close()
            except OSError:
                pass
        self.close_connection = True
        self.responded = True
        raise AbortConnection()

    def apply_fault_before(self):
        f = self.fault
        if "reset_after_bytes" in f:
            want = int(f["reset_after_bytes"])
            got = 0
            while got < want and not self.body.done:
                d = self.body.read(min(1 << 16, want - got))
                got += len(d)
            self.abort(f"reset_after_bytes={want}")
        if "status" in f or "retry_after" in f or "ratelimit_t" in f:
            st = int(f.get("status") or (429 if "ratelimit_t" in f else 503))
            hdrs = {}
            if "retry_after" in f:
                hdrs["Retry-After"] = str(int(f["retry_after"]))
            if "ratelimit_t" in f:
                hdrs["RateLimit"] = f'"api";r=0;t={int(f["ratelimit_t"])}'
                hdrs["RateLimit-Policy"] = '"fixed window";"api";q=500;w=300'
            self.fault_note = f"status={st}"
            raise HubError(st, f"injected fault: HTTP {st}", headers=hdrs)

    def base_url(self):
        host = self.headers.get("Host")
        if not host:
            h, p = self.server.server_address[:2]
            host = f"{h}:{p}"
        return "http://" + host

    def send(self, status, body=b"", ctype="application/json", headers=None, stream=None,
             length=None):
        """One response. body: bytes; or stream: iterable of bytes with a known length."""
        if self.fault and self.fault.get("delay_answer_s"):
            time.sleep(float(self.fault["delay_answer_s"]))  # the work is done, the answer late
        if self.fault and self.fault.get("drop_response"):
            self.status = status
            self.abort("drop_response")
        self.responded = True
        self.status = status
        if stream is None:
            length = len(body)
        self.send_response(status)
        self.send_header("X-Request-Id", self.req_id)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        b = self.body
        self.bytes_out = 0 if self.command == "HEAD" else length
        self.write_log()
        if self.close_connection or (b is not None and not b.done and (
                (self.expect_continue and not b.continued) or b.chunked
                or b.remaining > DRAIN_MAX)):
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            self.wfile.flush()
            return
        rate = self.fault.get("slow_bytes_per_s") if self.fault else None
        if rate:
            self.fault_note = f"slow_bytes_per_s={rate}"
        chunks = [body] if stream is None else stream
        for c in chunks:
            self.write_out(c, rate)
        self.wfile.flush()

    def write_out(self, data, rate):
        if not rate:
            self.wfile.write(data)
            return
        step = max(1, int(rate) // 10)
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            self.wfile.write(piece)
            self.wfile.flush()
            time.sleep(len(piece) / float(rate))

    def send_json(self, status, obj, headers=None, ctype="application/json"):
        self.send(status, json.dumps(obj).encode(), ctype=ctype, headers=headers)

    def send_error_json(self, e):
        if self.responded:
            self.close_connection = True
            return
        hdrs = dict(e.headers)
        msg = e.message.replace("\r", " ").replace("\n", " ")
        hdrs["X-Error-Message"] = msg.encode("ascii", "replace").decode()
        if e.code:
            hdrs["X-Error-Code"] = e.code
        if e.body is not None:
            body, ctype = e.body
            self.send(e.status, body, ctype=ctype, headers=hdrs)
        else:
            self.send_json(e.status, {"error": e.message}, headers=hdrs)

    def qbool(self, name, default=False):
        v = self.query.get(name)
        if not v:
            return default
        return v[-1].lower() in ("1", "true", "yes", "")

    def json_body(self, limit=JSON_BODY_MAX):
        data = self.body.read_all(limit)
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except ValueError as e:
            raise HubError(400, f"invalid JSON body: {e}")

    # -- auth -------------------------------------------------------------------------------

    def auth_user(self, required=False):
        h = self.headers.get("Authorization")
        if h is None:
            if required:
                raise HubError(401, "You must be authenticated to access this resource "
                               "(missing Authorization header)")
            return None
        parts = h.split(None, 1)
        tok = parts[1].strip() if len(parts) == 2 and parts[0].lower() == "bearer" else None
        user = self.hub.users.get(tok) if tok else None
        if user is None:
            raise HubError(401, INVALID_CREDS)
        self.user = user
        return user

    def member_of(self, user, ns):
        return user is not None and ns in (user, ORG)

    # -- routing ----------------------------------------------------------------------------

    def router(self):
        s = self.segs
        m = self.command
        if s[:1] == ["_admin"] and s[1:2] == ["faults"]:
            self.route = "admin"
            return self.h_admin, ()
        if s[:1] == ["_storage"]:
            return self.route_storage(s[1:])
        if s[:1] == ["cas"]:
            return self.route_cas(s[1:])
        if s[:1] == ["api"]:
            rest = s[1:]
            if rest[:1] == ["buckets"] and self.hub.cas is not None:
                return self.route_buckets(rest[1:])
            if rest == ["whoami-v2"] and m == "GET":
                self.route = "whoami"
                return self.h_whoami, ()
            if rest == ["repos", "create"] and m == "POST":
                self.route = "repo_create"
                return self.h_create, ()
            if rest == ["validate-yaml"] and m == "POST":
                self.route = "validate_yaml"
                return self.h_validate_yaml, ()
            if len(rest) >= 3 and rest[0] in TYPES:
                t, rid, tail = rest[0], rest[1] + "/" + rest[2], rest[3:]
                return self.route_api_repo(t, rid, tail)
            raise HubError(404, f"Sorry, we can't find the page you are looking for: "
                           f"{self.raw_path}")
        # web routes: [P]ns/name.git/info/lfs/objects/(batch|verify), [P]ns/name/(resolve|raw)
        t = "models"
        rest = s
        if s and s[0] in ("datasets", "spaces") and len(s) >= 3:
            t, rest = s[0], s[1:]
        if len(rest) >= 2 and rest[1].endswith(".git"):
            rid = rest[0] + "/" + rest[1][:-4]
            tail = rest[2:]
            if tail == ["info", "lfs", "objects", "batch"] and m == "POST":
                self.route = "lfs_batch"
                return self.h_batch, (t, rid)
            if tail == ["info", "lfs", "objects", "verify"] and m == "POST":
                self.route = "verify"
                return self.h_verify, (t, rid)
        if s[:1] == ["buckets"] and len(s) >= 5 and s[3] == "resolve" and m in ("GET", "HEAD") \
                and self.hub.cas is not None:
            self.route = "bucket_resolve"
            return self.h_bucket_resolve, (s[1] + "/" + s[2], "/".join(s[4:]))
        if len(rest) >= 4 and rest[2] in ("resolve", "raw") and m in ("GET", "HEAD"):
            self.route = rest[2]
            return self.h_resolve, (t, rest[0] + "/" + rest[1], rest[3:], rest[2] == "raw")
        raise HubError(404, f"Sorry, we can't find the page you are looking for: "
                       f"{self.raw_path}")

    def route_api_repo(self, t, rid, tail):
        m = self.command
        if not tail and m == "GET":
            self.route = "repo_info"
            return self.h_repo_info, (t, rid, None)
        if not tail:
            raise HubError(405, f"method {m} not allowed")
        op, arg = tail[0], tail[1:]
        table = {
            ("revision", "GET"): ("revision", self.h_repo_info),
            ("refs", "GET"): ("refs", self.h_refs),
            ("commits", "GET"): ("commits", self.h_commits),
            ("branch", "POST"): ("branch", self.h_branch),
            ("branch", "DELETE"): ("branch", self.h_branch),
            ("preupload", "POST"): ("preupload", self.h_preupload),
            ("commit", "POST"): ("commit", self.h_commit),
            ("tree", "GET"): ("tree", self.h_tree),
            ("paths-info", "POST"): ("paths_info", self.h_paths_info),
        }
        if op in ("xet-write-token", "xet-read-token") and m == "GET":
            self.route = "xet_token"
            write = op == "xet-write-token"

            def access():
                if write:
                    meta = self.repo_write(t, rid)
                else:
                    meta = self.repo_read(t, rid)
                if arg:
                    self.split_rev_path(meta, arg)
                return self.user
            return self.h_xet_token, (f"{t}/{rid}", "write" if write else "read", access)
        ent = table.get((op, m))
        if ent is None:
            raise HubError(404, f"Sorry, we can't find the page you are looking for: "
                           f"{self.raw_path}")
        self.route = ent[0]
        if op == "refs":
            return ent[1], (t, rid)
        if op == "revision" and not arg:
            raise HubError(400, "missing revision")
        return ent[1], (t, rid, arg)

    def route_storage(self, s):
        m = self.command
        if s[:1] == ["lfs"] and len(s) == 2 and m == "PUT":
            self.route = "lfs_put"
            return self.h_lfs_put, (s[1],)
        if s[:1] == ["part"] and len(s) == 3 and m == "PUT":
            self.route = "part_put"
            return self.h_part_put, (s[1], s[2])
        if s[:1] == ["complete"] and len(s) == 2 and m == "POST":
            self.route = "complete"
            return self.h_complete, (s[1],)
        if s[:1] == ["get"] and len(s) == 2 and m in ("GET", "HEAD"):
            self.route = "lfs_get"
            return self.h_lfs_get, (s[1],)
        if s[:1] == ["xorb"] and len(s) == 2 and m == "GET":
            self.route = "xorb_get"
            return self.h_xorb_get, (s[1],)
        if s[:1] == ["xet"] and len(s) == 2 and m in ("GET", "HEAD"):
            self.route = "xet_get"
            return self.h_xet_bridge, (s[1],)
        self.route = "other"
        raise HubError(404, "NoSuchKey", body=s3_error("NoSuchKey", "The specified key does "
                                                         "not exist.", self.req_id))

    def route_cas(self, s):
        """The Xet CAS under /cas (the casUrl handed out with tokens)."""
        m = self.command
        if s[:2] == ["v1", "xorbs"] and len(s) == 4 and m == "POST":
            self.route = "xorb"
            return self.h_xorb_upload, (s[2], s[3])
        if s == ["v1", "shards"] and m == "POST":
            self.route = "shard"
            return self.h_shard_upload, ()
        if s[:2] == ["v1", "chunks"] and len(s) == 4 and m == "GET":
            self.route = "dedup"
            return self.h_dedup, (s[2], s[3])
        if s[:1] in (["v1"], ["v2"]) and s[1:2] == ["reconstructions"] and len(s) == 3 \
                and m == "GET":
            self.route = "reconstruction"
            return self.h_reconstruction, (int(s[0][1]), s[2])
        self.route = "other"
        raise HubError(404, f"no such CAS route: {m} {self.raw_path}")

    # -- repo lookup ------------------------------------------------------------------------

    def repo_load(self, t, rid):
        ns, _, name = rid.partition("/")
        if validate_repo_name(ns) or validate_repo_name(name):
            return None
        return self.hub.store.repo_load(t, rid)

    def repo_read(self, t, rid):
        """Repo meta for reading; 401/404 for missing or private-not-yours."""
        user = self.auth_user()
        meta = self.repo_load(t, rid)
        if meta is None or (meta["private"] and not self.member_of(user, rid.split("/")[0])):
            if user is None and meta is not None:
                raise HubError(401, "Repository not found", code="RepoNotFound")
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return meta

    def repo_write(self, t, rid):
        user = self.auth_user(required=True)
        meta = self.repo_load(t, rid)
        ns = rid.split("/")[0]
        if meta is None or (meta["private"] and not self.member_of(user, ns)):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if not self.member_of(user, ns):
            raise HubError(403, f"You don't have the rights to write to {rid}")
        return meta

    def resolve_rev(self, meta, rev):
        """ref name or commit sha -> (ref or None, commit sha); HubError 404 otherwise."""
        ref = ref_name(meta, rev)
        if ref is not None:
            return ref, meta["refs"][ref]
        if rev and SHA1_RE.match(rev) and self.hub.store.has_object(rev):
            try:
                self.hub.store.read_commit(rev)
                return None, rev
            except KeyError:
                pass
        raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

    def split_rev_path(self, meta, segs):
        """Longest prefix of segs naming a ref/commit -> (ref, sha, rest path)."""
        for k in range(len(segs), 0, -1):
            cand = "/".join(segs[:k])
            if ref_name(meta, cand) is not None or (
                    SHA1_RE.match(cand) and self.hub.store.has_object(cand)):
                ref, sha = self.resolve_rev(meta, cand)
                return ref, sha, "/".join(segs[k:])
        raise HubError(404, f"Invalid rev id: {segs[0] if segs else ''}",
                       code="RevisionNotFound")

    def repo_url(self, t, rid):
        return f"{self.base_url()}/{PREFIX[t]}{rid}"

    # -- handlers: account, repos -----------------------------------------------------------

    def h_admin(self):
        if self.command == "GET":
            return self.send_json(200, {"faults": self.hub.faults.list()})
        if self.command == "DELETE":
            return self.send_json(200, {"cleared": self.hub.faults.clear()})
        if self.command == "POST":
            body = self.json_body()
            items = body if isinstance(body, list) else [body]
            for f in items:
                self.hub.faults.add(f)
            return self.send_json(200, {"faults": self.hub.faults.list()})
        raise HubError(405, "method not allowed")

    def h_whoami(self):
        user = self.auth_user(required=True)
        self.send_json(200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user,
            "fullname": user, "email": f"{user}@example.invalid", "emailVerified": True,
            "isPro": False, "canPay": False, "avatarUrl": "", "periodEnd": None,
            "orgs": [{"type": "org", "name": ORG, "fullname": ORG, "roleInOrg": "admin",
                      "id": hashlib.sha1(ORG.encode()).hexdigest()[:24], "isEnterprise": False,
                      "avatarUrl": ""}],
            "auth": {"type": "access_token",
                     "accessToken": {"displayName": "ckptpush-test", "role": "write",
                                     "createdAt": "2025-01-01T00:00:00.000Z"}},
        })

    def h_create(self):
        user = self.auth_user(required=True)
        body = self.json_body()
        if not isinstance(body, dict):
            raise HubError(400, "body must be a JSON object")
        name = body.get("name")
        org = body.get("organization")
        if isinstance(name, str) and "/" in name and not org:
            org, name = name.split("/", 1)
        ns = org or user
        err = validate_repo_name(name)
        if err:
            raise HubError(400, err)
        if not isinstance(ns, str) or validate_repo_name(ns):
            raise HubError(400, f"Invalid namespace '{ns}'")
        typ = body.get("type") or "model"
        if typ not in SINGULAR_TO_T:
            raise HubError(400, f"Invalid repo type '{typ}'")
        t = SINGULAR_TO_T[typ]
        if not self.member_of(user, ns):
            raise HubError(403, f"You don't have the rights to create a repo under the "
                           f"namespace '{ns}'")
        vis = body.get("visibility")
        if vis is not None and vis not in ("public", "private", "protected"):
            raise HubError(400, '"visibility" must be one of [public, private, protected]')
        # "protected" (spaces) is served like private here
        private = vis != "public" if vis is not None else bool(body.get("private", False))
        rid = f"{ns}/{name}"
        st = self.hub.store
        files = {".gitattributes": st.put_object("blob", DEFAULT_GITATTRIBUTES.encode())}
        if body.get("license"):
            readme = f"---\nlicense: {body['license']}\n---\n".encode()
            files["README.md"] = st.put_object("blob", readme)
        for f in body.get("files") or []:
            p = f.get("path") if isinstance(f, dict) else None
            err = validate_repo_path(p)
            if err:
                raise HubError(422, err)
            try:
                data = base64.b64decode(f.get("content", ""), validate=True) if f.get(
                    "encoding", "base64") == "base64" else str(f.get("content")).encode()
            except (binascii.Error, ValueError):
                raise HubError(400, f"invalid base64 content for '{p}'")
            files[p] = st.put_object("blob", data)
        with st.lock:
            if st.repo_load(t, rid) is not None:
                raise HubError(409, "You already created this model repo",
                               headers={}) if t == "models" else HubError(
                    409, f"You already created this {typ} repo")
            tree = st.write_tree(files)
            commit = st.write_commit(tree, None, user, "initial commit", "")
            now = time.time()
            meta = {"type": t, "id": rid, "_id": secrets.token_hex(12), "private": private,
                    "createdAt": now_iso(now), "lastModified": now_iso(now),
                    "refs": {"refs/heads/main": commit}, "default": "main", "next_pr": 1}
            st.repo_save(t, rid, meta)
        self.send_json(200, {"url": self.repo_url(t, rid), "name": rid, "id": meta["_id"]})

    def h_repo_info(self, t, rid, rev_segs):
        meta = self.repo_read(t, rid)
        st = self.hub.store
        if rev_segs:
            ref, sha, rest = self.split_rev_path(meta, rev_segs)
            if rest:
                raise HubError(404, f"Invalid rev id: {'/'.join(rev_segs)}",
                               code="RevisionNotFound")
        else:
            ref, sha = self.resolve_rev(meta, "HEAD")
        expand = self.query.get("expand", []) + self.query.get("expand[]", [])
        for e in expand:
            if e not in EXPAND_FIELDS:
                raise HubError(400, '"expand" must be one of [' + ", ".join(EXPAND_FIELDS)
                               + "]")
        files, _ = st.walk(sha)
        blobs = self.qbool("blobs")
        siblings = []
        for p in sorted(files):
            s = {"rfilename": p}
            if blobs:
                size, lfs = st.blob_info(files[p])
                s["blobId"] = files[p]
                s["size"] = size
                if lfs:
                    s["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"],
                                "pointerSize": lfs["pointerSize"]}
            siblings.append(s)
        commit = st.read_commit(sha)
        full = {"_id": meta["_id"], "id": rid, "author": rid.split("/")[0], "sha": sha,
                "private": meta["private"], "disabled": False, "gated": False,
                "lastModified": now_iso(commit["date"]), "createdAt": meta["createdAt"],
                "likes": 0, "downloads": 0, "tags": [], "siblings": siblings,
                "xetEnabled": self.hub.cas is not None, "usedStorage": 0, "cardData": {}}
        if t == "models":
            full["modelId"] = rid
        if expand:
            out = {"_id": meta["_id"], "id": rid}
            for e in expand:
                out[e] = full.get(e)
            return self.send_json(200, out)
        self.send_json(200, full)

    def h_refs(self, t, rid):
        meta = self.repo_read(t, rid)
        branches, prs = [], []
        for ref, sha in sorted(meta["refs"].items()):
            if ref.startswith("refs/heads/"):
                branches.append({"name": ref[11:], "ref": ref, "targetCommit": sha})
            elif ref.startswith("refs/pr/"):
                prs.append({"name": ref[5:], "ref": ref, "targetCommit": sha})
        out = {"branches": branches, "converts": [], "tags": []}
        if self.qbool("include_prs"):
            out["pullRequests"] = prs
        self.send_json(200, out)

    def h_commits(self, t, rid, rev_segs):
        meta = self.repo_read(t, rid)
        st = self.hub.store
        ref, sha, rest = self.split_rev_path(meta, rev_segs)
        out = []
        cur = sha
        while cur and len(out) < 100000:
            c = st.read_commit(cur)
            title, _, message = c["message"].rstrip("\n").partition("\n\n")
            out.append({"id": cur, "title": title, "message": message,
                        "date": now_iso(c["date"]), "authors": [{"user": c["author"]}]})
            cur = c["parents"][0] if c["parents"] else None
        self.send_paginated(out)

    def send_paginated(self, items, page=None):
        page = page or self.hub.page_size
        try:
            start = int(self.query.get("cursor", ["0"])[-1] or 0)
        except ValueError:
            raise HubError(400, "invalid cursor")
        chunk = items[start:start + page]
        hdrs = {}
        if start + page < len(items):
            q = [(k, v) for k, vs in self.query.items() if k != "cursor" for v in vs]
            q.append(("cursor", str(start + page)))
            url = f"{self.base_url()}{self.raw_path}?{urllib.parse.urlencode(q)}"
            hdrs["Link"] = f'<{url}>; rel="next"'
        self.send_json(200, chunk, headers=hdrs)

    def h_branch(self, t, rid, segs):
        meta = self.repo_write(t, rid)
        st = self.hub.store
        branch = "/".join(segs)
        if branch.startswith("refs/heads/"):
            branch = branch[11:]
        if not branch or validate_repo_path(branch) or branch.startswith("refs/") or \
                not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or branch == "HEAD":
            raise HubError(400, f"Invalid branch name '{branch}'")
        ref = "refs/heads/" + branch
        if self.command == "DELETE":
            with st.lock:
                meta = st.repo_load(t, rid)
                if ref not in meta["refs"]:
                    raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
                if branch == meta["default"]:
                    raise HubError(403, "You cannot delete the default branch")
                del meta["refs"][ref]
                st.repo_save(t, rid, meta)
            return self.send_json(200, {})
        body = self.json_body()
        if not isinstance(body, dict):
            raise HubError(400, "body must be a JSON object")
        with st.lock:
            meta = st.repo_load(t, rid)
            if ref in meta["refs"] and not body.get("overwrite"):
                raise HubError(409, f"Reference already exists: {ref}")
            if body.get("emptyBranch"):
                tree = st.write_tree({})
                target = st.write_commit(tree, None, self.user, "initial commit", "")
            else:
                _, target = self.resolve_rev(meta, body.get("startingPoint") or "HEAD")
            meta["refs"][ref] = target
            st.repo_save(t, rid, meta)
        self.send_json(200, {})

    # -- preupload --------------------------------------------------------------------------

    def h_preupload(self, t, rid, rev_segs):
        meta = self.repo_write(t, rid)
        st = self.hub.store
        ref, sha, rest = self.split_rev_path(meta, rev_segs)
        body = self.json_body()
        files_in = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files_in, list):
            raise HubError(400, '"files" must be an array')
        if len(files_in) > PREUPLOAD_MAX_FILES:
            raise HubError(413, f"too many files in one preupload call ({len(files_in)} > "
                           f"{PREUPLOAD_MAX_FILES})")
        files, _ = st.walk(sha)
        ga = body.get("gitAttributes")
        if not isinstance(ga, str):
            ga = st.get_object(files[".gitattributes"])[1].decode(
                "utf-8", "replace") if ".gitattributes" in files else ""
        gi = body.get("gitIgnore")
        if not isinstance(gi, str):
            gi = st.get_object(files[".gitignore"])[1].decode(
                "utf-8", "replace") if ".gitignore" in files else ""
        out = []
        for f in files_in:
            if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                raise HubError(400, "each file needs a string 'path'")
            p = f["path"]
            size = f.get("size")
            if not isinstance(size, int) or size < 0:
                raise HubError(400, f"file '{p}': 'size' must be a non-negative integer")
            try:
                sample = base64.b64decode(f.get("sample") or "", validate=False)
            except (binascii.Error, ValueError):
                raise HubError(400, f"file '{p}': 'sample' is not valid base64")
            if size == 0:
                mode = "regular"
            elif lfs_tracked(ga, p) or b"\0" in sample[:512] or size > REGULAR_MAX:
                mode = "lfs"
            else:
                mode = "regular"
            e = {"path": p, "uploadMode": mode, "shouldIgnore": git_ignored(gi, p)}
            if p in files:
                _, lfs = st.blob_info(files[p])
                e["oid"] = lfs["oid"] if lfs else files[p]
            out.append(e)
        self.send_json(200, {"files": out, "commitOid": sha})

    # -- LFS batch, storage -----------------------------------------------------------------

    def sign(self, path, params, ttl=None):
        ttl = self.hub.url_ttl if ttl is None else ttl
        params = dict(params)
        params["exp"] = str(int(time.time() + ttl))
        msg = path + "?" + urllib.parse.urlencode(sorted(params.items()))
        params["sig"] = hmac.new(self.hub.store.key, msg.encode(), hashlib.sha256).hexdigest()
        return f"{self.base_url()}{path}?{urllib.parse.urlencode(sorted(params.items()))}"

    def check_sig(self):
        """Verify this presigned request; returns its parameters (minus exp/sig)."""
        q = {k: v[-1] for k, v in self.query.items()}
        sig = q.pop("sig", None)
        msg = self.raw_path + "?" + urllib.parse.urlencode(sorted(q.items()))
        good = hmac.new(self.hub.store.key, msg.encode(), hashlib.sha256).hexdigest()
        if not sig or not hmac.compare_digest(sig, good):
            raise HubError(403, "SignatureDoesNotMatch", body=s3_error(
                "SignatureDoesNotMatch", "The request signature we calculated does not match "
                "the signature you provided.", self.req_id))
        try:
            exp = int(q.get("exp", "0"))
        except ValueError:
            exp = 0
        if exp < time.time() or (self.fault and self.fault.get("expire_urls")):
            if self.fault and self.fault.get("expire_urls"):
                self.fault_note = "expire_urls"
            raise HubError(403, "Request has expired", body=s3_error(
                "AccessDenied", "Request has expired", self.req_id,
                extra=f"<Expires>{now_iso(exp)}</Expires><ServerTime>{now_iso()}</ServerTime>"))
        q.pop("exp", None)
        return q

    def require_length(self):
        if self.body.chunked or self.body.length is None:
            raise HubError(411, "MissingContentLength", body=s3_error(
                "MissingContentLength", "You must provide the Content-Length HTTP header.",
                self.req_id))
        return self.body.length

    def session_id(self, t, rid, oid, size, chunk):
        return hashlib.sha256(f"{t}/{rid}\n{oid}\n{size}\n{chunk}".encode()).hexdigest()[:32]

    def h_batch(self, t, rid):
        body = self.json_body()
        if not isinstance(body, dict):
            raise HubError(400, "body must be a JSON object")
        op = body.get("operation")
        if op == "upload":
            meta = self.repo_write(t, rid)
        elif op == "download":
            meta = self.repo_read(t, rid)
        else:
            raise HubError(400, "operation must be 'upload' or 'download'")
        ha = body.get("hash_algo", "sha256")
        if ha not in ("sha256", "sha_256"):
            raise HubError(409, f"unsupported hash algorithm '{ha}'")
        objs = body.get("objects")
        if not isinstance(objs, list):
            raise HubError(400, '"objects" must be an array')
        if len(objs) > BATCH_MAX_OBJECTS:
            raise HubError(413, f"too many objects in one batch ({len(objs)} > "
                           f"{BATCH_MAX_OBJECTS})")
        transfers = body.get("transfers") or ["basic"]
        ref = body.get("ref")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            rname = ref["name"]
            if ref_name(meta, rname) is None:
                raise HubError(404, f"Invalid rev id: {rname}", code="RevisionNotFound")
        st = self.hub.store
        use_multi = False
        use_xet = op == "upload" and "xet" in transfers and self.hub.cas is not None
        xet_rev = rname if isinstance(ref, dict) and isinstance(ref.get("name"), str) \
            else "main"
        out = []
        for o in objs:
            oid = o.get("oid") if isinstance(o, dict) else None
            size = o.get("size") if isinstance(o, dict) else None
            e = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not OID_RE.match(oid):
                e["error"] = {"code": 422, "message": "Invalid oid: must be 64 lowercase hex"}
                out.append(e)
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                e["error"] = {"code": 422, "message": "Invalid size"}
                out.append(e)
                continue
            have = st.repo_has_lfs(t, rid, oid)
            if op == "download":
                if have is None:
                    e["error"] = {"code": 404, "message": "Object does not exist"}
                else:
                    e["authenticated"] = True
                    e["actions"] = {"download": {"href": self.sign(
                        f"/_storage/get/{oid}", {"repo": f"{t}/{rid}"}), "header": {},
                        "expires_in": self.hub.url_ttl}}
                out.append(e)
                continue
            if have is not None:
                if have != size:
                    e["error"] = {"code": 422, "message": f"Object {oid} exists with size "
                                  f"{have}, not {size}"}
                out.append(e)
                continue
            e["authenticated"] = True
            if use_xet:
                e["actions"] = {"upload": self.xet_upload_action(t, rid, xet_rev, self.user)}
            elif size >= self.hub.multipart_threshold and "multipart" in transfers:
                use_multi = True
                chunk = self.hub.chunk_size
                nparts = max(1, -(-size // chunk))
                if nparts > 10000:
                    e["error"] = {"code": 422, "message": "object needs more than 10000 parts"}
                    out.append(e)
                    continue
                sid = self.session_id(t, rid, oid, size, chunk)
                sdir = os.path.join(st.root, "multipart", sid)
                sess = {"repo": rid, "type": t, "oid": oid, "size": size, "chunk_size": chunk,
                        "nparts": nparts}
                if read_json(os.path.join(sdir, "session.json")) != sess:
                    atomic_write(os.path.join(sdir, "session.json"), json.dumps(sess).encode())
                header = {"chunk_size": str(chunk)}
                for n in range(1, nparts + 1):
                    header["%05d" % n] = self.sign(f"/_storage/part/{sid}/{n}", {})
                e["actions"] = {"upload": {"href": self.sign(f"/_storage/complete/{sid}", {}),
                                           "header": header, "expires_in": self.hub.url_ttl}}
            else:
                e["actions"] = {
                    "upload": {"href": self.sign(f"/_storage/lfs/{oid}", {
                        "repo": f"{t}/{rid}", "size": str(size)}), "header": {},
                        "expires_in": self.hub.url_ttl},
                    "verify": {"href": f"{self.base_url()}/{PREFIX[t]}{rid}.git/info/lfs/"
                               "objects/verify", "header": {}},
                }
            out.append(e)
        transfer = "xet" if use_xet else "multipart" if use_multi else "basic"
        self.send_json(200, {"transfer": transfer,
                             "objects": out, "hash_algo": "sha256"},
                       ctype="application/vnd.git-lfs+json")

    def stream_to_tmp(self, hashers):
        """Stream the request body to a temp file under the data dir, updating hashers."""
        st = self.hub.store
        f, tmp = st.new_tmp()
        try:
            with f:
                while not self.body.done:
                    d = self.body.read(1 << 20)
                    for h in hashers:
                        h.update(d)
                    f.write(d)
                f.flush()
                if not self.hub.fast_parts:
                    os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def h_lfs_put(self, oid):
        q = self.check_sig()
        length = self.require_length()
        t, _, rid = q.get("repo", "").partition("/")
        size = int(q.get("size", "-1"))
        if not OID_RE.match(oid) or t not in TYPES:
            raise HubError(400, "bad presigned URL")
        if length != size:
            raise HubError(400, "IncompleteBody", body=s3_error(
                "IncompleteBody", f"Content-Length {length} does not match the declared "
                f"object size {size}", self.req_id))
        sha = hashlib.sha256()
        tmp = self.stream_to_tmp([sha])
        st = self.hub.store
        if sha.hexdigest() != oid:
            os.unlink(tmp)
            raise HubError(400, "BadDigest", body=s3_error(
                "BadDigest", f"The sha256 of the body ({sha.hexdigest()}) does not match the "
                f"object id {oid}", self.req_id))
        st.lfs_commit_tmp(tmp, oid)
        st.repo_add_lfs(t, rid, oid, size)
        self.send(200, b"", ctype=None, headers={"ETag": f'"{oid}"'})

    def load_session(self, sid):
        if not re.fullmatch(r"[0-9a-f]{32}", sid):
            return None, None
        sdir = os.path.join(self.hub.store.root, "multipart", sid)
        return sdir, read_json(os.path.join(sdir, "session.json"))

    def h_part_put(self, sid, num):
        self.check_sig()
        length = self.require_length()
        sdir, sess = self.load_session(sid)
        if sess is None:
            raise HubError(404, "NoSuchUpload", body=s3_error(
                "NoSuchUpload", "The specified multipart upload does not exist.", self.req_id))
        try:
            n = int(num)
        except ValueError:
            n = 0
        if not 1 <= n <= sess["nparts"]:
            raise HubError(400, "InvalidPart", body=s3_error(
                "InvalidPart", f"part number {num} out of range 1..{sess['nparts']}",
                self.req_id))
        chunk = sess["chunk_size"]
        want = chunk if n < sess["nparts"] else sess["size"] - chunk * (sess["nparts"] - 1)
        if length != want:
            raise HubError(400, "InvalidPartSize", body=s3_error(
                "InvalidPartSize", f"part {n} must be exactly {want} bytes, got {length}",
                self.req_id))
        if self.hub.fast_parts:
            return self.fast_part_put(sid, sdir, sess, n, length)
        md5 = hashlib.md5()
        tmp = self.stream_to_tmp([md5])
        etag = f'"{md5.hexdigest()}"'
        dst = os.path.join(sdir, "part-%05d" % n)
        with self.hub.session_lock(sid):
            if not os.path.isdir(sdir):
                os.unlink(tmp)
                raise HubError(404, "NoSuchUpload", body=s3_error(
                    "NoSuchUpload", "The multipart upload was completed or aborted.",
                    self.req_id))
            os.replace(tmp, dst)
            atomic_write(dst + ".etag", etag.encode())
        self.send(200, b"", ctype=None, headers={"ETag": etag})

    def fast_part_put(self, sid, sdir, sess, n, length):
        """--fast-parts: the body goes with pwrite into the session's one data file at its
        offset (no copy at completion, no fsync), the ETag is an opaque token (S3 clients must
        echo it, never compute it), and a per-session thread hashes the contiguous prefix of
        received parts so completion does not hash 2 GiB at once. Checks stay: signature,
        expiry, part number, exact part size, ETags, sha256 and size of the whole."""
        fs = self.hub.fast_session(sid, sess)
        path = os.path.join(sdir, "data")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise HubError(404, "NoSuchUpload", body=s3_error(
                "NoSuchUpload", "The multipart upload was completed or aborted.", self.req_id))
        fs.part_started(n)
        off = (n - 1) * sess["chunk_size"]
        buf = self.hub.fast_buf()
        try:
            mv = memoryview(buf)
            while not self.body.done:
                got = self.body.readinto(mv)
                w = 0
                while w < got:
                    w += os.pwrite(fd, mv[w:got], off + w)
                off += got
        finally:
            os.close(fd)
            self.hub.fast_buf_put(buf)
        etag = '"%s"' % hmac.new(self.hub.store.key, f"{sid}/{n}/{length}/{time.time_ns()}"
                                 .encode(), hashlib.sha256).hexdigest()[:32]
        with self.hub.session_lock(sid):
            if not os.path.isdir(sdir):
                raise HubError(404, "NoSuchUpload", body=s3_error(
                    "NoSuchUpload", "The multipart upload was completed or aborted.",
                    self.req_id))
            et = os.path.join(sdir, "part-%05d.etag" % n)
            with open(et + ".tmp", "wb") as f:
                f.write(etag.encode())
            os.replace(et + ".tmp", et)
        fs.part_done(n)
        self.send(200, b"", ctype=None, headers={"ETag": etag})

    def fast_complete_hash(self, sid, sdir, sess):
        """--fast-parts: (sha256 hex, size) of the session's data file."""
        path = os.path.join(sdir, "data")
        try:
            size = os.path.getsize(path)
        except OSError:
            raise HubError(400, "part 1 was never uploaded")
        fs = self.hub.fast_sessions.get(sid)
        digest = fs.result(timeout=300) if fs is not None else None
        if digest is None:  # a restarted hub, or a part sent again after it was hashed
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                while True:
                    d = f.read(8 * MIB)
                    if not d:
                        break
                    sha.update(d)
            digest = sha.hexdigest()
        return digest, size

    def h_complete(self, sid):
        self.check_sig()
        body = self.json_body()
        sdir, sess = self.load_session(sid)
        st = self.hub.store
        if not isinstance(body, dict) or not isinstance(body.get("parts"), list):
            raise HubError(400, 'completion body needs "oid" and "parts"')
        oid = body.get("oid")
        with self.hub.session_lock(sid):
            sess = read_json(os.path.join(sdir, "session.json")) if sdir else None
            if sess is None:
                done = read_json(os.path.join(st.root, "multipart", "done", sid)) if sdir \
                    else None
                if done and done.get("oid") == oid and st.repo_has_lfs(
                        done["type"], done["repo"], oid) is not None:
                    return self.send_json(200, {"success": True, "oid": oid,
                                                "alreadyComplete": True})
                raise HubError(404, "The specified multipart upload does not exist.")
            t, rid = sess["type"], sess["repo"]
            if oid != sess["oid"]:
                raise HubError(400, f"oid {oid!r} does not match the upload session "
                               f"({sess['oid']})")
            if st.repo_has_lfs(t, rid, oid) is not None:
                self.finish_session(sid, sdir, sess)
                return self.send_json(200, {"success": True, "oid": oid,
                                            "alreadyComplete": True})
            parts = body["parts"]
            n = sess["nparts"]
            if len(parts) != n:
                raise HubError(400, f"expected {n} parts, got {len(parts)}")
            for i, p in enumerate(parts, 1):
                if not isinstance(p, dict) or p.get("partNumber") != i:
                    raise HubError(400, f"parts must be listed once each in ascending order: "
                                   f"entry {i} has partNumber {p.get('partNumber') if isinstance(p, dict) else None}")
                try:
                    with open(os.path.join(sdir, "part-%05d.etag" % i), "rb") as f:
                        etag = f.read().decode()
                except OSError:
                    raise HubError(400, f"part {i} was never uploaded")
                if p.get("etag") != etag:
                    raise HubError(400, f"part {i}: etag {p.get('etag')!r} does not match the "
                                   f"uploaded part ({etag})")
            if self.hub.fast_parts:
                digest, total = self.fast_complete_hash(sid, sdir, sess)
                if total != sess["size"]:
                    raise HubError(400, f"assembled size {total} != declared size "
                                   f"{sess['size']}")
                if digest != oid:
                    raise HubError(400, f"sha256 of the assembled parts ({digest}) does "
                                   f"not match oid {oid}")
                st.lfs_commit_tmp(os.path.join(sdir, "data"), oid)
                st.repo_add_lfs(t, rid, oid, total)
                self.finish_session(sid, sdir, sess)
                return self.send_json(200, {"success": True, "oid": oid})
            sha = hashlib.sha256()
            f, tmp = st.new_tmp()
            total = 0
            try:
                with f:
                    for i in range(1, n + 1):
                        with open(os.path.join(sdir, "part-%05d" % i), "rb") as pf:
                            while True:
                                d = pf.read(1 << 20)
                                if not d:
                                    break
                                sha.update(d)
                                f.write(d)
                                total += len(d)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                os.unlink(tmp)
                raise
            if total != sess["size"]:
                os.unlink(tmp)
                raise HubError(400, f"assembled size {total} != declared size {sess['size']}")
            if sha.hexdigest() != oid:
                os.unlink(tmp)
                raise HubError(400, f"sha256 of the assembled parts ({sha.hexdigest()}) does "
                               f"not match oid {oid}")
            st.lfs_commit_tmp(tmp, oid)
            st.repo_add_lfs(t, rid, oid, total)
            self.finish_session(sid, sdir, sess)
        self.send_json(200, {"success": True, "oid": oid})

    def finish_session(self, sid, sdir, sess):
        st = self.hub.store
        fs = self.hub.fast_sessions.pop(sid, None)
        if fs is not None:
            fs.stop()
        atomic_write(os.path.join(st.root, "multipart", "done", sid),
                     json.dumps({"oid": sess["oid"], "type": sess["type"],
                                 "repo": sess["repo"]}).encode())
        for name in os.listdir(sdir):
            os.unlink(os.path.join(sdir, name))
        os.rmdir(sdir)

    def h_verify(self, t, rid):
        self.repo_write(t, rid)
        body = self.json_body()
        oid = body.get("oid") if isinstance(body, dict) else None
        size = body.get("size") if isinstance(body, dict) else None
        have = self.hub.store.repo_has_lfs(t, rid, oid) if isinstance(oid, str) and \
            OID_RE.match(oid) else None
        if have is None or have != size:
            raise HubError(404, f"Object {oid} with size {size} does not exist")
        self.send_json(200, {"message": "Object verified"})

    def h_lfs_get(self, oid):
        q = self.check_sig()
        st = self.hub.store
        t, _, rid = q.get("repo", "").partition("/")
        size = st.repo_has_lfs(t, rid, oid) if t in TYPES and OID_RE.match(oid) else None
        if size is None:
            raise HubError(404, "NoSuchKey", body=s3_error(
                "NoSuchKey", "The specified key does not exist.", self.req_id))
        self.send_file(st.lfs_path(oid), size, {"ETag": f'"{oid}"'},
                       "application/octet-stream")

    def send_file(self, path, size, headers, ctype, data=None):
        """200 or 206 (Range) for a file on disk or bytes in memory."""
        headers = dict(headers)
        headers["Accept-Ranges"] = "bytes"
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    headers["Content-Range"] = f"bytes */{size}"
                    raise HubError(416, "Requested range not satisfiable", headers=headers)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0

        def gen():
            if data is not None:
                yield data[start:end + 1]
                return
            with open(path, "rb") as f:
                f.seek(start)
                left = length
                while left > 0:
                    d = f.read(min(1 << 20, left))
                    if not d:
                        break
                    left -= len(d)
                    yield d

        self.send(status, ctype=ctype, headers=headers, stream=gen(), length=length)

    # -- commit -----------------------------------------------------------------------------

    def h_commit(self, t, rid, rev_segs):
        meta = self.repo_write(t, rid)
        st = self.hub.store
        rev = "/".join(rev_segs)
        raw = self.body.read_all(COMMIT_BODY_MAX)
        lines = [ln for ln in raw.split(b"\n") if ln.strip()]
        if not lines:
            raise HubError(400, "empty commit payload: the first line must be the header")
        ops = []
        for i, ln in enumerate(lines):
            try:
                obj = json.loads(ln)
            except ValueError as e:
                raise HubError(400, f"line {i + 1} is not valid JSON: {e}")
            if not isinstance(obj, dict) or not isinstance(obj.get("value"), dict):
                raise HubError(400, f"line {i + 1}: expected {{\"key\",\"value\"}}")
            ops.append((obj.get("key"), obj["value"]))
        key, header = ops[0]
        if key != "header":
            raise HubError(400, "the first line must be the header")
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "summary must be a non-empty string")
        desc = header.get("description") or ""
        parent_pfx = header.get("parentCommit")
        create_pr = self.qbool("create_pr")
        # prepare blobs outside the lock (content-addressed, harmless if the commit fails)
        prepared = []
        for key, v in ops[1:]:
            if key in ("file", "lfsFile", "deletedFile", "deletedFolder"):
                p = v.get("path")
                if key == "deletedFolder" and isinstance(p, str):
                    p = p.rstrip("/")
                err = validate_repo_path(p)
                if err:
                    raise HubError(422, err)
            else:
                raise HubError(400, f"unknown operation key {key!r}")
            if key == "file":
                enc = v.get("encoding", "base64")
                content = v.get("content")
                if not isinstance(content, str):
                    raise HubError(400, f"file '{p}': content must be a string")
                if enc == "base64":
                    try:
                        data = base64.b64decode(content, validate=True)
                    except (binascii.Error, ValueError):
                        raise HubError(400, f"file '{p}': content is not valid base64")
                elif enc in ("utf-8", "utf8"):
                    data = content.encode()
                else:
                    raise HubError(400, f"file '{p}': unknown encoding {enc!r}")
                if len(data) > REGULAR_MAX:
                    raise HubError(400, TOO_LARGE_MSG)
                if b"\0" in data:
                    raise HubError(400, BINARY_MSG)
                prepared.append(("file", p, st.put_object("blob", data)))
            elif key == "lfsFile":
                oid = v.get("oid")
                if v.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or \
                        not OID_RE.match(oid):
                    raise HubError(400, f"lfsFile '{p}': oid must be a sha256 (64 hex)")
                have = st.repo_has_lfs(t, rid, oid)
                size = v.get("size", have)
                if have is None or size != have:
                    raise HubError(422, f"{LFS_MISSING_MSG}: '{p}' (oid {oid}, size {size})")
                prepared.append(("lfsFile", p, st.put_object("blob", make_pointer(oid, have))))
            else:
                prepared.append((key, p, None))
        with st.lock:
            meta = st.repo_load(t, rid)
            ref = ref_name(meta, rev)
            if ref is None or not (ref.startswith("refs/heads/") or ref.startswith("refs/pr/")):
                raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
            head = meta["refs"][ref]
            if parent_pfx is not None:
                if not isinstance(parent_pfx, str) or not re.fullmatch(r"[0-9a-f]{5,40}",
                                                                       parent_pfx) or \
                        not head.startswith(parent_pfx):
                    raise HubError(412, CONFLICT_MSG)
            files = dict(st.walk(head)[0])
            ga_changed = False
            ga = st.get_object(files[".gitattributes"])[1].decode("utf-8", "replace") \
                if ".gitattributes" in files else ""
            for key, p, blob in prepared:
                if key in ("file", "lfsFile"):
                    files[p] = blob
                    if p == ".gitattributes":
                        ga = st.get_object(blob)[1].decode("utf-8", "replace")
                    if key == "lfsFile" and not lfs_tracked(ga, p):
                        esc = re.sub(r"([*?\[\]\\])", r"\\\1", p).replace(" ", "[[:space:]]")
                        if ga and not ga.endswith("\n"):
                            ga += "\n"
                        ga += f"{esc} filter=lfs diff=lfs merge=lfs -text\n"
                        ga_changed = True
                elif key == "deletedFile":
                    if p not in files:
                        raise HubError(404, f"A file with this name doesn't exist: '{p}'",
                                       code="EntryNotFound")
                    del files[p]
                else:
                    gone = [f for f in files if f.startswith(p + "/")]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: '{p}'",
                                       code="EntryNotFound")
                    for f in gone:
                        del files[f]
            if ga_changed:
                files[".gitattributes"] = st.put_object("blob", ga.encode())
            names = set(files)
            for f in names:
                parts = f.split("/")
                for k in range(1, len(parts)):
                    if "/".join(parts[:k]) in names:
                        raise HubError(422, f"Invalid path '{f}': '{'/'.join(parts[:k])}' is "
                                       "a file")
            tree = st.write_tree(files)
            commit = st.write_commit(tree, head, self.user, summary.strip(), desc)
            out = {"success": True, "commitOid": commit,
                   "commitUrl": f"{self.repo_url(t, rid)}/commit/{commit}", "hookOutput": ""}
            if create_pr:
                n = meta.get("next_pr", 1)
                meta["next_pr"] = n + 1
                meta["refs"][f"refs/pr/{n}"] = commit
                out["pullRequestUrl"] = f"{self.repo_url(t, rid)}/discussions/{n}"
            else:
                meta["refs"][ref] = commit
            meta["lastModified"] = now_iso()
            st.repo_save(t, rid, meta)
        self.send_json(200, out)

    # -- tree, paths-info, resolve ----------------------------------------------------------

    def entry(self, files, dirs, p, expand, sha):
        st = self.hub.store
        if p in files:
            size, lfs = st.blob_info(files[p])
            e = {"type": "file", "oid": files[p], "size": size, "path": p}
            if lfs:
                e["lfs"] = {"oid": lfs["oid"], "size": lfs["size"],
                            "pointerSize": lfs["pointerSize"]}
                fhex = st.xet_file(lfs["oid"])
                if fhex:
                    e["xetHash"] = fhex
        else:
            e = {"type": "directory", "oid": dirs[p], "size": 0, "path": p}
        if expand:
            c = self.last_commit(sha, p)
            e["lastCommit"] = c
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe"}
        return e

    def last_commit(self, sha, p):
        st = self.hub.store

        def oid_at(c):
            f, d = st.walk(c)
            return f.get(p) or d.get(p)

        cur = sha
        mine = oid_at(cur)
        for _ in range(10000):
            c = st.read_commit(cur)
            par = c["parents"][0] if c["parents"] else None
            if par is None or oid_at(par) != mine:
                title = c["message"].split("\n", 1)[0]
                return {"id": cur, "title": title, "date": now_iso(c["date"])}
            cur = par
        return None

    def h_tree(self, t, rid, segs):
        meta = self.repo_read(t, rid)
        ref, sha, path = self.split_rev_path(meta, segs)
        path = path.strip("/")
        files, dirs = self.hub.store.walk(sha)
        if path and path not in dirs:
            raise HubError(404, f"Entry not found: '{path}'", code="EntryNotFound",
                           headers={"X-Repo-Commit": sha})
        recursive = self.qbool("recursive")
        expand = self.qbool("expand")
        pre = path + "/" if path else ""
        names = sorted([p for p in list(dirs) + list(files) if p.startswith(pre) and (
            recursive or "/" not in p[len(pre):])])
        items = [self.entry(files, dirs, p, expand, sha) for p in names]
        self.send_paginated(items, page=min(self.hub.page_size, 50) if expand else None)

    def h_paths_info(self, t, rid, segs):
        meta = self.repo_read(t, rid)
        ref, sha, rest = self.split_rev_path(meta, segs)
        raw = self.body.read_all(JSON_BODY_MAX)
        ctype = (self.headers.get("Content-Type") or "").lower()
        paths, expand = None, False
        if "json" in ctype or raw.lstrip().startswith(b"{"):
            try:
                obj = json.loads(raw or b"{}")
            except ValueError as e:
                raise HubError(400, f"invalid JSON body: {e}")
            paths = obj.get("paths") if isinstance(obj, dict) else None
            expand = bool(obj.get("expand")) if isinstance(obj, dict) else False
        else:
            form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand", ["false"])[-1].lower() in ("1", "true"))
        if not isinstance(paths, list):
            raise HubError(400, '"paths" must be an array')
        if len(paths) > PATHS_INFO_MAX:
            raise HubError(413, "too many parameters")
        files, dirs = self.hub.store.walk(sha)
        out = []
        for p in paths:
            if not isinstance(p, str):
                continue
            p = p.strip("/")
            if p in files or p in dirs:
                out.append(self.entry(files, dirs, p, expand, sha))
        self.send_json(200, out)

    def h_resolve(self, t, rid, segs, raw_mode):
        meta = self.repo_read(t, rid)
        ref, sha, path = self.split_rev_path(meta, segs)
        st = self.hub.store
        files, _ = st.walk(sha)
        if path not in files:
            raise HubError(404, "Entry not found", code="EntryNotFound",
                           headers={"X-Repo-Commit": sha})
        blob = files[path]
        size, lfs = st.blob_info(blob)
        if lfs and not raw_mode:
            if st.repo_has_lfs(t, rid, lfs["oid"]) is None:
                raise HubError(404, "LFS object missing from storage", code="EntryNotFound",
                               headers={"X-Repo-Commit": sha})
            fhex = st.xet_file(lfs["oid"])
            if fhex and st.lfs_size(lfs["oid"]) is None:
                self.route = "resolve"
                return self.send_xet_resolve(t, rid, ref or sha, fhex, lfs["size"],
                                             f'"{lfs["oid"]}"',
                                             {"X-Repo-Commit": sha, "ETag": f'"{blob}"'})
            loc = self.sign(f"/_storage/get/{lfs['oid']}", {"repo": f"{t}/{rid}"})
            body = f"Found. Redirecting to {loc}".encode()
            return self.send(302, body, ctype="text/plain; charset=utf-8", headers={
                "Location": loc, "X-Repo-Commit": sha, "X-Linked-Etag": f'"{lfs["oid"]}"',
                "X-Linked-Size": str(lfs["size"]), "ETag": f'"{blob}"'})
        _, data = st.get_object(blob)
        self.send_file(None, len(data), {"ETag": f'"{blob}"', "X-Repo-Commit": sha},
                       "application/octet-stream" if lfs is None and b"\0" in data[:8000]
                       else "text/plain; charset=utf-8", data=data)

    def h_validate_yaml(self):
        body = self.json_body()
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str):
            return self.send_json(400, {"errors": [{"message": '"content" must be a string'}]})
        errs = validate_front_matter(content)
        if errs:
            return self.send_json(400, {"errors": [{"message": m} for m in errs]})
        self.send_json(200, {"warnings": []})


def ref_name(meta, rev):
    """Map a revision string to a ref key in meta['refs'], or None."""
    if not isinstance(rev, str) or not rev:
        return None
    if rev == "HEAD":
        rev = meta.get("default", "main")
    for cand in (rev, "refs/heads/" + rev):
        if cand in meta["refs"]:
            return cand
    return None


def s3_error(code, message, req_id, extra=""):
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
           f"<Message>{message}</Message>{extra}<RequestId>{req_id}</RequestId></Error>\n")
    return xml.encode(), "application/xml"


# ---------------------------------------------------------------------------------------------
# server


class FastSession:
    """--fast-parts: hashes a multipart session's data file part by part, in order, as parts
    arrive, on its own thread. result() is the digest, or None when it cannot be trusted."""

    def __init__(self, sdir, sess):
        self.path = os.path.join(sdir, "data")
        self.chunk, self.nparts, self.size = sess["chunk_size"], sess["nparts"], sess["size"]
        self.cond = threading.Condition()
        self.done = set()
        self.next = 1
        self.dirty = False
        self.stopped = False
        self.sha = hashlib.sha256()
        threading.Thread(target=self.run, daemon=True).start()

    def part_started(self, n):
        with self.cond:
            if n in self.done:
                self.dirty = True  # sent again, maybe after it was hashed: rehash at completion

    def part_done(self, n):
        with self.cond:
            self.done.add(n)
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def run(self):
        buf = bytearray(8 * MIB)
        mv = memoryview(buf)
        fd = None
        try:
            while True:
                with self.cond:
                    while not self.stopped and self.next not in self.done:
                        self.cond.wait()
                    if self.stopped:
                        return
                    n = self.next
                if fd is None:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                off = (n - 1) * self.chunk
                end = min(off + self.chunk, self.size)
                while off < end:
                    got = os.preadv(fd, [mv[:min(len(mv), end - off)]], off)
                    if got <= 0:
                        raise OSError("short read")
                    self.sha.update(mv[:got])
                    off += got
                with self.cond:
                    self.next = n + 1
                    self.cond.notify_all()
                    if self.next > self.nparts:
                        return
        except OSError:
            with self.cond:
                self.dirty = True
                self.next = self.nparts + 1
                self.cond.notify_all()
        finally:
            if fd is not None:
                os.close(fd)

    def result(self, timeout):
        with self.cond:
            if len(self.done) < self.nparts:
                return None  # parts stored by an earlier run of the hub
            self.cond.wait_for(lambda: self.next > self.nparts or self.stopped, timeout)
            if self.dirty or self.next <= self.nparts:
                return None
            return self.sha.hexdigest()


class Hub:
    def __init__(self, args, users):
        self.fast_parts = args.fast_parts
        self.sink_rate = SinkRate(args.sink_rate) if args.sink_rate else None
        self.fast_sessions = {}
        self._bufs = []
        self.store = Store(args.data)
        self.cas = None
        self.xet_off_reason = "--xet off"
        if args.xet != "off":
            why = xet_hash.load()
            if why:
                self.xet_off_reason = why
                print(f"hub: Xet off: {why}", file=sys.stderr, flush=True)
                if args.xet == "on":
                    raise SystemExit(f"hub: --xet on but {why}")
            else:
                self.cas = self.store.cas = xet_cas.CasStore(args.data, atomic_write)
        self.xet_tokens = xet_cas.XetTokens(self.store.key, args.xet_token_ttl)
        self.faults = Faults()
        self.users = users
        self.url_ttl = args.url_ttl
        self.page_size = args.page_size
        self.multipart_threshold = args.multipart_threshold
        self.chunk_size = args.chunk_size
        self.log_lock = threading.Lock()
        self.logf = open(args.log, "a", encoding="utf-8") if args.log else None
        self._slocks = {}
        self._slocks_lock = threading.Lock()

    def session_lock(self, sid):
        with self._slocks_lock:
            lk = self._slocks.get(sid)
            if lk is None:
                lk = self._slocks[sid] = threading.Lock()
            return lk

    def fast_session(self, sid, sess):
        with self._slocks_lock:
            fs = self.fast_sessions.get(sid)
            if fs is None:
                sdir = os.path.join(self.store.root, "multipart", sid)
                fs = self.fast_sessions[sid] = FastSession(sdir, sess)
            return fs

    def fast_buf(self):
        with self._slocks_lock:
            return self._bufs.pop() if self._bufs else bytearray(1 * MIB)

    def fast_buf_put(self, buf):
        with self._slocks_lock:
            if len(self._bufs) < 16:
                self._bufs.append(buf)

    def log(self, rec):
        if not self.logf:
            return
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self.log_lock:
            self.logf.write(line)
            self.logf.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Local Hugging Face Hub emulation for tests.")
    ap.add_argument("--data", required=True, help="state directory (created if missing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--log", help="append one JSON line per request here")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN")
    ap.add_argument("--multipart-threshold", type=int, default=8 * MIB, metavar="BYTES")
    ap.add_argument("--chunk-size", type=int, default=8 * MIB, metavar="BYTES")
    ap.add_argument("--url-ttl", type=int, default=3600, metavar="SECONDS")
    ap.add_argument("--page-size", type=int, default=1000, metavar="N")
    ap.add_argument("--xet", choices=["auto", "on", "off"], default="auto",
                    help="Xet CAS and buckets (auto: on when libckptblake3.so loads)")
    ap.add_argument("--xet-token-ttl", type=int, default=3600, metavar="SECONDS",
                    help="lifetime of Xet CAS tokens")
    ap.add_argument("--fast-parts", action="store_true",
                    help="benchmarks: part bodies written in place without fsync, hashed as "
                    "they arrive, opaque ETags (same checks)")
    ap.add_argument("--sink-rate", type=int, default=0, metavar="BYTES_PER_S",
                    help="benchmarks: the storage sink (LFS PUT, part PUT and xorb POST bodies, "
                    "all connections together) receives at most this many bytes/s (0: no limit)")
    args = ap.parse_args(argv)
    if args.sink_rate < 0:
        ap.error("--sink-rate must be 0 or positive")
    if args.chunk_size < 1 or args.multipart_threshold < 1 or args.page_size < 1:
        ap.error("sizes must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    users = {}
    for spec in args.user:
        name, sep, tok = spec.partition(":")
        if not sep or not name or not tok.startswith("hf_") or validate_repo_name(name):
            print(f"hub: bad --user '{spec}' (want NAME:hf_TOKEN)", file=sys.stderr)
            return 2
        users[tok] = name
    if not users:
        users[DEFAULT_TOKEN] = DEFAULT_USER
        print(f"hub: no --user given; default user '{DEFAULT_USER}' with token "
              f"'{DEFAULT_TOKEN}'", flush=True)
    hub = Hub(args, users)
    faults_env = os.environ.get("CKPT_HUB_FAULTS")
    if faults_env:
        for f in json.loads(faults_env):
            hub.faults.add(f)
    if ":" in args.host:
        Server.address_family = socket.AF_INET6
    try:
        srv = Server((args.host, args.port), Handler)
    except OSError as e:
        print(f"hub: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    srv.hub = hub
    port = srv.server_address[1]

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        d = os.path.dirname(os.path.abspath(args.port_file))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".port-")
        with os.fdopen(fd, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"hub listening on http://{host}:{port}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        srv.server_close()
        if hub.logf:
            hub.logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
