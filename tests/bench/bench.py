#!/usr/bin/env python3
"""Benchmarks: ckptpushd against the official JS client and the machine's limit, same run.

Owns: the benchmark data under --work (created, then deleted by run.sh), one test hub
(--fast-parts) for the whole run and one per s4 run, the daemons, JS and Python clients, openssl
and curl processes it starts (each waited for; all killed at exit). Not: building (run.sh). Main
thread, plus one stderr reader thread per daemon and, during s4, one status probe thread.
Python 3.11 standard library only.

Scenarios: s1 one checkpoint (big weights + config/tokenizer), s2 64 shards, s3 ten successive
checkpoints where most files are unchanged (s1-s3: LFS, on a hub with --xet off), s4 ten
checkpoints with 60 % frozen weights, Xet against LFS, to a hub whose sink is rate-limited (a
fresh Xet hub per run). Plus: the part sink alone, idle wake-ups, and the slowdown of a
checkpoint writer while the daemon pushes. See tests/bench/README.md.
"""

import argparse
import atexit
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
HUB = os.path.join(SRC, "tests", "hub", "hub.py")
JS_PUSH = os.path.join(HERE, "js_push.mjs")
PY_PUSH = os.path.join(HERE, "py_push.py")
USER, TOKEN = "bench", "hf_bench_token"
MIB = 1 << 20
CHUNK = 8 * MIB  # the hub's default multipart part size
TICK = os.sysconf("SC_CLK_TCK")

SIZES = {
    # s1 weights, s2 (n, size), s3 (ckpts, shards, shard size), idle s,
    # wr: training loop (steps, save every, files per checkpoint, file size, CPU work per step)
    # s4 (checkpoints, weights size): 60 % of the weights' 256 KiB blocks frozen
    "full": dict(s1=2048 * MIB, s2=(64, 32 * MIB), s3=(10, 8, 32 * MIB), idle=10,
                 wr=(24, 4, 2, 128 * MIB, 4_000_000), s4=(10, 256 * MIB)),
    "quick": dict(s1=512 * MIB, s2=(64, 8 * MIB), s3=(10, 8, 8 * MIB), idle=5,
                  wr=(16, 4, 2, 32 * MIB, 2_000_000), s4=(10, 64 * MIB)),
    "smoke": dict(s1=16 * MIB, s2=(8, 1 * MIB), s3=(3, 4, 1 * MIB), idle=1,
                  wr=(4, 2, 1, 1 * MIB, 100_000), s4=(3, 2 * MIB)),
}
FROZEN, FROZEN_BLOCK = 0.6, 256 * 1024  # as tests/tools/replay.py --frozen 0.6

_children = []


def _cleanup():
    for p in _children:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.append(p)
    return p


def reap(p):
    """wait4 on p: (exit status, wall-unaware rusage)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    _children.remove(p)
    return p.returncode, ru


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- data ------------------------------------------------------------------------------------


def rand_file(path, size, seed):
    """Incompressible bytes, fast: AES-CTR keystream of zeros."""
    with open(path, "wb") as out:
        enc = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2",
                                "-pass", f"pass:{seed}"], stdin=subprocess.PIPE, stdout=out)
        left = size
        zeros = bytes(4 * MIB)
        while left > 0:
            n = min(left, len(zeros))
            enc.stdin.write(zeros[:n])
            left -= n
        enc.stdin.close()
        enc.wait()


def small_files(d, step, tok_size):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                   "vocab_size": 32000, "torch_dtype": "bfloat16"}, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 4096, "tokenizer_class": "LlamaTokenizer"}, f)
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)
    # a tokenizer.json-like text file: regular (non-LFS) content in the commit
    vocab = {f"tok{i}_{hashlib.sha1(str(i).encode()).hexdigest()[:8]}": i
             for i in range(tok_size // 24)}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "BPE", "vocab": vocab}}, f)


def trainer_state(d, step):
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step, "log_history": [{"step": step, "loss": 1.0 / step}]}, f)


def make_data(work, sz, only):
    """Prepared checkpoints under work/data: {scenario: [checkpoint dirs]}, for the scenarios
    in only (the sink probe and the writer use s1's)."""
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    out = {}
    if "s4" in only:
        out["s4"] = make_s4(os.path.join(data, "s4"), *sz["s4"])
    if not {"sink", "s1", "s2", "s3"} & set(only):
        return out
    d = os.path.join(data, "s1", "checkpoint-100")
    os.makedirs(d)
    rand_file(os.path.join(d, "model.safetensors"), sz["s1"], "s1")
    small_files(d, 100, 2 * MIB)
    trainer_state(d, 100)
    out["s1"] = [d]
    n, size = sz["s2"]
    d = os.path.join(data, "s2", "checkpoint-200")
    os.makedirs(d)
    for i in range(n):
        rand_file(os.path.join(d, f"model-{i + 1:05d}-of-{n:05d}.safetensors"), size, f"s2-{i}")
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {f"layer{i}": f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                                  for i in range(n)}}, f)
    small_files(d, 200, 64 * 1024)
    trainer_state(d, 200)
    out["s2"] = [d]
    ck, shards, size = sz["s3"]
    base = os.path.join(data, "s3", "base")
    os.makedirs(base)
    for i in range(shards):
        rand_file(os.path.join(base, f"model-{i + 1:05d}-of-{shards:05d}.safetensors"), size,
                  f"s3-{i}")
    out["s3"] = []
    for k in range(1, ck + 1):
        d = os.path.join(data, "s3", f"checkpoint-{k * 10}")
        os.makedirs(d)
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            if i == shards - 1 and k > 1:  # the head changes, the frozen layers do not
                rand_file(os.path.join(d, name), size, f"s3-{k}-{i}")
            else:
                os.link(os.path.join(base, name), os.path.join(d, name))
        small_files(d, k * 10, 64 * 1024)
        trainer_state(d, k * 10)
        out["s3"].append(d)
    return out


