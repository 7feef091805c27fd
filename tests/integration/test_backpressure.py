"""Backpressure through a real server with a small queue and one worker: a flood beyond the
queue is refused with RESOURCE_EXHAUSTED (naming the limit) before any queued work runs, and
every admitted call succeeds; a short deadline on a queued prediction returns
DEADLINE_EXCEEDED, its sequences leave the queue and never reach ONNX Runtime; cancelled calls
leave the queue too. On the gradient side: a short deadline stops a long explanation (its torch
runs stop) and frees its worker, and predictions are answered while explanations run.

No wall-clock bounds: "at once" is judged by order of events. The only worker is held by a
gate (a job in the server's own prediction pool) while the flood arrives, so a refusal that
waited for the worker could not come back before the gate opens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny

QUEUE = 6
BUSY = 6  # long single-sequence calls: one runs, five wait (the queue holds QUEUE)
LONG = 300  # timesteps
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "slow", seed=1, hidden=512, emb=32, max_length=4096)
    with ServerThread(root, poll_interval_s=0, predict_workers=1, batch_max_size=2, batch_max_queue=QUEUE,
                      batch_max_delay_ms=0.0) as srv:
        yield srv


def _request(length: int, seed: int) -> predict_pb2.PredictRequest:
    ids = np.random.default_rng(seed).integers(0, len(VOCAB), size=length)
    return predict_pb2.PredictRequest(model_name="slow", inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=ids.tolist()))])


def _sequences_run(server: ServerThread) -> float:
    return server.server.metrics.registry.get_sample_value("seqlens_batch_size_sum", {"model": "slow"}) or 0.0


def _requests(server: ServerThread, code: str) -> float:
    return server.server.metrics.registry.get_sample_value(
        "seqlens_requests_total", {"rpc": "Predict", "model": "slow", "code": code}) or 0.0


def _inflight(server: ServerThread) -> float:
    return server.server.metrics.registry.get_sample_value("seqlens_inflight_requests", {"rpc": "Predict"}) or 0.0


def _pending(server: ServerThread) -> int:
    return sum(b.pending for b in server.server.dataplane.batchers())


async def _until(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Waits for a state of the server; the timeout only turns a hang into a failure."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition never reached (a hang)"
        await asyncio.sleep(0.002)


async def _outcome(call: grpc.aio.UnaryUnaryCall) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


class _Gate:
    """Holds the server's only prediction worker until opened (a job in its own pool)."""

    def __init__(self, server: ServerThread) -> None:
        self._open = threading.Event()
        self._job = server.server.dataplane.predict_pool.submit(self._open.wait, TIMEOUT)

    def open(self) -> None:
        self._open.set()
        self._job.result()


def test_a_flood_beyond_the_queue_is_refused_before_any_queued_work_and_nothing_else_fails(
        server: ServerThread) -> None:
    flood = 40

    async def main() -> tuple[list[tuple[grpc.StatusCode, str]], list[tuple[grpc.StatusCode, str]], float]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            await stub.Predict(_request(3, 0), timeout=TIMEOUT)  # warm up the channel and the batcher
            ran_before = _sequences_run(server)
            gate = _Gate(server)
            try:
                calls = [asyncio.ensure_future(_outcome(stub.Predict(_request(LONG, i), timeout=TIMEOUT)))
                         for i in range(flood)]
                # every call is answered or admitted, and the queue is full
                await _until(lambda: sum(c.done() for c in calls) + _inflight(server) == flood
                             and _pending(server) == QUEUE)
                early = [c.result() for c in calls if c.done()]
                ran_early = _sequences_run(server) - ran_before
            finally:
                gate.open()
            return early, list(await asyncio.gather(*calls)), ran_early

    early, results, ran_early = asyncio.run(main())
    assert ran_early == 0  # the gate held the worker: nothing ran before the refusals came back
    assert early and all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in early), early
    assert all(f"batch_max_queue={QUEUE}" in details for _, details in early)
    codes = [code for code, _ in results]
    # admitted: the queue, plus the batch the batcher handed to the held worker (1 or 2 sequences)
    assert codes.count(grpc.StatusCode.OK) in (QUEUE + 1, QUEUE + 2), codes
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == len(early) == flood - codes.count(grpc.StatusCode.OK)
    assert _pending(server) == 0


