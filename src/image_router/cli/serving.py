"""How `serve` runs uvicorn: one process or a supervisor with N workers, a graceful stop on
SIGTERM, and the metrics directory the workers share.

SIGTERM (a deploy, systemd stop, a container's stop): every worker stops accepting
connections, answers `/ready` with 503, lets its requests finish for up to
SHUTDOWN_DRAIN_S, cuts off the generations still running then (their holds released) and
exits 0. With several workers the supervisor closes its copy of the listening socket first:
a socket still open in the supervisor would keep accepting connections into the kernel's
backlog, where nobody would ever answer them; closed everywhere, new connections are
refused at once and a load balancer moves on.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import shutil
import signal
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

# What uvicorn's backstop adds to the drain: the cut-off generations need a moment to give
# their holds back (one short transaction each) and to answer their clients.
RELEASE_GRACE_S = 10.0


def uvicorn_grace_s(drain_s: float) -> int:
    return math.ceil(drain_s + RELEASE_GRACE_S)


class _Supervisor(Multiprocess):
    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()  # new connections are refused from now on (see the module doc)
        super().terminate_all()


def run(config: uvicorn.Config) -> None:
    """`uvicorn.run` for a prepared config, with the supervisor above for N workers."""
    if config.workers > 1:
        sock = config.bind_socket()
        _Supervisor(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(config)
    # uvicorn raises SIGTERM again once it has shut down, under the handler it found: a
    # no-op here, so a drained server exits 0 (a stop, not a crash).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE


def prepare_metrics_dir(configured: str | None) -> Path:
    """The directory the workers' metric files go to, empty: the operator's
    PROMETHEUS_MULTIPROC_DIR (emptied: files from an earlier run would be added in), else
    a private temporary one, removed when `serve` exits."""
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="image-router-metrics-"))
    atexit.register(_remove, path)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)
