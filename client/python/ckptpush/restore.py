"""Restore the newest complete checkpoint of a Hub repo into a training output directory, so
that a requeued job can ``resume_from_checkpoint`` (standard library only; the same rules as
``ckptpush restore`` in the C client).

    from ckptpush.restore import restore
    path = restore("alice/run", "output")      # -> "output/checkpoint-500", or None

The newest complete checkpoint is ``last-checkpoint/`` (strategy ``checkpoint``), else the
highest ``checkpoint-N/`` (``all_checkpoints``), else the root's files when their
``trainer_state.json`` says the step (``every_save``). Everything is read at one commit, written
to ``DIR/.ckptpush-restore-<step>/`` (an interrupted run continues with HTTP Range requests and
never fetches a finished file again), verified (SHA-256 of LFS files, git blob SHA-1 of the
others) and renamed to ``DIR/checkpoint-<step>``. A newer local checkpoint is kept.
"""

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
PART_SUFFIX = ".ckptpush-part"
TMP_PREFIX = ".ckptpush-restore-"
ATTEMPTS = 5
CHUNK = 1 << 20
JSON_MAX = 64 << 20  # a listing page or revision answer
_CHECKPOINT = re.compile(r"^checkpoint-([0-9]+)$")

# exit codes of the ckptpush command line
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_PROTOCOL, EXIT_TIMEOUT = range(6)


class RestoreError(Exception):
    """A restore that could not be done; exit_code is the command line's."""

    def __init__(self, message, exit_code=EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


class HashMismatch(RestoreError):
    """A downloaded file is not what the Hub's tree says; it was deleted."""


def find_token(token_path=None):
    """The token as ckptpushd finds it (HF_TOKEN, the systemd credential, HF_TOKEN_PATH,
    $HF_HOME/token, ...), or None."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    paths = []
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        paths.append(os.path.join(os.environ["CREDENTIALS_DIRECTORY"], "hf_token"))
    if token_path or os.environ.get("HF_TOKEN_PATH"):
        paths.append(token_path or os.environ["HF_TOKEN_PATH"])
    elif os.environ.get("HF_HOME"):
        paths.append(os.path.join(os.environ["HF_HOME"], "token"))
    elif os.environ.get("XDG_CACHE_HOME"):
        paths.append(os.path.join(os.environ["XDG_CACHE_HOME"], "huggingface", "token"))
    else:
        paths.append(os.path.expanduser("~/.cache/huggingface/token"))
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                t = f.read().strip()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RestoreError(f"cannot read the token file '{p}': {e.strerror}")
        if t:
            return t
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # redirects are followed by hand: storage URLs must never get the token
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class _Session:
    def __init__(self, endpoint, repo_id, revision, token):
        self.endpoint, self.repo, self.revision, self.token = endpoint, repo_id, revision, token
        self.sha = None
        self.missing_ok = False
        self.origin = "/".join(endpoint.split("/", 3)[:3])

    def open(self, url, auth=True, start=0):
        """One request, no redirect followed: (status, headers, response to read)."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "ckptpush-python (restore)"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if start:
            headers["Range"] = f"bytes={start}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            r = _opener.open(req, timeout=120)
            return r.status, r.headers, r
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e

    def failed(self, what, status, headers):
        code = (headers.get("X-Error-Code") or "") if headers is not None else ""
        if status in (401, 403):
            if not self.token:
                return RestoreError(f"{what}: the Hub refused access (HTTP {status}) and no "
                                    "token was found: set HF_TOKEN or write it to "
                                    "$HF_HOME/token")
            return RestoreError(f"{what}: the Hub refused the token (HTTP {status}): it is "
                                f"invalid or may not read '{self.repo}'")
        if status == 404 and self.missing_ok and code != "EntryNotFound":
            return NothingToRestore(("revision" if code == "RevisionNotFound" else "repo")
                                    + " not found", EXIT_OK)
        if status == 404:
            if code == "RevisionNotFound":
                return RestoreError(f"{what}: revision '{self.revision}' not found in repo "
                                    f"'{self.repo}' (HTTP 404)")
            if code == "EntryNotFound":
                return RestoreError(f"{what}: not found in repo '{self.repo}' at commit "
                                    f"{self.sha} (HTTP 404)")
            return RestoreError(f"{what}: repo '{self.repo}' not found (HTTP 404), or it is "
                                "private and the token may not read it")
        if status in (408, 429) or status >= 500:
            return RestoreError(f"{what}: the Hub kept failing (HTTP {status} after "
                                f"{ATTEMPTS} attempts)")
        return RestoreError(f"{what}: unexpected answer from the Hub (HTTP {status})",
                            EXIT_PROTOCOL)

    def request(self, url, what, auth=True, start=0):
        """open() retried on transport errors, 408, 429 and 5xx."""
        for attempt in range(ATTEMPTS):
            try:
                status, headers, r = self.open(url, auth, start)
            except TimeoutError:
                if attempt + 1 == ATTEMPTS:
                    raise RestoreError(f"{what}: the Hub at '{self.endpoint}' stopped "
                                       "answering", EXIT_TIMEOUT)
            except (urllib.error.URLError, OSError) as e:
                if attempt + 1 == ATTEMPTS:
                    raise RestoreError(f"{what}: cannot reach the Hub at '{self.endpoint}': "
                                       f"{getattr(e, 'reason', e)}", EXIT_UNREACHABLE)
            else:
                if status not in (408, 429) and status < 500:
                    return status, headers, r
                r.close()
                if attempt + 1 == ATTEMPTS:
                    raise self.failed(what, status, headers)
                ra = headers.get("Retry-After", "")
                time.sleep(int(ra) if ra.isdigit() and int(ra) <= 60 else 2 ** attempt)
                continue
            time.sleep(2 ** attempt)
        raise RestoreError(f"{what}: no answer")

    def get_json(self, url, what):
        status, headers, r = self.request(url, what)
        with r:
            body = r.read(JSON_MAX + 1)
        if status != 200:
            raise self.failed(what, status, headers)
        if len(body) > JSON_MAX:
            raise RestoreError(f"{what}: the Hub's answer is larger than {JSON_MAX} bytes",
                               EXIT_PROTOCOL)
        try:
            return json.loads(body), headers
        except ValueError:
            raise RestoreError(f"{what}: the Hub's answer is not valid JSON", EXIT_PROTOCOL)


def _safe(path):
    parts = path.split("/")
    return (path and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)
            and not any(ord(c) < 0x20 or c == "\x7f" for c in path))


