"""--bucket: a replayed transformers Trainer run whose intermediate checkpoints go to a Storage
Bucket of the test hub (Xet CAS, one batch each) while the final model and its card go to the
repo as one commit. Every checkpoint lands under checkpoint-N/ byte-exact (downloaded by the
official JS client through Xet); --keep-last 2 leaves exactly the newest two prefixes, each
deletion batch coming after the batch that made the newer checkpoint whole; a SIGKILL after the
xorbs and shard went up and before the batch was applied (or before its answer came back) loses
nothing and re-sends no xorb; a 503 on the batch is retried; a bad bucket id is refused; and
--bucket without --repo pushes only to the bucket, no card."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

TRACE = "hf-trainer-5.17-save-steps.jsonl"
SPEED = 0.2
QUIET_MS = 200
STEPS = (10, 20, 30, 40)
SIZE_SCALE = 2.0


def version_at(manifest, path, t_unix):
    best = None
    for v in manifest["files"].get(path, []):
        if manifest["started_at_unix"] + v["closed_at"] <= t_unix + 0.001:
            best = v
    return best


def bucket_files(hub, bucket):
    """{path: entry} of every file in the bucket (the hub's tree route)."""
    entries = hub.get_pages(f"/api/buckets/{bucket}/tree?recursive=true")
    return {e["path"]: e for e in entries if e.get("type") == "file"}


def prefixes(files):
    return sorted({p.split("/", 1)[0] for p in files if "/" in p})


def batches(hub, bucket):
    """The bucket's batch requests in arrival order: (status, kind, bytes_in). An addFile line
    carries a 64-hex xetHash (well over 100 bytes); a deleteFile line of checkpoint-N/x is
    about 60."""
    out = []
    for r in hub.log_records():
        if r.get("route") == "bucket_batch" and bucket in r.get("path", ""):
            out.append((r.get("status"), r.get("bytes_in", 0)))
    return out


@unittest.skipUnless(h.js_available(), "node or tests/hub/node_modules missing")
class BucketTrainerPush(unittest.TestCase):
    """The replayed run, --repo and --bucket, no retention: every checkpoint stays."""

    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(args=["--xet", "on"])
        _, cls.watch = h.job_dir("ckpt-bucket-")
        cls.repo = f"{h.USER}/bucket-run-{os.getpid()}"
        cls.bucket = f"{h.USER}/ckpts-{os.getpid()}"
        cls.sock = os.path.join(h.tempdir("ckpt-sock-"), "job.sock")
        cls.daemon = h.Daemon(cls.watch, repo=cls.repo, endpoint=cls.hub.url,
                              args=["--quiet-ms", str(QUIET_MS), "--bucket", cls.bucket,
                                    "--socket", cls.sock])
        cls.daemon.wait_event("ready", timeout=20)
        cls.manifest = h.replay(h.trace_path(TRACE), cls.watch, speed=SPEED, seed=7,
                                size_scale=SIZE_SCALE, frozen=0.6)
        cls.pushed = cls.daemon.wait_event("bucket-pushed", timeout=120, count=len(STEPS))
        cls.committed = cls.daemon.wait_event("committed", timeout=120)
        cls.status = subprocess.run([h.client_path(), "--socket", cls.sock, "status"],
                                    capture_output=True, text=True, timeout=20)
        cls.rc = cls.daemon.stop(signal.SIGTERM, 60)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def test_every_checkpoint_in_the_bucket_byte_exact(self):
        self.assertEqual(self.rc, 0, self.daemon.tail())
        self.assertEqual(self.daemon.events("push-failed"), [], self.daemon.tail())
        out = h.tempdir("ckpt-js-")
        files = h.js_download(self.hub.url, h.TOKEN, f"buckets/{self.bucket}", out)
        self.assertEqual(prefixes(files), [f"checkpoint-{s}" for s in STEPS], sorted(files))
        print("\n" + "\n".join(
            f"{r['kv']['ckpt']}: files={r['kv']['files']} bytes={r['kv']['bytes']} "
            f"xet_new={r['kv']['xet_new']} xet_dedup={r['kv']['xet_dedup']} "
            f"seconds={r['kv']['seconds']}" for r in self.pushed), file=sys.stderr)
        for rec in self.pushed:
            ckpt = rec["kv"]["ckpt"]
            mine = {p: sha for p, sha in files.items() if p.startswith(ckpt + "/")}
            self.assertEqual(int(rec["kv"]["files"]), len(mine), (rec, sorted(mine)))
            for path, sha in mine.items():
                v = version_at(self.manifest, path, rec["time"])
                self.assertIsNotNone(v, path)
                self.assertEqual(sha, v["sha256"], path)
        # through Xet only, one batch per checkpoint, no commit for any of them
        routes = [r.get("route") for r in self.hub.log_records()]
        self.assertIn("xorb", routes)
        self.assertIn("shard", routes)
        self.assertNotIn("lfs_put", routes)
        self.assertEqual([s for s, _ in batches(self.hub, self.bucket)], [200] * len(STEPS))

    def test_final_model_and_card_in_the_repo_as_one_commit(self):
        commits = self.hub.commits(self.repo)
        mine = [c for c in commits if c["id"] == self.committed[0]["kv"]["commit"]]
        self.assertEqual(len(mine), 1, commits)
        # the repo's own initial commit and the end of training: nothing per checkpoint
        self.assertEqual(len(commits), 2, [h.commit_title(c) for c in commits])
        tree = self.hub.tree(self.repo)
        self.assertIn("README.md", tree)
        self.assertIn("model.safetensors", tree)
        self.assertFalse([p for p in tree if p.startswith("checkpoint-")], sorted(tree))
        v = self.manifest["files"]["model.safetensors"][-1]
        self.assertEqual(self.hub.sha256_at(self.repo, "main", "model.safetensors"), v["sha256"])
        self.assertNotIn("README.md", bucket_files(self.hub, self.bucket))

    def test_status_names_the_bucket(self):
        self.assertIn(f"bucket {self.bucket}", self.status.stdout + self.status.stderr)


class BucketOnlyRun(unittest.TestCase):
    """The replayed run with --bucket and no --repo: the final model goes to the bucket too, at
    its own paths, and no card is written; no repo is made."""

    def test_final_model_in_the_bucket_no_card_no_repo(self):
        hub = h.Hub(args=["--xet", "on"])
        try:
            _, watch = h.job_dir("ckpt-bucket-only-")
            bucket = f"{h.USER}/only-{os.getpid()}"
            d = h.Daemon(watch, endpoint=hub.url,
                         args=["--quiet-ms", str(QUIET_MS), "--bucket", bucket])
            try:
                d.wait_event("ready", timeout=20)
                manifest = h.replay(h.trace_path(TRACE), watch, speed=SPEED, seed=11)
                pushed = d.wait_event("bucket-pushed", timeout=120, count=len(STEPS) + 1)
            finally:
                rc = d.stop(signal.SIGTERM, 60)
            self.assertEqual(rc, 0, d.tail())
            final = [r for r in pushed if r["kv"]["ckpt"] == ""]
            self.assertEqual(len(final), 1, d.tail())
            self.assertEqual(d.events("card"), [], d.tail())  # no card written
            self.assertEqual(d.events("committed"), [], d.tail())
            got = h.js_download(hub.url, h.TOKEN, f"buckets/{bucket}", h.tempdir("ckpt-js-"))
            self.assertIn("model.safetensors", got)
            # every root file is the run's own (the Trainer's README.md too, not a card of ours)
            for path, sha in got.items():
                if "/" not in path:
                    v = version_at(manifest, path, final[0]["time"])
                    self.assertIsNotNone(v, path)
                    self.assertEqual(sha, v["sha256"], path)
            self.assertFalse([r for r in hub.log_records()
                              if "/api/repos/create" in r.get("path", "")])
        finally:
            hub.stop()


class BucketRetention(unittest.TestCase):
    """--keep-last 2 over five checkpoints written in turn."""

    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(args=["--xet", "on"])

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def test_keep_last_two_deletes_only_after_the_newer_is_whole(self):
        _, watch = h.job_dir("ckpt-bucket-keep-")
        bucket = f"{h.USER}/keep-{os.getpid()}"
        d = h.Daemon(watch, endpoint=self.hub.url,
                     args=["--quiet-ms", str(QUIET_MS), "--bucket", bucket, "--keep-last", "2"])
        want = {}
        try:
            d.wait_event("ready", timeout=20)
            for i, step in enumerate((10, 20, 30, 40, 50)):
                for name, sha in h.write_checkpoint(watch, step, 200_000,
                                                    random.Random(step)).items():
                    want[f"checkpoint-{step}/{name}"] = sha
                d.wait_event("bucket-pushed", timeout=60, count=i + 1)
        finally:
            rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, 0, d.tail())
        files = bucket_files(self.hub, bucket)
        self.assertEqual(prefixes(files), ["checkpoint-40", "checkpoint-50"], sorted(files))
        out = h.tempdir("ckpt-js-")
        got = h.js_download(self.hub.url, h.TOKEN, f"buckets/{bucket}", out)
        for path, sha in got.items():
            if not path.endswith("trainer_state.json"):
                self.assertEqual(sha, want[path], path)
        # add 10, add 20, add 30, delete 10, add 40, delete 20, add 50, delete 30
        seq = batches(self.hub, bucket)
        self.assertEqual([s for s, _ in seq], [200] * 8, seq)
        kinds = ["add" if n > 3 * 100 else "delete" for _, n in seq]
        self.assertEqual(kinds, ["add", "add", "add", "delete", "add", "delete", "add", "delete"],
                         seq)
        retired = [r["kv"]["folder"] for r in d.events("retiring")]
        self.assertEqual(retired, ["checkpoint-10", "checkpoint-20", "checkpoint-30"], d.tail())
        self.assertEqual(len(d.events("bucket-retired")), 3, d.tail())
        # bucket only: no repo was made, no card
        self.assertFalse([r for r in self.hub.log_records() if r.get("route") == "create_repo"
                          or "/api/repos/create" in r.get("path", "")])

    def test_503_on_the_batch_is_retried(self):
        _, watch = h.job_dir("ckpt-bucket-503-")
        bucket = f"{h.USER}/flaky-{os.getpid()}"
        self.hub.fault({"route": "bucket_batch", "count": 2, "status": 503})
        d = h.Daemon(watch, endpoint=self.hub.url,
                     args=["--quiet-ms", str(QUIET_MS), "--bucket", bucket])
        try:
            d.wait_event("ready", timeout=20)
            want = h.write_checkpoint(watch, 10, 300_000, random.Random(3))
            d.wait_event("bucket-pushed", timeout=90)
        finally:
            rc = d.stop(signal.SIGTERM, 30)
        self.assertEqual(rc, 0, d.tail())
        self.assertEqual([s for s, _ in batches(self.hub, bucket)], [503, 503, 200])
        got = h.js_download(self.hub.url, h.TOKEN, f"buckets/{bucket}", h.tempdir("ckpt-js-"))
        for name, sha in want.items():
            self.assertEqual(got[f"checkpoint-10/{name}"], sha, name)

    def test_bad_bucket_id_is_refused(self):
        _, watch = h.job_dir("ckpt-bucket-bad-")
        for bad in ("alice/x/y", "alice/-x", "noslash"):
            r = subprocess.run([h.daemon_path(), "--watch", watch, "--bucket", bad,
                                "--endpoint", self.hub.url],
                               capture_output=True, text=True, timeout=20,
                               env=dict(os.environ, HF_TOKEN=h.TOKEN))
            self.assertNotEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"invalid bucket id '{bad}'", r.stderr)


