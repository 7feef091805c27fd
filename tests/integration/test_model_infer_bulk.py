"""OIP ModelInfer validates whole padded batches in bulk: padding past a row's length is never
read, every row gets its unbatched answer, and a bad row is named exactly as Predict names it."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from seqlens import load_model
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import predict_pb2, service_pb2_grpc, types_pb2

from tests.factories import VOCAB, export_tiny

MAX_LENGTH = 16
OIP = "ModelInferRequest.inputs[0] ('inputs')"  # how OIP errors name the request tensor


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bulk")
    export_tiny(root, "words", seed=1, cell="lstm", task="classification", tokens=True)
    export_tiny(root, "series", seed=2, cell="gru", task="classification", tokens=False)
    return root


@pytest.fixture(scope="module")
def server(repo: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import ServerThread

    with ServerThread(repo, poll_interval_s=0, max_length=MAX_LENGTH) as srv:
        yield srv


def _infer(stub: oip_grpc.GRPCInferenceServiceStub, model: str, x: np.ndarray, lengths: list[int]
           ) -> np.ndarray:
    tensor = oip.ModelInferRequest.InferInputTensor
    datatype = "INT64" if x.dtype == np.int64 else "FP32"
    reply = stub.ModelInfer(oip.ModelInferRequest(
        model_name=model, inputs=[tensor(name="inputs", datatype=datatype, shape=list(x.shape)),
                                  tensor(name="lengths", datatype="INT64", shape=[len(lengths)])],
        raw_input_contents=[x.astype(x.dtype.newbyteorder("<")).tobytes(),
                            np.asarray(lengths, dtype="<i8").tobytes()]))
    out = reply.outputs[0]
    return np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


def _predict_error(target: str, model: str, rows: list[np.ndarray]) -> tuple[grpc.StatusCode, str]:
    def one(r: np.ndarray) -> types_pb2.SequenceInput:
        if r.dtype == np.int64:
            return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=r.tolist()))
        a = np.ascontiguousarray(r, dtype="<f4")
        return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=list(a.shape),
                                                                 data=a.tobytes()))

    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.SequenceExplainerServiceStub(channel).Predict(
            predict_pb2.PredictRequest(model_name=model, inputs=[one(r) for r in rows]))
    return err.value.code(), err.value.details()  # type: ignore[attr-defined]


def _infer_error(target: str, model: str, x: np.ndarray, lengths: list[int]) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as err:
        _infer(oip_grpc.GRPCInferenceServiceStub(channel), model, x, lengths)
    return err.value.code(), err.value.details()  # type: ignore[attr-defined]


def test_padding_is_never_read_and_rows_get_their_unbatched_answers(server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    lengths = [3, 9, 1, 6]
    words = load_model(repo, "words")
    ids = rng.integers(2, len(VOCAB), size=(4, 9)).astype(np.int64)
    series = load_model(repo, "series")
    feats = rng.normal(size=(4, 9, 3)).astype(np.float32)
    for i, n in enumerate(lengths):  # padding a caller may leave as garbage: out of vocabulary, NaN
        ids[i, n:] = 10_000
        feats[i, n:] = np.nan
    with grpc.insecure_channel(server.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        got_ids = _infer(stub, "words", ids, lengths)
        got_feats = _infer(stub, "series", feats, lengths)
    for i, n in enumerate(lengths):  # oracle: in-process ONNX Runtime, one sequence at a time
        want = words.onnx.run(ids[i:i + 1, :n], np.array([n]))[0]
        np.testing.assert_allclose(got_ids[i], want, atol=1e-5)
        want = series.onnx.run(feats[i:i + 1, :n], np.array([n]))[0]
        np.testing.assert_allclose(got_feats[i], want, atol=1e-5)


def test_a_bad_token_row_is_named_as_predict_names_it(server) -> None:  # type: ignore[no-untyped-def]
    rows = [np.array([2, 3, 4], dtype=np.int64), np.array([5, 6], dtype=np.int64),
            np.array([2, 3, 4, 99], dtype=np.int64)]
    x = np.zeros((3, 4), dtype=np.int64)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
    code, message = _infer_error(server.target, "words", x, [3, 2, 4])
    typed_code, typed = _predict_error(server.target, "words", rows)
    # the same check and wording, the row named by OIP's fields (ModelInferRequest.inputs[0] row 2)
    assert code == typed_code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(f"{OIP} row 2, timestep 3 = 99") and typed.startswith("inputs[2].token_ids[3] = 99")
    assert message.split(" = 99", 1)[1] == typed.split(" = 99", 1)[1]


def test_a_long_row_is_named_as_predict_names_it(server) -> None:  # type: ignore[no-untyped-def]
    rows = [np.full(2, 3, dtype=np.int64), np.full(MAX_LENGTH + 1, 3, dtype=np.int64)]
    x = np.full((2, MAX_LENGTH + 1), 3, dtype=np.int64)
    code, message = _infer_error(server.target, "words", x, [2, MAX_LENGTH + 1])
    typed_code, typed = _predict_error(server.target, "words", rows)
    assert code == typed_code and f"max_length={MAX_LENGTH}" in message and message.startswith(f"{OIP} row 1 ")
    assert message.split(" row 1", 1)[1] == typed.split("inputs[1]", 1)[1]


def test_a_non_finite_feature_is_named_as_predict_names_it(server) -> None:  # type: ignore[no-untyped-def]
    x = np.zeros((2, 5, 3), dtype=np.float32)
    x[1, 4, 2] = np.inf
    rows = [x[0, :3], x[1]]
    code, message = _infer_error(server.target, "series", x, [3, 5])
    typed_code, typed = _predict_error(server.target, "series", rows)
    assert code == typed_code and typed.startswith("inputs[1].features has NaN or inf at timestep 4 (feature 2 is inf)")
    assert message == f"{OIP} row 1" + typed.split("inputs[1].features", 1)[1]
