"""The trainer callbacks of client/python with duck-typed Trainer / Lightning objects (neither
transformers nor Lightning is needed): with no daemon they warn once and never raise; against a
real ckptpushd (with --socket) they push the checkpoint just written (the transformers one with
the commit title Trainer would give it: "Training in progress, epoch N" when saving by epoch),
send final with metrics and hyperparameters, and warn loudly when a push failed."""

import enum
import json
import os
import signal
import sys
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ckpt_harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SOURCE_DIR, "client", "python"))
from ckptpush import Client  # noqa: E402
from ckptpush import lightning as ck_lightning  # noqa: E402
from ckptpush import transformers as ck_transformers  # noqa: E402
from ckptpush._notifier import CkptpushWarning  # noqa: E402

QUIET_MS = 200


class Args:
    """What the callback reads of transformers.TrainingArguments."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.learning_rate = 5e-5
        self.num_train_epochs = 3

    def to_dict(self):
        return {"output_dir": self.output_dir, "learning_rate": self.learning_rate,
                "num_train_epochs": self.num_train_epochs}


class SaveStrategy(str, enum.Enum):
    """transformers' SaveStrategy / IntervalStrategy: a str enum whose str() is not its value."""

    STEPS = "steps"
    EPOCH = "epoch"


class State:
    def __init__(self, step, epoch=None):
        self.global_step = step
        self.epoch = epoch
        self.is_world_process_zero = True
        self.log_history = [{"loss": 2.0, "step": 5}, {"loss": 1.5, "step": step},
                            {"eval_loss": 1.7, "step": step}]


class Tensor:
    def __init__(self, v):
        self.v = v

    def item(self):
        return self.v


class CheckpointCallback:
    def __init__(self):
        self.last_model_path = ""
        self.best_model_path = ""


class Trainer:
    def __init__(self, root):
        self.default_root_dir = root
        self.is_global_zero = True
        self.checkpoint_callback = CheckpointCallback()
        self.checkpoint_callbacks = [self.checkpoint_callback]
        self.callback_metrics = {"val_loss": Tensor(0.5), "nan": float("nan")}
        self.current_epoch = 0
        self.global_step = 7


class Module:
    hparams = {"lr": 1e-3, "layers": 2}


def write_checkpoint(path, step):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(os.urandom(4096) + step.to_bytes(4, "little"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"step": step}, f)
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step}, f)


class NoDaemon(unittest.TestCase):
    def test_warn_once_never_raise(self):
        sock = os.path.join(h.tempdir("ckpt-nosock-"), "none.sock")
        out = h.tempdir("ckpt-out-")
        write_checkpoint(os.path.join(out, "checkpoint-1"), 1)
        for make, drive in (
                (lambda: ck_transformers.CkptpushCallback(socket_path=sock, wait=True),
                 lambda cb: (cb.on_save(Args(out), State(1), None),
                             cb.on_save(Args(out), State(1), None),
                             cb.on_train_end(Args(out), State(1), None))),
                (lambda: ck_lightning.CkptpushCallback(socket_path=sock, wait=True),
                 lambda cb: (cb.on_save_checkpoint(Trainer(out), Module(), {}),
                             cb.on_train_batch_start(Trainer(out), Module(), None, 0),
                             cb.on_train_end(Trainer(out), Module())))):
            cb = make()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                drive(cb)
            mine = [w for w in caught if issubclass(w.category, CkptpushWarning)]
            self.assertEqual(len(mine), 1, [str(w.message) for w in caught])
            self.assertIn("not reachable", str(mine[0].message))
            self.assertEqual(cb.pushed, [])


class CommitTitle(unittest.TestCase):
    """The title Trainer's own push would give the checkpoint (trainer.py _push_from_checkpoint:
    the step under "steps", else int(state.epoch))."""

    def title(self, strategy, step, epoch):
        args = Args("/out")
        if strategy is not None:
            args.save_strategy = strategy
        return ck_transformers.commit_title(args, State(step, epoch))

    def test_titles(self):
        for strategy in (SaveStrategy.EPOCH, "epoch", "best"):
            self.assertEqual(self.title(strategy, 500, 2.0), "Training in progress, epoch 2")
        # int() cuts, as Trainer's does: a save just before the epoch ends is the epoch before
        self.assertEqual(self.title("epoch", 499, 2.9999), "Training in progress, epoch 2")
        for strategy in (SaveStrategy.STEPS, "steps", None):
            self.assertEqual(self.title(strategy, 500, 2.0), "Training in progress, step 500")
        self.assertEqual(self.title("epoch", 500, None), "Training in progress, step 500")


