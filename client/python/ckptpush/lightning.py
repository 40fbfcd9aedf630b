"""A Lightning Callback that tells ckptpushd about each checkpoint Lightning writes and, at the
end of training, asks for the final push with trainer.callback_metrics and pl_module.hparams.
Uses lightning.pytorch or pytorch_lightning when importable, a duck-typed base otherwise; never
raises into training when the daemon is absent (one warning).

on_save_checkpoint runs before Lightning writes the file, so the path is pushed at the next hook
(batch, epoch, validation or train end), once the file exists, titled with the epoch and step of
the save ("Training in progress, epoch E, step S", as the daemon titles a save whose file name
carries them; this also titles a last.ckpt saved alone, or files named by a template of your own).
"""

import os

from ._notifier import NotifierCallback

try:
    from lightning.pytorch import Callback as _Base
except Exception:  # noqa: BLE001
    try:
        from pytorch_lightning import Callback as _Base
    except Exception:  # noqa: BLE001
        class _Base:
            pass


def _candidate_paths(trainer):
    cbs = list(getattr(trainer, "checkpoint_callbacks", None) or [])
    single = getattr(trainer, "checkpoint_callback", None)
    if single is not None and single not in cbs:
        cbs.append(single)
    for cb in cbs:
        for attr in ("_last_checkpoint_saved", "last_model_path", "best_model_path"):
            p = getattr(cb, attr, None)
            if p:
                yield os.fspath(p)


class CkptpushCallback(NotifierCallback, _Base):
    def __init__(self, socket_path=None, job=None, wait=False, wait_timeout=None,
                 timeout=30.0):
        self._init_notifier(socket_path, job, wait, wait_timeout, timeout)
        self._pending = False
        self._seen = {}  # path -> mtime_ns pushed
        self._title = None  # the commit title of the latest save

    @staticmethod
    def _main_process(trainer):
        return getattr(trainer, "is_global_zero", True)

    def _push_written(self, trainer):
        if not self._pending or not self._main_process(trainer):
            return
        waiting = False
        for path in _candidate_paths(trainer):
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                waiting = True  # not written yet
                continue
            if self._seen.get(path) == mtime:
                continue
            self._seen[path] = mtime
            self.notifier.push(path, hint_dir=getattr(trainer, "default_root_dir", None),
                               message=self._title)
        self._pending = waiting

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._pending = True
        epoch = getattr(trainer, "current_epoch", None)
        step = getattr(trainer, "global_step", None)
        if isinstance(epoch, int) and isinstance(step, int):
            self._title = f"Training in progress, epoch {epoch}, step {step}"

    def on_train_batch_start(self, trainer, pl_module, *args, **kwargs):
        self._push_written(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._push_written(trainer)

    def on_validation_start(self, trainer, pl_module):
        self._push_written(trainer)

    def on_train_end(self, trainer, pl_module):
        if not self._main_process(trainer):
            return
        self._push_written(trainer)
        metrics = dict(getattr(trainer, "callback_metrics", None) or {})
        hp = getattr(pl_module, "hparams", None)
        try:
            hparams = dict(hp) if hp is not None else None
        except (TypeError, ValueError):
            hparams = None
        self.notifier.final(metrics, hparams, self.wait, self.wait_timeout,
                            hint_dir=getattr(trainer, "default_root_dir", None))