def _hex(s, n):
    return isinstance(s, str) and len(s) == n and all(c in "0123456789abcdefABCDEF" for c in s)


def _size(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _list_tree(s):
    what = f"the file list of '{s.repo}' at {s.sha[:12]}"
    url = f"{s.endpoint}/api/models/{s.repo}/tree/{s.sha}?recursive=true"
    entries = {}
    while url:
        items, headers = s.get_json(url, what)
        if not isinstance(items, list):
            raise RestoreError(f"{what}: the Hub's answer is not a list", EXIT_PROTOCOL)
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("type"), str) or \
                    not isinstance(it.get("path"), str):
                raise RestoreError(f"{what}: an entry has no 'type' or 'path'", EXIT_PROTOCOL)
            if it["type"] != "file":
                continue
            p = it["path"]
            if not _safe(p):
                raise RestoreError(f"{what}: refusing the path {p[:200]!r} (absolute, '..' or "
                                   "control characters)", EXIT_PROTOCOL)
            if not _hex(it.get("oid"), 40) or not _size(it.get("size")):
                raise RestoreError(f"{what}: the entry of {p[:200]!r} has no valid 'oid' or "
                                   "'size'", EXIT_PROTOCOL)
            e = {"path": p, "size": it["size"], "oid": it["oid"].lower(), "sha256": None}
            lfs = it.get("lfs")
            if lfs is not None:
                if not isinstance(lfs, dict) or not _hex(lfs.get("oid"), 64) or \
                        not _size(lfs.get("size")):
                    raise RestoreError(f"{what}: the 'lfs' of {p[:200]!r} has no valid 'oid' or "
                                       "'size'", EXIT_PROTOCOL)
                e["sha256"], e["size"] = lfs["oid"].lower(), lfs["size"]
            entries[p] = e
        m = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("Link", "") or "")
        url = m.group(1) if m else None
        if url and not (url.startswith(s.origin + "/") or url.startswith(s.origin + "?")):
            raise RestoreError(f"{what}: the next page is on another host ({url[:200]!r})",
                               EXIT_PROTOCOL)
    return entries


