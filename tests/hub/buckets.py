"""Storage Buckets of the test hub, as the JS client 2.17.5 speaks them: mutable, unversioned
collections of Xet files. Create / info / delete (`/api/buckets/NS/NAME`), NDJSON batch
(`addFile` by Xet hash, `deleteFile`), tree, paths-info, Xet tokens, and resolve
(`/buckets/NS/NAME/resolve/PATH`). State: DATA/buckets/NS/NAME/bucket.json.

BucketRoutes is mixed into hub.py's Handler (which provides auth_user, member_of, send_json,
atomic_write, validate_repo_name, validate_repo_path); every Xet hash a batch names must already be a
file of the CAS that this bucket's tokens uploaded.
"""

import json
import os
import time

from hub_errors import HubError

BATCH_BODY_MAX = 64 * 1024 * 1024


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z"


class BucketRoutes:
    """Handlers; self.hub.store (Store), self.hub.cas (CasStore or None)."""

    def bucket_path(self, bid):
        ns, name = bid.split("/", 1)
        return os.path.join(self.hub.store.root, "buckets", ns, name, "bucket.json")

    def bucket_load(self, bid):
        try:
            with open(self.bucket_path(bid), "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def bucket_save(self, bid, meta):
        self.atomic_write(self.bucket_path(bid), json.dumps(meta, indent=1).encode())

    def bucket_access(self, bid, write):
        """The bucket's meta after checking the Hub token; 401/403/404 like repos."""
        user = self.auth_user(required=write)
        ns = bid.split("/")[0]
        meta = self.bucket_load(bid)
        if meta is None or (meta["private"] and not self.member_of(user, ns)):
            raise HubError(404, f"Bucket {bid} not found", code="RepoNotFound")
        if write and not self.member_of(user, ns):
            raise HubError(403, f"You don't have the rights to write to bucket {bid}")
        return meta, user

    def route_buckets(self, rest):
        """rest: path segments after /api/buckets."""
        m = self.command
        if len(rest) < 2:
            raise HubError(404, "bucket id must be NAMESPACE/NAME")
        bid, tail = rest[0] + "/" + rest[1], rest[2:]
        if not tail:
            self.route = {"POST": "bucket_create", "GET": "bucket_info",
                          "DELETE": "bucket_delete"}.get(m, "other")
            if self.route == "other":
                raise HubError(405, f"method {m} not allowed on a bucket")
            return {"POST": self.h_bucket_create, "GET": self.h_bucket_info,
                    "DELETE": self.h_bucket_delete}[m], (bid,)
        op = tail[0]
        if op in ("xet-write-token", "xet-read-token") and m == "GET":
            self.route = "xet_token"
            mode = "write" if op == "xet-write-token" else "read"
            return self.h_xet_token, (f"buckets/{bid}", mode,
                                      lambda: self.bucket_access(bid, mode == "write")[1])
        if op == "batch" and m == "POST":
            self.route = "bucket_batch"
            return self.h_bucket_batch, (bid,)
        if op == "tree" and m == "GET":
            self.route = "bucket_tree"
            return self.h_bucket_tree, (bid, "/".join(tail[1:]))
        if op == "paths-info" and m == "POST":
            self.route = "bucket_paths_info"
            return self.h_bucket_paths_info, (bid,)
        raise HubError(404, f"Sorry, we can't find the page you are looking for: "
                       f"{self.raw_path}")

    def h_bucket_create(self, bid):
        user = self.auth_user(required=True)
        ns, name = bid.split("/", 1)
        bad = self.validate_repo_name(ns) or self.validate_repo_name(name)
        if bad:
            raise HubError(400, bad)
        if not self.member_of(user, ns):
            raise HubError(403, f"You don't have the rights to create a bucket under {ns}")
        body = self.json_body()
        vis = body.get("visibility") if isinstance(body, dict) else None
        if vis not in (None, "public", "private", "protected"):
            raise HubError(400, '"visibility" must be public, private or protected')
        with self.hub.store.lock:
            if self.bucket_load(bid) is not None:
                raise HubError(409, f"You already created this bucket: {bid}",
                               headers={"X-Error-Message": "You already created this bucket"})
            meta = {"id": bid, "private": vis in ("private", "protected"),
                    "createdAt": _iso(time.time()), "files": {}}
            self.bucket_save(bid, meta)
        self.send_json(200, {"url": f"{self.base_url()}/buckets/{bid}", "id": bid,
                             "name": bid})

    def h_bucket_info(self, bid):
        meta, _ = self.bucket_access(bid, False)
        files = meta["files"]
        self.send_json(200, {"id": bid, "name": bid, "private": meta["private"],
                             "createdAt": meta["createdAt"], "totalFiles": len(files),
                             "size": sum(f["size"] for f in files.values())})

    def h_bucket_delete(self, bid):
        self.bucket_access(bid, True)
        with self.hub.store.lock:
            os.unlink(self.bucket_path(bid))
        self.send_json(200, {})

    def h_bucket_batch(self, bid):
        """NDJSON: {"type":"addFile","path","xetHash"} / {"type":"deleteFile","path"}
        (also copyFile from a Xet hash this hub holds). Answers the ApiBucketBatchResponse."""
        self.bucket_access(bid, True)
        raw = self.body.read_all(BATCH_BODY_MAX)
        ops = []
        for n, line in enumerate(raw.decode("utf-8", "replace").split("\n"), 1):
            if not line.strip():
                continue
            try:
                op = json.loads(line)
            except ValueError as e:
                raise HubError(400, f"batch line {n}: invalid JSON: {e}")
            if not isinstance(op, dict) or op.get("type") not in ("addFile", "deleteFile",
                                                                   "copyFile"):
                raise HubError(400, f"batch line {n}: type must be addFile, deleteFile or "
                               "copyFile")
            if not isinstance(op.get("path"), str) or self.validate_repo_path(op["path"]):
                raise HubError(400, f"batch line {n}: invalid path {op.get('path')!r}")
            ops.append(op)
        cas = self.hub.cas
        failed, done = [], 0
        with self.hub.store.lock:
            meta = self.bucket_load(bid)
            for op in ops:
                p = op["path"]
                if op["type"] == "deleteFile":
                    if p in meta["files"]:
                        del meta["files"][p]
                        done += 1
                    else:
                        failed.append({"path": p, "error": "file not found"})
                    continue
                fhex = op.get("xetHash")
                rec = cas.file(fhex) if cas and isinstance(fhex, str) else None
                scope = f"buckets/{bid}"
                if rec is None:
                    failed.append({"path": p, "error": f"xet hash {fhex} not found in CAS"})
                    continue
                if op["type"] == "addFile" and not cas.granted(scope, fhex):
                    failed.append({"path": p, "error": f"xet hash {fhex} was not uploaded "
                                   "for this bucket"})
                    continue
                cas.grant(scope, fhex)
                meta["files"][p] = {"xetHash": fhex, "size": rec["size"],
                                    "uploadedAt": _iso(time.time())}
                done += 1
            self.bucket_save(bid, meta)
        self.send_json(422 if failed else 200, {"success": not failed, "processed": len(ops),
                                                "succeeded": done, "failed": failed})

    def bucket_entries(self, meta, prefix, recursive):
        files = meta["files"]
        pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
        out, dirs = [], set()
        for p in sorted(files):
            if not p.startswith(pre):
                continue
            rest = p[len(pre):]
            parts = rest.split("/")
            for k in range(1, len(parts)):
                d = pre + "/".join(parts[:k])
                if (recursive or k == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d})
            if recursive or len(parts) == 1:
                f = files[p]
                out.append({"type": "file", "path": p, "size": f["size"],
                            "xetHash": f["xetHash"], "uploadedAt": f["uploadedAt"]})
        return sorted(out, key=lambda e: e["path"])

    def h_bucket_tree(self, bid, path):
        meta, _ = self.bucket_access(bid, False)
        path = path.strip("/")
        if path and not any(p.startswith(path + "/") for p in meta["files"]):
            raise HubError(404, f"Entry not found: '{path}'", code="EntryNotFound")
        self.send_paginated(self.bucket_entries(meta, path, self.qbool("recursive")))

    def h_bucket_paths_info(self, bid):
        meta, _ = self.bucket_access(bid, False)
        body = self.json_body()
        paths = body.get("paths") if isinstance(body, dict) else None
        if not isinstance(paths, list):
            raise HubError(400, '"paths" must be an array')
        allent = {e["path"]: e for e in self.bucket_entries(meta, "", True)}
        self.send_json(200, [allent[p.strip("/")] for p in paths
                             if isinstance(p, str) and p.strip("/") in allent])

    def h_bucket_resolve(self, bid, path):
        meta, _ = self.bucket_access(bid, False)
        f = meta["files"].get(path)
        if f is None:
            raise HubError(404, "Entry not found", code="EntryNotFound")
        if self.hub.cas is None:
            raise HubError(501, "Xet is off on this hub; bucket files cannot be served")
        self.send_xet_resolve("buckets", bid, None, f["xetHash"], f["size"],
                              f'"{f["xetHash"]}"', {})