def make_s4(root, ckpts, size):
    """ckpts checkpoints of one weights file: the same 60 % of its 256 KiB blocks (picked once,
    by block index, as replay.py --frozen picks them) hold the same bytes in every checkpoint,
    the others are new random bytes each time, as when a frozen backbone is fine-tuned."""
    import random
    os.makedirs(root)
    nblocks = -(-size // FROZEN_BLOCK)
    pick = random.Random("s4/frozen")
    frozen = [pick.random() < FROZEN for _ in range(nblocks)]
    base, fresh = os.path.join(root, "frozen.bin"), os.path.join(root, "fresh.bin")
    rand_file(base, size, "s4-frozen")
    out = []
    for k in range(1, ckpts + 1):
        d = os.path.join(root, f"checkpoint-{k * 100}")
        os.makedirs(d)
        rand_file(fresh, size, f"s4-{k}")
        with open(base, "rb") as fb, open(fresh, "rb") as fr, \
                open(os.path.join(d, "model.safetensors"), "wb") as dst:
            for i in range(nblocks):
                a, b = fb.read(FROZEN_BLOCK), fr.read(FROZEN_BLOCK)
                dst.write(a if frozen[i] else b)
        small_files(d, k * 100, 64 * 1024)
        trainer_state(d, k * 100)
        out.append(d)
    os.unlink(base)
    os.unlink(fresh)
    return out


def pushed_files(ckpt):
    """(path_in_repo, local path) of what every_save pushes: all but the training state."""
    skip = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
    return sorted((f, os.path.join(ckpt, f)) for f in os.listdir(ckpt) if f not in skip)


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 * MIB):
                pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            d = f.read(8 * MIB)
            if not d:
                return h.hexdigest()
            h.update(d)


# ---- hub -------------------------------------------------------------------------------------


class Hub:
    def __init__(self, work, fast=True, nice=0, name=None, xet="off", sink_rate=0):
        """xet: the hub's --xet. Off for everything but s4: s1-s3, idle and writer are LFS
        comparisons (every client takes the LFS path), comparable with runs before Xet."""
        self.data = os.path.join(work, name or ("hub-fast" if fast else "hub-plain"))
        port_file = self.data + ".port"
        self.log_path = self.data + ".log"
        argv = [sys.executable, HUB, "--data", self.data, "--port-file", port_file,
                "--user", f"{USER}:{TOKEN}", "--xet", xet, "--log", self.log_path]
        if fast:
            argv.append("--fast-parts")
        if sink_rate:
            argv += ["--sink-rate", str(sink_rate)]
        self.p = spawn(argv, stdout=subprocess.PIPE, stderr=open(self.data + ".err", "wb"),
                       preexec_fn=(lambda: os.nice(nice)) if nice else None)
        line = self.p.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"hub did not start: {line!r}")
        self.url = line.split("listening on ")[1].strip()
        self.n = 0

    def call(self, method, path, body=None, auth=True, url=None):
        h = {"Content-Type": "application/json"}
        if auth:
            h["Authorization"] = f"Bearer {TOKEN}"
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(url or self.url + path, data=data, method=method, headers=h)
        with urllib.request.urlopen(r, timeout=600) as f:
            raw = f.read()
        return json.loads(raw) if raw else None

    def new_repo(self, tag, create=True):
        self.n += 1
        name = f"{tag}-{self.n}"
        if not create:
            return f"{USER}/{name}"
        self.call("POST", "/api/repos/create", {"name": name, "type": "model", "private": True})
        return f"{USER}/{name}"

    def batch(self, repo, objs):
        return self.call("POST", f"/{repo}.git/info/lfs/objects/batch",
                         {"operation": "upload", "transfers": ["basic", "multipart"],
                          "objects": [{"oid": o, "size": s} for o, s in objs]})["objects"]

    def drop_objects(self):
        """Free the page cache the stored objects hold between runs (repos forget them)."""
        for sub in ("lfs", "multipart"):
            shutil.rmtree(os.path.join(self.data, sub), ignore_errors=True)
            os.makedirs(os.path.join(self.data, sub), exist_ok=True)

    def sent_bytes(self):
        """Bytes the clients sent to the storage sink and CAS: LFS PUT + part PUT + xorb +
        shard request bodies, from the hub's request log (retries included): (all, Xet part)."""
        n = xet = 0
        with open(self.log_path) as f:
            for line in f:
                rec = json.loads(line)
                if rec["route"] in ("lfs_put", "part_put", "xorb", "shard"):
                    n += rec["bytes_in"]
                if rec["route"] in ("xorb", "shard"):
                    xet += rec["bytes_in"]
        return n, xet

    def stop(self):
        self.p.terminate()
        reap(self.p)


