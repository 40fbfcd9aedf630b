#!/usr/bin/env python3
"""Replay a recorded inotify trace into a real directory with real filesystem calls.

Owns: turning the events of tests/fixtures/traces/*.jsonl back into the syscalls that caused
them (mkdir, open/write/close, rename, unlink, utime), so a daemon watching DIR with inotify sees
what the recorded framework caused. Not: judging what the daemon does with it (the tests do).
Single-threaded; Python 3.11 standard library only.

Timing: --speed F is a TIME SCALE. An event recorded at t seconds is performed t*F seconds after
the replay starts: 1 = recorded timing, 0.2 = five times faster, 0.1 = ten times faster,
2 = twice as slow, 0 = no sleeping at all.

Content: random (seeded with --seed); printable ASCII for text-like names (*.json, *.md, ...).

Frozen data: --frozen F (0..1) makes a fraction F of each binary file's 256 KiB blocks hold the
same bytes in every version of that file, as frozen weights do between checkpoints (which blocks,
and their bytes, depend on the seed, the block index and the file's base name; temporary names
.tmp* share one name, since frameworks write weights under one and rename). The other blocks stay
random. Text-like files are never frozen.

Sizes: every recorded size is multiplied by --size-scale (a non-empty size stays at least 1 byte).
A file's size at CLOSE_WRITE is its final size (if the trace recorded null there because the file
was already renamed, the next size recorded for the same file, following renames, is used).

--manifest OUT.json, written at the end:
  {"trace", "speed", "size_scale", "seed",
   "started_at_unix": wall clock (time.time()) of replay start,
   "duration": seconds,
   "files": {path: [version, ...]}  every file that was complete at some point, keyed by its path
            at that moment; version = {"path", "size", "sha256", "closed_at" (seconds since
            start), "deleted" (that path was unlinked or renamed away while this version was
            current), "superseded" (a later version replaced it at the same path)},
   "candidates": {first path segment: {"last_write_at": seconds since start}},
   "root_last_write_at": last write/close/rename of a file directly in DIR (null if none),
   "final_tree": {path: size} of regular files left in DIR}
Times in the manifest are taken just before the syscall starts (a lower bound for the kernel
event), measured with time.monotonic() from the start; add started_at_unix for wall time.

--events OUT.jsonl: one JSON line per syscall performed: {"t", "op", "path", ...}.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

OPEN_FLAGS = os.O_WRONLY | os.O_CLOEXEC
WRITE_CHUNK = 1 << 20
FROZEN_BLOCK = 256 * 1024
# Files a framework writes as text get printable random content, as a hub sees real JSON or a
# model card (the Hub refuses binary content committed inline); weights etc. get random bytes.
TEXT_SUFFIXES = (".json", ".md", ".txt", ".yaml", ".yml", ".jinja", ".csv")
_TEXT_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n"
TEXT_TABLE = bytes(_TEXT_ALPHABET[i % len(_TEXT_ALPHABET)] for i in range(256))


def load_trace(path):
    events = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"replay: {path}:{lineno}: bad JSON: {e}")
            if not isinstance(ev.get("ev"), list) or not isinstance(ev.get("path"), str):
                raise SystemExit(f"replay: {path}:{lineno}: event needs 'ev' list and 'path'")
            p = ev["path"]
            if p.startswith("/") or ".." in p.split("/"):
                raise SystemExit(f"replay: {path}:{lineno}: path escapes the directory: {p!r}")
            ev.setdefault("t", 0.0)
            ev.setdefault("cookie", 0)
            ev.setdefault("size", None)
            events.append(ev)
    # Stable: events with equal t keep their recorded order.
    events.sort(key=lambda e: float(e["t"]))
    return events


def top_of(rel):
    return rel.split("/", 1)[0]


class Replayer:
    def __init__(self, events, into, speed=1.0, size_scale=1.0, seed=None, events_out=None,
                 trace_name="", contents=None, frozen=0.0):
        self.events = events
        self.frozen = frozen
        self.frozen_cache = {}  # (name, block) -> bytes
        self.contents = contents or {}  # rel path -> real bytes to write instead of random
        self.into = os.path.abspath(into)
        self.speed = speed
        self.size_scale = size_scale
        self.seed = seed
        self.trace_name = trace_name
        self.rng = random.Random(seed) if seed is not None else None
        self.events_out = events_out
        self.open_fds = {}  # rel path -> [fd, bytes written]
        self.manifest_files = {}  # rel path -> list of versions
        self.current = {}  # rel path -> version dict currently at that path (complete files)
        self.candidates = {}
        self.root_last_write = None
        self.outside = None
        self.t0 = None
        self.started_at_unix = None
        self.move_to_index = {}  # cookie -> index of MOVED_TO
        self.done = set()  # indexes already performed as part of an earlier event
        for i, ev in enumerate(events):
            if "MOVED_TO" in ev["ev"] and ev["cookie"]:
                self.move_to_index.setdefault(ev["cookie"], i)

    # ---- helpers -------------------------------------------------------------------------
    def now(self):
        return time.monotonic() - self.t0

    def scaled(self, size):
        if size is None:
            return None
        size = int(size)
        if size <= 0:
            return 0
        return max(1, int(round(size * self.size_scale)))

    def randbytes(self, n, rel=""):
        b = self.rng.randbytes(n) if self.rng is not None else os.urandom(n)
        if rel.endswith(TEXT_SUFFIXES):
            b = b.translate(TEXT_TABLE)
        return b

    def frozen_key(self, rel):
        base = os.path.basename(rel)
        return "tmp" if base.startswith(".tmp") else base

    def frozen_block(self, rel, block):
        """The bytes of a frozen block, or None when the block is not frozen."""
        key = (self.frozen_key(rel), block)
        if key not in self.frozen_cache:
            pick = random.Random(f"{self.seed}/{key[0]}/{block}/pick").random()
            self.frozen_cache[key] = (
                random.Random(f"{self.seed}/{key[0]}/{block}").randbytes(FROZEN_BLOCK)
                if pick < self.frozen else None)
        return self.frozen_cache[key]

    def content(self, rel, offset, n):
        """n bytes for rel at offset: frozen blocks where --frozen says, random elsewhere."""
        if self.frozen <= 0 or rel.endswith(TEXT_SUFFIXES):
            return self.randbytes(n, rel)
        out = bytearray()
        while n > 0:
            block, within = divmod(offset, FROZEN_BLOCK)
            k = min(n, FROZEN_BLOCK - within)
            fb = self.frozen_block(rel, block)
            out += fb[within:within + k] if fb is not None else self.randbytes(k, rel)
            offset += k
            n -= k
        return bytes(out)

    def abs(self, rel):
        return os.path.join(self.into, rel)

    def log(self, t, op, rel, **extra):
        if self.events_out is None:
            return
        rec = {"t": round(t, 6), "op": op, "path": rel}
        rec.update(extra)
        self.events_out.write(json.dumps(rec) + "\n")

    def touch_candidate(self, rel, t):
        t = round(t, 6)
        top = top_of(rel)
        c = self.candidates.setdefault(top, {"last_write_at": t})
        c["last_write_at"] = max(c["last_write_at"], t)
        if "/" not in rel:
            self.root_last_write = t if self.root_last_write is None else max(
                self.root_last_write, t)

    def ensure_parent(self, rel):
        parent = os.path.dirname(rel)
        if parent and not os.path.isdir(self.abs(parent)):
            t = self.now()
            os.makedirs(self.abs(parent), exist_ok=True)
            self.log(t, "mkdir", parent, parents=True)
            self.touch_candidate(parent, t)

    def final_size(self, idx):
        """Final size of the file closed by event idx: its recorded size, or the next size
        recorded for the same file (following renames) when the trace has null."""
        ev = self.events[idx]
        if ev["size"] is not None:
            return self.scaled(ev["size"])
        path = ev["path"]
        for later in self.events[idx + 1:]:
            if later["path"] != path:
                continue
            if "MOVED_FROM" in later["ev"]:
                j = self.move_to_index.get(later["cookie"])
                if j is not None:
                    path = self.events[j]["path"]
                    if self.events[j]["size"] is not None:
                        return self.scaled(self.events[j]["size"])
                    continue
                break
            if "DELETE" in later["ev"] or "CREATE" in later["ev"]:
                break
            if later["size"] is not None:
                return self.scaled(later["size"])
        return None

    def forget_version(self, rel, how):
        v = self.current.pop(rel, None)
        if v is not None:
            v[how] = True

    def record_complete(self, rel, t):
        """Hash the file now at rel (just closed or renamed in) and add a manifest version."""
        h = hashlib.sha256()
        size = 0
        with open(self.abs(rel), "rb") as f:
            while True:
                b = f.read(WRITE_CHUNK)
                if not b:
                    break
                h.update(b)
                size += len(b)
        self.forget_version(rel, "superseded")
        v = {"path": rel, "size": size, "sha256": h.hexdigest(), "closed_at": round(t, 6),
             "deleted": False, "superseded": False}
        self.manifest_files.setdefault(rel, []).append(v)
        self.current[rel] = v

    def open_file(self, rel, truncate, reason):
        self.ensure_parent(rel)
        flags = OPEN_FLAGS | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        t = self.now()
        fd = os.open(self.abs(rel), flags, 0o644)
        written = 0 if truncate else os.fstat(fd).st_size
        if not truncate:
            os.lseek(fd, 0, os.SEEK_END)
        self.open_fds[rel] = [fd, written]
        self.log(t, "open", rel, flags="O_CREAT|O_TRUNC" if truncate else "O_CREAT",
                 reason=reason)
        self.touch_candidate(rel, t)
        # Content at this path is no longer the complete version recorded earlier.
        if truncate:
            self.forget_version(rel, "superseded")

    def write_up_to(self, rel, target):
        of = self.open_fds[rel]
        if target is None or target <= of[1]:
            return
        t = self.now()
        n = target - of[1]
        left = n
        real = self.contents.get(rel, b"")[of[1]:target]
        while left > 0:
            done = n - left
            chunk = real[done:done + WRITE_CHUNK] or \
                self.content(rel, of[1] + done, min(left, WRITE_CHUNK))
            mv = memoryview(chunk)
            while mv:
                k = os.write(of[0], mv)
                mv = mv[k:]
            left -= len(chunk)
        of[1] = target
        self.log(t, "write", rel, bytes=n, size=target)
        self.touch_candidate(rel, t)

    def close_file(self, rel):
        fd = self.open_fds.pop(rel)[0]
        t = self.now()
        os.close(fd)
        self.log(t, "close", rel)
        self.touch_candidate(rel, t)
        self.record_complete(rel, t)

    def make_outside(self):
        if self.outside is None:
            parent = os.path.dirname(self.into.rstrip("/"))
            self.outside = tempfile.mkdtemp(prefix=".replay-outside-", dir=parent)
        return self.outside

    # ---- event handlers -----------------------------------------------------------------
    def on_create(self, ev):
        rel = ev["path"]
        if "ISDIR" in ev["ev"]:
            if not os.path.isdir(self.abs(rel)):
                self.ensure_parent(rel)
                t = self.now()
                os.mkdir(self.abs(rel))
                self.log(t, "mkdir", rel)
                self.touch_candidate(rel, t)
            return
        if rel in self.open_fds:
            return
        self.open_file(rel, truncate=True, reason="CREATE")

    def on_modify(self, ev):
        rel = ev["path"]
        if rel not in self.open_fds:
            # A rewrite of an existing file (no CREATE is emitted for it) or a file whose CREATE
            # the recorder missed: the writer opened it with truncation.
            self.open_file(rel, truncate=True, reason="MODIFY without open file")
        self.write_up_to(rel, self.scaled(ev["size"]))

    def on_close_write(self, idx, ev):
        rel = ev["path"]
        size = self.final_size(idx)
        if rel not in self.open_fds:
            self.open_file(rel, truncate=True, reason="CLOSE_WRITE without open file")
        if size is None:
            size = self.open_fds[rel][1]
        self.write_up_to(rel, size)
        self.close_file(rel)

    def rename(self, src_abs, dst_rel, src_label):
        self.ensure_parent(dst_rel)
        t = self.now()
        os.rename(src_abs, self.abs(dst_rel))
        self.log(t, "rename", dst_rel, src=src_label)
        return t

    def on_moved_from(self, ev):
        rel = ev["path"]
        j = self.move_to_index.get(ev["cookie"]) if ev["cookie"] else None
        if not os.path.lexists(self.abs(rel)):
            if "ISDIR" in ev["ev"]:
                os.makedirs(self.abs(rel), exist_ok=True)
                self.log(self.now(), "mkdir", rel, reason="MOVED_FROM of unknown dir")
            else:
                self.open_file(rel, truncate=True, reason="MOVED_FROM of unknown file")
                size = self.scaled(self.events[j]["size"]) if j is not None else None
                self.write_up_to(rel, size)
                self.close_file(rel)
        if j is None:
            # Moved out of the watched tree.
            dst_abs = os.path.join(self.make_outside(), os.path.basename(rel))
            t = self.now()
            os.rename(self.abs(rel), dst_abs)
            self.log(t, "rename-out", rel)
            self.after_rename(rel, None, t)
            return
        self.done.add(j)
        dst = self.events[j]["path"]
        t = self.rename(self.abs(rel), dst, rel)
        self.touch_candidate(rel, t)
        self.touch_candidate(dst, t)
        self.after_rename(rel, dst, t)

    def after_rename(self, src, dst, t):
        # Move the bookkeeping of everything at or below src.
        prefix = src + "/"
        for key in [k for k in self.open_fds if k == src or k.startswith(prefix)]:
            of = self.open_fds.pop(key)
            if dst is None:
                os.close(of[0])
            else:
                self.open_fds[dst + key[len(src):]] = of
        for key in [k for k in self.current if k == src or k.startswith(prefix)]:
            self.forget_version(key, "deleted")
            if dst is not None:
                new = dst + key[len(src):]
                if new not in self.open_fds:
                    self.record_complete(new, t)
        if dst is not None:
            # Anything complete at the destination that was never recorded (a closed file
            # that the recorder saw before us, e.g. .metadata.tmp) is complete now.
            if os.path.isfile(self.abs(dst)) and dst not in self.open_fds and \
                    dst not in self.current:
                self.record_complete(dst, t)

    def on_moved_to(self, idx, ev):
        # MOVED_TO without a MOVED_FROM: written elsewhere, renamed in.
        rel = ev["path"]
        outside = self.make_outside()
        tmp = os.path.join(outside, f"in-{idx}-{os.path.basename(rel)}")
        if "ISDIR" in ev["ev"]:
            os.mkdir(tmp)
            self.log(self.now(), "mkdir-outside", rel)
        else:
            size = self.final_size(idx) or 0
            t = self.now()
            with open(tmp, "wb") as f:
                left = size
                while left > 0:
                    n = min(left, WRITE_CHUNK)
                    f.write(self.content(rel, size - left, n))
                    left -= n
            self.log(t, "write-outside", rel, size=size)
        if os.path.isdir(self.abs(rel)) and "ISDIR" not in ev["ev"]:
            shutil.rmtree(self.abs(rel))
        t = self.rename(tmp, rel, "(outside)")
        self.touch_candidate(rel, t)
        if rel in self.open_fds:  # replaced while we held the old inode: forget that fd
            os.close(self.open_fds.pop(rel)[0])
        self.forget_version(rel, "superseded")
        if "ISDIR" not in ev["ev"]:
            self.record_complete(rel, t)

    def on_delete(self, ev):
        rel = ev["path"]
        p = self.abs(rel)
        t = self.now()
        if "ISDIR" in ev["ev"]:
            if not os.path.isdir(p):
                return
            try:
                os.rmdir(p)
                self.log(t, "rmdir", rel)
            except OSError:
                shutil.rmtree(p)
                self.log(t, "rmtree", rel)
            prefix = rel + "/"
            for key in [k for k in self.current if k.startswith(prefix)]:
                self.forget_version(key, "deleted")
            for key in [k for k in self.open_fds if k.startswith(prefix)]:
                os.close(self.open_fds.pop(key)[0])
            return
        if not os.path.lexists(p):
            return
        os.unlink(p)
        self.log(t, "unlink", rel)
        self.forget_version(rel, "deleted")
        if rel in self.open_fds:  # unlinked while open: the writer goes on, then closes
            os.close(self.open_fds.pop(rel)[0])

    def on_attrib(self, ev):
        rel = ev["path"]
        if not os.path.lexists(self.abs(rel)):
            self.open_file(rel, truncate=True, reason="ATTRIB of unknown file")
            self.write_up_to(rel, self.scaled(ev["size"]))
            self.close_file(rel)
        t = self.now()
        os.utime(self.abs(rel))
        self.log(t, "utime", rel)
        self.touch_candidate(rel, t)

    # ---- main loop ------------------------------------------------------------------------
    def run(self):
        os.makedirs(self.into, exist_ok=True)
        self.started_at_unix = time.time()
        self.t0 = time.monotonic()
        try:
            for idx, ev in enumerate(self.events):
                if idx in self.done:
                    continue
                due = float(ev["t"]) * self.speed
                delay = due - self.now()
                if delay > 0:
                    time.sleep(delay)
                names = ev["ev"]
                if "Q_OVERFLOW" in names:
                    continue
                if "CREATE" in names:
                    self.on_create(ev)
                elif "MOVED_FROM" in names:
                    self.on_moved_from(ev)
                elif "MOVED_TO" in names:
                    self.on_moved_to(idx, ev)
                elif "DELETE" in names:
                    self.on_delete(ev)
                elif "CLOSE_WRITE" in names:
                    self.on_close_write(idx, ev)
                elif "MODIFY" in names:
                    self.on_modify(ev)
                elif "ATTRIB" in names:
                    self.on_attrib(ev)
                # DELETE_SELF, IGNORED, OPEN, ACCESS, CLOSE_NOWRITE, MOVE_SELF: nothing to do.
        finally:
            for rel in list(self.open_fds):
                os.close(self.open_fds.pop(rel)[0])
                self.log(self.now(), "close", rel, reason="end of replay, never closed")
            if self.outside is not None:
                shutil.rmtree(self.outside, ignore_errors=True)
        return self.now()

    def manifest(self, duration):
        tree = {}
        for dirpath, dirs, files in os.walk(self.into):
            # a watching daemon's staging dir: its pins come and go while this walks
            dirs[:] = [x for x in dirs if x != ".ckptpush"]
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    if os.path.isfile(p) and not os.path.islink(p):
                        tree[os.path.relpath(p, self.into)] = os.path.getsize(p)
                except FileNotFoundError:
                    pass  # deleted by whatever else writes here, as the walk went
        return {
            "trace": self.trace_name,
            "speed": self.speed,
            "size_scale": self.size_scale,
            "seed": self.seed,
            "started_at_unix": self.started_at_unix,
            "duration": round(duration, 6),
            "files": self.manifest_files,
            "candidates": self.candidates,
            "root_last_write_at": self.root_last_write,
            "final_tree": tree,
        }


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Replay a recorded inotify trace into DIR with real filesystem calls.",
        epilog="--speed is a time scale: an event recorded at t s happens at t*F s "
        "(1 = recorded timing, 0.2 = 5x faster, 0 = as fast as possible).")
    ap.add_argument("trace")
    ap.add_argument("--into", required=True, metavar="DIR")
    ap.add_argument("--speed", type=float, default=1.0, metavar="F",
                    help="time scale: event at recorded t runs at t*F seconds (default 1)")
    ap.add_argument("--size-scale", type=float, default=1.0, metavar="F",
                    help="multiply recorded sizes (non-empty files stay >= 1 byte)")
    ap.add_argument("--seed", type=int, default=None, metavar="N",
                    help="seed the content PRNG (default: os.urandom)")
    ap.add_argument("--manifest", metavar="OUT.json")
    ap.add_argument("--events", metavar="OUT.jsonl")
    ap.add_argument("--content", action="append", default=[], metavar="REL=FILE",
                    help="write FILE's bytes to the trace path REL instead of random bytes "
                    "(e.g. the run's real trainer_state.json); repeatable")
    ap.add_argument("--frozen", type=float, default=0.0, metavar="F",
                    help="fraction of each binary file's blocks identical across its versions "
                    "(frozen weights; default 0)")
    args = ap.parse_args(argv)
    contents = {}
    for spec in args.content:
        rel, sep, file = spec.partition("=")
        if not sep or not rel:
            ap.error(f"--content: expected REL=FILE, got '{spec}'")
        with open(file, "rb") as f:
            contents[rel] = f.read()
    if args.speed < 0 or args.size_scale <= 0:
        ap.error("--speed must be >= 0 and --size-scale > 0")
    if not 0.0 <= args.frozen <= 1.0:
        ap.error("--frozen must be between 0 and 1")

    events = load_trace(args.trace)
    evout = open(args.events, "w", encoding="utf-8") if args.events else None
    try:
        r = Replayer(events, args.into, speed=args.speed, size_scale=args.size_scale,
                     seed=args.seed, events_out=evout, trace_name=os.path.basename(args.trace),
                     contents=contents, frozen=args.frozen)
        duration = r.run()
    finally:
        if evout is not None:
            evout.close()
    if args.manifest:
        tmp = args.manifest + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(r.manifest(duration), f, indent=1, sort_keys=True)
        os.replace(tmp, args.manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