def test_a_short_deadline_on_a_queued_prediction_frees_its_place(server: ServerThread) -> None:
    async def main() -> tuple[list[tuple[grpc.StatusCode, str]], tuple[grpc.StatusCode, str], float]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            await stub.Predict(_request(3, 0), timeout=TIMEOUT)
            ran_before = _sequences_run(server)
            gate = _Gate(server)
            try:
                # one call handed to the held worker, the others queued behind it
                busy = [asyncio.ensure_future(_outcome(stub.Predict(_request(LONG, 100 + i), timeout=TIMEOUT)))
                        for i in range(BUSY)]
                await _until(lambda: _inflight(server) == BUSY and _pending(server) == BUSY - 1)
                # queued behind the gate: it can only expire there
                late = await _outcome(stub.Predict(_request(LONG, 200), timeout=0.3))
                await _until(lambda: _inflight(server) == BUSY)  # the server saw the cancellation
                assert _pending(server) == BUSY - 1  # the expired sequence left the queue
            finally:
                gate.open()
            done = list(await asyncio.gather(*busy))
            quick = await _outcome(stub.Predict(_request(3, 1), timeout=TIMEOUT))  # the worker serves again
            return [*done, quick], late, _sequences_run(server) - ran_before

    before = _requests(server, "DEADLINE_EXCEEDED")
    results, late, ran = asyncio.run(main())
    assert late[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [code for code, _ in results] == [grpc.StatusCode.OK] * (BUSY + 1)
    assert ran == BUSY + 1  # the busy ones and the quick one: the expired request never reached ONNX Runtime
    # counted when the server saw the call before it expired (grpc drops it earlier on a busy VM)
    assert _requests(server, "DEADLINE_EXCEEDED") in (before, before + 1)


def test_cancelled_calls_leave_the_queue(server: ServerThread) -> None:
    async def main() -> tuple[list[tuple[grpc.StatusCode, str]], float]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            await stub.Predict(_request(3, 0), timeout=TIMEOUT)
            ran_before = _sequences_run(server)
            gate = _Gate(server)
            try:
                busy = [asyncio.ensure_future(_outcome(stub.Predict(_request(LONG, 300 + i), timeout=TIMEOUT)))
                        for i in range(2)]
                await _until(lambda: _inflight(server) == 2)
                doomed = [stub.Predict(_request(LONG, 400 + i), timeout=TIMEOUT) for i in range(3)]
                await _until(lambda: _inflight(server) == 5)  # all five calls are in the server
                for call in doomed:
                    call.cancel()
                await _until(lambda: _inflight(server) == 2)
                # the doomed ones left the queue; the busy ones are at the worker or queued
                assert _pending(server) <= 1
            finally:
                gate.open()
            done = list(await asyncio.gather(*busy))
            return done, _sequences_run(server) - ran_before

    before = _requests(server, "CANCELLED")
    done, ran = asyncio.run(main())
    assert [code for code, _ in done] == [grpc.StatusCode.OK] * 2
    assert ran == 2  # the cancelled calls never reached ONNX Runtime
    asyncio.run(_until(lambda: _requests(server, "CANCELLED") == before + 3))  # recorded when grpc tells the server
    assert _pending(server) == 0


# --- the gradient side: explanations ---------------------------------------------------------------
@pytest.fixture(scope="module")
def explain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "words", seed=2, hidden=64, emb=32, max_length=1024)
    # one gradient worker; small chunks so that a stopped explanation stops soon
    with ServerThread(root, poll_interval_s=0, explain_workers=1, gradient_chunk_elements=200_000) as srv:
        yield srv


def _explain(n_steps: int, length: int = 400) -> explain_pb2.ExplainRequest:
    ids = np.random.default_rng(length).integers(0, len(VOCAB), size=length).tolist()
    # A Riemann rule: Gauss-Legendre nodes for large n cost a (cached) eigenproblem up front.
    return explain_pb2.ExplainRequest(
        model_name="words", input=types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=ids)),
        methods=[explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=n_steps,
                                               quadrature=explain_pb2.QUADRATURE_RIEMANN_MIDDLE)])


def _torch_runs(server: ServerThread) -> float:
    return server.server.metrics.registry.get_sample_value(
        "seqlens_model_runs_total", {"model": "words", "version": "1", "runtime": "torch"}) or 0.0


def test_a_short_deadline_stops_a_long_explanation_and_frees_the_worker(explain_server: ServerThread) -> None:
    """After the deadline the long explanation runs at most its chunk in progress (torch runs
    stop), and the only worker serves the next explanation."""
    with grpc.insecure_channel(explain_server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        before = _torch_runs(explain_server)
        stub.Explain(_explain(4, length=20), timeout=TIMEOUT)
        quick_runs = _torch_runs(explain_server) - before  # the same quick explanation, measured alone
        with pytest.raises(grpc.RpcError) as info:
            stub.Explain(_explain(1024), timeout=0.3)  # seconds of gradient work
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        at_deadline = _torch_runs(explain_server)
        stub.Explain(_explain(4, length=20), timeout=TIMEOUT)  # queued behind the stopping job, if any
        # the quick one's runs, plus at most the chunk (or two: client and server deadlines differ
        # by the transit) the long job was in when its deadline passed; a job that ran on would add ~70
        assert quick_runs <= _torch_runs(explain_server) - at_deadline <= quick_runs + 2


def test_predictions_are_answered_while_explanations_run(explain_server: ServerThread) -> None:
    async def main() -> int:
        async with grpc.aio.insecure_channel(explain_server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            predict = predict_pb2.PredictRequest(model_name="words", inputs=[
                types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2, 3, 4, 5]))])
            await stub.Predict(predict, timeout=TIMEOUT)
            explanations = [stub.Explain(_explain(256), timeout=TIMEOUT) for _ in range(2)]
            started = _torch_runs(explain_server)
            await _until(lambda: _torch_runs(explain_server) > started)  # gradient work is going on
            for _ in range(20):
                await stub.Predict(predict, timeout=TIMEOUT)
            busy = sum(not call.done() for call in explanations)
            for call in explanations:
                call.cancel()
            return busy

    # all 20 predictions were answered before the explanations finished: not queued behind them
    assert asyncio.run(main()) >= 1
