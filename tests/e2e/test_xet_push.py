"""A replayed transformers Trainer run pushed with --transfer xet to the test hub's Xet CAS: one
commit per checkpoint, every version downloaded byte-exact by the official JS client through Xet
(reconstruction + xorb ranges), and, since 60% of the weights' blocks are frozen between
checkpoints, each later checkpoint sends far fewer xorb bytes than the first (the hub's request
log). Then the other modes: --transfer lfs and auto against a hub without Xet push as before,
auto against a Xet hub takes Xet, and --transfer xet against a hub without Xet fails with a
sentence that says so, never a commit. Prints the bytes each checkpoint sent."""

import os
import random
import re
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

TRACE = "hf-trainer-5.17-save-steps.jsonl"
SPEED = 0.2
QUIET_MS = 200
STEPS = (10, 20, 30, 40)
FROZEN = 0.6
SIZE_SCALE = 2.0  # model.safetensors ~3.2 MiB: dozens of chunks, several dedup decisions
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "training_args.bin")


def version_at(manifest, path, t_unix):
    best = None
    for v in manifest["files"].get(path, []):
        if manifest["started_at_unix"] + v["closed_at"] <= t_unix + 0.001:
            best = v
    return best


def xorb_bytes_per_commit(records):
    """Bytes of xorb POSTs the hub accepted before each commit, in commit order."""
    out, acc = [], 0
    for r in records:
        if r.get("route") == "xorb" and r.get("method") == "POST" and r.get("status") == 200:
            acc += r.get("bytes_in", 0)
        elif r.get("route") == "commit" and r.get("status") == 200:
            out.append(acc)
            acc = 0
    return out


