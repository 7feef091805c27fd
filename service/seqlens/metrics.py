"""Prometheus metrics (names and labels fixed by DESIGN.md), on their own HTTP port.

Labels take few values: rpc, model, code, stage, method, version. No request data.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    PlatformCollector,
    start_http_server,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_DELTA_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0)


class Metrics:
    """One set of collectors on its own registry (so tests can run several servers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.request_duration = Histogram(
            "seqlens_request_duration_seconds", "RPC latency", ["rpc", "model", "code"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("seqlens_requests", "RPCs answered", ["rpc", "model", "code"], registry=r)
        self.inflight = Gauge("seqlens_inflight_requests", "RPCs in progress", ["rpc"], registry=r)
        self.stage_duration = Histogram(
            "seqlens_stage_duration_seconds", "Time per request stage", ["model", "stage"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("seqlens_batch_size", "Sequences per ONNX Runtime batch", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.relative_delta = Histogram(
            "seqlens_attribution_relative_delta", "|delta| / |f(x) - f(baseline)| of integral attributions",
            ["model", "method"], buckets=_DELTA_BUCKETS, registry=r)
        self.model_ready = Gauge("seqlens_model_ready", "1 when the version is READY", ["model", "version"],
                                 registry=r)
        self.model_load_seconds = Histogram(
            "seqlens_model_load_seconds", "Version load + parity check time", ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60), registry=r)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
