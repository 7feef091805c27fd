"""SIGTERM drains a real ``seqlens serve`` subprocess under load: health goes NOT_SERVING, every
call either completes or is refused with UNAVAILABLE before it starts (none is lost in flight),
and the process exits 0 well within ``drain_grace_s``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from seqlens_client._proto.seqlens.v1 import predict_pb2, service_pb2_grpc, types_pb2

from tests.factories import VOCAB, export_tiny

GRACE_S = 15.0
CALLERS = 8
# The drain refuses new calls itself (listener still open), so a refusal names the reason.
REFUSED = "server is shutting down; retry on another replica"


class Serve:
    """``seqlens serve`` on 127.0.0.1 with free ports, read from its JSON ready line."""

    def __init__(self, repository: Path, grace_s: float, **env_extra: str) -> None:
        env = {**os.environ, "SEQLENS_DRAIN_GRACE_S": str(grace_s), "SEQLENS_POLL_INTERVAL_S": "0",
               "SEQLENS_PREDICT_WORKERS": "1", "SEQLENS_LOG_JSON": "true", **env_extra}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve", "--model-repository", str(repository),
             "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, object]] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(300):  # liveness only: a loaded machine starts slowly
            self.proc.kill()
            raise AssertionError(f"no ready line; stderr: {self.lines}")
        ready = next(line for line in self.lines if str(line.get("msg", "")).startswith("seqlens ready"))
        self.port = int(ready["port"])  # type: ignore[call-overload]
        self.metrics_port = int(ready["metrics_port"])  # type: ignore[call-overload]
        assert self.port > 0 and self.metrics_port > 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"raw": raw.rstrip()}
            self.lines.append(line)
            if str(line.get("msg", "")).startswith("seqlens ready"):
                self._ready.set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    export_tiny(tmp_path / "repo", "slow", seed=1, hidden=128, emb=16, max_length=1024)
    return tmp_path / "repo"


@pytest.fixture
def serve(repo: Path) -> Iterator[Serve]:
    server = Serve(repo, GRACE_S)
    yield server
    server.stop()


def _inflight(server: Serve) -> float:
    """seqlens_inflight_requests{rpc="Predict"} from the server's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "seqlens_inflight_requests"
               for s in f.samples if s.labels.get("rpc") == "Predict")


@dataclass
class Outcome:
    started: float
    ended: float
    code: grpc.StatusCode
    details: str


def _request(seed: int, n: int = 1, length: int = 400) -> predict_pb2.PredictRequest:
    rng = np.random.default_rng(seed)
    return predict_pb2.PredictRequest(model_name="slow", inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=rng.integers(0, len(VOCAB), size=length).tolist()))
        for _ in range(n)])


