"""Builds and runs the grpc.aio server: our API, OIP v2, health, reflection, metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import service_pb2, service_pb2_grpc

from ..config import Settings
from ..dataplane import DataPlane
from ..metrics import Metrics
from ..registry import ModelRegistry
from ..repository import ModelRepository
from .auth import TokenStore
from .interceptors import AuthInterceptor, ErrorInterceptor
from .servicers import InferenceServicer, SequenceExplainerServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    service_pb2.DESCRIPTOR.services_by_name["SequenceExplainer"].full_name,
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


class SeqlensServer:
    """A running server; ``start`` binds and returns once models are loaded."""

    def __init__(self, settings: Settings, repository: Path) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(ModelRepository(repository), onnx_threads=settings.onnx_threads,
                                      parity_tolerance=settings.parity_tolerance)
        self.dataplane = DataPlane(self.registry, settings, self.metrics)
        self.registry.add_listener(self.dataplane.on_version_change)
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._stop_polling = threading.Event()
        self.port = 0
        self.metrics_port = 0
        self._stopped = asyncio.Event()

    def _known_model(self, name: str) -> bool:
        return any(r.name == name for r in self.registry.records())

    async def start(self) -> None:
        s = self.settings
        torch.set_num_threads(s.torch_threads)
        await asyncio.to_thread(self.registry.refresh)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        tokens = TokenStore(s.auth_token_file, s.auth_token)
        if tokens.enabled:
            interceptors.append(AuthInterceptor(tokens))
        interceptors.append(ErrorInterceptor(self.metrics, self._known_model))
        opts = [("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0)]
        server = grpc.aio.server(interceptors=interceptors, options=opts)
        service_pb2_grpc.add_SequenceExplainerServicer_to_server(SequenceExplainerServicer(self.dataplane), server)
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.dataplane), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        address = f"{s.host}:{s.port}"
        if s.tls_cert and s.tls_key:
            creds = grpc.ssl_server_credentials(
                [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())], root_certificates=_read(s.tls_client_ca),
                require_client_auth=s.tls_client_ca is not None)
            self.port = server.add_secure_port(address, creds)
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        await self._set_health(self.dataplane.ready())
        loop = asyncio.get_running_loop()
        self.registry.add_listener(
            lambda _rec: loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(self._set_health(self.dataplane.ready()))))
        if s.poll_interval_s > 0:
            threading.Thread(target=self.registry.poll_forever, args=(s.poll_interval_s, self._stop_polling),
                             name="seqlens-poll", daemon=True).start()

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def drain(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls with UNAVAILABLE, let in-flight calls finish."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace})
        self.dataplane.draining = True
        await self._set_health(False)
        self._stop_polling.set()
        await self._server.stop(grace)
        await self.dataplane.close()
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def run(settings: Settings, repository: Path) -> None:
    server = SeqlensServer(settings, repository)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.drain()))
    models = {r.name: r.state.value for r in server.registry.records()}
    log.info(f"seqlens ready: gRPC on {settings.host}:{server.port}, metrics on :{server.metrics_port}",
             extra={"port": server.port, "metrics_port": server.metrics_port, "repository": str(repository),
                    "models": models})
    await server.wait()
