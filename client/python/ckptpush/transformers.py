"""A transformers TrainerCallback that tells ckptpushd about each checkpoint the Trainer saves,
with the commit title Trainer's own push would give it, and, at the end of training, asks for the
final push with the run's metrics and arguments.
Works without transformers installed (a duck-typed base class) and without a daemon running (one
warning; training goes on).

    from ckptpush.transformers import CkptpushCallback
    trainer = Trainer(..., callbacks=[CkptpushCallback(wait=True)])
"""

import os

from ._notifier import NotifierCallback

try:  # the real base class when transformers is importable
    from transformers import TrainerCallback as _Base
except Exception:  # noqa: BLE001 - any import failure means: no transformers
    class _Base:
        pass


def _metrics_from(state, extra=None):
    """Each key's last value over the log history, then the metrics passed to the hook."""
    merged = {}
    for entry in getattr(state, "log_history", None) or []:
        if isinstance(entry, dict):
            merged.update(entry)
    if extra:
        merged.update(extra)
    return merged


def _args_dict(args):
    to_dict = getattr(args, "to_dict", None)
    if callable(to_dict):
        try:
            return dict(to_dict())
        except Exception:  # noqa: BLE001
            pass
    try:
        return {k: v for k, v in vars(args).items() if not k.startswith("_")}
    except TypeError:
        return {}


def _strategy_name(strategy):
    """"epoch" of IntervalStrategy.EPOCH / SaveStrategy.EPOCH (str enums whose str() is not
    always the value) or of the plain string."""
    return str(getattr(strategy, "value", strategy) or "").lower()


def commit_title(args, state):
    """The title Trainer gives the commit of a checkpoint it pushes itself (_push_from_checkpoint):
    the epoch, cut to an integer as int() does, when it saves by epoch ("epoch", or "best", which
    Trainer titles the same way), else the step."""
    epoch = getattr(state, "epoch", None)
    by_epoch = _strategy_name(getattr(args, "save_strategy", None)) in ("epoch", "best")
    if by_epoch and epoch is not None:
        return f"Training in progress, epoch {int(epoch)}"
    return f"Training in progress, step {state.global_step}"


class CkptpushCallback(NotifierCallback, _Base):
    """socket_path / job: which daemon (default: the job named after args.output_dir, else the
    only daemon of this user). wait: on_train_end waits until the final commit is done (or
    wait_timeout seconds) and warns loudly when it failed."""

    def __init__(self, socket_path=None, job=None, wait=False, wait_timeout=None,
                 push_on_save=True, timeout=30.0):
        self._init_notifier(socket_path, job, wait, wait_timeout, timeout)
        self.push_on_save = push_on_save

    @staticmethod
    def _main_process(state):
        return getattr(state, "is_world_process_zero", True)

    def on_save(self, args, state, control, **kwargs):
        if not self.push_on_save or not self._main_process(state):
            return None
        out = getattr(args, "output_dir", None)
        if out is None:
            return None
        path = os.path.join(out, f"checkpoint-{state.global_step}")
        self.notifier.push(path, hint_dir=out, message=commit_title(args, state))
        return None

    def on_train_end(self, args, state, control, **kwargs):
        if not self._main_process(state):
            return None
        metrics = _metrics_from(state, kwargs.get("metrics"))
        self.notifier.final(metrics, _args_dict(args), self.wait, self.wait_timeout,
                            hint_dir=getattr(args, "output_dir", None))
        return None