def test_sigterm_under_load_loses_no_call(serve: Serve) -> None:
    outcomes: list[Outcome] = []
    statuses: list[int] = []

    async def caller(stub: service_pb2_grpc.SequenceExplainerServiceStub, k: int, stop_at: list[float]) -> None:
        i = 0
        while not stop_at or time.monotonic() < stop_at[0]:
            t0 = time.monotonic()
            try:
                await stub.Predict(_request(k * 1000 + i), timeout=GRACE_S)
                code, details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details() or ""
            outcomes.append(Outcome(t0, time.monotonic(), code, details))
            if code != grpc.StatusCode.OK:
                return  # refused: this replica is going away
            i += 1

    async def watch_health(channel: grpc.aio.Channel) -> None:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        async for msg in stream:
            statuses.append(msg.status)
            if msg.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                stream.cancel()  # a watch is an in-flight call too: let the drain finish early
                return

    async def main() -> float:
        async with grpc.aio.insecure_channel(serve.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            await stub.Predict(_request(0), timeout=30)  # connected and warm
            watcher = asyncio.ensure_future(watch_health(channel))
            stop_at: list[float] = []
            callers = [asyncio.ensure_future(caller(stub, k, stop_at)) for k in range(CALLERS)]
            await asyncio.sleep(0.5)  # under load
            sigterm_at = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            stop_at.append(sigterm_at + 5.0)
            await asyncio.wait_for(asyncio.gather(*callers), 30)
            await asyncio.wait_for(watcher, 10)
            return sigterm_at

    sigterm_at = asyncio.run(main())
    exit_code = serve.proc.wait(GRACE_S + 60)

    assert exit_code == 0
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING

    in_flight = [o for o in outcomes if o.started < sigterm_at < o.ended]
    assert in_flight, "no call was in flight at SIGTERM"
    for o in outcomes:
        if o.code == grpc.StatusCode.OK:
            continue
        assert (o.code, o.details) == (grpc.StatusCode.UNAVAILABLE, REFUSED)
    # calls under way when SIGTERM came completed; every caller was refused in the end
    assert any(o.code == grpc.StatusCode.OK for o in in_flight)
    assert sum(o.code == grpc.StatusCode.UNAVAILABLE for o in outcomes) == CALLERS

    msgs = [str(line.get("msg")) for line in serve.lines]
    assert "draining" in msgs and msgs[-1] == "stopped", msgs[-5:]
    draining = next(line for line in serve.lines if line.get("msg") == "draining")
    assert draining["grace_s"] == GRACE_S
    stopped = next(line for line in serve.lines if line.get("msg") == "stopped")
    assert stopped["unfinished"] == 0  # every in-flight call finished before the server stopped: none was cut


def test_the_drain_is_bounded_by_the_grace_period(repo: Path) -> None:
    grace = 0.5
    server = Serve(repo, grace)
    try:
        async def main() -> list[grpc.StatusCode]:
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
                await stub.Predict(_request(0), timeout=30)
                # seconds of work (tokenizing and ONNX Runtime): 6 calls x 128 sequences x 1000 steps
                calls = [stub.Predict(_request(i, n=128, length=1000), timeout=60) for i in range(6)]
                end = time.monotonic() + 20
                while await asyncio.to_thread(_inflight, server) < len(calls):  # all in the server
                    assert time.monotonic() < end
                    await asyncio.sleep(0.01)
                server.proc.send_signal(signal.SIGTERM)
                codes = []
                for call in calls:
                    try:
                        await call
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as err:
                        codes.append(err.code())
                return codes

        codes = asyncio.run(main())
        assert server.proc.wait(60) == 0
        assert grpc.StatusCode.OK not in codes[-2:]  # the tail of the queue was cut at the grace deadline
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        stopped = next(line for line in server.lines if line.get("msg") == "stopped")
        assert int(stopped["unfinished"]) >= 1  # type: ignore[call-overload]  # cut at the grace deadline
    finally:
        server.stop()


def test_sigint_drains_like_sigterm_and_the_token_never_reaches_the_logs(repo: Path) -> None:
    """README: SIGINT drains too; logs carry no bearer token, even of refused or failed calls."""
    token = "tok-" + "9f3c" * 8
    server = Serve(repo, GRACE_S, SEQLENS_AUTH_TOKEN=token)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            auth = [("authorization", f"Bearer {token}")]
            assert stub.Predict(_request(0, length=5), timeout=30, metadata=auth).predictions[0].label
            bad = predict_pb2.PredictRequest(model_name="nope", inputs=[types_pb2.SequenceInput(text="x")])
            with pytest.raises(grpc.RpcError):  # a failed call is logged ("rpc failed")
                stub.Predict(bad, timeout=30, metadata=auth)
            with pytest.raises(grpc.RpcError) as info:  # a wrong token is refused and logged
                stub.Predict(_request(0, length=5), timeout=30, metadata=[("authorization", f"Bearer {token}x")])
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(GRACE_S + 60) == 0
        server._reader.join(10)
    finally:
        server.stop()
    msgs = [str(line.get("msg")) for line in server.lines]
    assert "draining" in msgs and msgs[-1] == "stopped", msgs[-5:]
    assert any(line.get("code") == "NOT_FOUND" for line in server.lines)  # the failed call was logged
    assert all(token[4:] not in json.dumps(line) for line in server.lines)
