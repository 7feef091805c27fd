"""A ``seqlens serve`` subprocess on loopback, for suites that kill, restart or load a real
server process (its own interpreter, so client threads never share the server's GIL)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``seqlens serve --model-repository <repo> --port <port> --metrics-port -1``.

    ``start`` returns once the server logged its ready line; stderr (JSON log lines) is
    collected in ``lines``. Settings beyond the flags go in ``env`` as ``SEQLENS_<NAME>``.
    """

    def __init__(self, repository: Path, port: int = 0, env: dict[str, str] | None = None) -> None:
        self.repository = repository
        self.port = port
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQLENS_")}
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve", "--model-repository", str(self.repository),
             "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", "-1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        ready = threading.Event()

        def read(stream) -> None:  # type: ignore[no-untyped-def]
            for line in stream:
                self.lines.append(line)
                if not ready.is_set() and "seqlens ready" in line:
                    self.port = int(json.loads(line)["port"])
                    ready.set()

        threading.Thread(target=read, args=(self.proc.stderr,), daemon=True).start()
        end = time.monotonic() + timeout_s
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("seqlens serve did not become ready:\n" + "".join(self.lines[-20:]))
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as when a node dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