class BucketKill(unittest.TestCase):
    """SIGKILL once the xorbs and shard are up, with the batch refused (not applied) or applied
    with its answer held back; the restarted daemon sends the batch again and no xorb."""

    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub(args=["--xet", "on"])

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def tree_has(self, bucket):
        status, _, _ = self.hub.request("GET", f"/api/buckets/{bucket}/tree/checkpoint-10")
        return status == 200

    def kill_before_batch_lands(self, fault, name, drop_shard_cache=False):
        _, watch = h.job_dir("ckpt-bucket-kill-")
        bucket = f"{h.USER}/{name}-{os.getpid()}"
        args = ["--quiet-ms", str(QUIET_MS), "--bucket", bucket]
        n_start = len(self.hub.log_records())
        d = h.Daemon(watch, endpoint=self.hub.url, args=args)
        try:
            d.wait_event("ready", timeout=20)
            self.hub.fault(dict(fault, route="bucket_batch"))
            # content of its own: nothing of it is in the CAS yet
            want = h.write_checkpoint(watch, 10, 3_000_000, random.Random(name))
            d.wait_event("upload_xet_done", timeout=60)
            # refused: the hub logged a 503; applied: the files are in, the answer held back
            # (the hub logs a request when its answer goes out)
            applied = "delay_answer_s" in fault
            deadline = time.time() + 30
            while time.time() < deadline and not (
                    applied and self.tree_has(bucket) or not applied and batches(self.hub, bucket)):
                time.sleep(0.05)
            d.stop(signal.SIGKILL, 5)
            self.assertEqual(self.tree_has(bucket), applied)
        finally:
            d.stop(signal.SIGKILL, 5)
        self.hub.request("DELETE", "/_admin/faults", token=None)
        self.assertEqual(d.events("bucket-pushed"), [], d.tail())
        sent_before = {r["path"] for r in self.hub.log_records()[n_start:]
                       if r.get("route") == "xorb" and r.get("method") == "POST"
                       and r.get("status") == 200}
        self.assertTrue(sent_before)
        if drop_shard_cache:
            # only the journal's xorb records then know what the CAS took: no cached shard,
            # and the CAS's global dedup answers "no match"
            xet = os.path.join(watch, ".ckptpush", "xet")
            for sub in os.listdir(xet):
                if sub.startswith("shards-"):
                    shutil.rmtree(os.path.join(xet, sub))
            self.hub.fault({"route": "dedup", "count": 100, "status": 404})
        n_before = len(self.hub.log_records())
        d2 = h.Daemon(watch, endpoint=self.hub.url, args=args)
        try:
            rec = d2.wait_event("bucket-pushed", timeout=90)[0]
        finally:
            rc = d2.stop(signal.SIGTERM, 30)
            self.hub.request("DELETE", "/_admin/faults", token=None)
        self.assertEqual(rc, 0, d2.tail())
        self.assertEqual(rec["kv"]["recovered"], "yes", rec)
        kv = rec["kv"]
        print(f"\nafter the kill ({name}): xorbs_sent={kv['xorbs_sent']} "
              f"xorbs_resumed={kv['xorbs_resumed']} xet_new={kv['xet_new']} "
              f"xet_dedup={kv['xet_dedup']} seconds={kv['seconds']}", file=sys.stderr)
        if drop_shard_cache:
            # (the small files' xorbs came from dedup in the first run, so the CAS "lacks" them
            # now and they go; what this job sent before does not)
            self.assertEqual(int(kv["xorbs_resumed"]), len(sent_before), d2.tail())
            self.assertTrue(d2.events("xet_xorb_resumed"), d2.tail())
        after = self.hub.log_records()[n_before:]
        resent = [r["path"] for r in after if r.get("route") == "xorb"
                  and r.get("method") == "POST" and r["path"] in sent_before]
        self.assertEqual(resent, [], d2.tail())
        self.assertEqual([r.get("status") for r in after if r.get("route") == "bucket_batch"],
                         [200])
        got = h.js_download(self.hub.url, h.TOKEN, f"buckets/{bucket}", h.tempdir("ckpt-js-"))
        self.assertEqual(prefixes(got), ["checkpoint-10"], sorted(got))
        for n, sha in want.items():
            self.assertEqual(got[f"checkpoint-10/{n}"], sha, n)
        return d, d2

    def test_kill_while_the_batch_is_refused(self):
        self.kill_before_batch_lands({"count": 50, "status": 503}, "refused",
                                     drop_shard_cache=True)

    def test_kill_after_the_batch_was_applied(self):
        self.kill_before_batch_lands({"count": 1, "delay_answer_s": 20}, "applied")


if __name__ == "__main__":
    unittest.main(verbosity=2)
