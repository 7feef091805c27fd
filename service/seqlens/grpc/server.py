"""Builds and runs the grpc.aio server: our API, OIP v2, health, reflection, metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from seqlens_client.stubs import oip_pb2 as oip
from seqlens_client.stubs import oip_pb2_grpc as oip_grpc
from seqlens_client.stubs import service_pb2, service_pb2_grpc

from ..config import Settings
from ..dataplane import DataPlane
from ..metrics import Metrics
from ..registry import ModelRegistry, VersionRecord
from ..repository import ModelRepository
from ..runtimes.replay import ReplayLimits
from ..summaries import state_projection
from ..workers import WorkerLink
from .auth import TlsFiles, TokenStore
from .interceptors import AuthInterceptor, ErrorInterceptor
from .servicers import InferenceServicer, SequenceExplainerServicer

log = logging.getLogger(__name__)

LIVENESS = "liveness"  # health name for startup/liveness probes
_STOP_GRACE_S = 0.2  # after the drain: for open health watches to see NOT_SERVING

SERVICE_NAMES = (
    service_pb2.DESCRIPTOR.services_by_name["SequenceExplainerService"].full_name,
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


class SeqlensServer:
    """A running server; ``start`` binds and returns once models are loaded."""

    def __init__(self, settings: Settings, repository: Path) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(ModelRepository(repository), onnx_threads=settings.onnx_threads,
                                      parity_tolerance=settings.parity_tolerance,
                                      graph_limits=ReplayLimits(
                                          max_nodes=settings.graph_max_nodes,
                                          max_initializer_bytes=settings.graph_max_initializer_bytes,
                                          max_depth=settings.graph_max_depth,
                                          max_loop_iterations=settings.graph_max_loop_iterations),
                                      load_hooks=[state_projection])
        self.dataplane = DataPlane(self.registry, settings, self.metrics)
        self.registry.add_listener(self.dataplane.on_version_change)
        self._model_names: frozenset[str] = frozenset()
        self.registry.add_listener(self._on_version_change)
        self.metrics.count_model_runs(
            lambda: [(r.name, r.version, r.loaded.runs) for r in self.registry.records() if r.loaded is not None])
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._stop_polling = threading.Event()
        self.port = 0
        self.metrics_port = 0
        self.health_port = 0
        self._health_server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._drain_task: asyncio.Future[None] | None = None
        # error mapping, metrics, request ids; refuses new calls while draining, counts in-flight ones
        self._calls = ErrorInterceptor(self.metrics, self._known_model, lambda: self.dataplane.draining)

    def _known_model(self, name: str) -> bool:
        return name in self._model_names

    def _on_version_change(self, _rec: VersionRecord) -> None:
        """Registry listener (loading thread): the model names that may appear in metric labels."""
        self._model_names = frozenset(r.name for r in self.registry.records())

    async def start(self, before_bind: Callable[[], None] | None = None) -> None:
        """Load the models, then (after ``before_bind``, run in a thread) bind and serve."""
        s = self.settings
        torch.set_num_threads(s.torch_threads)
        await asyncio.to_thread(self.registry.refresh)
        if before_bind is not None:  # a worker process waits here until every worker has loaded
            await asyncio.to_thread(before_bind)
        # The call interceptor runs first so that refused tokens are counted and timed too.
        interceptors: list[grpc.aio.ServerInterceptor] = [self._calls]
        tokens = TokenStore(s.auth_token_file, s.auth_token)
        if tokens.enabled:
            interceptors.append(AuthInterceptor(tokens))
        opts: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            # Several processes may share the port (the kernel spreads connections): docs/performance.md.
            ("grpc.so_reuseport", 1 if s.reuse_port else 0),
            # Accept the SDK's keepalive pings (every 30 s or more, also between calls).
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        ]
        if s.max_connection_age_s > 0:
            opts += [("grpc.max_connection_age_ms", int(s.max_connection_age_s * 1000)),
                     ("grpc.max_connection_age_grace_ms", int(s.drain_grace_s * 1000))]
        server = grpc.aio.server(interceptors=interceptors, options=opts)
        service_pb2_grpc.add_SequenceExplainerServiceServicer_to_server(SequenceExplainerServicer(self.dataplane), server)
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.dataplane), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        address = f"{s.host}:{s.port}"
        tls = TlsFiles.from_settings(s.tls_cert, s.tls_key, s.tls_client_ca)  # validated; rotated files reload
        if tls is not None:
            self.port = server.add_secure_port(address, tls.credentials())
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        if s.health_port >= 0:
            self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if s.reuse_port else 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{s.host}:{s.health_port}")
            await self._health_server.start()
        # "liveness": SERVING while the process answers, whatever the models do (probes that
        # restart the pod must not fire while an empty repository is polled).
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        await self._set_health(self.dataplane.ready())
        loop = asyncio.get_running_loop()

        def on_change(_rec: VersionRecord) -> None:  # in the loading thread: hop to the loop
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._set_health(self.dataplane.ready())))

        self.registry.add_listener(on_change)
        if s.poll_interval_s > 0:
            threading.Thread(target=self.registry.poll_forever, args=(s.poll_interval_s, self._stop_polling),
                             name="seqlens-poll", daemon=True).start()

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop gracefully within ``grace_s`` (default ``Settings.drain_grace_s``). Idempotent: a
        second SIGTERM waits for the same drain.

        1. Health goes NOT_SERVING (probes and load balancers stop sending) and new calls are
           refused with UNAVAILABLE before they start (clients retry on another replica),
           while the listener stays open.
        2. In-flight calls finish (queued predictions included), and the drain waits until no
           call has arrived for ``Settings.drain_quiet_s``: grpc cancels calls it has accepted
           but not yet handed to the server when it stops, so stopping while calls are in
           transit would cut them instead of refusing them.
        3. The gRPC server stops; calls still running at the grace deadline are cancelled.
        """
        if self._server is None:
            return
        if self._drain_task is None:
            grace = self.settings.drain_grace_s if grace_s is None else grace_s
            self._drain_task = asyncio.ensure_future(self._drain(self._server, grace))
        await asyncio.shield(self._drain_task)

    async def _drain(self, server: grpc.aio.Server, grace: float) -> None:
        deadline = time.monotonic() + grace
        quiet = self.settings.drain_quiet_s
        self.dataplane.draining = True
        self.dataplane.streaming.close()  # open sequence streams end after their in-flight chunk
        await self.health.enter_graceful_shutdown()  # NOT_SERVING everywhere, and it stays so
        self._stop_polling.set()
        log.info("draining", extra={"grace_s": grace, "inflight": self._calls.active})
        calls = self._calls
        while time.monotonic() < deadline and (calls.active > 0 or time.monotonic() - calls.last_arrival < quiet):
            await asyncio.sleep(0.005)
        # Left now: open health watches, or calls past the grace deadline (cancelled by stop).
        unfinished = calls.active
        await server.stop(max(0.0, min(_STOP_GRACE_S, deadline - time.monotonic())))
        if self._health_server is not None:
            await self._health_server.stop(0)
        await self.dataplane.close()
        self.metrics.stop()
        self._stopped.set()
        log.info("stopped", extra={"unfinished": unfinished})

    async def wait(self) -> None:
        await self._stopped.wait()


async def run(settings: Settings, repository: Path, link: WorkerLink | None = None) -> None:
    """``seqlens serve``: start, log one ready line (JSON fields port, metrics_port), drain on SIGTERM.
    As one of several workers (``link``), the supervisor logs the ready line instead."""
    TlsFiles.from_settings(settings.tls_cert, settings.tls_key, settings.tls_client_ca)  # fail before loading
    server = SeqlensServer(settings, repository)
    await server.start(link.loaded_then_wait if link is not None else None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.drain()))
    if link is not None:
        link.ready(server.metrics_port)
        log.info("worker ready", extra={"port": server.port, "metrics_port": server.metrics_port})
        await server.wait()
        return
    models = {f"{r.name}/{r.version}": r.state.value for r in server.registry.records()}
    log.info(f"seqlens ready: gRPC on {settings.host}:{server.port}, metrics on :{server.metrics_port}",
             extra={"port": server.port, "metrics_port": server.metrics_port, "repository": str(repository),
                    "models": models})
    await server.wait()
