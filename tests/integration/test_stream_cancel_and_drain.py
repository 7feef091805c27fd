"""Against the real server (not scripted servicers): a cancelled StreamExplain frees its worker
and is counted as README says; a real drain turns every service's health NOT_SERVING and loses
no call; health checks and reflection are not counted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import export_tiny

TIMEOUT = 300.0  # a hang guard only: what is judged is the condition, never the time
SERVICES = ["", "seqlens.v1.SequenceExplainerService", "inference.GRPCInferenceService"]


def _until(condition: Callable[[], bool]) -> None:
    """Waits for a state of the server; the timeout only turns a hang into a failure."""
    end = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < end, "condition never reached (a hang)"
        time.sleep(0.005)


def _sample(srv: ServerThread, name: str, labels: dict[str, str]) -> float:
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


def _torch_runs(srv: ServerThread) -> float:
    return _sample(srv, "seqlens_model_runs_total", {"model": "m", "version": "1", "runtime": "torch"})


def _item(request_id: str, method: explain_pb2.AttributionMethod) -> explain_pb2.ExplainRequest:
    return explain_pb2.ExplainRequest(request_id=request_id, model_name="m", methods=[method],
                                      input=types_pb2.SequenceInput(text="the film was good , not dull"))


SLOW = explain_pb2.AttributionMethod(name="smoothgrad", n_samples=60_000)  # 60,000 one-row passes
QUICK = explain_pb2.AttributionMethod(name="saliency")


def test_a_cancelled_stream_frees_its_worker_and_is_counted(tmp_path: Path, start_server: Any) -> None:
    export_tiny(tmp_path / "repo", "m", seed=1)
    srv = start_server(tmp_path / "repo", explain_workers=1, gradient_chunk_elements=1, max_steps=100_000,
                       max_explain_work=10_000_000)
    labels = {"rpc": "StreamExplain", "model": "", "code": "CANCELLED"}
    cancelled_before = _sample(srv, "seqlens_requests_total", labels)
    with grpc.insecure_channel(srv.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        before = _torch_runs(srv)
        stub.Explain(_item("q0", QUICK), timeout=TIMEOUT)
        quick_runs = _torch_runs(srv) - before

        stream = stub.StreamExplain(iter([_item("slow", SLOW)]), timeout=TIMEOUT)
        started = _torch_runs(srv)
        _until(lambda: _torch_runs(srv) > started)  # the slow item holds the only worker
        stream.cancel()
        _until(lambda: _sample(srv, "seqlens_inflight_requests", {"rpc": "StreamExplain"}) == 0)
        at_cancel = _torch_runs(srv)
        answer = stub.Explain(_item("q1", QUICK), timeout=TIMEOUT)
        assert answer.request_id == "q1"
        # the slow item stopped at its chunk: only the quick explanation ran after the cancel
        assert quick_runs <= _torch_runs(srv) - at_cancel <= quick_runs + 1
    # README (Metrics): StreamExplain is counted with an empty model label
    _until(lambda: _sample(srv, "seqlens_requests_total", labels) == cancelled_before + 1)


def test_health_checks_and_reflection_are_not_counted(tmp_path: Path, start_server: Any) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    export_tiny(tmp_path / "repo", "m", seed=1)
    srv = start_server(tmp_path / "repo")

    def counted() -> float:
        return sum(s.value for m in srv.server.metrics.registry.collect() if m.name == "seqlens_requests"
                   for s in m.samples if s.name == "seqlens_requests_total")

    before = counted()
    with grpc.insecure_channel(srv.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in SERVICES:
            assert health.Check(health_pb2.HealthCheckRequest(service=service),
                                timeout=TIMEOUT).status == health_pb2.HealthCheckResponse.SERVING
        answers = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
        assert any(s.name == "seqlens.v1.SequenceExplainerService" for s in answers[0].list_services_response.service)
        assert counted() == before
        service_pb2_grpc.SequenceExplainerServiceStub(channel).Predict(predict_pb2.PredictRequest(
            model_name="m", inputs=[types_pb2.SequenceInput(text="good")]), timeout=TIMEOUT)
    assert counted() == before + 1  # the oracle does see an RPC that is counted


def test_a_real_drain_turns_every_service_not_serving_and_loses_no_call(tmp_path: Path) -> None:
    export_tiny(tmp_path / "repo", "m", seed=1, hidden=128, max_length=512)
    srv = ServerThread(tmp_path / "repo", poll_interval_s=0, predict_workers=1).__enter__()
    ids = types_pb2.TokenIds(ids=[2 + i % 15 for i in range(500)])
    request = predict_pb2.PredictRequest(model_name="m", inputs=[types_pb2.SequenceInput(token_ids=ids)] * 4)
    statuses: dict[str, list[int]] = {s: [] for s in SERVICES}

    async def watch(channel: grpc.aio.Channel, service: str) -> None:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        async for msg in stream:
            statuses[service].append(msg.status)
            if msg.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                stream.cancel()  # a watch is an in-flight call too: let the drain end
                return

    async def outcome(call: Any) -> tuple[grpc.StatusCode, str]:
        try:
            await call
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""

    async def main() -> tuple[list[tuple[grpc.StatusCode, str]], list[tuple[grpc.StatusCode, str]]]:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            await stub.Predict(request, timeout=TIMEOUT)
            watches = [asyncio.ensure_future(watch(channel, s)) for s in SERVICES]
            await asyncio.to_thread(_until, lambda: all(statuses.values()))  # each watch saw SERVING
            # the only worker is held, so the six calls are surely in flight when the drain starts
            gate = threading.Event()
            held = srv.server.dataplane.predict_pool.submit(gate.wait, TIMEOUT)
            try:
                in_flight = [asyncio.ensure_future(outcome(stub.Predict(request, timeout=TIMEOUT)))
                             for _ in range(6)]
                await asyncio.to_thread(
                    _until, lambda: _sample(srv, "seqlens_inflight_requests", {"rpc": "Predict"}) == 6)
                drained = asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(srv.server.drain(TIMEOUT), srv.loop))
                await asyncio.to_thread(_until, lambda: srv.server.dataplane.draining)
                late = [await outcome(stub.Predict(request, timeout=TIMEOUT)) for _ in range(2)]
            finally:
                gate.set()
                held.result()
            codes = list(await asyncio.gather(*in_flight))
            await asyncio.gather(*watches)
            await drained
            return codes, late

    try:
        codes, late = asyncio.run(main())
    finally:
        srv.__exit__(None, None, None)
    assert codes == [(grpc.StatusCode.OK, "")] * 6  # every call in flight at the drain was answered
    # new calls are refused by the server itself (its listener stays open through the quiet
    # period), for a retry elsewhere: not cut by a closed connection
    assert late == [(grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another replica")] * 2
    for service, seen in statuses.items():
        assert seen[0] == health_pb2.HealthCheckResponse.SERVING, service
        assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, service
    ok = _sample(srv, "seqlens_requests_total", {"rpc": "Predict", "model": "m", "code": "OK"})
    assert ok == 1 + 6  # the warm-up and the in-flight calls, all answered by the server
