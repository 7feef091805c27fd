"""``seqlens serve`` with several worker processes sharing the gRPC port (SO_REUSEPORT).

The supervisor (this module) never imports grpc or torch: it reserves the port, starts the
workers as fresh ``seqlens serve`` interpreters (a fork of a process that already ran torch or
OpenMP is not safe), and talks to each over a pipe:

1. worker -> ``loaded``: its models are loaded; it waits before binding;
2. supervisor -> ``go`` once every worker has loaded, so that no client or probe ever sees a
   partly started set (health answers only once every process can serve);
3. worker -> ``ready <metrics port>``: bound and serving.

Then the supervisor logs the ready line, serves one merged /metrics (metrics_merge.py), forwards
SIGTERM/SIGINT so that every worker runs its own drain (in-flight calls finish, new ones get
UNAVAILABLE), and exits once all have. A worker that dies stops the others: the orchestrator
restarts the pod. Workers die with the supervisor (PR_SET_PDEATHSIG). docs/performance.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .config import Settings
from .cpus import available_cpus

log = logging.getLogger(__name__)

WORKER_PIPE_ENV = "SEQLENS_WORKER_PIPE"  # "<read fd>,<write fd>" in a worker: talk to the supervisor
CPUS_PER_WORKER = 2  # an event loop and an ONNX Runtime worker; on 2 CPUs a second process measured no gain


def default_workers() -> int:
    """One process per CPUS_PER_WORKER CPUs this container may use (cgroup quota aware)."""
    return max(1, available_cpus() // CPUS_PER_WORKER)


# --- in a worker --------------------------------------------------------------------------
class WorkerLink:
    """A worker's end of the supervisor pipes (None outside workers)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read = os.fdopen(read_fd, "rb", buffering=0)
        self._write = os.fdopen(write_fd, "wb", buffering=0)

    @classmethod
    def from_env(cls) -> WorkerLink | None:
        raw = os.environ.get(WORKER_PIPE_ENV)
        if not raw:
            return None
        read_fd, write_fd = (int(v) for v in raw.split(","))
        _die_with_parent()
        return cls(read_fd, write_fd)

    def loaded_then_wait(self) -> None:
        """Say the models are loaded; block until every worker has (the supervisor says go)."""
        self._write.write(b"loaded\n")
        if self._read.readline().strip() != b"go":
            raise SystemExit("the seqlens supervisor went away before starting the workers")

    def ready(self, metrics_port: int) -> None:
        self._write.write(f"ready {metrics_port}\n".encode())


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a drain, as if the pod were stopping
    if os.getppid() == 1:  # the supervisor died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


# --- the supervisor -----------------------------------------------------------------------
@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (never listen) a SO_REUSEPORT socket so that the port stays ours while the
    workers bind it too; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


class _Worker:
    def __init__(self, index: int, env: dict[str, str]) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve"],
            env={**env, WORKER_PIPE_ENV: f"{to_worker_r},{from_worker_w}"},
            pass_fds=(to_worker_r, from_worker_w))
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.to_worker: IO[bytes] = os.fdopen(to_worker_w, "wb", buffering=0)
        self.from_worker: IO[bytes] = os.fdopen(from_worker_r, "rb", buffering=0)
        self.metrics_port = -1

    def expect(self, word: str) -> list[str]:
        line = self.from_worker.readline().decode().split()
        if not line or line[0] != word:
            raise RuntimeError(f"worker {self.index} exited before it was {word}")
        return line[1:]


def _worker_env(settings: Settings, port: int) -> dict[str, str]:
    """Every setting as SEQLENS_<NAME>, so that workers see what the supervisor was given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQLENS_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"SEQLENS_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update({"SEQLENS_PORT": str(port), "SEQLENS_REUSE_PORT": "true", "SEQLENS_WORKERS": "1",
                "SEQLENS_METRICS_PORT": "0" if settings.metrics_port >= 0 else "-1"})
    return env


def serve_workers(settings: Settings, repository: Path, count: int) -> int:
    """Run ``count`` worker processes on one port until SIGTERM/SIGINT; the exit status."""
    from .metrics_merge import merged_registry

    stopping = threading.Event()
    with reserve_port(settings.host, settings.port) as port:
        env = _worker_env(settings.model_copy(update={"model_repository": repository}), port)
        workers = [_Worker(i, env) for i in range(count)]

        def forward(signum: int, _frame: object) -> None:
            stopping.set()
            for w in workers:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        try:
            for w in workers:
                w.expect("loaded")
            for w in workers:
                w.to_worker.write(b"go\n")
            for w in workers:
                w.metrics_port = int(w.expect("ready")[0])
        except (RuntimeError, OSError, ValueError) as exc:
            log.error("workers failed to start", extra={"error": str(exc)})
            forward(signal.SIGTERM, None)
            for w in workers:
                w.proc.wait()
            return 1
        scrape = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        urls = [f"http://{scrape}:{w.metrics_port}/metrics" for w in workers if w.metrics_port > 0]
        metrics_port, http = -1, None
        if settings.metrics_port >= 0:
            from prometheus_client import start_http_server

            http, _thread = start_http_server(settings.metrics_port, addr=settings.host,
                                              registry=merged_registry(lambda: urls))
            metrics_port = int(http.server_port)
        log.info(f"seqlens ready: gRPC on {settings.host}:{port} ({count} workers), metrics on :{metrics_port}",
                 extra={"port": port, "metrics_port": metrics_port, "workers": count,
                        "repository": str(repository)})
        status = _wait(workers, stopping)
        if http is not None:
            http.shutdown()
            http.server_close()
        log.info("stopped", extra={"workers": count})
        return status


def _wait(workers: list[_Worker], stopping: threading.Event) -> int:
    """Until every worker exited; one that exits on its own stops the others."""
    status = 0
    left = {w.proc.pid: w for w in workers}
    while left:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        worker = left.pop(pid, None)
        if worker is None:
            continue
        code = os.waitstatus_to_exitcode(raw)
        worker.proc.returncode = code
        if not stopping.is_set():
            log.error("worker exited unexpectedly; stopping the others", extra={"worker": worker.index, "code": code})
            stopping.set()
            status = 1
            for other in left.values():
                with contextlib.suppress(ProcessLookupError):
                    other.proc.send_signal(signal.SIGTERM)
        elif code != 0:
            status = 1
    return status
