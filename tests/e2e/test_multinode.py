"""Several nodes, one commit: NODES daemons on this machine (ranks 0..NODES-1), each watching its
own directory as each node of a cluster would, rank 0 coordinating over loopback TCP.

- Each node writes its .distcp shards (rank 1 through LFS, the others through Xet) of a DCP checkpoint into its own directory (rank 0 also
  .metadata, last): exactly one commit holds every node's files, byte-exact.
- A node SIGKILLed while it uploads (before it reported): no commit; the coordinator's log and
  `ckptpush status` name the missing rank. Restarted on the same directory, the node resumes
  from its journal and reports, and the one commit is made.
- A message with a wrong HMAC, or one replayed (another connection, or the same seq), is refused
  with a clear log line; the job secret never appears in any log."""

import hashlib
import hmac
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

NODES = 3
SHARDS = 2  # per node
KiB = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_part(watch, rank, step, rng, size):
    """This node's shards of step-<step>/ (and .metadata on rank 0, written last):
    {repo path: sha256}."""
    d = os.path.join(watch, f"step-{step}")
    os.makedirs(d, exist_ok=True)
    out = {}
    for k in range(SHARDS):
        name = f"__{rank * SHARDS + k}_0.distcp"
        data = rng.randbytes(size)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        out[f"step-{step}/{name}"] = hashlib.sha256(data).hexdigest()
    return out


