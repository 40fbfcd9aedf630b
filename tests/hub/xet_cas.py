"""Xet CAS of the test hub: Xet tokens, xorb and shard upload (every hash recomputed), global
chunk dedup, file reconstruction (v1 and v2) with presigned xorb range URLs, and the LFS bridge
that serves a Xet file's bytes to legacy clients. Persisted under DATA/xet/.

Protocol: https://huggingface.co/docs/xet (api, auth, xorb, shard, download-protocol) and the
official JS client (@huggingface/hub 2.17.5). CasStore owns the state; XetRoutes is mixed into
hub.py's Handler and owns the HTTP side. The CAS lives at <hub>/cas (the casUrl).
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import urllib.parse

import xet_hash as xh
import xet_objects as xo
from hub_errors import HubError

HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
XORB_BODY_MAX = xo.XORB_MAX + 8 * 1024 * 1024  # a footer of 8192 chunks fits with room
SHARD_BODY_MAX = 64 * 1024 * 1024
DEDUP_KEY_LIFETIME = 7 * 24 * 3600
FILEINFO_CTYPE = "application/vnd.xet-fileinfo+json"
EMPTY_SHA256 = hashlib.sha256(b"").digest()


def _shard_path(root, sub, name, ext=""):
    return os.path.join(root, sub, name[:2], name + ext)


class CasStore:
    """Xorbs, shards, files and the chunk index; thread-safe, persisted, rebuilt at start."""

    def __init__(self, root, atomic_write):
        self.root = os.path.join(root, "xet")
        self.atomic_write = atomic_write
        self.lock = threading.RLock()
        for d in ("xorbs", "shards", "files", "sha256", "grants"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        self.chunk_index = {}  # chunk hash hex -> xorb hash hex (xorbs named by a shard)
        self._meta_cache = {}
        xdir = os.path.join(self.root, "xorbs")
        for sub in os.listdir(xdir):
            for name in os.listdir(os.path.join(xdir, sub)):
                if name.endswith(".json"):
                    meta = self.xorb_meta(name[:-5])
                    if meta and meta.get("shard"):
                        self._index(name[:-5], meta)

    def _read_json(self, path):
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def _index(self, xhex, meta):
        for chex, _ in meta["chunks"]:
            self.chunk_index.setdefault(chex, xhex)

    # xorbs

    def xorb_path(self, xhex):
        return _shard_path(self.root, "xorbs", xhex)

    def xorb_meta(self, xhex):
        m = self._meta_cache.get(xhex)
        if m is None:
            m = self._read_json(_shard_path(self.root, "xorbs", xhex, ".json"))
            if m is not None:
                self._meta_cache[xhex] = m
        return m

    def put_xorb(self, xhex, body, xorb):
        """Store a verified xorb; False when it was already there."""
        with self.lock:
            if self.xorb_meta(xhex) is not None:
                return False
            self.atomic_write(self.xorb_path(xhex), body)
            meta = {"chunks": [[xh.to_hex(h), n] for h, n in xorb.chunks],
                    "offsets": xorb.offsets, "size": len(body), "shard": None}
            self.atomic_write(_shard_path(self.root, "xorbs", xhex, ".json"),
                              json.dumps(meta).encode())
            self._meta_cache[xhex] = meta
            return True

    def read_chunks(self, xhex, start, end):
        """Decoded data of chunks [start, end) of a stored xorb, one bytes per chunk."""
        meta = self.xorb_meta(xhex)
        offs = meta["offsets"]
        with open(self.xorb_path(xhex), "rb") as f:
            f.seek(offs[start])
            buf = f.read(offs[end] - offs[start])
        out, p = [], 0
        for i in range(start, end):
            data, p = xo.decode_chunk(buf, p, i)
            out.append(data)
        return out

    # shards and files

    def file(self, fhex):
        return self._read_json(_shard_path(self.root, "files", fhex, ".json"))

    def file_for_sha256(self, sha):
        try:
            with open(_shard_path(self.root, "sha256", sha), "rb") as f:
                fhex = f.read().decode().strip()
        except OSError:
            return None
        return fhex if self.file(fhex) is not None else None

    def grant(self, scope, fhex):
        self.atomic_write(os.path.join(self.root, "grants", scope, fhex), b"")

    def granted(self, scope, fhex):
        return os.path.exists(os.path.join(self.root, "grants", scope, fhex))

    def put_shard(self, body, scope, needs_sha256):
        """Verify a shard against the stored xorbs and register its files for scope.

        Returns (was new, [(file hash hex, size, sha256 hex or None)])."""
        try:
            files, xorbs, _ = xo.parse_shard(body)
        except xo.XetFormatError as e:
            raise HubError(400, f"invalid shard: {e}")
        for cas in xorbs:
            self.check_cas_info(cas)
        known = {}
        for fi in files:
            known[fi.hash] = self.check_file(fi, needs_sha256)
        sid = hashlib.sha256(body).hexdigest()
        with self.lock:
            fresh = self._read_json(_shard_path(self.root, "shards", sid, ".json")) is None
            xhexes = [xh.to_hex(c.hash) for c in xorbs]
            if fresh:
                self.atomic_write(_shard_path(self.root, "shards", sid, ".shard"), body)
                self.atomic_write(_shard_path(self.root, "shards", sid, ".json"),
                                  json.dumps({"xorbs": xhexes}).encode())
            for xhex in xhexes:
                meta = self.xorb_meta(xhex)
                if not meta.get("shard"):
                    meta = dict(meta, shard=sid)
                    self.atomic_write(_shard_path(self.root, "xorbs", xhex, ".json"),
                                      json.dumps(meta).encode())
                    self._meta_cache[xhex] = meta
                    self._index(xhex, meta)
            out = []
            for fi in files:
                fhex = xh.to_hex(fi.hash)
                size, terms = known[fi.hash]
                sha = xh.to_hex(fi.sha256) if fi.sha256 is not None else None
                rec = self.file(fhex)
                if rec is None or (sha and not rec.get("sha256")):
                    self.atomic_write(_shard_path(self.root, "files", fhex, ".json"),
                                      json.dumps({"size": size, "sha256": sha,
                                                  "terms": terms}).encode())
                if sha:
                    self.atomic_write(_shard_path(self.root, "sha256", sha), fhex.encode())
                self.grant(scope, fhex)
                out.append((fhex, size, sha))
        return fresh, out

    def check_cas_info(self, cas):
        xhex = xh.to_hex(cas.hash)
        meta = self.xorb_meta(xhex)
        if meta is None:
            raise HubError(400, f"shard lists xorb {xhex}, which was never uploaded")
        if len(cas.chunks) != len(meta["chunks"]):
            raise HubError(400, f"shard says xorb {xhex} has {len(cas.chunks)} chunks, it has "
                           f"{len(meta['chunks'])}")
        start = 0
        for i, ((chash, cstart, ulen), (mhex, mlen)) in enumerate(zip(cas.chunks,
                                                                       meta["chunks"])):
            if xh.to_hex(chash) != mhex or ulen != mlen:
                raise HubError(400, f"shard entry for chunk {i} of xorb {xhex} does not match "
                               "the uploaded xorb (hash or length)")
            if cstart != start:
                raise HubError(400, f"shard entry for chunk {i} of xorb {xhex} starts at "
                               f"{cstart}, the unpacked offset is {start}")
            start += ulen
        if cas.unpacked != start:
            raise HubError(400, f"shard says xorb {xhex} holds {cas.unpacked} unpacked bytes, "
                           f"it holds {start}")
        if cas.on_disk != meta["size"]:
            raise HubError(400, f"shard says xorb {xhex} is {cas.on_disk} bytes serialized, it "
                           f"is {meta['size']}")

    def check_file(self, fi, needs_sha256):
        """Recompute a file's terms, verification hashes, file hash and sha256."""
        fhex = xh.to_hex(fi.hash)
        if fi.verifications is None:
            raise HubError(400, f"file {fhex}: shard uploads need verification entries")
        if needs_sha256 and fi.sha256 is None:
            raise HubError(400, f"file {fhex}: a repository upload needs the sha256 metadata "
                           "extension")
        all_chunks, terms, size = [], [], 0
        for i, (xhash, ubytes, cs, ce) in enumerate(fi.terms):
            xhex = xh.to_hex(xhash)
            meta = self.xorb_meta(xhex)
            if meta is None:
                raise HubError(400, f"file {fhex} term {i}: xorb {xhex} was never uploaded")
            n = len(meta["chunks"])
            if not (0 <= cs < ce <= n):
                raise HubError(400, f"file {fhex} term {i}: chunk range [{cs}, {ce}) is not "
                               f"inside xorb {xhex} ({n} chunks)")
            chunks = [(xh.from_hex(h), ln) for h, ln in meta["chunks"][cs:ce]]
            if sum(ln for _, ln in chunks) != ubytes:
                raise HubError(400, f"file {fhex} term {i}: says {ubytes} bytes, chunks "
                               f"[{cs}, {ce}) of xorb {xhex} hold "
                               f"{sum(ln for _, ln in chunks)}")
            if xh.verification_hash([h for h, _ in chunks]) != fi.verifications[i]:
                raise HubError(400, f"file {fhex} term {i}: verification hash mismatch")
            all_chunks += chunks
            terms.append([xhex, cs, ce, ubytes])
            size += ubytes
        got = xh.file_hash(all_chunks)
        if got != fi.hash:
            raise HubError(400, f"file hash mismatch: the terms' chunks hash to "
                           f"{xh.to_hex(got)}, the shard says {fhex}")
        if fi.sha256 is not None:
            rec = self.file(fhex)
            # stored like every Xet hash: MerkleHash::from_hex(sha256 hex), as xet-core and
            # the JS client write it, so its string form is the usual sha256 hex
            want = xh.to_hex(fi.sha256)
            if not (rec and rec.get("sha256") == want):
                h = hashlib.sha256()
                for xhex, cs, ce, _ in terms:
                    for data in self.read_chunks(xhex, cs, ce):
                        h.update(data)
                if h.hexdigest() != want:
                    raise HubError(400, f"file {fhex}: sha256 in the metadata extension is "
                                   f"{want}, the content's is {h.hexdigest()}")
        return size, terms

    def dedup_shard(self, chex):
        """Shard bytes describing the xorbs uploaded with the one holding this chunk."""
        with self.lock:
            xhex = self.chunk_index.get(chex)
            if xhex is None:
                return None
            sid = self.xorb_meta(xhex)["shard"]
            rec = self._read_json(_shard_path(self.root, "shards", sid, ".json")) or {}
            names = [xhex] + [x for x in rec.get("xorbs", []) if x != xhex]
            xorbs = []
            for x in names:
                m = self.xorb_meta(x)
                xorbs.append((xh.from_hex(x), [(xh.from_hex(h), n) for h, n in m["chunks"]],
                              m["size"]))
        return xo.build_dedup_shard(xorbs, secrets.token_bytes(32),
                                    time.time() + DEDUP_KEY_LIFETIME)

    def file_bytes(self, fhex, start, end):
        """Generator of a Xet file's bytes [start, end)."""
        rec = self.file(fhex)
        pos = 0
        for xhex, cs, ce, _ in rec["terms"]:
            meta = self.xorb_meta(xhex)
            for i in range(cs, ce):
                ln = meta["chunks"][i][1]
                if pos + ln > start and pos < end:
                    data = self.read_chunks(xhex, i, i + 1)[0]
                    yield data[max(0, start - pos):min(ln, end - pos)]
                pos += ln
                if pos >= end:
                    return


