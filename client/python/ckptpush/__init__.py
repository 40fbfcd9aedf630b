"""Talk to a running ckptpushd over its control socket (standard library only).

    from ckptpush import Client
    with Client(job="my-run") as c:
        print(c.status())

Trainer integrations: ``ckptpush.transformers.CkptpushCallback`` and
``ckptpush.lightning.CkptpushCallback``. Resuming from the Hub:
``ckptpush.restore.restore(repo_id, dest)`` or ``python3 -m ckptpush restore``.
"""

from .client import (  # noqa: F401
    PROTOCOL_VERSION,
    Client,
    CkptpushError,
    DaemonNotRunning,
    OperationFailed,
    ProtocolError,
    Timeout,
    default_socket_path,
    find_socket,
    job_name,
    socket_dir,
)

__version__ = "0.1.0"