def curl_plan(objs_actions, files_by_oid, cfg_path):
    """A curl -K config PUTting every part / basic object; returns completions to send."""
    completes = []
    with open(cfg_path, "w") as cfg:
        for o in objs_actions:
            act = (o.get("actions") or {}).get("upload")
            if act is None:
                continue
            path = files_by_oid[o["oid"]]
            hdr = act.get("header") or {}
            if "chunk_size" in hdr:
                chunk = int(hdr["chunk_size"])
                keys = sorted(k for k in hdr if k.isdigit())
                for i, k in enumerate(keys):
                    # curl has no byte-range upload: a part is a slice file made once per object
                    part = f"{path}.part{i:05d}"
                    if not os.path.exists(part):
                        with open(path, "rb") as src, open(part, "wb") as dst:
                            src.seek(i * chunk)
                            dst.write(src.read(chunk))
                    cfg.write(f'upload-file = "{part}"\nurl = "{hdr[k]}"\n'
                              'output = "/dev/null"\nheader = "Expect:"\n')
                completes.append((act["href"], o["oid"], len(keys)))
            else:
                cfg.write(f'upload-file = "{path}"\nurl = "{act["href"]}"\n'
                          'output = "/dev/null"\nheader = "Expect:"\n')
    return completes


def curl_put(cfg_path):
    p = spawn(["curl", "-fsS", "--no-progress-meter", "-Z", "--parallel-max", "4", "-K", cfg_path],
              stdout=subprocess.PIPE)
    out = p.stdout.read().decode()
    rc, ru = reap(p)
    if rc != 0:
        raise RuntimeError(f"curl exited {rc}")
    return out, ru


def send_completions(hub, completes):
    # parallel curl reports ETags in completion order, not by URL: the limit client reads them
    # where the hub keeps them (the hub still checks them against what it stored)
    for href, oid, nparts in completes:
        sid = href.split("/_storage/complete/")[1].split("?")[0]
        sdir = os.path.join(hub.data, "multipart", sid)
        parts = []
        for i in range(1, nparts + 1):
            with open(os.path.join(sdir, "part-%05d.etag" % i)) as f:
                parts.append({"partNumber": i, "etag": f.read()})
        hub.call("POST", None, {"oid": oid, "parts": parts}, auth=False, url=href)


# ---- the three clients -----------------------------------------------------------------------


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, exe, hub, work, repo, extra=()):
        self.watch = os.path.join(work, "watch")
        shutil.rmtree(self.watch, ignore_errors=True)
        os.makedirs(self.watch)
        self.events = []
        self.cond = threading.Condition()
        env = dict(os.environ, HF_TOKEN=TOKEN)
        self.p = spawn([exe, "--watch", self.watch, "--repo", repo, "--endpoint", hub.url,
                        "--quiet-ms", "300", "--log-format", "json", "--socket",
                        os.path.join(work, "d.sock"), *extra],
                       stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", 1)

    def _read(self):
        for line in self.p.stderr:
            t = time.monotonic()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append((t, ev))
                self.cond.notify_all()

    def wait(self, event, count, timeout=600):
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(1 for _, e in self.events if e.get("event") == event) >= count or
                any(e.get("level") == "error" for _, e in self.events) or
                self.p.poll() is not None, timeout)
            got = [(t, e) for t, e in self.events if e.get("event") == event]
            if not ok or len(got) < count:
                bad = [e for _, e in self.events if e.get("level") in ("error", "warn")]
                raise RuntimeError(f"daemon: no {event} #{count}: {bad[-3:]}")
            return got[count - 1]

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc, ru = reap(self.p)
        return rc


class StatusProbe:
    """The loop thread's responsiveness, from outside: a `status` request over the control
    socket every 20 ms while the daemon pushes; the longest round trip bounds the longest time
    the loop did not turn (plus this machine's scheduling delays on 2 busy cores)."""

    def __init__(self, sock):
        sys.path.insert(0, os.path.join(SRC, "client", "python"))
        from ckptpush.client import Client
        self.client = Client(socket_path=sock, timeout=60)
        self.rtts = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(0.02):
            t = time.monotonic()
            self.client.status()
            self.rtts.append(time.monotonic() - t)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.client.close()
        return max(self.rtts) if self.rtts else 0.0


def run_daemon(exe, hub, work, ckpts, extra=(), probe=False):
    repo = hub.new_repo("ckptpushd")
    d = Daemon(exe, hub, work, repo, extra)
    pid = d.p.pid
    status = StatusProbe(os.path.join(work, "d.sock")) if probe else None
    cpu0 = proc_cpu(pid)
    t0 = time.monotonic()
    close_to_commit, sealed_to_commit, sent = [], [], 0
    moved = []
    for k, ck in enumerate(ckpts, 1):
        dst = os.path.join(d.watch, os.path.basename(ck))
        tc = time.monotonic()
        os.rename(ck, dst)  # the checkpoint's files are closed: this is its last "close"
        moved.append((dst, ck))
        ts, _ = d.wait("sealed", k)
        tm, ev = d.wait("committed", k)
        close_to_commit.append(tm - tc)
        sealed_to_commit.append(tm - ts)
        sent += int(ev.get("sent", 0))
    wall = time.monotonic() - t0
    cpu = proc_cpu(pid) - cpu0
    hwm = proc_status(pid, "VmHWM")
    max_rtt = status.stop() if status else None
    d.stop()
    for dst, ck in moved:
        os.rename(dst, ck)
    shutil.rmtree(d.watch, ignore_errors=True)
    return dict(wall=wall, push=sum(sealed_to_commit), close_commit=sum(close_to_commit),
                cpu=cpu, rss_kib=hwm, sent=sent, max_rtt=max_rtt)


