"""What the trainer callbacks share: talking to the daemon without ever raising into a training
loop. The daemon being absent is warned about once; a failed push, every time, loudly."""

import logging
import os
import warnings

from .client import Client, CkptpushError, DaemonNotRunning, Timeout

logger = logging.getLogger("ckptpush")


class CkptpushWarning(UserWarning):
    pass


class Notifier:
    def __init__(self, socket_path=None, job=None, timeout=30.0):
        self.socket_path = socket_path
        self.job = job
        self.timeout = timeout
        self._absent_warned = False
        self.pushed = []    # paths the daemon accepted
        self.failures = []  # (what, message)
        self.final_reply = None

    def _client(self, hint_dir):
        return Client(self.socket_path, self.job, self.timeout, hint_dir=hint_dir)

    def _loud(self, what, message):
        self.failures.append((what, message))
        text = f"ckptpush: {what} failed: {message}"
        logger.error(text)
        warnings.warn(text, CkptpushWarning, stacklevel=3)

    def call(self, what, hint_dir, fn):
        """Runs fn(client); returns its result or None. Never raises."""
        try:
            with self._client(hint_dir) as c:
                return fn(c)
        except DaemonNotRunning as e:
            if not self._absent_warned:
                self._absent_warned = True
                text = (f"ckptpush: daemon not reachable ({e.message}); checkpoints are not "
                        "being pushed by ckptpush")
                logger.warning(text)
                warnings.warn(text, CkptpushWarning, stacklevel=3)
            return None
        except Timeout as e:
            self._loud(what, f"no answer in time ({e.message})")
        except CkptpushError as e:
            self._loud(what, f"{e.message} ({e.code})")
        except Exception as e:  # never into the training loop
            self._loud(what, f"{type(e).__name__}: {e}")
        return None

    def push(self, path, hint_dir=None, message=None):
        path = os.path.abspath(path)
        r = self.call(f"push of '{path}'", hint_dir, lambda c: c.push(path, message=message))
        if r is not None:
            self.pushed.append(path)
            logger.info("ckptpush: queued '%s'", path)
        return r

    def final(self, metrics, hparams, wait, wait_timeout, hint_dir=None):
        def run(c):
            try:
                return c.final(metrics=metrics, hparams=hparams, wait=wait,
                               timeout=wait_timeout)
            except CkptpushError as e:
                if e.code == "too-large" and hparams is not None:
                    logger.warning("ckptpush: hyperparameters too large for one message, "
                                   "sending metrics only")
                    return c.final(metrics=metrics, hparams=None, wait=wait,
                                   timeout=wait_timeout)
                raise

        r = self.call("final push", hint_dir, run)
        self.final_reply = r
        if r is not None:
            if wait:
                logger.info("ckptpush: final push committed %s", r.get("commit"))
            else:
                logger.info("ckptpush: final push started")
        return r


class NotifierCallback:
    """What every trainer callback holds whatever its framework: the notifier, how the final push
    waits, and the pushed/failures record. Listed before the framework's base class."""

    def _init_notifier(self, socket_path, job, wait, wait_timeout, timeout):
        self.notifier = Notifier(socket_path, job, timeout)
        self.wait = wait
        self.wait_timeout = wait_timeout

    @property
    def pushed(self):
        return self.notifier.pushed

    @property
    def failures(self):
        return self.notifier.failures
