"""Bulk explanations over StreamExplain, against a scripted server that answers slowly and out
of order: at most ``concurrency`` requests are in flight, results come back in input order
(explain_many) or as they finish (explain_iter), one bad item fails only itself, progress is
reported per item, and errors in the caller's own input iterator reach the caller."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from seqlens_client import AsyncClient, Client, Explanation, InvalidArgument, NotFound, SeqlensError
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, service_pb2_grpc, types_pb2
from seqlens_client.tensors import from_numpy


class StreamServer(service_pb2_grpc.SequenceExplainerServiceServicer):
    """Reads requests as fast as the client sends them and answers one every ``pace_s``, newest
    first. The attribution of text ``s`` is ``[len(s)]``; text "bad" gets an item error."""

    def __init__(self, pace_s: float) -> None:
        self.pace_s = pace_s
        self.max_in_flight = 0
        self.received = 0

    def StreamExplain(self, request_iterator: Iterator[explain_pb2.ExplainRequest], context: Any
                      ) -> Iterator[explain_pb2.ExplainResponse]:
        pending: queue.LifoQueue[explain_pb2.ExplainRequest | None] = queue.LifoQueue()
        lock = threading.Lock()
        in_flight = 0

        def read() -> None:
            nonlocal in_flight
            try:
                for req in request_iterator:
                    with lock:
                        in_flight += 1
                        self.received += 1
                        self.max_in_flight = max(self.max_in_flight, in_flight)
                    pending.put(req)
            except grpc.RpcError:  # the client cancelled the stream
                pass
            pending.put(None)

        threading.Thread(target=read, daemon=True).start()
        done_reading = False
        while True:
            time.sleep(self.pace_s)
            req = pending.get()
            if req is None:
                done_reading = True
                if pending.empty():
                    return
                continue
            with lock:
                in_flight -= 1
            yield self._answer(req)
            if done_reading and pending.empty():
                return

    @staticmethod
    def _answer(req: explain_pb2.ExplainRequest) -> explain_pb2.ExplainResponse:
        if req.input.text == "bad":
            return explain_pb2.ExplainResponse(
                request_id=req.request_id,
                error=types_pb2.ItemError(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad item"))
        score = float(len(req.input.text) or len(req.input.token_ids.ids))
        return explain_pb2.ExplainResponse(
            request_id=req.request_id, model_name=req.model_name, model_version="1",
            prediction=predict_pb2.Prediction(scores=from_numpy(np.array([score], dtype=np.float32))),
            attributions=[explain_pb2.Attribution(method=m.name, scores=from_numpy(np.array([score], np.float32)))
                          for m in req.methods])

    def GetModel(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, "scripted server has no model info")


@pytest.fixture
def stream_server() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(pace_s: float = 0.01) -> tuple[StreamServer, str]:
        servicer = StreamServer(pace_s)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_SequenceExplainerServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


TEXTS = [f"text number {'x' * i}" for i in range(12)]


def _score(e: Explanation | SeqlensError) -> float:
    assert isinstance(e, Explanation)
    return float(e.attributions["saliency"].scores[0])


def test_bounded_concurrency_order_and_progress(stream_server: Any) -> None:
    srv, target = stream_server(pace_s=0.02)
    seen: list[tuple[int, int | None]] = []
    with Client(target) as c:
        out = c.explain_many("m", TEXTS, "saliency", concurrency=3, progress=lambda d, t: seen.append((d, t)))
    assert srv.max_in_flight == 3  # the bound was reached and never exceeded
    assert [_score(e) for e in out] == [float(len(t)) for t in TEXTS]  # input order despite LIFO answers
    assert out[0].text == TEXTS[0]  # the input is echoed for reports
    assert seen == [(i, len(TEXTS)) for i in range(1, len(TEXTS) + 1)]


def test_iter_yields_as_finished_and_item_errors_do_not_stop_the_stream(stream_server: Any) -> None:
    srv, target = stream_server()
    items = ["aa", "bad", [1, 2, 3], "bbbb", {"not": "an input"}, "c"]
    with Client(target) as c:
        got = dict(c.explain_iter("m", iter(items), "saliency", concurrency=2))  # an iterator: total unknown
        assert sorted(got) == list(range(len(items)))
        assert isinstance(got[1], InvalidArgument) and got[1].message == "bad item"
        assert isinstance(got[4], InvalidArgument) and "expected text" in got[4].message  # caught locally
        assert [_score(got[i]) for i in (0, 2, 3, 5)] == [2.0, 3.0, 4.0, 1.0]
        assert srv.received == 5  # the malformed item was never sent
        with pytest.raises(InvalidArgument, match="bad item"):
            c.explain_many("m", items[:3], "saliency")
        mixed = c.explain_many("m", items[:3], "saliency", return_errors=True)
        assert isinstance(mixed[1], SeqlensError) and _score(mixed[2]) == 3.0


def test_caller_iterator_errors_reach_the_caller(stream_server: Any) -> None:
    _, target = stream_server()

    def inputs() -> Iterator[str]:
        yield "one"
        yield "two"
        raise RuntimeError("disk went away")

    with Client(target) as c, pytest.raises(RuntimeError, match="disk went away"):
        list(c.explain_iter("m", inputs(), "saliency"))


def test_breaking_out_early_cancels_the_stream(stream_server: Any) -> None:
    srv, target = stream_server(pace_s=0.05)
    with Client(target) as c:
        for _index, _result in c.explain_iter("m", TEXTS * 10, "saliency", concurrency=2):
            break
        assert srv.received < len(TEXTS) * 10


def test_async_explain_many(stream_server: Any) -> None:
    srv, target = stream_server(pace_s=0.02)

    async def numbers() -> Any:
        for t in TEXTS[:6]:
            yield t

    async def run() -> tuple[list[float], list[float], list[int]]:
        async with AsyncClient(target) as c:
            ordered = await c.explain_many("m", TEXTS, "saliency", concurrency=4)
            from_async_iter = await c.explain_many("m", numbers(), "saliency", concurrency=2)
            finished = [i async for i, _ in c.explain_iter("m", TEXTS[:5], "saliency", concurrency=5)]
            with pytest.raises(InvalidArgument, match="bad item"):
                await c.explain_many("m", ["a", "bad"], "saliency")
            return [_score(e) for e in ordered], [_score(e) for e in from_async_iter], finished

    ordered, from_async, finished = asyncio.run(run())
    assert ordered == [float(len(t)) for t in TEXTS] and srv.max_in_flight <= 5
    assert from_async == [float(len(t)) for t in TEXTS[:6]]
    assert sorted(finished) == list(range(5)) and finished != list(range(5))  # LIFO: as they finish


def test_stream_errors_raise_sdk_exceptions(stream_server: Any) -> None:
    _, target = stream_server()
    with Client(target) as c, pytest.raises(NotFound):
        c.get_model("m")
    with Client("127.0.0.1:1", retry=None) as c, pytest.raises(SeqlensError) as e:
        c.explain_many("m", ["a"], "saliency")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