def write_metadata(watch, step):
    d = os.path.join(watch, f"step-{step}")
    data = b"DCP metadata for step %d\n" % step
    tmp = os.path.join(d, ".metadata.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(d, ".metadata"))
    return {f"step-{step}/.metadata": hashlib.sha256(data).hexdigest()}


def seal(secret, body, direction=b"n"):
    """A line as coord_proto.h says: the body's JSON text with the mac field appended."""
    text = json.dumps(body, separators=(",", ":"))
    mac = hmac.new(secret.encode(), b"ckptpush-coord-v1" + direction + b"\n" + text.encode(),
                   hashlib.sha256).hexdigest()
    return (text[:-1] + ',"mac":"' + mac + '"}\n').encode()


class Peer:
    """A raw TCP client of the coordinator: reads the hello, sends lines."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.hello = json.loads(self.readline())

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


class MultiNode(unittest.TestCase):
    def test_multinode(self):
        hub = h.Hub()
        repo = f"{h.USER}/multinode-{os.getpid()}"
        secret = secrets.token_hex(24)
        port = free_port()
        rng = random.Random(15)
        dirs = [h.job_dir(f"ckpt-node{r}-") for r in range(NODES)]

        def start(rank, extra=()):
            root, watch = dirs[rank]
            args = ["--nodes", str(NODES), "--node-rank", str(rank),
                    "--coordinator", f"127.0.0.1:{port}", "--coordinator-wait", "1",
                    "--quiet-ms", "300", "--socket", os.path.join(root, "ctl.sock"), *extra]
            d = h.Daemon(watch, repo=repo, endpoint=hub.url, args=args,
                         env={"CKPTPUSH_JOB_SECRET": secret})
            d.wait_event("ready", timeout=30)
            return d

        # rank 1 uploads LFS objects, the others Xet (the test hub offers it): one commit
        # names both kinds by sha256
        daemons = [start(r, ["--transfer", "lfs"] if r == 1 else []) for r in range(NODES)]
        every = list(daemons)
        coord = daemons[0]
        try:
            coord.wait_event("coord-listening", timeout=10)
            # --- one checkpoint over every node: one commit with every file -------------
            before = len(hub.commits(repo))
            expected = {}
            for r in range(NODES):
                expected.update(write_part(dirs[r][1], r, 100, rng, 300 * KiB + r))
            expected.update(write_metadata(dirs[0][1], 100))
            done = coord.wait_event("coord-committed", timeout=60, ckpt="step-100")[0]
            oid = done["kv"]["commit"]
            for r in range(NODES):
                got = daemons[r].wait_event("node-committed", timeout=30, ckpt="step-100")
                self.assertEqual(got[0]["kv"]["commit"], oid, f"rank {r}")
            commits = hub.commits(repo)
            self.assertEqual(len(commits) - before, 1, "exactly one commit for the checkpoint")
            self.assertTrue(daemons[0].events("upload_xet_done"), "rank 0 went through Xet")
            self.assertTrue(daemons[2].events("upload_xet_done"), "rank 2 went through Xet")
            self.assertEqual(daemons[1].events("upload_xet_done"), [], "rank 1 went through LFS")
            tree = hub.tree(repo)
            for path, sha in expected.items():
                self.assertIn(path, tree)
                self.assertEqual(hub.sha256_at(repo, "main", path), sha, path)
            self.assertEqual(sorted(p for p in tree if p.startswith("step-100/")),
                             sorted(expected))

            # --- a node killed while it uploads: nothing committed, the rank named ------
            root2, watch2 = dirs[2]
            daemons[2].stop()
            daemons[2] = start(2, ["--max-rate", str(256 * KiB)])
            every.append(daemons[2])
            before = len(hub.commits(repo))
            expected = {}
            expected.update(write_part(watch2, 2, 200, rng, 1024 * KiB))
            for r in (0, 1):
                expected.update(write_part(dirs[r][1], r, 200, rng, 200 * KiB))
            expected.update(write_metadata(dirs[0][1], 200))
            daemons[2].wait_event("sealed", timeout=30, ckpt="step-200")
            time.sleep(0.5)  # into its upload: 2 MiB at 256 KiB/s
            self.assertEqual(daemons[2].events("node-uploaded", ckpt="step-200"), [],
                             "rank 2 was meant to be killed before it reported")
            daemons[2].stop(h.signal.SIGKILL)
            coord.wait_event("coord-report", timeout=30, count=1, ckpt="step-200", rank="0")
            coord.wait_event("coord-report", timeout=30, count=1, ckpt="step-200", rank="1")
            coord.wait_event("coord-node-lost", timeout=30, rank="2")
            waiting = coord.wait_event("coord-waiting", timeout=30, ckpt="step-200")
            self.assertEqual(waiting[-1]["kv"]["missing"], "2")
            self.assertEqual(coord.events("coord-report", ckpt="step-200", rank="2"), [])
            status = json.loads(subprocess.run(
                [h.client_path(), "--socket", os.path.join(dirs[0][0], "ctl.sock"), "--json",
                 "status"], capture_output=True, timeout=20, check=True).stdout)
            pending = {p["ckpt"]: p for p in status["daemon"]["coordinator"]["pending"]}
            self.assertEqual(pending["step-200"]["missing"], [2])
            self.assertEqual(pending["step-200"]["reported"], [0, 1])
            table = subprocess.run(
                [h.client_path(), "--socket", os.path.join(dirs[0][0], "ctl.sock"), "status"],
                capture_output=True, text=True, timeout=20, check=True).stdout
            self.assertIn("node 0 of 3 (coordinator; connected: ", table)
            self.assertIn("waiting: step-200 missing node(s) 2, reported 0,1", table)
            self.assertEqual(len(hub.commits(repo)), before, "no commit of a partial checkpoint")

            # restarted with the same rank on the same directory: resumes from its journal
            daemons[2] = start(2)
            every.append(daemons[2])
            daemons[2].wait_event("node-committed", timeout=60, ckpt="step-200")
            done = coord.wait_event("coord-committed", timeout=60, ckpt="step-200")[0]
            self.assertEqual(done["kv"]["nodes"], str(NODES))
            self.assertEqual(len(hub.commits(repo)) - before, 1)
            for path, sha in expected.items():
                self.assertEqual(hub.sha256_at(repo, "main", path), sha, path)
            recovered = [ln for ln in daemons[2].lines if "step-200" in ln and
                         ("recover" in ln or "resum" in ln)]
            self.assertTrue(recovered, "rank 2 resumed step-200 from its journal:\n" +
                            daemons[2].tail())

            # --- authentication: wrong HMAC, replays --------------------------------------
            bad = Peer(port)
            body = {"v": 1, "type": "report", "nonce": bad.hello["nonce"], "seq": 1, "rank": 1,
                    "ckpt": "step-999", "step": 999, "message": "forged",
                    "files": [{"path": "x", "size": 1, "sha256": "0" * 64, "via": "lfs"}]}
            bad.send(seal("not-the-job-secret-at-all", body))
            self.assertIsNone(bad.readline(), "a wrong HMAC closes the connection")
            bad.close()
            coord.wait_event("coord-refused", timeout=10)
            refused = coord.events("coord-refused")
            self.assertIn("HMAC of the message does not match", refused[-1]["kv"]["reason"])

            a = Peer(port)
            probe = {"v": 1, "type": "ping", "nonce": a.hello["nonce"], "seq": 1}
            line = seal(secret, probe)
            a.send(line)
            answer = json.loads(a.readline())
            self.assertFalse(answer["ok"])  # authenticated, but no such request
            a.send(line)  # the same line again on the same connection: seq not above 1
            self.assertIsNone(a.readline())
            a.close()
            coord.wait_event("coord-refused", timeout=10, count=len(refused) + 2)
            self.assertIn("field seq", coord.events("coord-refused")[-1]["kv"]["reason"])
            b = Peer(port)
            b.send(line)  # replayed on another connection: its nonce is not this one's
            self.assertIsNone(b.readline())
            b.close()
            coord.wait_event("coord-refused", timeout=10, count=len(refused) + 3)
            self.assertIn("replay", coord.events("coord-refused")[-1]["kv"]["reason"])
            self.assertIsNone(coord.proc.poll(), "the coordinator is still up")
            self.assertEqual(len(hub.commits(repo)) - before, 1, "nothing forged was committed")
        finally:
            rcs = {id(d): d.stop() for d in every if d.proc.poll() is None}
        for d in every:
            for ln in d.lines:
                self.assertNotIn(secret, ln, "the job secret appeared in a log")
                self.assertNotRegex(ln, r"Sanitizer|runtime error", "\n" + d.tail())
            if id(d) in rcs:  # stopped by SIGTERM here: a clean exit
                self.assertEqual(rcs[id(d)], 0, d.tail())


if __name__ == "__main__":
    unittest.main()