@unittest.skipUnless(h.js_available(), "node or tests/hub/node_modules missing")
class XetTrainerPush(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(args=["--xet", "on"])
        root, cls.watch = h.job_dir("ckpt-xet-")
        cls.repo = f"{h.USER}/xet-run-{os.getpid()}"
        cls.metrics = os.path.join(root, "ckptpush.prom")
        cls.daemon = h.Daemon(cls.watch, repo=cls.repo, endpoint=cls.hub.url, token=h.TOKEN,
                              args=["--quiet-ms", str(QUIET_MS), "--transfer", "xet",
                                    "--metrics-path", cls.metrics])
        cls.daemon.wait_event("ready", timeout=20)
        cls.manifest = h.replay(h.trace_path(TRACE), cls.watch, speed=SPEED, seed=13,
                                size_scale=SIZE_SCALE, frozen=FROZEN)
        cls.committed = cls.daemon.wait_event("committed", timeout=120, count=5)
        cls.rc = cls.daemon.stop(signal.SIGTERM, 60)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def commit_of(self, ckpt):
        recs = [r for r in self.committed if r["kv"].get("ckpt") == ckpt]
        self.assertEqual(len(recs), 1, f"committed lines for '{ckpt}'\n{self.daemon.tail()}")
        return recs[0]

    def test_pushed_through_xet_only(self):
        self.assertEqual(self.rc, 0, self.daemon.tail())
        self.assertEqual(self.daemon.events("push-failed"), [], self.daemon.tail())
        routes = {r.get("route") for r in self.hub.log_records()}
        self.assertIn("xorb", routes)
        self.assertIn("shard", routes)
        self.assertNotIn("lfs_put", routes)
        self.assertNotIn("multipart_part", routes)
        self.assertTrue(self.daemon.events("upload_xet_done"), self.daemon.tail())

    def test_each_file_read_once(self):
        # the early hash chunked each file in its one read: no Xet upload scanned a file again
        done = self.daemon.events("upload_xet_done")
        self.assertTrue(done, self.daemon.tail())
        for r in done:
            self.assertEqual(r["kv"].get("xet_scan_reused"), r["kv"]["files"], r)

    def test_each_version_via_official_js_client_over_xet(self):
        for step in STEPS:
            commit = self.commit_of(f"checkpoint-{step}")["kv"]["commit"]
            out = h.tempdir("ckpt-js-")
            files = h.js_download(self.hub.url, h.TOKEN, self.repo, out, revision=commit)
            rec = self.commit_of(f"checkpoint-{step}")
            for name in MODEL_FILES:
                v = version_at(self.manifest, f"checkpoint-{step}/{name}", rec["time"])
                self.assertIsNotNone(v, name)
                self.assertEqual(files.get(name), v["sha256"], f"step {step}: '{name}'")
        # the weights came through the CAS: reconstruction and xorb ranges, not the LFS bridge
        routes = [r.get("route") for r in self.hub.log_records()]
        self.assertIn("reconstruction", routes)
        self.assertIn("xorb_get", routes)
        self.assertNotIn("xet_get", routes)

    def test_later_checkpoints_send_far_fewer_xorb_bytes(self):
        per_commit = xorb_bytes_per_commit(self.hub.log_records())
        # the repo's own initial commit is not the daemon's: five commits follow it
        per_commit = per_commit[-5:]
        size = self.manifest["files"]["checkpoint-10/model.safetensors"][0]["size"]
        print(f"\nxorb bytes per commit (model {size} bytes, {FROZEN:.0%} frozen): "
              f"{per_commit}", file=sys.stderr)
        first, later = per_commit[0], per_commit[1:]
        self.assertGreaterEqual(first, size * 0.9)  # all new (random, incompressible)
        for b in later:
            # the end of training writes its weights once more (frozen blocks again); about 40%
            # changes, and CDC loses a chunk or so at each changed block's edges
            self.assertLess(b, first * 0.65, per_commit)
            self.assertGreater(b, 0, per_commit)
        done = self.daemon.events("upload_xet_done")
        dedup = sum(int(r["kv"].get("dedup_bytes", "0")) for r in done)
        self.assertGreater(dedup, size, done)
        # the committed lines and the metrics say the same
        for step in STEPS[1:]:
            kv = self.commit_of(f"checkpoint-{step}")["kv"]
            self.assertGreater(int(kv["xet_dedup"]), int(kv["xet_new"]) // 2, kv)
            self.assertGreaterEqual(int(kv["xet_files"]), 1, kv)
        with open(self.metrics, encoding="utf-8") as f:
            text = f.read()
        m = re.search(r'^ckptpush_xet_chunk_bytes_total\{kind="deduplicated"\} (\d+)$', text,
                      re.M)
        self.assertIsNotNone(m, text)
        self.assertEqual(int(m.group(1)), sum(int(r["kv"]["xet_dedup"]) for r in self.committed))


class OtherModes(unittest.TestCase):
    """One checkpoint per mode; each test its own repo and daemon."""

    @classmethod
    def setUpClass(cls):
        cls.lfs_hub = h.Hub(args=["--xet", "off"])
        cls.xet_hub = h.Hub(args=["--xet", "on"])

    @classmethod
    def tearDownClass(cls):
        cls.lfs_hub.stop()
        cls.xet_hub.stop()

    def push_one(self, hub, mode, name, expect_commit=True):
        root, watch = h.job_dir("ckpt-mode-")
        repo = f"{h.USER}/{name}-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=hub.url,
                     args=["--quiet-ms", str(QUIET_MS), "--transfer", mode])
        try:
            d.wait_event("ready", timeout=20)
            want = h.write_checkpoint(watch, 10, 2_500_000, random.Random(len(name)))
            if expect_commit:
                rec = d.wait_event("committed", timeout=60)[0]
                for path, sha in want.items():
                    self.assertEqual(hub.sha256_at(repo, rec["kv"]["commit"], path), sha, path)
            else:
                d.wait_event("push-failed", timeout=60)
        finally:
            rc = d.stop(signal.SIGTERM, 30)
        # 1: a push failed (the exit code README documents); 0 otherwise
        self.assertEqual(rc, 0 if expect_commit else 1, d.tail())
        return d, repo

    def routes_of(self, hub, repo):
        return [r.get("route") for r in hub.log_records()
                if repo in r.get("path", "") or r.get("route") in ("xorb", "shard", "dedup")]

    def test_lfs_and_auto_against_a_hub_without_xet(self):
        for mode in ("lfs", "auto"):
            d, repo = self.push_one(self.lfs_hub, mode, f"nox-{mode}")
            self.assertEqual(d.events("push-failed"), [], d.tail())
        routes = {r.get("route") for r in self.lfs_hub.log_records()}
        self.assertNotIn("xorb", routes)
        self.assertNotIn("xet_token", routes)

    def test_lfs_mode_never_offers_xet(self):
        before = len(self.xet_hub.log_records())
        self.push_one(self.xet_hub, "lfs", "xon-lfs")
        routes = {r.get("route") for r in self.xet_hub.log_records()[before:]}
        self.assertNotIn("xorb", routes)
        self.assertNotIn("shard", routes)

    def test_auto_takes_xet_when_offered(self):
        before = len(self.xet_hub.log_records())
        d, _ = self.push_one(self.xet_hub, "auto", "xon-auto")
        routes = {r.get("route") for r in self.xet_hub.log_records()[before:]}
        self.assertIn("xorb", routes)
        self.assertIn("shard", routes)
        self.assertTrue(d.events("upload_xet_done"), d.tail())

    def test_xet_mode_without_xet_is_a_clear_error_and_no_commit(self):
        d, repo = self.push_one(self.lfs_hub, "xet", "nox-xet", expect_commit=False)
        failed = d.events("push-failed")[0]
        self.assertIn("the hub does not offer Xet uploads", failed["kv"].get("reason", ""),
                      d.tail())
        self.assertEqual(d.events("committed"), [], d.tail())


class XetFaults(unittest.TestCase):
    """503s and connection resets on the token, xorb and shard routes are retried; the push
    completes and reads back whole."""

    def test_faults_on_cas_routes_are_retried(self):
        # tokens live 3 s and the upload is held to 400 kB/s: the batch answer's token runs out
        # during the xorb, so the shard needs the token route
        hub = h.Hub(args=["--xet", "on", "--xet-token-ttl", "3"])
        try:
            hub.fault([{"route": "xet_token", "count": 1, "status": 503},
                       {"route": "xet_token", "count": 1, "reset_after_bytes": 0},
                       {"route": "xorb", "count": 1, "status": 503},
                       {"route": "xorb", "count": 1, "reset_after_bytes": 4096},
                       {"route": "shard", "count": 1, "reset_after_bytes": 100},
                       {"route": "shard", "count": 1, "drop_response": True}])
            root, watch = h.job_dir("ckpt-xfault-")
            repo = f"{h.USER}/xet-faults-{os.getpid()}"
            d = h.Daemon(watch, repo=repo, endpoint=hub.url,
                         args=["--quiet-ms", str(QUIET_MS), "--transfer", "xet",
                               "--max-rate", "400000"])
            try:
                d.wait_event("ready", timeout=20)
                want = h.write_checkpoint(watch, 10, 2_000_000, random.Random(3))
                rec = d.wait_event("committed", timeout=90)[0]
            finally:
                rc = d.stop(signal.SIGTERM, 30)
            self.assertEqual(rc, 0, d.tail())
            faulted = [r for r in hub.log_records() if r.get("fault")]
            self.assertEqual(sorted(r["route"] for r in faulted),
                             ["shard", "shard", "xet_token", "xet_token", "xorb", "xorb"],
                             faulted)
            tokens = [r for r in hub.log_records() if r.get("route") == "xet_token"]
            self.assertEqual(tokens[-1].get("status"), 200, tokens)
            self.assertEqual(d.events("push-failed"), [], d.tail())
            self.assertTrue(d.events("http_retry"), d.tail())
            if h.js_available():
                files = h.js_download(hub.url, h.TOKEN, repo, h.tempdir("ckpt-js-"),
                                      revision=rec["kv"]["commit"])
                for path, sha in want.items():
                    self.assertEqual(files.get(path), sha, path)
        finally:
            hub.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