def run_js(hub, work, ckpts, use_xet=False):
    repo = hub.new_repo("js", create=False)
    spec = os.path.join(work, "js.json")
    with open(spec, "w") as f:
        json.dump({"hubUrl": hub.url, "token": TOKEN, "repo": repo, "useXet": use_xet,
                   "commits": [pushed_files(c) for c in ckpts]}, f)
    t0 = time.monotonic()
    p = spawn(["node", JS_PUSH, spec], stdout=subprocess.PIPE)
    out = p.stdout.read().decode()
    rc, ru = reap(p)
    wall = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"js client exited {rc}")
    res = json.loads(out.strip().splitlines()[-1])
    return dict(wall=wall, push=sum(res["seconds"]), close_commit=sum(res["seconds"]),
                cpu=ru.ru_utime + ru.ru_stime, rss_kib=ru.ru_maxrss)


def hf_hub_python():
    """An interpreter that imports huggingface_hub ($HF_HUB_PYTHON, else python3), or None: the
    Python client is a peer only where it is installed (it runs on Debian's python3 with
    python3-httpx, -filelock, -fsspec, -tqdm, -yaml and its source on PYTHONPATH)."""
    for exe in filter(None, (os.environ.get("HF_HUB_PYTHON"), "python3")):
        probe = subprocess.run([exe, "-c", "import huggingface_hub"], capture_output=True)
        if probe.returncode == 0:
            return exe
    return None


def run_py(hub, work, ckpts, exe):
    repo = hub.new_repo("py", create=False)
    spec = os.path.join(work, "py.json")
    with open(spec, "w") as f:
        json.dump({"hubUrl": hub.url, "token": TOKEN, "repo": repo,
                   "commits": [pushed_files(c) for c in ckpts]}, f)
    t0 = time.monotonic()
    p = spawn([exe, PY_PUSH, spec], stdout=subprocess.PIPE)
    out = p.stdout.read().decode()
    rc, ru = reap(p)
    wall = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"python client exited {rc}")
    res = json.loads(out.strip().splitlines()[-1])
    return dict(wall=wall, push=sum(res["seconds"]), close_commit=sum(res["seconds"]),
                cpu=ru.ru_utime + ru.ru_stime, rss_kib=ru.ru_maxrss)


def lfs_files(ckpts):
    """The files a limit run PUTs: each checkpoint's big ones, deduplicated by content."""
    out = []
    for c in ckpts:
        out.append([p for _, p in pushed_files(c) if os.path.getsize(p) > 10 * MIB or
                    p.endswith(".safetensors")])
    return out


def run_limit(hub, work, ckpts, oids, overlapped):
    """openssl dgst -sha256 of every pushed byte, and curl PUT (4 streams) of the bytes the Hub
    does not have yet, to the same part sink; 'then' (one after the other) or overlapped."""
    repo = hub.new_repo("limit-ovl" if overlapped else "limit-seq")
    cpu = 0.0
    t0 = time.monotonic()
    seen = set()
    for k, c in enumerate(ckpts):
        every = [p for _, p in pushed_files(c)]
        big = [p for p in lfs_files([c])[0] if oids[p] not in seen]
        seen.update(oids[p] for p in big)
        cfg = os.path.join(work, f"curl-{k}.cfg")
        hashp = None
        if overlapped:
            # the URLs need the oids: known from setup, as if hashing had run ahead
            acts = hub.batch(repo, [(oids[p], os.path.getsize(p)) for p in big])
            completes = curl_plan(acts, {oids[p]: p for p in big}, cfg)
            hashp = hash_start(every)
        else:
            for hp in hash_start(every):
                cpu += sum_ru(reap(hp)[1])
            acts = hub.batch(repo, [(oids[p], os.path.getsize(p)) for p in big])
            completes = curl_plan(acts, {oids[p]: p for p in big}, cfg)
        out, ru = curl_put(cfg) if big else ("", None)
        if ru is not None:
            cpu += sum_ru(ru)
        for hp in hashp or []:
            cpu += sum_ru(reap(hp)[1])
        send_completions(hub, completes)
    wall = time.monotonic() - t0
    return dict(wall=wall, push=wall, close_commit=wall, cpu=cpu, rss_kib=0)


def hash_start(paths):
    """openssl dgst -sha256 over paths, as two processes with about equal bytes (2 cores)."""
    groups, sizes = [[], []], [0, 0]
    for p in sorted(paths, key=os.path.getsize, reverse=True):
        i = 0 if sizes[0] <= sizes[1] else 1
        groups[i].append(p)
        sizes[i] += os.path.getsize(p)
    return [spawn(["openssl", "dgst", "-sha256", *g], stdout=subprocess.DEVNULL)
            for g in groups if g]


def sum_ru(ru):
    return ru.ru_utime + ru.ru_stime