def _hash(path, entry):
    h = hashlib.sha256() if entry["sha256"] else hashlib.sha1(b"blob %d\0" % entry["size"])
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _verify(path, entry):
    """(True, None) when the file has the entry's size and hash, else (False, what it has)."""
    size = os.stat(path).st_size
    if size != entry["size"]:
        return False, f"{size} bytes"
    got = _hash(path, entry)
    return got == (entry["sha256"] or entry["oid"]), got


def _download(s, entry, part):
    """Appends to part from its size until it holds the whole file; redirects go without the
    token unless they stay on the Hub (a relative Location)."""
    what = f"download of '{entry['path']}'"
    url = (f"{s.endpoint}/{s.repo}/resolve/{s.sha}/"
           + urllib.parse.quote(entry["path"], safe="/"))
    for attempt in range(ATTEMPTS):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have > entry["size"]:
            have = 0
            open(part, "wb").close()
        if have == entry["size"]:
            return
        target, auth = url, True
        for _ in range(6):
            status, headers, r = s.request(target, what, auth, have)
            if 300 <= status < 400 and headers.get("Location"):
                r.close()
                loc = headers["Location"]
                auth = auth and loc.startswith("/")
                target = urllib.parse.urljoin(target, loc)
                continue
            break
        with r:
            if status == 416 and have:
                open(part, "wb").close()
                continue
            if status not in (200, 206):
                raise s.failed(what, status, headers)
            if status == 206:
                m = re.match(r"bytes (\d+)-", headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    raise RestoreError(f"{what}: the Hub answered a range request with the wrong "
                                       f"range ({headers.get('Content-Range')!r})", EXIT_PROTOCOL)
            else:
                have = 0  # a 200 is the whole file
            with open(part, "r+b" if have else "wb") as f:
                f.seek(have)
                try:
                    while True:
                        b = r.read(CHUNK)
                        if not b:
                            break
                        if have + len(b) > entry["size"]:
                            f.close()
                            os.unlink(part)  # not the file the listing describes
                            raise RestoreError(f"{what}: the Hub sent more bytes than it "
                                               "announced: not a valid answer", EXIT_PROTOCOL)
                        f.write(b)
                        have += len(b)
                except (OSError, urllib.error.URLError, http.client.HTTPException):
                    pass  # resumed from what is on disk
                f.flush()
                os.fsync(f.fileno())
        if have == entry["size"]:
            return
        time.sleep(2 ** attempt)
    raise RestoreError(f"{what}: the connection kept breaking ({have} of {entry['size']} "
                       "bytes); run restore again to continue", EXIT_UNREACHABLE)


def _choose(entries, s):
    """(repo folder prefix, step or None)."""
    if "last-checkpoint/trainer_state.json" in entries:
        return "last-checkpoint/", None
    best = None
    for p in entries:
        top, _, rest = p.partition("/")
        m = _CHECKPOINT.match(top)
        if rest == "trainer_state.json" and m and (best is None or int(m.group(1)) > best):
            best = int(m.group(1))
    if best is not None:
        return f"checkpoint-{best}/", best
    if "trainer_state.json" in entries:
        return "", None
    if s.missing_ok:
        raise NothingToRestore(f"'{s.repo}' holds no checkpoint yet", EXIT_OK)
    if any("/" not in p and p not in (".gitattributes", "README.md") for p in entries):
        raise RestoreError(f"'{s.repo}' at {s.sha[:12]} holds model files at its root but no "
                           "trainer_state.json that says their step, and no last-checkpoint/ or "
                           "checkpoint-N/ folder: nothing to resume from (push with --strategy "
                           "checkpoint or all_checkpoints)")
    raise RestoreError(f"'{s.repo}' at {s.sha[:12]} holds no checkpoint (no last-checkpoint/, "
                       "checkpoint-N/ or trainer_state.json)")


def _step_of(path):
    try:
        with open(path, encoding="utf-8") as f:
            g = json.load(f).get("global_step")
    except (OSError, ValueError, AttributeError):
        return None
    return g if _size(g) else None


def _learn_step(s, dest, entry):
    """(step, the verified file fetched to learn it or None)."""
    for name in os.listdir(dest):  # an interrupted run already has it, verified
        if name.startswith(TMP_PREFIX):
            p = os.path.join(dest, name, "trainer_state.json")
            if os.path.isfile(p) and _verify(p, entry)[0] and \
                    str(_step_of(p)) == name[len(TMP_PREFIX):]:
                return _step_of(p), None
    side = os.path.join(dest, TMP_PREFIX + "state")
    os.makedirs(side, exist_ok=True)
    part = os.path.join(side, f"{s.sha[:12]}-trainer_state.json")
    if os.path.exists(part):
        os.unlink(part)
    _download(s, entry, part)
    ok, _ = _verify(part, entry)
    step = _step_of(part) if ok else None
    if step is not None:
        return step, part  # moved into the temporary folder when the restore goes ahead
    os.unlink(part)
    os.rmdir(side)
    if not ok:
        raise RestoreError(f"'{entry['path']}' does not match the Hub's git blob id: not restored")
    if step is None:
        raise RestoreError(f"'{entry['path']}' says no global_step (a whole number): cannot name "
                           "the checkpoint", EXIT_PROTOCOL)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NothingToRestore(RestoreError):
    """missing_ok: the repo or revision does not exist, or holds no checkpoint yet."""


def restore(repo_id, dest, revision=None, endpoint=None, token=None, token_path=None,
            missing_ok=False, out=None):
    """Restore the newest complete checkpoint of repo_id into dest/checkpoint-<step>. Returns
    that path, or None when dest already holds it or a newer one (kept), or, with missing_ok,
    when the repo, the revision or a checkpoint in it does not exist yet. Raises RestoreError
    (HashMismatch for a file that is not what the Hub says). Progress lines go to out
    (default stdout)."""
    out = out or sys.stdout
    try:
        return _restore(repo_id, dest, revision, endpoint, token, token_path, missing_ok, out)
    except NothingToRestore as e:
        print(f"nothing to restore: {e}", file=out)
        return None


def _restore(repo_id, dest, revision, endpoint, token, token_path, missing_ok, out):
    revision = revision or "main"
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", repo_id or "") or ".." in repo_id:
        raise RestoreError(f"invalid repo id {repo_id!r} (namespace/name)", EXIT_USAGE)
    if not endpoint.startswith(("http://", "https://")):
        raise RestoreError(f"invalid endpoint {endpoint!r} (http:// or https://)", EXIT_USAGE)
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise RestoreError("HF_HUB_OFFLINE is set: restoring needs the Hub")
    dest = os.path.normpath(dest)
    s = _Session(endpoint, repo_id, revision, token or find_token(token_path))
    s.missing_ok = missing_ok
    what = f"revision '{revision}' of '{repo_id}'"
    info, _ = s.get_json(f"{endpoint}/api/models/{repo_id}/revision/"
                         + urllib.parse.quote(revision, safe=""), what)
    if not isinstance(info, dict) or not _hex(info.get("sha"), 40):
        raise RestoreError(f"{what}: the Hub's answer has no commit id ('sha')", EXIT_PROTOCOL)
    s.sha = info["sha"]
    entries = _list_tree(s)
    prefix, step = _choose(entries, s)
    os.makedirs(dest, exist_ok=True)
    state_file = None
    if step is None:
        step, state_file = _learn_step(s, dest, entries[prefix + "trainer_state.json"])

    def place_state_file(tmp):
        # the trainer_state.json fetched to learn the step is not fetched twice
        if state_file is None:
            return
        final = os.path.join(tmp, "trainer_state.json") if tmp else None
        if final and not os.path.exists(final):
            os.rename(state_file, final)
        else:
            os.unlink(state_file)
        os.rmdir(os.path.dirname(state_file))

    local = [int(m.group(1)) for n in os.listdir(dest)
             if (m := _CHECKPOINT.match(n)) and os.path.isdir(os.path.join(dest, n))]
    target = os.path.join(dest, f"checkpoint-{step}")
    if local and max(local) >= step:
        place_state_file(None)
    if local and max(local) > step:
        print(f"{dest}/checkpoint-{max(local)} is newer than the Hub's checkpoint-{step}: kept, "
              "nothing restored", file=out)
        return None
    if step in local:
        if os.path.exists(os.path.join(target, "trainer_state.json")):
            print(f"{target} is already there: nothing restored", file=out)
            return None
        raise RestoreError(f"'{target}' exists but is incomplete (no trainer_state.json): move it "
                           "away or delete it, then run restore again")

    tmp = os.path.join(dest, f"{TMP_PREFIX}{step}")
    os.makedirs(tmp, exist_ok=True)
    place_state_file(tmp)
    where = {"last-checkpoint/": "last-checkpoint/ (strategy checkpoint)",
             "": "the repo's root (strategy every_save)"}.get(
                 prefix, "the newest checkpoint-N/ (strategy all_checkpoints)")
    print(f"restoring checkpoint-{step} of '{repo_id}' from {where} at {s.sha[:12]}", file=out)
    files = sorted((e for p, e in entries.items()
                    if (p.startswith(prefix) if prefix else
                        ("/" not in p and p != ".gitattributes"))),
                   key=lambda e: (e["size"], e["path"]))
    kept = 0
    for e in files:
        final = os.path.join(tmp, e["path"][len(prefix):])
        part = final + PART_SUFFIX
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isfile(final):
            if _verify(final, e)[0]:
                kept += 1
                continue
            os.unlink(final)
        _download(s, e, part)
        ok, got = _verify(part, e)
        if not ok:
            os.unlink(part)
            kind, want = ("SHA-256", e["sha256"]) if e["sha256"] else ("git blob id", e["oid"])
            raise HashMismatch(f"'{e['path']}' does not match the Hub's {kind} (expected {want}, "
                               f"got {got}): the download was deleted; run restore again to "
                               "fetch it anew")
        os.rename(part, final)
    wanted = {os.path.join(tmp, e["path"][len(prefix):]) for e in files}
    for root, _, names in os.walk(tmp):
        for n in names:
            if os.path.join(root, n) not in wanted:
                os.unlink(os.path.join(root, n))
    _fsync_dir(tmp)
    os.rename(tmp, target)
    _fsync_dir(dest)
    print(f"restored {target}: {len(files)} files, {sum(e['size'] for e in files)} bytes, "
          f"{kept} already there from an interrupted run", file=out)
    return target


def main(argv=None):
    """`python3 -m ckptpush restore --repo ID [--revision R] [--endpoint URL] DIR`."""
    import argparse
    p = argparse.ArgumentParser(prog="python3 -m ckptpush restore",
                                description="Restore the newest complete checkpoint of a Hub "
                                            "repo into DIR/checkpoint-<step>.")
    p.add_argument("--repo", required=True)
    p.add_argument("--revision")
    p.add_argument("--endpoint")
    p.add_argument("--token-path")
    p.add_argument("--missing-ok", action="store_true",
                   help="a repo or revision not found, or no checkpoint in it yet: exit 0")
    p.add_argument("dir")
    a = p.parse_args(argv)
    try:
        restore(a.repo, a.dir, a.revision, a.endpoint, token_path=a.token_path,
                missing_ok=a.missing_ok)
    except RestoreError as e:
        print(f"ckptpush: restore: {e}", file=sys.stderr)
        return e.exit_code
    return EXIT_OK
