"""What the benches share: ``seqlens serve`` in a subprocess on a free loopback port, reached
through a raw stub (``.stub``) or the SDK (``.client``), ready once ``ListModels`` answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from seqlens_client import Client
from seqlens_client.stubs import models_pb2, service_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``seqlens serve`` over ``repository``; ``env`` adds settings (e.g. SEQLENS_EXPLAIN_WORKERS)."""

    def __init__(self, repository: Path, env: dict[str, str] | None = None, start_timeout: float = 180) -> None:
        self.port = free_port()
        full_env = {**os.environ, "SEQLENS_POLL_INTERVAL_S": "0", "SEQLENS_LOG_LEVEL": "WARNING", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve", "--model-repository", str(repository),
             "--port", str(self.port), "--metrics-port", "-1"], env=full_env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        target = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = service_pb2_grpc.SequenceExplainerServiceStub(self.channel)
        self.client = Client(target, timeout=600)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                self.stub.ListModels(models_pb2.ListModelsRequest(), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("seqlens serve did not start") from None
                time.sleep(0.2)

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(30)