def slice_parts(ckpts):
    """Part slice files for curl, made before timing (they are the same bytes as the files)."""
    for c in ckpts:
        for p in lfs_files([c])[0]:
            size = os.path.getsize(p)
            if size >= CHUNK:
                for i in range(-(-size // CHUNK)):
                    part = f"{p}.part{i:05d}"
                    if not os.path.exists(part):
                        with open(p, "rb") as src, open(part, "wb") as dst:
                            src.seek(i * CHUNK)
                            dst.write(src.read(CHUNK))


def drop_slices(ckpts):
    for c in ckpts:
        for f in os.listdir(c):
            if ".part" in f:
                os.unlink(os.path.join(c, f))


# ---- scenarios -------------------------------------------------------------------------------


def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[0], xs[-1]


def fmt_t(xs):
    m, lo, hi = stats(xs)
    return f"{m:7.2f} [{lo:.2f}-{hi:.2f}]"


def scenario(name, ckpts, args, hub, work):
    files = [p for c in ckpts for _, p in pushed_files(c)]
    oids = {p: sha256_file(p) for p in files}
    uniq = {}
    for p in files:
        uniq.setdefault(oids[p], os.path.getsize(p))
    total = sum(os.path.getsize(p) for p in files)  # bytes hashed (every file of every commit)
    new_bytes = sum(uniq.values())  # bytes that have to travel
    clients = ["ckptpushd", "js", "py", "limit-seq", "limit-ovl"]
    if args.py is None:
        clients.remove("py")
    if not os.path.isdir(os.path.join(SRC, "tests", "hub", "node_modules", "@huggingface")):
        if args.size != "smoke":
            raise RuntimeError("tests/hub/node_modules missing: npm ci --prefix tests/hub")
        log("  js client not installed (npm ci --prefix tests/hub): smoke runs without it")
        clients.remove("js")
    if args.compare:
        clients.insert(1, "candidate")
    if args.only_clients:
        clients = [c for c in clients if c in args.only_clients.split(",")]
    res = {c: [] for c in clients}
    la0 = loadavg()
    for rep in range(args.reps):
        order = clients[rep % len(clients):] + clients[:rep % len(clients)]
        for c in order:
            slice_parts(ckpts) if c.startswith("limit") else None
            warm(files)
            hub.drop_objects()
            if c == "ckptpushd":
                r = run_daemon(args.daemon, hub, work, ckpts)
            elif c == "candidate":
                r = run_daemon(args.compare, hub, work, ckpts)
            elif c == "js":
                r = run_js(hub, work, ckpts)
            elif c == "py":
                r = run_py(hub, work, ckpts, args.py)
            else:
                r = run_limit(hub, work, ckpts, oids, c == "limit-ovl")
            drop_slices(ckpts)
            res[c].append(r)
            log(f"  {name} rep {rep + 1} {c:10s} push {r['push']:.2f}s wall {r['wall']:.2f}s "
                f"cpu {r['cpu']:.2f}s load {loadavg()}")
    hub.drop_objects()
    return dict(name=name, total=total, new=new_bytes, res=res, load=(la0, loadavg()))


def table(scs):
    lines = []
    hdr = (f"{'scenario':9s} {'client':10s} {'push s: median [min-max]':>25s} {'MB/s':>6s} "
           f"{'x lim-seq':>9s} {'x lim-ovl':>9s} {'x js':>6s} {'x py':>6s} "
           f"{'close->commit s':>16s} "
           f"{'peak RSS MiB':>12s} {'CPU s':>6s}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for sc in scs:
        res = sc["res"]
        med = {c: statistics.median(r["push"] for r in rs) for c, rs in res.items() if rs}
        for c, rs in res.items():
            if not rs:
                continue
            m = med[c]
            ratio = lambda k: f"{med[k] / m:9.2f}" if k in med else f"{'-':>9s}"
            rss = statistics.median(r["rss_kib"] for r in rs) / 1024
            x_js = f"{med['js'] / m:.2f}" if "js" in med else "-"
            x_py = f"{med['py'] / m:.2f}" if "py" in med else "-"
            lines.append(
                f"{sc['name']:9s} {c:10s} {fmt_t([r['push'] for r in rs]):>25s} "
                f"{sc['total'] / m / 1e6:6.0f} {ratio('limit-seq')} {ratio('limit-ovl')} "
                f"{x_js:>6s} {x_py:>6s} "
                f"{statistics.median(r['close_commit'] for r in rs):16.2f} "
                f"{(f'{rss:.1f}' if rss else '-'):>12s} "
                f"{statistics.median(r['cpu'] for r in rs):6.2f}")
        lines.append(f"{'':9s} bytes hashed {sc['total'] / MIB:.0f} MiB, to send "
                     f"{sc['new'] / MIB:.0f} MiB; load before/after {sc['load'][0]} / "
                     f"{sc['load'][1]}")
    return "\n".join(lines)


S4_CLIENTS = ["ckptpushd-xet", "ckptpushd-lfs", "js-xet", "js-lfs", "py"]
S4_TWIN = {"ckptpushd-xet": "ckptpushd-lfs", "js-xet": "js-lfs"}


def scenario_s4(ckpts, args, work):
    """s4, the WAN stand-in: successive checkpoints with frozen weights to a hub whose storage
    sink receives at most --sink-rate bytes/s. A fresh Xet-enabled hub per run (its CAS must
    not know the chunks of an earlier run), its request log counting what each client sent."""
    files = [p for c in ckpts for _, p in pushed_files(c)]
    total = sum(os.path.getsize(p) for p in files)
    clients = list(S4_CLIENTS)
    if args.py is None:
        clients.remove("py")
    if not os.path.isdir(os.path.join(SRC, "tests", "hub", "node_modules", "@huggingface")):
        if args.size != "smoke":
            raise RuntimeError("tests/hub/node_modules missing: npm ci --prefix tests/hub")
        clients = [c for c in clients if not c.startswith("js")]
    if args.only_clients:
        want = args.only_clients.split(",")
        clients = [c for c in clients if c in want or c.split("-")[0] in want]
    res = {c: [] for c in clients}
    la0 = loadavg()
    for rep in range(args.reps):
        order = clients[rep % len(clients):] + clients[:rep % len(clients)]
        for c in order:
            warm(files)
            hub = Hub(work, name="hub-s4", xet="on", sink_rate=args.sink_rate)
            try:
                if c.startswith("ckptpushd"):
                    r = run_daemon(args.daemon, hub, work, ckpts,
                                   ["--transfer", c.split("-")[1]], probe=True)
                elif c.startswith("js"):
                    r = run_js(hub, work, ckpts, use_xet=c == "js-xet")
                else:
                    r = run_py(hub, work, ckpts, args.py)
                r["hub_in"], r["hub_xet"] = hub.sent_bytes()
            finally:
                hub.stop()
                shutil.rmtree(hub.data, ignore_errors=True)
                os.unlink(hub.log_path)
            res[c].append(r)
            log(f"  s4 rep {rep + 1} {c:13s} close->commit {r['close_commit']:.2f}s "
                f"sent {r['hub_in'] / 1e6:.1f} MB cpu {r['cpu']:.2f}s load {loadavg()}")
    return dict(total=total, ckpts=len(ckpts), size=os.path.getsize(
        os.path.join(ckpts[0], "model.safetensors")), res=res, load=(la0, loadavg()))


def table_s4(sc, sink_rate):
    res = {c: rs for c, rs in sc["res"].items() if rs}
    med = lambda c, k: statistics.median(r[k] for r in res[c])  # noqa: E731
    gb = sc["total"] / 1e9
    lines = [f"s4: {sc['ckpts']} checkpoints, {sc['size'] / MIB:.0f} MiB of weights each "
             f"({FROZEN:.0%} of its 256 KiB blocks frozen) + small files; the hub's sink "
             f"receives {sink_rate / 1e6:.0f} MB/s at most; {sc['total'] / MIB:.0f} MiB in all; "
             f"load before/after {sc['load'][0]} / {sc['load'][1]}"]
    hdr = (f"{'client':14s} {'sent MB':>8s} {'Xet MB':>7s} {'x LFS':>6s} "
           f"{'time-to-durable s':>22s} {'LFS/this':>8s} {'push s':>7s} {'CPU s':>6s} {'CPU s/GB':>8s} {'peak RSS MiB':>12s} "
           f"{'max status ms':>13s}")
    lines += [hdr, "-" * len(hdr)]
    for c, rs in res.items():
        twin = S4_TWIN.get(c)
        has = twin in res
        x_lfs = f"{med(c, 'hub_in') / med(twin, 'hub_in'):.2f}" if has else "-"
        speed = f"{med(twin, 'close_commit') / med(c, 'close_commit'):.2f}" if has else "-"
        rss = med(c, "rss_kib") / 1024
        rtt = [r["max_rtt"] for r in rs if r.get("max_rtt") is not None]
        lines.append(
            f"{c:14s} {med(c, 'hub_in') / 1e6:8.1f} {med(c, 'hub_xet') / 1e6:7.1f} {x_lfs:>6s} "
            f"{fmt_t([r['close_commit'] for r in rs]):>22s} {speed:>8s} {med(c, 'push'):7.2f} "
            f"{med(c, 'cpu'):6.2f} "
            f"{med(c, 'cpu') / gb:8.2f} {rss:12.1f} "
            f"{(f'{max(rtt) * 1000:.0f}' if rtt else '-'):>13s}")
    for xet, lfs in S4_TWIN.items():
        if xet in res and lfs in res:
            lines.append(
                f"  {xet.split('-')[0]}: Xet bytes / LFS bytes "
                f"{med(xet, 'hub_in') / med(lfs, 'hub_in'):.2f}"
                f" (goal <= 0.45), LFS time / Xet time "
                f"{med(lfs, 'close_commit') / med(xet, 'close_commit'):.2f} (goal >= 2)")
    if "ckptpushd-xet" in res and "ckptpushd-lfs" in res:
        lines.append(f"  ckptpushd CPU per GB of checkpoint: Xet "
                     f"{med('ckptpushd-xet', 'cpu') / gb:.2f} s, LFS "
                     f"{med('ckptpushd-lfs', 'cpu') / gb:.2f} s; peak RSS Xet "
                     f"{med('ckptpushd-xet', 'rss_kib') / 1024:.1f} MiB (goal < 48), LFS "
                     f"{med('ckptpushd-lfs', 'rss_kib') / 1024:.1f} MiB")
    lines.append("  sent: LFS PUT + part PUT + xorb + shard bodies in the hub's request log "
                 "(Xet MB: the xorb + shard part of it). "
                 "time-to-durable: ckptpushd, each checkpoint's rename into the watched dir to "
                 "its 'committed' (300 ms quiet period included), summed; js/py: their "
                 "commit() / upload_folder calls. push s: ckptpushd from 'sealed' to "
                 "'committed' (quiet periods left out), else the same as time-to-durable. "
                 "x LFS, LFS/this: against the same client's "
                 "LFS run. CPU: utime+stime of the client process (daemon: from ready to the "
                 "last commit). max status ms: longest round trip of a 'status' request sent "
                 "every 20 ms during the push (bounds the longest loop stall).")
    return "\n".join(lines)


def sink_probe(hub, work, ckpt, reps):
    """The part sink alone: curl PUT of the weights file's bytes to the hub's part URLs
    (--fast-parts and the plain hub) and to a discarding sink."""
    p = [x for x in lfs_files([ckpt])[0] if "model" in x][0]
    size = os.path.getsize(p)
    oid = sha256_file(p)
    slice_parts([ckpt])
    plain = Hub(work, fast=False)
    disc = spawn([sys.executable, "-c", DISCARD_SINK], stdout=subprocess.PIPE)
    disc_url = disc.stdout.readline().decode().strip()
    rates = {"hub --fast-parts, 4 streams": [], "hub (plain), 4 streams": [],
             "discard sink, 1 stream": []}
    la0 = loadavg()
    for rep in range(reps):
        for name in rates:
            warm([p])
            cfg = os.path.join(work, "probe.cfg")
            t0 = time.monotonic()
            if name.startswith("discard"):
                subprocess.check_call(["curl", "-fsS", "-o", "/dev/null", "-H", "Expect:", "-T",
                                       p, disc_url])
            else:
                h = hub if "fast" in name else plain
                h.drop_objects()
                acts = h.batch(h.new_repo("probe"), [(oid, size)])
                completes = curl_plan(acts, {oid: p}, cfg)
                t0 = time.monotonic()
                out, _ = curl_put(cfg)
                send_completions(h, completes)
                h.drop_objects()
            rates[name].append(size / (time.monotonic() - t0) / 1e6)
    plain.stop()
    disc.kill()
    reap(disc)
    drop_slices([ckpt])
    lines = [f"part sink alone: {size / MIB:.0f} MiB, PUT parts + completion, MB/s median "
             f"[min-max] of {reps}; load {la0} -> {loadavg()}"]
    for name, xs in rates.items():
        m, lo, hi = stats(xs)
        lines.append(f"  {name:30s} {m:6.0f} [{lo:.0f}-{hi:.0f}]")
    return "\n".join(lines)


DISCARD_SINK = r"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_PUT(self):
        n = int(self.headers["Content-Length"]); buf = memoryview(bytearray(1 << 20))
        while n:
            n -= self.rfile.readinto(buf[:min(n, len(buf))])
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
s = HTTPServer(("127.0.0.1", 0), H)
print(f"http://127.0.0.1:{s.server_address[1]}/x", flush=True)
s.serve_forever()
"""


def idle_probe(exe, hub, work, secs):
    """Wake-ups of an idle daemon: context switches of all its threads over secs seconds."""
    d = Daemon(exe, hub, work, hub.new_repo("idle"))
    time.sleep(1.0)

    def switches():
        n = 0
        for t in os.listdir(f"/proc/{d.p.pid}/task"):
            try:
                n += proc_status(f"{d.p.pid}/task/{t}", "voluntary_ctxt_switches")
                n += proc_status(f"{d.p.pid}/task/{t}", "nonvoluntary_ctxt_switches")
            except OSError:
                pass
        return n

    s0, c0 = switches(), proc_cpu(d.p.pid)
    time.sleep(secs)  # no tracer attached while counting switches
    s1, c1 = switches(), proc_cpu(d.p.pid)
    strace = shutil.which("strace")
    sys_out = ""
    if strace:
        sp = subprocess.run(["timeout", "-s", "INT", str(secs), strace, "-f", "-c", "-e",
                             "trace=epoll_wait,epoll_pwait,poll,ppoll,nanosleep,"
                             "clock_nanosleep,futex,timerfd_settime", "-p", str(d.p.pid)],
                            capture_output=True, text=True)
        rows = [ln for ln in sp.stderr.splitlines() if "attached" not in ln and "detached" not in ln]
        sys_out = "\n".join(rows).strip() or f"no syscalls at all in {secs} s"
    threads = len(os.listdir(f"/proc/{d.p.pid}/task"))
    d.stop()
    shutil.rmtree(d.watch, ignore_errors=True)
    return (f"idle daemon, {secs} s: {s1 - s0} context switches over {threads} threads, "
            f"CPU {c1 - c0:.2f} s\n" + (f"strace -f -c, next {secs} s: " + sys_out
                                         if sys_out else "strace not installed"))


TRAINER = r"""
import os, shutil, sys, time
out, steps, every, nfiles, size, work = (sys.argv[1], *map(int, sys.argv[2:7]))
buf = os.urandom(8 << 20)

def compute():
    # a fixed amount of CPU work (not a fixed time), so contention shows as wall time
    x = 0
    for i in range(work):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x

def save(step):
    d = os.path.join(out, f"checkpoint-{step}")
    os.makedirs(d)
    for i in range(nfiles):
        fd = os.open(os.path.join(d, f"shard-{i}.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        left = size
        while left:
            left -= os.write(fd, buf[:min(left, len(buf))])
        os.fsync(fd)
        os.close(fd)
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        f.write('{"global_step": %d}' % step)
    # save_total_limit=2: the daemon's pins must keep what rotation deletes
    old = os.path.join(out, f"checkpoint-{step - 2 * every}")
    if os.path.isdir(old):
        shutil.rmtree(old)

t0 = time.monotonic()
spent = {"compute": 0.0, "save": 0.0}
for step in range(1, steps + 1):
    t = time.monotonic()
    compute()
    spent["compute"] += time.monotonic() - t
    if step % every == 0:
        t = time.monotonic()
        save(step)
        spent["save"] += time.monotonic() - t
print(time.monotonic() - t0, spent["compute"], spent["save"], flush=True)
"""


def writer_probe(exe, work, sz, reps, extra):
    """A training loop (fixed CPU work per step, a checkpoint every few steps) alone vs while a
    daemon watches its output and pushes its checkpoints with a bandwidth cap. The Hub is not on
    a training node: its stand-in here runs at nice 19, so that what it costs to receive the
    parts competes as little as it can with the loop on this small machine."""
    hub = Hub(work, nice=19, name="hub-writer")
    try:
        return writer_runs(exe, hub, work, sz, reps, extra)
    finally:
        hub.stop()


def writer_runs(exe, hub, work, sz, reps, extra):
    steps, every, nfiles, size, work_iters = sz["wr"]
    saves = steps // every
    # (total, compute, save) per run; "again" is the loop alone once more: alone vs again is the
    # difference this machine shows between identical runs, the floor a slowdown must clear
    times = {"alone": [], "busy": [], "again": []}
    modes = list(times)
    daemon_cpu = []
    la0 = loadavg()
    argv = [str(steps), str(every), str(nfiles), str(size), str(work_iters)]
    warmup = os.path.join(work, "writer-warmup")  # the first run of a loop is slow: not counted
    os.makedirs(warmup)
    subprocess.run([sys.executable, "-c", TRAINER, warmup, *argv], capture_output=True, check=True)
    shutil.rmtree(warmup)
    for rep in range(reps):
        for mode in modes[rep % 3:] + modes[:rep % 3]:
            hub.drop_objects()
            d = None
            if mode == "busy":
                d = Daemon(exe, hub, work, hub.new_repo("writer"), extra)
                out = d.watch
                cpu0 = proc_cpu(d.p.pid)
            else:
                out = os.path.join(work, "writer")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
            t = subprocess.run([sys.executable, "-c", TRAINER, out, *argv], capture_output=True,
                               text=True, check=True).stdout
            times[mode].append([float(x) for x in t.split()])
            if d is not None:
                daemon_cpu.append(proc_cpu(d.p.pid) - cpu0)
                pending = saves - sum(1 for _, e in d.events if e.get("event") == "committed")
                d.wait("committed", saves)
                d.stop()
                if pending == 0:
                    log("  writer: every push ended before the training did")
            shutil.rmtree(out, ignore_errors=True)
    hub.drop_objects()
    def part(mode, i):
        return [t[i] for t in times[mode]]

    def slowdown(i, mode="busy"):
        return 100 * (statistics.median(part(mode, i)) / statistics.median(part("alone", i)) - 1)

    cap = " ".join(extra)
    return (f"training loop: {steps} steps of fixed CPU work, a checkpoint of {nfiles} x "
            f"{size / MIB:.0f} MiB (write + fsync) every {every} steps, the 2 newest kept; "
            f"{reps} reps interleaved; the daemon watches its output and pushes each checkpoint "
            f"with {cap}, to a test hub at nice 19; load {la0} -> {loadavg()}\n"
            f"  whole loop: alone {fmt_t(part('alone', 0))} s   while pushing "
            f"{fmt_t(part('busy', 0))} s   slowdown {slowdown(0):+.1f} % (target <= 2 %)\n"
            f"  its compute steps: alone {fmt_t(part('alone', 1))} s   while pushing "
            f"{fmt_t(part('busy', 1))} s   slowdown {slowdown(1):+.1f} %\n"
            f"  its saves: alone {fmt_t(part('alone', 2))} s   while pushing "
            f"{fmt_t(part('busy', 2))} s   slowdown {slowdown(2):+.1f} %\n"
            f"  control, the loop alone again: {fmt_t(part('again', 0))} s   difference "
            f"{slowdown(0, 'again'):+.1f} % (compute {slowdown(1, 'again'):+.1f} %, saves "
            f"{slowdown(2, 'again'):+.1f} %): this machine's noise between identical runs\n"
            f"  daemon CPU during the loop {fmt_t(daemon_cpu)} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="sink,s1,s2,s3,s4,idle,writer")
    ap.add_argument("--only-clients", default="")
    ap.add_argument("--max-rate", default="100000000",
                    help="the daemon's bandwidth cap in the writer probe, bytes/s (100 MB/s)")
    ap.add_argument("--compare", default="", help="another ckptpushd build, run as 'candidate'")
    ap.add_argument("--sink-rate", type=int, default=100_000_000,
                    help="s4: what the hub's storage sink receives at most, bytes/s (100 MB/s)")
    args = ap.parse_args()
    sz = SIZES[args.size]
    args.py = hf_hub_python()
    if args.py is None:
        log("bench: huggingface_hub cannot be imported ($HF_HUB_PYTHON, python3): no py peer")
    only = args.only.split(",")
    t0 = time.monotonic()
    log(f"bench: size {args.size}, {args.reps} reps, load {loadavg()}; preparing data")
    data = make_data(args.work, sz, only)
    hub = Hub(args.work)
    out = []
    try:
        if "sink" in only:
            out.append(sink_probe(hub, args.work, data["s1"][0], args.reps))
            log(out[-1])
        scs = []
        for name in ("s1", "s2", "s3"):
            if name in only:
                log(f"scenario {name}")
                scs.append(scenario(name, data[name], args, hub, args.work))
        if scs:
            out.append(table(scs))
        if "s4" in only:
            log("scenario s4")
            out.append(table_s4(scenario_s4(data["s4"], args, args.work), args.sink_rate))
            log(out[-1])
        if "idle" in only:
            out.append(idle_probe(args.daemon, hub, args.work, sz["idle"]))
        if "writer" in only:
            out.append(writer_probe(args.daemon, args.work, sz, max(args.reps, 2),
                                    ["--max-rate", args.max_rate]))
    finally:
        hub.stop()
    print(f"\nckptpush benchmarks ({args.size}, {args.reps} reps, {os.cpu_count()} cores, "
          f"{time.monotonic() - t0:.0f} s)\n")
    print("\n\n".join(out))
    print("\npush s: ckptpushd from 'sealed' to 'committed' (quiet period 300 ms excluded; "
          "close->commit includes it and the hashing done early, during that period); js: the commit() calls; py: huggingface_hub upload_folder calls (LFS); limit: openssl dgst (2 processes) + curl PUT "
          "(4 streams) to the same --fast-parts hub + completion, one after the other (seq) or "
          "overlapped (ovl). MB/s = bytes hashed / push s. x lim = limit time / client time "
          "(1.00 = at the limit); x js, x py = js / py time over client time. RSS/CPU: whole process "
          "(limit: CPU of openssl + curl).")


if __name__ == "__main__":
    main()
