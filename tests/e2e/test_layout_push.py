"""Layouts pushed for real (no --dry-run): a torch.distributed.checkpoint folder, a sharded
save_pretrained folder, DeepSpeed global_step folders and Lightning checkpoints with last.ckpt
replaced in place are each replayed (tests/tools/replay.py --manifest) into the watched directory
of a daemon pushing to the test hub (every_save: each checkpoint under its own path). For every
`committed` line, the files of that checkpoint in the commit's tree must be exactly as many as its
`sealed` line counted, and each must hold the bytes of the manifest version that was complete when
it was sealed (SHA-256: the tree's LFS oid, or the file downloaded at that commit). Lightning: a
save is its epoch file and the last.ckpt written after it (files=2); every version of last.ckpt
the daemon saw is pushed once, with its save or (seen without one) alone, never coalesced.

The four daemons run side by side (one hub, one repo each) to stay well under a minute."""

import os
import re
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

SPEED = 0.2
QUIET_MS = 200
SETTLE_S = 1.0  # after the expected commits: time for a duplicate seal or commit to show up
LAST = "lightning_logs/version_0/checkpoints/last.ckpt"

# name -> (trace, {checkpoint: number of seals (lo, hi)}, speed)
# The trace's last Lightning save gets no last.ckpt (the folder had one: it waits for it, a
# minute), so it is sealed and pushed by the SIGTERM's drain: not waited for (lo 0).
LIGHTNING = {"lightning_logs/version_0/checkpoints/epoch=0-step=50.ckpt": (1, 1),
             "lightning_logs/version_0/checkpoints/epoch=1-step=100.ckpt": (1, 1),
             "lightning_logs/version_0/checkpoints/epoch=2-step=150.ckpt": (0, 1),
             LAST: (0, 1)}
LAYOUTS = {
    "dcp": ("torch-dcp-save.jsonl", {"step-100": (1, 1)}, SPEED),
    "sharded": ("hf-save-pretrained-sharded.jsonl", {"out": (1, 1)}, SPEED),
    "deepspeed": ("synthetic/deepspeed-save-checkpoint.jsonl",
                  {"global_step10": (1, 1), "global_step20": (1, 1)}, SPEED),
    "lightning": ("synthetic/lightning-model-checkpoint.jsonl", LIGHTNING, SPEED),
    "orbax": ("synthetic/orbax-save.jsonl", {"100/default": (1, 1), "200/default": (1, 1)},
              SPEED),
    "nemo": ("synthetic/nemo-unfinished-marker.jsonl",
             {"ckpts/megatron--step=100": (1, 1), "ckpts/megatron--step=200": (1, 1)}, SPEED),
    "torchsnapshot": ("synthetic/torchsnapshot-take.jsonl", {"snap-30": (1, 1)}, SPEED),
    "accelerate": ("synthetic/accelerate-save-state.jsonl",
                   {f"checkpoints/checkpoint_{i}": (1, 1) for i in range(3)}, SPEED),
    # No gaps: the folder may be listed half-way (a last.ckpt seen before any save is pushed
    # alone); epoch=0 is deleted at once and may never be seen.
    "lightning0": ("synthetic/lightning-model-checkpoint.jsonl",
                   dict(LIGHTNING, **{
                       "lightning_logs/version_0/checkpoints/epoch=0-step=50.ckpt": (0, 1)}), 0),
}


def version_at(manifest, path, t_unix):
    """The manifest version of `path` that was complete most recently at t_unix (log times are
    truncated to milliseconds: allow that much)."""
    best = None
    for v in manifest["files"].get(path, []):
        if manifest["started_at_unix"] + v["closed_at"] <= t_unix + 0.001:
            best = v
    return best


def coalesced_in(rule):
    m = re.search(r"(\d+) earlier versions? coalesced", rule or "")
    return int(m.group(1)) if m else 0


class Run:
    """One daemon, its watched directory, its repo and its replay's manifest."""

    def __init__(self, hub, name):
        self.name = name
        self.trace, self.expect, self.speed = LAYOUTS[name]
        root, self.watch = h.job_dir(f"ckpt-layout-{name}-")
        self.repo = f"{h.USER}/layout-{name}-{os.getpid()}"
        self.daemon = h.Daemon(self.watch, repo=self.repo, endpoint=hub.url, token=h.TOKEN,
                               args=["--quiet-ms", str(QUIET_MS)])
        self.manifest = None
        self.error = None

    def replay(self):
        try:
            self.manifest = h.replay(h.trace_path(self.trace), self.watch, speed=self.speed,
                                     seed=7)
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e

    def settled(self, timeout):
        """Wait for every expected seal, then for a commit (or a logged reason for none) per
        seal."""
        d = self.daemon
        for ckpt, (lo, _) in self.expect.items():
            if lo > 0:
                d.wait_event("sealed", timeout=timeout, ckpt=ckpt)
        deadline = time.monotonic() + timeout
        while True:
            want = len(d.events("sealed")) - len(d.events("superseded")) - \
                len(d.events("coalesced")) - len(d.events("skipped")) - \
                len(d.events("lost"))
            if len(d.events("committed")) >= want:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {want} commits expected\n{d.tail()}")
            time.sleep(0.1)


