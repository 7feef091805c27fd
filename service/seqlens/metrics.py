"""Prometheus metrics (names and labels fixed by DESIGN.md), on their own HTTP port.

Labels take few values: rpc, model, code, stage, method, version, runtime. No request data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .runtimes.runs import RunCounts

# (model, version, its run counts) for every loaded version, read at each scrape
RunSource = Callable[[], Iterable[tuple[str, str, RunCounts]]]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_DELTA_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0)


class Metrics:
    """One set of collectors on its own registry (so tests can run several servers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http: WSGIServer | None = None
        r = self.registry
        # Process metrics: process_* (CPU, memory, fds), python_gc_*, python_info.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.request_duration = Histogram(
            "seqlens_request_duration_seconds", "RPC latency", ["rpc", "model", "code"],
            buckets=_LATENCY_BUCKETS, registry=r)
        # Exposed as seqlens_requests_total (prometheus_client adds the suffix to counters).
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
        # Exposed as seqlens_unconverged_attributions_total: answers whose delta missed the tolerance.
        self.unconverged = Counter(
            "seqlens_unconverged_attributions", "Attributions returned with converged = false",
            ["model", "method"], registry=r)
        self.model_ready = Gauge("seqlens_model_ready", "1 when the version is READY", ["model", "version"],
                                 registry=r)
        # A gauge, so that the series is exactly seqlens_model_load_seconds{model}.
        self.model_load_seconds = Gauge(
            "seqlens_model_load_seconds", "Seconds the latest load + parity check of the model took", ["model"],
            registry=r)
        # Stateful sequences (docs/stateful.md).
        self.live_sequences = Gauge("seqlens_live_sequences", "Server-held sequences alive", ["model"], registry=r)
        self.sequence_evictions = Counter(
            "seqlens_sequence_evictions", "Server-held sequences dropped before their end, by reason "
            "(idle, version, shutdown)", ["model", "reason"], registry=r)
        self.sequence_state_bytes = Gauge("seqlens_sequence_state_bytes", "Bytes of state held for live sequences",
                                          registry=r)
        self.chunk_duration = Histogram(
            "seqlens_chunk_duration_seconds", "Time to run one chunk of a sequence (mode: client- or server-held)",
            ["model", "mode"], buckets=_LATENCY_BUCKETS, registry=r)

    def count_model_runs(self, source: RunSource) -> None:
        """Export ``seqlens_model_runs_total{model,version,runtime}`` from ``source``."""
        self.registry.register(_ModelRuns(source))

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server (its own thread); returns the bound port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _ModelRuns(Collector):
    """ONNX Runtime and torch runs per loaded version, read from the versions at scrape time."""

    def __init__(self, source: RunSource) -> None:
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("seqlens_model_runs", "Model runs per version and runtime (load checks included)",
                                     labels=["model", "version", "runtime"])
        for model, version, counts in self._source():
            for runtime, n in counts.snapshot().items():
                family.add_metric([model, version, runtime], n)
        yield family