class WithDaemon(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = h.Hub()
        root, cls.watch = h.job_dir("ckpt-cb-")
        cls.repo = f"{h.USER}/callbacks-{os.getpid()}"
        cls.daemon, cls.sock = h.socket_daemon(cls.watch, cls.repo, cls.hub, QUIET_MS)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop(signal.SIGTERM, 30)
        cls.hub.stop()

    def test_0_transformers_epoch_title(self):
        cb = ck_transformers.CkptpushCallback(socket_path=self.sock)
        args = Args(self.watch)
        args.save_strategy = SaveStrategy.EPOCH
        ckpt = os.path.join(self.watch, "checkpoint-40")
        with Client(socket_path=self.sock) as c:
            # Paused, the checkpoint waits after the push seals it, whatever the watcher's timing.
            c.pause()
            write_checkpoint(ckpt, 40)
            cb.on_save(args, State(40, epoch=2.0), None)
            c.resume()
        self.assertEqual(cb.failures, [])
        self.assertEqual(cb.pushed, [ckpt])
        title = "Training in progress, epoch 2"
        self.daemon.wait_event("push-message", timeout=10, ckpt="checkpoint-40", message=title)
        done = self.daemon.wait_event("committed", timeout=30, ckpt="checkpoint-40")
        self.assertEqual(done[0]["kv"].get("message"), title)
        titles = [h.commit_title(c) for c in self.hub.commits(self.repo)]
        self.assertEqual(titles[0], title)

    def test_1_transformers(self):
        cb = ck_transformers.CkptpushCallback(socket_path=self.sock, wait=True,
                                              wait_timeout=60)
        ckpt = os.path.join(self.watch, "checkpoint-10")
        write_checkpoint(ckpt, 10)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cb.on_save(Args(self.watch), State(10), None)
            cb.on_train_end(Args(self.watch), State(10), None)
        self.assertEqual([str(w.message) for w in caught
                          if issubclass(w.category, CkptpushWarning)], [])
        self.assertEqual(cb.pushed, [ckpt])
        self.daemon.wait_event("push-requested", timeout=10, path=ckpt)
        self.assertRegex((cb.notifier.final_reply or {}).get("commit") or "", r"^[0-9a-f]{40}$")
        self.daemon.wait_event("final", timeout=10)
        tree = self.hub.tree(self.repo)
        self.assertTrue(any(p.endswith("model.safetensors") for p in tree), sorted(tree))

    def test_2_lightning_and_failed_push(self):
        out = h.tempdir("ckpt-pl-")  # outside the watched tree: only the callback pushes it
        trainer = Trainer(out)
        cb = ck_lightning.CkptpushCallback(socket_path=self.sock, wait=True, wait_timeout=60)
        path = os.path.join(out, "epoch=0-step=7.ckpt")
        cb.on_save_checkpoint(trainer, Module(), {})
        trainer.checkpoint_callback.last_model_path = path
        cb.on_train_batch_start(trainer, Module(), None, 0)  # not written yet: nothing
        self.assertEqual(cb.pushed, [])
        with open(path, "wb") as f:
            f.write(os.urandom(2048))
        # Every commit is refused from now on: the push fails, final --wait reports it.
        self.hub.request("POST", "/_admin/faults", token=None,
                         body={"route": "commit", "count": 20, "status": 422})
        cb.on_train_batch_start(trainer, Module(), None, 1)
        self.assertEqual(cb.pushed, [path])
        # titled with the save's epoch and step, as the daemon titles a Lightning save
        self.daemon.wait_event("push-message", timeout=10,
                               message="Training in progress, epoch 0, step 7")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cb.on_train_end(trainer, Module())
        loud = [str(w.message) for w in caught if issubclass(w.category, CkptpushWarning)]
        self.hub.request("DELETE", "/_admin/faults", token=None)
        self.assertEqual(len(loud), 1, loud)
        self.assertIn("final push failed", loud[0])
        self.assertEqual(cb.failures[0][0], "final push")


if __name__ == "__main__":
    unittest.main(verbosity=2)