class XetTokens:
    """Signed, expiring CAS tokens scoped to one repo (or bucket) and read or write."""

    def __init__(self, key, ttl):
        self.key = key
        self.ttl = ttl

    def issue(self, scope, mode, user):
        exp = int(time.time() + self.ttl)
        claims = json.dumps({"scope": scope, "mode": mode, "exp": exp, "user": user,
                             "n": secrets.token_hex(4)}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(claims).decode().rstrip("=")
        sig = hmac.new(self.key, b"xet-token." + body.encode(), hashlib.sha256).hexdigest()
        return f"xet_{body}.{sig}", exp

    def check(self, header):
        """Claims of a valid token from an Authorization header; HubError 401 otherwise."""
        parts = (header or "").split(None, 1)
        tok = parts[1].strip() if len(parts) == 2 and parts[0].lower() == "bearer" else ""
        if not tok.startswith("xet_") or "." not in tok:
            raise HubError(401, "a Xet CAS token is required (Authorization: Bearer <token "
                           "from xet-read-token or xet-write-token>)")
        body, _, sig = tok[4:].rpartition(".")
        good = hmac.new(self.key, b"xet-token." + body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, good):
            raise HubError(401, "invalid Xet CAS token (not signed by this hub)")
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            raise HubError(401, "invalid Xet CAS token")
        if claims["exp"] < time.time():
            raise HubError(401, "Xet CAS token expired; refresh it")
        return claims


class XetRoutes:
    """HTTP handlers of the CAS, mixed into hub.py's Handler (self.hub.cas, .xet_tokens)."""

    # -- hub side: tokens, LFS batch, resolve ----------------------------------------------

    def xet_required(self):
        if self.hub.cas is None:
            raise HubError(501, f"Xet is off on this hub ({self.hub.xet_off_reason}); use the "
                           "LFS transfer")

    def h_xet_token(self, scope, mode, repo_access):
        """GET .../xet-{read,write}-token[/REV]: repo_access() checks the Hub token."""
        self.xet_required()
        user = repo_access()
        tok, exp = self.hub.xet_tokens.issue(scope, mode, user)
        cas_url = self.base_url() + "/cas"
        self.send_json(200, {"accessToken": tok, "exp": exp, "casUrl": cas_url}, headers={
            "X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": tok,
            "X-Xet-Token-Expiration": str(exp)})

    def xet_upload_action(self, t, rid, rev, user):
        """actions.upload of an LFS batch object answered with transfer 'xet'."""
        tok, exp = self.hub.xet_tokens.issue(f"{t}/{rid}", "write", user)
        href = (f"{self.base_url()}/api/{t}/{rid}/xet-write-token/"
                f"{urllib.parse.quote(rev, safe='')}")
        return {"href": href, "header": {
            "X-Xet-Cas-Url": self.base_url() + "/cas", "X-Xet-Access-Token": tok,
            "X-Xet-Token-Expiration": str(exp), "X-Xet-Session-Id": self.req_id}}

    def xet_links(self, t_or_bucket, rid, rev, fhex):
        base = self.base_url()
        auth = (f"{base}/api/{t_or_bucket}/{rid}/xet-read-token"
                + (f"/{urllib.parse.quote(rev, safe='')}" if rev is not None else ""))
        recon = f"{base}/cas/v1/reconstructions/{fhex}"
        return auth, recon, (f'<{auth}>; rel="xet-auth", '
                             f'<{recon}>; rel="xet-reconstruction-info"')

    def send_xet_resolve(self, t_or_bucket, rid, rev, fhex, size, etag, extra):
        """Resolve of a Xet-stored file: file info JSON for a client that accepts it, else a
        redirect to the bridge that serves the bytes (what legacy clients get)."""
        auth, recon, link = self.xet_links(t_or_bucket, rid, rev, fhex)
        headers = dict(extra)
        headers.update({"X-Xet-Hash": fhex, "Link": link, "X-Linked-Size": str(size),
                        "X-Linked-Etag": etag, "ETag": extra.get("ETag", etag)})
        if FILEINFO_CTYPE in (self.headers.get("Accept") or ""):
            cas_url = self.base_url() + "/cas"
            return self.send_json(200, {"casUrl": cas_url, "hash": fhex, "refreshUrl": auth,
                                        "reconstructionUrl": recon, "etag": etag.strip('"'),
                                        "size": size}, headers=headers, ctype=FILEINFO_CTYPE)
        loc = self.sign(f"/_storage/xet/{fhex}", {"size": str(size)})
        headers["Location"] = loc
        self.send(302, f"Found. Redirecting to {loc}".encode(),
                  ctype="text/plain; charset=utf-8", headers=headers)

    def h_xet_bridge(self, fhex):
        """GET /_storage/xet/HASH (presigned): the file's bytes, reconstructed from xorbs."""
        self.check_sig()
        cas = self.hub.cas
        rec = cas.file(fhex) if cas and HEX64_RE.match(fhex) else None
        if rec is None:
            raise HubError(404, "NoSuchKey")
        size = rec["size"]
        start, end, status, headers = self.parse_range(size)
        headers.update({"ETag": f'"{fhex}"', "Accept-Ranges": "bytes"})
        self.send(status, ctype="application/octet-stream", headers=headers,
                  stream=cas.file_bytes(fhex, start, end), length=end - start)

    def parse_range(self, size):
        """(start, end exclusive, status, headers) from a Range header; 416 when outside."""
        rng = self.headers.get("Range")
        if not rng:
            return 0, size, 200, {}
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
        if not m or not (m.group(1) or m.group(2)):
            return 0, size, 200, {}
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        else:
            start, end = max(0, size - int(m.group(2))), size
        if start >= size or start >= end:
            raise HubError(416, "Requested range not satisfiable",
                           headers={"Content-Range": f"bytes */{size}"})
        return start, end, 206, {"Content-Range": f"bytes {start}-{end - 1}/{size}"}

    # -- CAS side ---------------------------------------------------------------------------

    def cas_auth(self, need_write):
        if self.hub.cas is None:
            raise HubError(404, f"Xet is off on this hub ({self.hub.xet_off_reason})")
        claims = self.hub.xet_tokens.check(self.headers.get("Authorization"))
        if need_write and claims["mode"] != "write":
            raise HubError(403, "this route needs a write token (xet-write-token)")
        return claims

    def h_xorb_upload(self, prefix, xhex):
        self.cas_auth(True)
        if prefix != "default":
            raise HubError(400, f"xorb prefix must be 'default', got '{prefix}'")
        if not HEX64_RE.match(xhex):
            raise HubError(400, f"malformed xorb hash '{xhex[:80]}'")
        body = self.body.read_all(XORB_BODY_MAX)
        cas = self.hub.cas
        if cas.xorb_meta(xhex) is not None:
            return self.send_json(200, {"was_inserted": False})
        try:
            xorb = xo.parse_xorb(body, xhex)
        except xo.XetFormatError as e:
            raise HubError(400, f"invalid xorb {xhex}: {e}")
        inserted = cas.put_xorb(xhex, body, xorb)
        self.send_json(200, {"was_inserted": inserted})

    def h_shard_upload(self):
        claims = self.cas_auth(True)
        body = self.body.read_all(SHARD_BODY_MAX)
        scope = claims["scope"]
        fresh, files = self.hub.cas.put_shard(body, scope, not scope.startswith("buckets/"))
        if not scope.startswith("buckets/"):
            t, rid = scope.split("/", 1)
            for fhex, size, sha in files:
                if sha:
                    self.hub.store.repo_add_lfs(t, rid, sha, size)
        self.send_json(200, {"result": 1 if fresh else 0})

    def h_dedup(self, prefix, chex):
        self.cas_auth(False)
        if prefix not in ("default-merkledb", "default"):
            raise HubError(400, f"chunk prefix must be 'default-merkledb', got '{prefix}'")
        if not HEX64_RE.match(chex):
            raise HubError(400, f"malformed chunk hash '{chex[:80]}'")
        shard = self.hub.cas.dedup_shard(chex)
        if shard is None:
            raise HubError(404, f"chunk {chex} is not known to global dedup")
        self.send(200, shard, ctype="application/octet-stream")

    def h_reconstruction(self, version, fhex):
        claims = self.cas_auth(False)
        if not HEX64_RE.match(fhex):
            raise HubError(400, f"malformed file hash '{fhex[:80]}'")
        cas = self.hub.cas
        rec = cas.file(fhex)
        if rec is None:
            raise HubError(404, f"file {fhex} not found")
        if not cas.granted(claims["scope"], fhex):
            raise HubError(401, f"this token (for {claims['scope']}) does not give access to "
                           f"file {fhex}")
        start, end, _, _ = self.parse_range(rec["size"]) if rec["size"] else (0, 0, 200, {})
        terms, offset = [], None
        pos = 0
        for xhex, cs, ce, _ in rec["terms"]:
            meta = cas.xorb_meta(xhex)
            first = last = None
            for i in range(cs, ce):
                ln = meta["chunks"][i][1]
                if pos + ln > start and pos < end:
                    if first is None:
                        first = i
                        if offset is None:
                            offset = start - pos
                    last = i
                pos += ln
            if first is not None:
                terms.append((xhex, first, last + 1, sum(
                    meta["chunks"][i][1] for i in range(first, last + 1)), meta))
        out = {"offset_into_first_range": offset or 0,
               "terms": [{"hash": x, "unpacked_length": n, "range": {"start": a, "end": b}}
                         for x, a, b, n, _ in terms]}
        fetch = {}
        for xhex, a, b, _, meta in terms:
            brange = {"start": meta["offsets"][a], "end": meta["offsets"][b] - 1}
            if version == 1:
                url = self.sign(f"/_storage/xorb/{xhex}",
                                {"range": f"{brange['start']}-{brange['end']}"})
                fetch.setdefault(xhex, []).append({"range": {"start": a, "end": b},
                                                   "url": url, "url_range": brange})
            else:
                url = self.sign(f"/_storage/xorb/{xhex}", {
                    "X-Xet-Signed-Range": f"bytes={brange['start']}-{brange['end']}"})
                fetch.setdefault(xhex, []).append({"url": url, "ranges": [
                    {"chunks": {"start": a, "end": b}, "bytes": brange}]})
        out["fetch_info" if version == 1 else "xorbs"] = fetch
        self.send_json(200, out)

    def h_xorb_get(self, xhex):
        """GET /_storage/xorb/HASH (presigned): a byte range of a stored xorb, exactly the
        range the URL was signed for."""
        q = self.check_sig()
        cas = self.hub.cas
        meta = cas.xorb_meta(xhex) if cas and HEX64_RE.match(xhex) else None
        if meta is None:
            raise HubError(404, "NoSuchKey")
        signed = q.get("X-Xet-Signed-Range") or ("bytes=" + q["range"] if "range" in q
                                                 else None)
        rng = (self.headers.get("Range") or "").strip()
        if signed is None or rng != signed:
            raise HubError(403, f"Range '{rng}' is not the signed range '{signed}'")
        start, end, status, headers = self.parse_range(meta["size"])
        with open(cas.xorb_path(xhex), "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        self.send(status, data, ctype="application/octet-stream", headers=headers)
