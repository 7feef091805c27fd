"""A real server on loopback: Predict and OIP ModelInfer agree with in-process ONNX Runtime,
bad inputs get precise statuses, broken versions stay out of service, new versions appear."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqlens import load_model
from seqlens_client._proto.seqlens.v1 import models_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.factories import VOCAB, export_tiny, oip_calls

MODELS = {
    "words": {"cell": "lstm", "task": "classification", "tokens": True},
    "series": {"cell": "gru", "task": "classification", "tokens": False, "layers": 2},
    "forecast": {"cell": "lstm", "task": "forecasting", "tokens": False},
    "tagger": {"cell": "lstm", "task": "tagging", "tokens": True, "bidirectional": True},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for i, (name, spec) in enumerate(MODELS.items()):
        export_tiny(root, name, seed=i, **spec)
    return root


@pytest.fixture(scope="module")
def server(repo: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import ServerThread

    with ServerThread(repo, poll_interval_s=0.2) as srv:
        yield srv


@pytest.fixture
def stub(server):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.SequenceExplainerServiceStub(channel)


def _features(x: np.ndarray) -> types_pb2.SequenceInput:
    x = np.ascontiguousarray(x, dtype="<f4")
    return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=list(x.shape),
                                                             data=x.tobytes()))


def _decode(t: types_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype="<f4").reshape(list(t.shape))


def _inputs_for(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    lengths = [1, 4, 9, 6]
    if MODELS[name]["tokens"]:
        return [rng.integers(0, len(VOCAB), size=n).astype(np.int64) for n in lengths]
    return [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]


def _as_input(x: np.ndarray) -> types_pb2.SequenceInput:
    if x.dtype == np.int64:
        return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=x.tolist()))
    return _features(x)


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_and_model_infer_equal_in_process_onnx(repo: Path, server, stub, name: str) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    seqs = _inputs_for(name, rng)
    ref_model = load_model(repo, name)
    alone = [ref_model.onnx.run(s[None], np.array([len(s)]))[0] for s in seqs]

    resp = stub.Predict(predict_pb2.PredictRequest(model_name=name, inputs=[_as_input(s) for s in seqs]))
    assert resp.model_version == "1"
    for got, want, s in zip(resp.predictions, alone, seqs):
        np.testing.assert_allclose(_decode(got.scores), want, atol=1e-5)
        assert got.length == len(s)
        if MODELS[name]["task"] == "classification":
            assert got.label_index == int(np.argmax(want))
            np.testing.assert_allclose(_decode(got.probabilities).sum(), 1.0, atol=1e-5)
        if MODELS[name]["task"] == "tagging":
            assert list(got.step_label_indices) == np.argmax(want, axis=-1).tolist()

    # The same batch through a stock Open Inference Protocol client.
    t_max = max(len(s) for s in seqs)
    padded = np.zeros((len(seqs), t_max, *seqs[0].shape[1:]), dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    lengths = [len(s) for s in seqs]
    dtype = "INT64" if padded.dtype == np.int64 else "FP32"
    infer, live, ready, model_ready, meta = oip_calls(server.target, [
        {"op": "infer", "model": name, "inputs": [
            {"name": "inputs", "datatype": dtype, "data": padded.tolist()},
            {"name": "lengths", "datatype": "INT64", "data": lengths}]},
        {"op": "live"}, {"op": "ready"}, {"op": "model_ready", "model": name}, {"op": "metadata", "model": name}])
    out = np.asarray(infer["ok"]["outputs"], dtype=np.float32)
    assert infer["ok"]["version"] == "1"
    for i, want in enumerate(alone):
        got = out[i, : lengths[i]] if MODELS[name]["task"] == "tagging" else out[i]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert live["ok"] and ready["ok"] and model_ready["ok"]
    assert meta["ok"]["inputs"] == ["inputs", "lengths"] and meta["ok"]["outputs"] == ["outputs"]


def _code(call, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


BAD = [
    ("unknown model", predict_pb2.PredictRequest(model_name="nope", inputs=[types_pb2.SequenceInput(text="a")]),
     grpc.StatusCode.NOT_FOUND, "'nope'"),
    ("unknown version", predict_pb2.PredictRequest(model_name="words", model_version="9",
                                                   inputs=[types_pb2.SequenceInput(text="a")]),
     grpc.StatusCode.NOT_FOUND, "no version '9'"),
    ("path in name", predict_pb2.PredictRequest(model_name="../words", inputs=[types_pb2.SequenceInput(text="a")]),
     grpc.StatusCode.INVALID_ARGUMENT, "not a valid name"),
    ("no inputs", predict_pb2.PredictRequest(model_name="words"), grpc.StatusCode.INVALID_ARGUMENT, "inputs is empty"),
    ("empty text", predict_pb2.PredictRequest(model_name="words", inputs=[types_pb2.SequenceInput(text="  ")]),
     grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].text has no tokens"),
    ("unset oneof", predict_pb2.PredictRequest(model_name="words", inputs=[types_pb2.SequenceInput()]),
     grpc.StatusCode.INVALID_ARGUMENT, "set one of"),
    ("oov id", predict_pb2.PredictRequest(model_name="words", inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2, 500]))]),
     grpc.StatusCode.INVALID_ARGUMENT, "token_ids[1] = 500 is outside the vocabulary [0, 17)"),
    ("negative id", predict_pb2.PredictRequest(model_name="words", inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[-1]))]),
     grpc.StatusCode.INVALID_ARGUMENT, "outside the vocabulary"),
    ("too long", predict_pb2.PredictRequest(model_name="words", inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2] * 65))]),
     grpc.StatusCode.INVALID_ARGUMENT, "max_length=64"),
    ("features to token model", predict_pb2.PredictRequest(model_name="words", inputs=[
        _features(np.zeros((2, 3)))]), grpc.StatusCode.INVALID_ARGUMENT, "takes text or token_ids"),
    ("text to feature model", predict_pb2.PredictRequest(model_name="series", inputs=[
        types_pb2.SequenceInput(text="hi")]), grpc.StatusCode.INVALID_ARGUMENT, "takes features"),
    ("wrong feature count", predict_pb2.PredictRequest(model_name="series", inputs=[_features(np.zeros((2, 4)))]),
     grpc.StatusCode.INVALID_ARGUMENT, "needs [T, 3]"),
    ("nan", predict_pb2.PredictRequest(model_name="series", inputs=[
        _features(np.array([[0, 0, 0], [0, np.nan, 0]]))]), grpc.StatusCode.INVALID_ARGUMENT, "NaN or inf at timestep 1"),
    ("bytes do not match shape", predict_pb2.PredictRequest(model_name="series", inputs=[
        types_pb2.SequenceInput(features=types_pb2.Tensor(shape=[2, 3], data=b"\0" * 20))]),
     grpc.StatusCode.INVALID_ARGUMENT, "has 20 bytes"),
    ("absurd shape", predict_pb2.PredictRequest(model_name="series", inputs=[
        types_pb2.SequenceInput(features=types_pb2.Tensor(shape=[2**40, 2**40], data=b""))]),
     grpc.StatusCode.INVALID_ARGUMENT, "needs"),
    ("negative shape", predict_pb2.PredictRequest(model_name="series", inputs=[
        types_pb2.SequenceInput(features=types_pb2.Tensor(shape=[-1, 3], data=b""))]),
     grpc.StatusCode.INVALID_ARGUMENT, "invalid"),
    ("int features", predict_pb2.PredictRequest(model_name="series", inputs=[
        types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_INT64, shape=[1, 3], data=b"\0" * 24))]),
     grpc.StatusCode.INVALID_ARGUMENT, "must be FLOAT32"),
    ("empty features", predict_pb2.PredictRequest(model_name="series", inputs=[_features(np.zeros((0, 3)))]),
     grpc.StatusCode.INVALID_ARGUMENT, "is empty"),
]


@pytest.mark.parametrize("label, request_msg, code, message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_get_precise_status_and_server_keeps_serving(stub, label, request_msg, code, message) -> None:  # type: ignore[no-untyped-def]
    got_code, details = _code(stub.Predict, request_msg)
    assert got_code == code, details
    assert message in details
    ok = stub.Predict(predict_pb2.PredictRequest(model_name="words", inputs=[types_pb2.SequenceInput(text="good")]))
    assert ok.predictions[0].label in ("neg", "neu", "pos")


def test_model_infer_bad_inputs(server) -> None:  # type: ignore[no-untyped-def]
    oov, bad_len, bad_dtype, unknown = oip_calls(server.target, [
        {"op": "infer", "model": "words", "inputs": [{"name": "inputs", "datatype": "INT64", "data": [[2, 99]]}]},
        {"op": "infer", "model": "words", "inputs": [{"name": "inputs", "datatype": "INT64", "data": [[2, 3]]},
                                                     {"name": "lengths", "datatype": "INT64", "data": [5]}]},
        {"op": "infer", "model": "words", "inputs": [{"name": "inputs", "datatype": "FP32", "data": [[2.0]]}]},
        {"op": "infer", "model": "nope", "inputs": [{"name": "inputs", "datatype": "INT64", "data": [[2]]}]},
    ])
    assert "INVALID_ARGUMENT" in oov["error"]["status"] and "outside the vocabulary" in oov["error"]["message"]
    assert "INVALID_ARGUMENT" in bad_len["error"]["status"] and "'lengths'" in bad_len["error"]["message"]
    assert "INVALID_ARGUMENT" in bad_dtype["error"]["status"] and "INT64" in bad_dtype["error"]["message"]
    assert "NOT_FOUND" in unknown["error"]["status"]


def test_health_and_reflection(server) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "seqlens.v1.SequenceExplainerService", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        assert {"seqlens.v1.SequenceExplainerService", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_list_and_get_model(stub) -> None:  # type: ignore[no-untyped-def]
    listed = {m.name: m for m in stub.ListModels(models_pb2.ListModelsRequest()).models}
    assert set(MODELS) <= set(listed)
    assert listed["series"].input_kind == models_pb2.INPUT_KIND_FEATURES and listed["words"].ready
    info = stub.GetModel(models_pb2.GetModelRequest(name="tagger"))
    assert info.task == models_pb2.TASK_TAGGING and info.architecture.bidirectional
    assert info.versions[0].state == models_pb2.VERSION_STATE_READY and info.versions[0].parity_max_abs_diff <= 1e-4
    assert list(info.labels) == ["neg", "neu", "pos"] and info.limits.max_length == 64
    assert _code(stub.GetModel, models_pb2.GetModelRequest(name="missing"))[0] == grpc.StatusCode.NOT_FOUND


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_corrupt_version_is_refused_and_others_keep_serving(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "good", seed=1)
    export_tiny(repo, "broken", seed=2)
    onnx_path = repo / "broken" / "1" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:500])
    srv = start_server(repo)
    with grpc.insecure_channel(srv.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        info = stub.GetModel(models_pb2.GetModelRequest(name="broken"))
        assert info.versions[0].state == models_pb2.VERSION_STATE_FAILED and "model.onnx" in info.versions[0].reason
        code, details = _code(stub.Predict, predict_pb2.PredictRequest(
            model_name="broken", inputs=[types_pb2.SequenceInput(text="good")]))
        assert code == grpc.StatusCode.UNAVAILABLE and "no READY version" in details
        assert stub.Predict(predict_pb2.PredictRequest(
            model_name="good", inputs=[types_pb2.SequenceInput(text="good film")])).model_version == "1"
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_new_version_is_picked_up_and_removed_version_unloaded(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "m", version="1", seed=1)
    srv = start_server(repo, poll_interval_s=0.1)
    req = predict_pb2.PredictRequest(model_name="m", inputs=[types_pb2.SequenceInput(text="the film")])
    with grpc.insecure_channel(srv.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        assert stub.Predict(req).model_version == "1"
        export_tiny(repo, "m", version="2", seed=5)
        _wait_for(lambda: stub.Predict(req).model_version == "2")
        pinned = predict_pb2.PredictRequest(model_name="m", model_version="1", inputs=req.inputs)
        assert stub.Predict(pinned).model_version == "1"
        shutil.rmtree(repo / "m" / "2")
        _wait_for(lambda: stub.Predict(req).model_version == "1")


def test_health_port_and_liveness_name(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    """Probes: a plaintext health-only listener, and "liveness" SERVING even with no READY model."""
    repo = tmp_path / "repo"
    export_tiny(repo, "broken", seed=2)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    srv = start_server(repo, health_port=0)
    assert srv.server.health_port > 0
    with grpc.insecure_channel(f"127.0.0.1:{srv.server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check
        assert check(health_pb2.HealthCheckRequest(service="liveness")).status == health_pb2.HealthCheckResponse.SERVING
        assert check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        code, _ = _code(service_pb2_grpc.SequenceExplainerServiceStub(channel).ListModels, models_pb2.ListModelsRequest())
        assert code == grpc.StatusCode.UNIMPLEMENTED  # only health on this port


def test_oip_liveness_and_readiness_answer_while_draining(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    """During a drain, OIP ServerLive says live, ServerReady/ModelReady say not ready (they are
    answered, not refused), while work RPCs are refused with UNAVAILABLE."""
    from seqlens_client._proto.inference import grpc_service_pb2 as oip
    from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc

    repo = tmp_path / "repo"
    export_tiny(repo, "m", seed=1)
    srv = start_server(repo)
    srv.server.dataplane.draining = True  # the flag SeqlensServer.drain sets first
    with grpc.insecure_channel(srv.target) as channel:
        inference = oip_grpc.GRPCInferenceServiceStub(channel)
        assert inference.ServerLive(oip.ServerLiveRequest()).live
        assert not inference.ServerReady(oip.ServerReadyRequest()).ready
        assert not inference.ModelReady(oip.ModelReadyRequest(name="m")).ready
        code, details = _code(service_pb2_grpc.SequenceExplainerServiceStub(channel).Predict, predict_pb2.PredictRequest(
            model_name="m", inputs=[types_pb2.SequenceInput(text="good")]))
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details


def test_a_removed_model_leaves_no_metric_series(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "stay", seed=1)
    export_tiny(repo, "gone", seed=2)
    srv = start_server(repo, poll_interval_s=0.1)
    reg = srv.server.metrics.registry
    assert reg.get_sample_value("seqlens_model_load_seconds", {"model": "gone"}) > 0
    assert reg.get_sample_value("seqlens_model_ready", {"model": "gone", "version": "1"}) == 1
    shutil.rmtree(repo / "gone")
    _wait_for(lambda: reg.get_sample_value("seqlens_model_ready", {"model": "gone", "version": "1"}) is None)
    assert reg.get_sample_value("seqlens_model_load_seconds", {"model": "gone"}) is None
    assert reg.get_sample_value("seqlens_model_load_seconds", {"model": "stay"}) > 0