class LayoutPush(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()
        cls.runs = {n: Run(cls.hub, n) for n in LAYOUTS}
        for r in cls.runs.values():
            r.daemon.wait_event("ready", timeout=20)
        threads = [threading.Thread(target=r.replay) for r in cls.runs.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in cls.runs.values():
            if r.error is None:
                r.settled(30)
        time.sleep(SETTLE_S)
        cls.rcs = {n: r.daemon.stop(signal.SIGTERM, 30) for n, r in cls.runs.items()}

    @classmethod
    def tearDownClass(cls):
        for r in cls.runs.values():
            r.daemon.stop(signal.SIGKILL, 5)
        cls.hub.stop()

    def check_run(self, name):
        r = self.runs[name]
        d = r.daemon
        self.assertIsNone(r.error)
        # A checkpoint lost to rotation before any file of it was pinned (speed 0) is a
        # failure of the run: exit code 1 (README "Exit codes").
        self.assertEqual(self.rcs[name], 1 if d.events("lost") else 0, d.tail())
        self.assertEqual(d.events("push-failed"), [], d.tail())
        sealed = d.events("sealed")
        # A SIGTERM alone is a preemption: no 'End of training' commit (at most one, and only
        # after the checkpoints' commits).
        ends = [c for c in d.events("committed") if c["kv"].get("ckpt") == ""]
        committed = [c for c in d.events("committed") if c["kv"].get("ckpt") != ""]
        self.assertLessEqual(len(ends), 1, d.tail())
        # Each expected checkpoint sealed the expected number of times, nothing else sealed.
        names = [s["kv"].get("ckpt") for s in sealed]
        self.assertEqual(sorted(set(names) - set(r.expect)), [], d.tail())
        for ckpt, (lo, hi) in r.expect.items():
            self.assertTrue(lo <= names.count(ckpt) <= hi, f"'{ckpt}' sealed "
                            f"{names.count(ckpt)} times\n{d.tail()}")
        # One commit per seal, in seal order, unless the log says why not.
        dropped = {e["kv"].get("ckpt") for e in d.events("superseded") + d.events("coalesced")}
        self.assertEqual(dropped, set(), d.tail())  # every_save, one commit per hour is far
        # A checkpoint every file of which was deleted before it could be pinned (speed 0) has
        # nothing to push: the daemon says so once ('lost', counted as failed), no retry.
        lost = [e["kv"].get("ckpt") for e in d.events("lost")]
        for ckpt in lost:
            self.assertEqual(r.expect[ckpt][0], 0, f"'{ckpt}' lost\n{d.tail()}")
            self.assertTrue(all(v["deleted"] for v in r.manifest["files"][ckpt]))
        sealed = [s for s in sealed if s["kv"]["ckpt"] not in lost]
        self.assertEqual([c["kv"].get("ckpt") for c in committed],
                         [s["kv"]["ckpt"] for s in sealed], d.tail())
        commits = self.hub.commits(r.repo)
        self.assertEqual(len(commits), len(committed) + len(ends) + 1,
                         "plus the repo's initial commit")
        for seal, com in zip(sealed, committed):
            self.check_commit(r, seal, com)
        if ends:
            # The end commit keeps every checkpoint file as its last commit left it.
            last = self.hub.tree(r.repo, committed[-1]["kv"]["commit"])
            final = self.hub.tree(r.repo, ends[0]["kv"]["commit"])
            for path, entry in last.items():
                self.assertIn(path, final)
                self.assertEqual(final[path].get("oid"), entry.get("oid"), path)
        return sealed, committed

    def check_commit(self, r, seal, com):
        ckpt = seal["kv"]["ckpt"]
        commit = com["kv"].get("commit", "")
        self.assertRegex(commit, r"^[0-9a-f]{40}$", com["line"])
        tree = self.hub.tree(r.repo, commit)
        mine = sorted(p for p in tree if p == ckpt or p.startswith(ckpt + "/"))
        if seal["kv"].get("layout") == "lightning" and ckpt != LAST and seal["kv"]["files"] == "2":
            mine.append(LAST)  # the save's last.ckpt, beside its epoch file
        # a Lightning save pushes the files it could pin (each is a whole checkpoint)
        lost = len(r.daemon.events("file-lost", ckpt=ckpt))
        self.assertEqual(len(mine), int(seal["kv"]["files"]) - lost, f"{ckpt} at {commit}: {mine}")
        for path in mine:
            v = version_at(r.manifest, path, seal["time"])
            if path == LAST and r.speed == 0:
                # With no gaps the daemon reads the events after the fact: the pin froze the
                # version its save had, whichever the clock says was newest at the seal.
                v = next((x for x in r.manifest["files"][LAST] if "lfs" in tree[path] and
                          x["sha256"] == tree[path]["lfs"]["oid"]), v)
            self.assertIsNotNone(v, f"'{path}' had no complete version when '{ckpt}' sealed")
            entry = tree[path]
            self.assertEqual(entry["size"], v["size"], path)
            if "lfs" in entry:
                self.assertEqual(entry["lfs"]["oid"], v["sha256"], path)
            else:
                self.assertEqual(self.hub.sha256_at(r.repo, commit, path), v["sha256"], path)

    def test_dcp_folder(self):
        sealed, _ = self.check_run("dcp")
        self.assertEqual(sealed[0]["kv"]["layout"], "torch-dcp")

    def test_sharded_save_pretrained(self):
        sealed, committed = self.check_run("sharded")
        self.assertEqual(sealed[0]["kv"]["layout"], "model-dir")
        tree = self.hub.tree(self.runs["sharded"].repo, committed[0]["kv"]["commit"])
        shards = [p for p in tree if re.match(r"out/model-\d{5}-of-\d{5}\.safetensors$", p)]
        self.assertTrue(shards and "out/model.safetensors.index.json" in tree, sorted(tree))

    def test_deepspeed_global_steps(self):
        sealed, committed = self.check_run("deepspeed")
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"deepspeed"})
        # Each step's commit has its own folder; the step of the newer one is in its message.
        self.assertEqual(committed[1]["kv"].get("message"), "Training in progress, step 20")

    def test_orbax_steps(self):
        sealed, _ = self.check_run("orbax")
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"orbax"})

    def test_nemo_marker(self):
        sealed, _ = self.check_run("nemo")
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"nemo"})

    def test_torchsnapshot(self):
        sealed, _ = self.check_run("torchsnapshot")
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"torchsnapshot"})

    def test_accelerate_save_state(self):
        sealed, _ = self.check_run("accelerate")
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"accelerate"})

    def test_lightning_last_ckpt_versions(self):
        self.check_lightning("lightning")

    def test_lightning_last_ckpt_versions_no_gaps(self):
        self.check_lightning("lightning0")

    def check_lightning(self, name):
        r = self.runs[name]
        sealed, committed = self.check_run(name)
        self.assertEqual({s["kv"]["layout"] for s in sealed}, {"lightning"})
        versions = r.manifest["files"][LAST]
        self.assertEqual(len(versions), 2)  # the trace replaces last.ckpt once: two versions
        # the seals whose commit holds a version of last.ckpt: a save with it, or it alone
        seals = [s for s in sealed if s["kv"]["ckpt"] == LAST or s["kv"]["files"] == "2"]
        coms = [c for s, c in zip(sealed, committed) if s in seals]
        # Every version the daemon saw (it pins each one as it appears) is pushed once, never
        # coalesced. With recorded gaps it sees them all; with none, a version renamed in before
        # the daemon's watch on the new folder existed is invisible to inotify (the scan finds
        # only the newest).
        seen = len(r.daemon.events("pinned", file="last.ckpt"))
        self.assertTrue(1 <= seen <= len(versions), seen)
        if r.speed > 0:
            self.assertEqual(seen, len(versions))
            self.assertEqual([s["kv"]["files"] for s in sealed], ["2", "2", "1"])
        self.assertEqual(sum(coalesced_in(s["kv"].get("rule")) for s in sealed), 0)
        # (with no gaps a save listed just before its rotation is doubtful, never sealed: the
        # last.ckpt pinned with it is not pushed with it)
        if r.speed > 0 or not r.daemon.events("doubtful"):
            self.assertEqual(len(seals), seen, "\n".join(s["line"] for s in sealed))
        self.assertTrue(1 <= len(seals) <= seen, "\n".join(s["line"] for s in sealed))
        pushed = [self.hub.sha256_at(r.repo, c["kv"]["commit"], LAST) for c in coms]
        # With no gaps a version can be replaced before the daemon links it: its save's pin then
        # holds the next one (the same bytes twice, the later commit leaves that file as it is).
        if r.speed > 0:
            self.assertEqual(len(set(pushed)), len(pushed), "a version pushed twice")
        self.assertTrue(set(pushed) <= {v["sha256"] for v in versions}, pushed)
        self.assertEqual(pushed[-1], versions[-1]["sha256"], "the newest version was not pushed")
        if r.speed > 0:  # each save's own version: the one complete when it was sealed
            self.assertEqual(pushed, [version_at(r.manifest, LAST, s["time"])["sha256"]
                                      for s in seals])
        # titled with the epoch and step of the save
        titles = {c["kv"]["ckpt"]: c["kv"].get("message") for c in committed}
        self.assertEqual(titles.get("lightning_logs/version_0/checkpoints/epoch=1-step=100.ckpt"),
                         "Training in progress, epoch 1, step 100")
        # The rotated epoch=0 file was deleted on disk but reached the hub (when it was seen).
        gone = "lightning_logs/version_0/checkpoints/epoch=0-step=50.ckpt"
        self.assertTrue(r.manifest["files"][gone][0]["deleted"])
        if r.speed > 0 or (gone in [s["kv"]["ckpt"] for s in sealed] and
                           not r.daemon.events("file-lost", ckpt=gone)):
            self.assertIn(gone, self.hub.tree(r.repo, committed[-1]["kv"]["commit"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
