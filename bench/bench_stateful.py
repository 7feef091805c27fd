"""Stateful chunks vs stateless Predict, side by side: medians of alternating A/B rounds.

    .venv/bin/python bench/bench_stateful.py [--rounds 5] [--seconds 1.0] [--sequences 64]

``seqlens serve`` runs in a subprocess on 127.0.0.1 with a random LSTM (embedding 64, hidden 64,
8,000 words; the size of the demo ``sentiment`` model); this process drives it.
- latency, one caller (grpc's blocking client): p50/p99 of a one-step chunk on a live
  server-held sequence (over the ``StreamSequence`` stream, and over unary ``Predict`` with a
  sequence id), of a one-step chunk with a client-held state (``Predict`` with ``states``), and of
  a stateless batch-1 ``Predict`` of the same one token (A). Target: chunk p50 <= A + 0.3 ms.
- in process, the runtimes alone (why chunks run on ``stateful.onnx``): a batch-1 one-token
  ``model.onnx`` run, a one-step chunk on ``stateful.onnx``, and on the torch module.
- throughput: 64 concurrent sequences feeding one-step chunks (server-held) with unary
  ``Predict`` calls (the same calls as A plus a sequence id), and over one stream each, vs 64
  concurrent callers sending the same one-token Predicts without state (A).
Rounds alternate A and B; a ratio is the ratio of the per-round medians' median.
The load generator shares the machine's cores with the server (as a co-located client would).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from seqlens_client._proto.seqlens.v1 import (
    predict_pb2,
    recurrent_pb2,
    sequence_pb2,
    service_pb2_grpc,
    types_pb2,
)

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import MODEL, Server, make_repository, pct

VOCAB = 8000


def token(i: int) -> types_pb2.SequenceInput:
    return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2 + i % (VOCAB - 2)]))


def stateless(i: int) -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(model_name=MODEL, inputs=[token(i)])


def chunk(seq_id: str, i: int, start: bool = False) -> sequence_pb2.StreamSequenceRequest:
    return sequence_pb2.StreamSequenceRequest(model_name=MODEL, input=token(i), sequence=recurrent_pb2.SequenceControl(
        string_id=seq_id, start=start))


def unary_chunk(seq_id: str, i: int, start: bool = False) -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(model_name=MODEL, inputs=[token(i)], sequence=recurrent_pb2.SequenceControl(
        string_id=seq_id, start=start))


class Stream:
    """A blocking StreamSequence call fed one request at a time."""

    def __init__(self, stub: service_pb2_grpc.SequenceExplainerServiceStub) -> None:
        self._next: list[sequence_pb2.StreamSequenceRequest] = []
        self._ready = threading.Semaphore(0)
        self._done = False
        self._call = stub.StreamSequence(self._requests())

    def _requests(self) -> Iterator[sequence_pb2.StreamSequenceRequest]:
        while True:
            self._ready.acquire()
            if self._done:
                return
            yield self._next.pop()

    def send(self, req: sequence_pb2.StreamSequenceRequest) -> sequence_pb2.StreamSequenceResponse:
        self._next.append(req)
        self._ready.release()
        resp = next(self._call)
        if resp.HasField("error"):
            raise RuntimeError(resp.error.message)
        return resp

    def close(self) -> None:
        self._done = True
        self._ready.release()
        for _ in self._call:
            pass


def timed(fn: Callable[[int], object], seconds: float) -> list[float]:
    out: list[float] = []
    stop = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
        i += 1
    return out


def latencies(target: str, seconds: float) -> dict[str, list[float]]:
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        stream = Stream(stub)
        stream.send(chunk("lat-stream", 0, start=True))
        stub.Predict(unary_chunk("lat-unary", 0, start=True))
        state = stub.Predict(predict_pb2.PredictRequest(model_name=MODEL, inputs=[token(0)], return_state=True)
                             ).predictions[0].state
        stub.Predict(stateless(0))

        def client_held(i: int) -> None:
            nonlocal state
            req = predict_pb2.PredictRequest(model_name=MODEL, inputs=[token(i)], states=[state])
            state = stub.Predict(req).predictions[0].state

        out = {
            "predict": timed(lambda i: stub.Predict(stateless(i)), seconds),
            "stream": timed(lambda i: stream.send(chunk("lat-stream", i)), seconds),
            "unary": timed(lambda i: stub.Predict(unary_chunk("lat-unary", i)), seconds),
            "client": timed(client_held, seconds),
        }
        stream.close()
    return out


async def throughput(target: str, n: int, seconds: float, mode: str, round_no: int) -> float:
    """Chunks (or Predicts) per second from ``n`` concurrent sequences (or callers)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        done = 0
        stop = 0.0

        async def sequence(k: int) -> None:
            nonlocal done
            call = stub.StreamSequence()
            seq_id = f"tp-{round_no}-{k}"
            await call.write(chunk(seq_id, k, start=True))
            await call.read()
            i = k
            while time.perf_counter() < stop:
                await call.write(chunk(seq_id, i))
                await call.read()
                done += 1
                i += n
            await call.write(sequence_pb2.StreamSequenceRequest(
                model_name=MODEL, sequence=recurrent_pb2.SequenceControl(string_id=seq_id, end=True)))
            await call.read()
            await call.done_writing()

        async def caller(k: int) -> None:
            nonlocal done
            await stub.Predict(stateless(k))
            i = k
            while time.perf_counter() < stop:
                await stub.Predict(stateless(i))
                done += 1
                i += n

        async def unary(k: int) -> None:
            nonlocal done
            seq_id = f"tpu-{round_no}-{k}"
            await stub.Predict(unary_chunk(seq_id, k, start=True))
            i = k
            while time.perf_counter() < stop:
                await stub.Predict(unary_chunk(seq_id, i))
                done += 1
                i += n
            await stub.Predict(predict_pb2.PredictRequest(model_name=MODEL, sequence=recurrent_pb2.SequenceControl(
                string_id=seq_id, end=True)))

        stop = time.perf_counter() + seconds
        start = time.perf_counter()
        loop = {"stream": sequence, "unary": unary, "predict": caller}[mode]
        await asyncio.gather(*(loop(k) for k in range(n)))
        return done / (time.perf_counter() - start)


