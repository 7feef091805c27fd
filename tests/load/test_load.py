"""Load: 32 concurrent callers mix Predict, ModelInfer and Explain against a ``seqlens serve``
process for a bounded time. Every answer must equal its unloaded oracle (in-process ONNX
Runtime for forward outputs; the same explanation asked alone for Explain), every deliberate
error must get its status, and nothing else may fail. Latency percentiles are printed.

``SEQLENS_LOAD_SECONDS`` (default 12) sets the duration.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import numpy as np
import pytest
from seqlens import load_model
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.factories import VOCAB, export_tiny
from tests.fault.process import ServeProcess

CALLERS = 32
DURATION_S = float(os.environ.get("SEQLENS_LOAD_SECONDS", "12"))
CALL_TIMEOUT_S = 20.0
MIX = (("Predict", 0.5), ("ModelInfer", 0.3), ("Explain", 0.15), ("deliberate error", 0.05))


@dataclass
class Case:
    """One request and how to check its answer."""

    rpc: str
    request: object
    check: Callable[[object], None]
    expect: grpc.StatusCode = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "words", seed=1, hidden=16, emb=8)
    export_tiny(root, "series", seed=2, tokens=False, cell="gru", layers=2, hidden=16)
    export_tiny(root, "tagger", seed=3, task="tagging", bidirectional=True)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServeProcess]:
    with ServeProcess(repo) as proc:
        yield proc


def _features(x: np.ndarray) -> types_pb2.SequenceInput:
    x = np.ascontiguousarray(x, dtype="<f4")
    return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=list(x.shape),
                                                             data=x.tobytes()))


def _scores(t: types_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype="<f4").reshape(list(t.shape))


def _build_cases(repo: Path, explain_stub: service_pb2_grpc.SequenceExplainerServiceStub) -> dict[str, list[Case]]:
    """A pool of requests per kind, each with its oracle computed without load."""
    rng = np.random.default_rng(42)
    models = {name: load_model(repo, name) for name in ("words", "series", "tagger")}
    cases: dict[str, list[Case]] = defaultdict(list)

    def alone(name: str, seq: np.ndarray) -> np.ndarray:
        return models[name].onnx.run(seq[None], np.array([len(seq)], dtype=np.int64))[0]

    for _ in range(24):
        name = str(rng.choice(["words", "series", "tagger"]))
        lengths = rng.integers(1, 30, size=int(rng.integers(1, 5)))
        if name == "series":
            seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]
            inputs = [_features(s) for s in seqs]
        else:
            seqs = [rng.integers(0, len(VOCAB), size=n).astype(np.int64) for n in lengths]
            inputs = [types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=s.tolist())) for s in seqs]
        want = [alone(name, s) for s in seqs]

        def check_predict(resp: object, want: list[np.ndarray] = want) -> None:
            preds = resp.predictions  # type: ignore[attr-defined]
            assert len(preds) == len(want)
            for p, w in zip(preds, want, strict=True):
                np.testing.assert_allclose(_scores(p.scores), w, atol=1e-5)

        cases["Predict"].append(Case("Predict", predict_pb2.PredictRequest(model_name=name, inputs=inputs),
                                     check_predict))
        t_max = int(lengths.max())
        padded = np.zeros((len(seqs), t_max, *seqs[0].shape[1:]), dtype=seqs[0].dtype)
        for i, s in enumerate(seqs):
            padded[i, : len(s)] = s
        tensor = oip.ModelInferRequest.InferInputTensor
        datatype = "FP32" if name == "series" else "INT64"
        infer = oip.ModelInferRequest(
            model_name=name, inputs=[tensor(name="inputs", datatype=datatype, shape=list(padded.shape)),
                                     tensor(name="lengths", datatype="INT64", shape=[len(seqs)])],
            raw_input_contents=[padded.astype("<f4" if name == "series" else "<i8").tobytes(),
                                lengths.astype("<i8").tobytes()])

        def check_infer(resp: object, want: list[np.ndarray] = want, lengths: np.ndarray = lengths,
                        per_step: bool = name == "tagger") -> None:
            r = cast(oip.ModelInferResponse, resp)
            out = np.frombuffer(r.raw_output_contents[0], dtype="<f4").reshape(list(r.outputs[0].shape))
            for i, w in enumerate(want):
                np.testing.assert_allclose(out[i, : lengths[i]] if per_step else out[i], w, atol=1e-5)

        cases["ModelInfer"].append(Case("ModelInfer", infer, check_infer))

    methods = [[explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=16)],
               [explain_pb2.AttributionMethod(name="occlusion", window=2)],
               [explain_pb2.AttributionMethod(name="saliency"), explain_pb2.AttributionMethod(name="input_x_gradient")]]
    for i in range(9):
        name = ("words", "series")[i % 2]
        n = int(rng.integers(4, 24))
        seq_input = _features(rng.normal(size=(n, 3))) if name == "series" else types_pb2.SequenceInput(
            token_ids=types_pb2.TokenIds(ids=rng.integers(2, len(VOCAB), size=n).tolist()))
        request = explain_pb2.ExplainRequest(request_id=f"load-{i}", model_name=name, input=seq_input,
                                             methods=methods[i % len(methods)])
        reference = explain_stub.Explain(request, timeout=CALL_TIMEOUT_S)  # asked alone: the oracle

        def check_explain(resp: object, ref: explain_pb2.ExplainResponse = reference) -> None:
            got = resp.attributions  # type: ignore[attr-defined]
            assert [a.method for a in got] == [a.method for a in ref.attributions]
            for a, b in zip(got, ref.attributions, strict=True):
                np.testing.assert_allclose(_scores(a.scores), _scores(b.scores), rtol=1e-5, atol=1e-6)

        cases["Explain"].append(Case("Explain", request, check_explain))

    def no_check(_resp: object) -> None:
        raise AssertionError("a deliberate error succeeded")

    cases["deliberate error"] += [
        Case("Predict", predict_pb2.PredictRequest(model_name="missing", inputs=[types_pb2.SequenceInput(text="a")]),
             no_check, grpc.StatusCode.NOT_FOUND),
        Case("Predict", predict_pb2.PredictRequest(model_name="words", inputs=[
            types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2, 999]))]), no_check,
             grpc.StatusCode.INVALID_ARGUMENT),
        Case("Explain", explain_pb2.ExplainRequest(model_name="words", input=types_pb2.SequenceInput(text="good"),
                                                   methods=[explain_pb2.AttributionMethod(name="nope")]),
             no_check, grpc.StatusCode.INVALID_ARGUMENT),
    ]
    return cases


def _percentiles(values: list[float]) -> str:
    ms = np.asarray(values) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return f"p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  p99 {p99:7.2f} ms  max {ms.max():7.2f} ms"


def test_concurrent_callers_mixing_rpcs(repo: Path, server: ServeProcess,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    channels = [grpc.insecure_channel(server.target) for _ in range(4)]
    try:
        ours = [service_pb2_grpc.SequenceExplainerServiceStub(c) for c in channels]
        oips = [oip_grpc.GRPCInferenceServiceStub(c) for c in channels]
        cases = _build_cases(repo, ours[0])
        kinds = [kind for kind, _ in MIX]
        weights = [weight for _, weight in MIX]
        latencies: dict[str, list[float]] = defaultdict(list)
        statuses: Counter[tuple[str, str]] = Counter()
        failures: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION_S

        def caller(index: int) -> None:
            rng = random.Random(index)
            stub, oip_stub = ours[index % len(ours)], oips[index % len(oips)]
            calls = {"Predict": stub.Predict, "Explain": stub.Explain, "ModelInfer": oip_stub.ModelInfer}
            while time.monotonic() < stop_at:
                kind = rng.choices(kinds, weights)[0]
                case = rng.choice(cases[kind])
                start = time.perf_counter()
                try:
                    resp = calls[case.rpc](case.request, timeout=CALL_TIMEOUT_S)
                    code, problem = grpc.StatusCode.OK, ""
                except grpc.RpcError as exc:
                    resp, code, problem = None, exc.code(), exc.details()
                elapsed = time.perf_counter() - start
                if code == case.expect == grpc.StatusCode.OK:
                    try:
                        case.check(resp)
                    except AssertionError as exc:
                        problem, code = f"wrong answer: {exc}", grpc.StatusCode.DATA_LOSS
                with lock:
                    statuses[(kind, code.name)] += 1
                    if code != case.expect:
                        failures.append(f"{kind} ({case.rpc}): {code.name} {problem}"[:500])
                    elif code == grpc.StatusCode.OK:
                        latencies[case.rpc].append(elapsed)

        start = time.perf_counter()
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION_S + 3 * CALL_TIMEOUT_S)
        wall = time.perf_counter() - start
    finally:
        for c in channels:
            c.close()
    total = sum(statuses.values())
    with capsys.disabled():
        print(f"\nload: {CALLERS} callers for {wall:.1f}s, {total} requests ({total / wall:.0f}/s), "
              f"{len(failures)} failures")
        for (kind, code), n in sorted(statuses.items()):
            print(f"  {kind:18s} {code:18s} {n:6d}")
        for rpc, values in sorted(latencies.items()):
            print(f"  {rpc:10s} n={len(values):5d}  {_percentiles(values)}")
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"
    assert all(not t.is_alive() for t in threads)
    for rpc in ("Predict", "ModelInfer", "Explain"):
        assert len(latencies[rpc]) >= 10, f"too few {rpc} calls completed"
    assert statuses[("deliberate error", "OK")] == 0
