"""Dynamic batching through a real server: concurrent callers with mixed lengths share batches
(bidirectional and per-step models included) and each gets exactly its unbatched answer, with
in-process ONNX Runtime on each sequence alone as the oracle (Predict and OIP ModelInfer)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from seqlens import load_model
from seqlens.versions import LoadedVersion
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny

MODELS: dict[str, dict[str, object]] = {
    "tagger": {"cell": "lstm", "task": "tagging", "tokens": True, "bidirectional": True},
    "series": {"cell": "gru", "task": "classification", "tokens": False, "layers": 2, "bidirectional": True},
    "forecast": {"cell": "lstm", "task": "forecasting", "tokens": False},
}
CALLERS = 40
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for i, (name, spec) in enumerate(MODELS.items()):
        export_tiny(root, name, seed=10 + i, **spec)  # type: ignore[arg-type]
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    # Small batches, one worker and a short delay: many batches of mixed lengths, split by length.
    with ServerThread(repo, poll_interval_s=0, batch_max_size=6, predict_workers=1, batch_max_delay_ms=2.0,
                      batch_bucket_overhead_steps=8) as srv:
        yield srv


def _sequences(name: str, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 41, size=1 + seed % 3)
    if MODELS[name]["tokens"]:
        return [rng.integers(0, len(VOCAB), size=int(n)).astype(np.int64) for n in lengths]
    return [rng.normal(size=(int(n), 3)).astype(np.float32) for n in lengths]


def _as_input(x: np.ndarray) -> types_pb2.SequenceInput:
    if x.dtype == np.int64:
        return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=x.tolist()))
    a = np.ascontiguousarray(x, dtype="<f4")
    return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=list(a.shape),
                                                             data=a.tobytes()))


def _alone(model: LoadedVersion, seq: np.ndarray) -> np.ndarray:
    return model.onnx.run(seq[None], np.array([seq.shape[0]], dtype=np.int64))[0]


def _batches(server: ServerThread, name: str) -> tuple[float, float]:
    """(number of ONNX batches, sequences in them) from the server's seqlens_batch_size histogram."""
    reg = server.server.metrics.registry
    count = reg.get_sample_value("seqlens_batch_size_count", {"model": name}) or 0.0
    total = reg.get_sample_value("seqlens_batch_size_sum", {"model": name}) or 0.0
    return count, total


@pytest.mark.parametrize("name", list(MODELS))
def test_concurrent_predict_callers_get_unbatched_answers(repo: Path, server: ServerThread, name: str) -> None:
    model = load_model(repo, name)
    requests = [_sequences(name, seed) for seed in range(CALLERS)]
    before = _batches(server, name)

    async def main() -> list[predict_pb2.PredictResponse]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            calls = [stub.Predict(predict_pb2.PredictRequest(model_name=name, inputs=[_as_input(s) for s in seqs]),
                                  timeout=TIMEOUT) for seqs in requests]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(main())
    for seqs, resp in zip(requests, responses, strict=True):
        assert len(resp.predictions) == len(seqs)
        for seq, pred in zip(seqs, resp.predictions, strict=True):
            want = _alone(model, seq)
            got = np.frombuffer(pred.scores.data, dtype="<f4").reshape(list(pred.scores.shape))
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    count, total = (a - b for a, b in zip(_batches(server, name), before, strict=True))
    n_seqs = sum(len(s) for s in requests)
    assert total == n_seqs
    assert count < n_seqs  # sequences of different callers shared batches


def test_concurrent_model_infer_callers_get_unbatched_answers(repo: Path, server: ServerThread) -> None:
    name = "tagger"  # per-step outputs of a bidirectional model: padding must not leak into any step
    model = load_model(repo, name)
    rng = np.random.default_rng(99)
    batches = []
    for _ in range(CALLERS // 2):
        lengths = rng.integers(1, 31, size=int(rng.integers(1, 4))).astype(np.int64)
        x = rng.integers(0, len(VOCAB), size=(len(lengths), int(lengths.max()))).astype(np.int64)
        batches.append((x, lengths))

    def request(x: np.ndarray, lengths: np.ndarray) -> oip.ModelInferRequest:
        t = oip.ModelInferRequest.InferInputTensor
        return oip.ModelInferRequest(model_name=name, inputs=[
            t(name="inputs", datatype="INT64", shape=list(x.shape),
              contents=oip.InferTensorContents(int64_contents=x.reshape(-1).tolist())),
            t(name="lengths", datatype="INT64", shape=[len(lengths)],
              contents=oip.InferTensorContents(int64_contents=lengths.tolist()))])

    async def main() -> list[oip.ModelInferResponse]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            return list(await asyncio.gather(*(stub.ModelInfer(request(x, n), timeout=TIMEOUT) for x, n in batches)))

    for (x, lengths), resp in zip(batches, asyncio.run(main()), strict=True):
        out = resp.outputs[0]
        shape = list(out.shape)
        if resp.raw_output_contents:
            got = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(shape)
        else:
            got = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(shape)
        assert shape[:2] == list(x.shape)
        for i, n in enumerate(lengths):
            want = _alone(model, x[i, : int(n)])  # [n, C]
            np.testing.assert_allclose(got[i, : int(n)], want, atol=1e-5, rtol=0)
            assert not got[i, int(n):].any()  # padding steps are zero