def runtimes(version_dir: Path, seconds: float) -> dict[str, list[float]]:
    import numpy as np
    import torch
    from seqlens.carry import Chunk, run_chunks, zero_state
    from seqlens.versions import load_version

    torch.set_num_threads(1)  # as the server sets it
    loaded = load_version(version_dir, MODEL, "1")
    x, one, state = np.array([5], dtype=np.int64), np.array([1], dtype=np.int64), zero_state(loaded)
    return {"onnx": timed(lambda i: loaded.onnx.run(x[None], one), seconds),
            "stateful": timed(lambda i: run_chunks(loaded, [Chunk(x, state)]), seconds),
            "torch": timed(lambda i: run_chunks(loaded, [Chunk(x, state)], torch_only=True), seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sequences", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqlens-bench-") as tmp:
        model = make_repository(Path(tmp), None)
        server = Server(Path(tmp), {})
        try:
            rounds: list[dict[str, list[float]]] = []
            local: list[dict[str, list[float]]] = []
            modes = ["predict", "unary", "stream"]
            tput: dict[str, list[float]] = {m: [] for m in modes}
            for r in range(args.rounds):
                rounds.append(latencies(server.target, args.seconds))
                local.append(runtimes(Path(tmp) / MODEL / "1", args.seconds / 2))
                for mode in (modes if r % 2 == 0 else modes[::-1]):
                    tput[mode].append(asyncio.run(throughput(server.target, args.sequences, args.seconds, mode, r)))
        finally:
            server.stop()

    def med(kind: str, q: float, source: list[dict[str, list[float]]] = rounds) -> float:
        return statistics.median(pct(rd[kind], q) for rd in source) * 1000

    print(f"model: {model}; {args.rounds} rounds of {args.seconds:g} s; one-token inputs")
    print("| call (one caller, blocking client) | p50 ms | p99 ms | p50 - Predict p50 |")
    print("| --- | --- | --- | --- |")
    base = med("predict", 50)
    names = {"predict": "stateless batch-1 Predict (A)", "stream": "one-step chunk, server-held, stream",
             "unary": "one-step chunk, server-held, unary Predict", "client": "one-step chunk, client-held state"}
    for kind, label in names.items():
        p50 = med(kind, 50)
        print(f"| {label} | {p50:.3f} | {med(kind, 99):.3f} | {p50 - base:+.3f} ms |")
    print("\n| in process, one token, batch 1 | p50 ms | vs model.onnx |\n| --- | --- | --- |")
    base = med("onnx", 50, local)
    for kind, label in (("onnx", "model.onnx run (no state)"), ("stateful", "one-step chunk on stateful.onnx"),
                        ("torch", "one-step chunk on the torch module")):
        print(f"| {label} | {med(kind, 50, local):.3f} | {med(kind, 50, local) / base:.2f}x |")
    a = statistics.median(tput["predict"])
    print(f"\n| {args.sequences} concurrent callers, one token a call | calls/s | vs A |\n| --- | --- | --- |")
    print(f"| stateless batch-1 Predict (A) | {a:,.0f} | 1.00x |")
    for mode, label in (("unary", "server-held sequences, unary Predict chunks"),
                        ("stream", "server-held sequences, one StreamSequence each")):
        b = statistics.median(tput[mode])
        print(f"| {label} | {b:,.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
