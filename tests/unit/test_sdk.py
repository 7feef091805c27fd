"""SDK building blocks without a server: inputs, options, tensors, errors, channel options,
and decoding of every result message."""

from __future__ import annotations

import json
import pickle

import grpc
import numpy as np
import pytest
from seqlens_client import errors
from seqlens_client._proto.seqlens.v1 import explain_pb2, models_pb2, predict_pb2, types_pb2
from seqlens_client.calls import ExplainSpec, bulk_items
from seqlens_client.channel import (
    TLS,
    Keepalive,
    RetryPolicy,
    channel_credentials,
    channel_options,
    token_metadata,
)
from seqlens_client.inputs import to_sequence_inputs
from seqlens_client.options import Baseline, Method, StateOptions, Target
from seqlens_client.results import ModelInfo, ModelSummary, PredictResult, jsonable
from seqlens_client.tensors import from_numpy, to_numpy


# --- inputs -------------------------------------------------------------------------
def _kinds(inputs: object) -> list[str]:
    return [s.WhichOneof("kind") for s in to_sequence_inputs(inputs)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("inputs", "kinds"), [
    ("one text", ["text"]),
    (["a", "b", "c"], ["text"] * 3),
    ([3, 4, 5], ["token_ids"]),
    (np.array([3, 4, 5]), ["token_ids"]),
    ([[1, 2], [3, 4, 5]], ["token_ids"] * 2),
    (np.zeros((4, 7), dtype=np.int32), ["token_ids"] * 4),
    ([np.array([1, 2]), np.array([3])], ["token_ids"] * 2),
    (np.zeros((5, 2), dtype=np.float32), ["features"]),
    (np.zeros((3, 5, 2)), ["features"] * 3),
    ([[0.5, 1.0], [2.0, 3.0]], ["features"]),
    ([np.zeros((5, 2)), np.ones((3, 2))], ["features"] * 2),
    (["text", [1, 2], np.zeros((2, 2))], ["text", "token_ids", "features"]),
])
def test_inputs_follow_the_documented_rules(inputs: object, kinds: list[str]) -> None:
    assert _kinds(inputs) == kinds


def test_features_travel_as_float32_little_endian_bytes_with_shape() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    [seq] = to_sequence_inputs(x)
    t = seq.features
    assert t.dtype == types_pb2.DATA_TYPE_FLOAT32 and list(t.shape) == [4, 3]
    assert t.data == x.astype("<f4").tobytes()
    np.testing.assert_array_equal(to_numpy(t), x.astype(np.float32))


def test_token_ids_are_int64_values() -> None:
    [seq] = to_sequence_inputs(np.array([1, 2, 2**40], dtype=np.int64))
    assert list(seq.token_ids.ids) == [1, 2, 2**40]


@pytest.mark.parametrize(("inputs", "message"), [
    ([], "inputs is empty"),
    (np.zeros((2, 2, 2, 2)), "features must be [T, F]"),
    (np.array(["a"]), "integers (token ids) or floats"),
    ([[0.5, 1.0], [2.0]], "different lengths"),
    ([{"a": 1}], "inputs[0]: expected text"),
    (3.5, "expected text"),
])
def test_bad_inputs_raise_with_the_position(inputs: object, message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        to_sequence_inputs(inputs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_bulk_items_split_batches_but_not_single_sequences() -> None:
    assert bulk_items("one")[1] == 1
    assert bulk_items(np.zeros((3, 4), dtype=np.int64))[1] == 3
    assert bulk_items(np.zeros((4, 2), dtype=np.float32))[1] == 1
    gen = (x for x in ["a", "b"])
    items, total = bulk_items(gen)
    assert total is None and list(items) == ["a", "b"]


# --- tensors ------------------------------------------------------------------------
def test_tensor_roundtrip_and_byte_checks() -> None:
    for arr in (np.arange(6, dtype=np.int64).reshape(2, 3), np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2)):
        out = to_numpy(from_numpy(arr))
        assert out.dtype == arr.dtype and out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)
    bad = types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=[3], data=b"\0" * 8)
    with pytest.raises(ValueError, match="has 8 bytes"):
        to_numpy(bad)
    # dtype unset reads as FLOAT32 (the proto's documented default)
    assert to_numpy(types_pb2.Tensor(shape=[1], data=np.float32(2.5).tobytes())).tolist() == [2.5]


# --- options ------------------------------------------------------------------------
def test_explain_spec_builds_the_request_fields() -> None:
    spec = ExplainSpec.build(
        "m", [Method("integrated_gradients", n_steps=16, quadrature="riemann_trapezoid", adaptive=True,
                     tolerance=0.02), "occlusion"],
        Target(label="pos", timestep=3, output_space="probability"), "zeros",
        StateOptions(["state_norm"], top_k=2, include_hidden=True), True, "7")
    req = spec.request("hello world", "42")
    assert req.request_id == "42" and req.model_name == "m" and req.model_version == "7"
    assert req.input.text == "hello world" and req.faithfulness
    ig, occ = req.methods
    assert (ig.name, ig.n_steps, ig.quadrature, ig.adaptive, ig.tolerance) == (
        "integrated_gradients", 16, explain_pb2.QUADRATURE_RIEMANN_TRAPEZOID, True, 0.02)
    assert occ.name == "occlusion" and occ.n_steps == 0
    assert req.target.label == "pos" and req.target.timestep == 3 and not req.target.HasField("horizon_step")
    assert req.target.WhichOneof("class_ref") == "label" and req.target.output_space == explain_pb2.OUTPUT_SPACE_PROBABILITY
    assert req.baseline.kind == explain_pb2.BASELINE_KIND_ZEROS
    assert req.state.enabled and list(req.state.summaries) == ["state_norm"] and req.state.include_hidden


def test_explain_defaults_leave_fields_unset() -> None:
    req = ExplainSpec.build("m", None, None, None, None, False, None).request([1, 2, 3])
    assert not req.methods and not req.HasField("target") and not req.HasField("baseline")
    assert not req.HasField("state") and list(req.input.token_ids.ids) == [1, 2, 3]


def test_short_forms_of_options() -> None:
    req = ExplainSpec.build("m", "saliency", 2, np.zeros((3, 2), dtype=np.float32), True, False, None
                            ).request(np.ones((3, 2), dtype=np.float32))
    assert [m.name for m in req.methods] == ["saliency"]
    assert req.target.class_index == 2 and req.target.WhichOneof("class_ref") == "class_index"
    assert req.baseline.kind == explain_pb2.BASELINE_KIND_CUSTOM and list(req.baseline.custom.features.shape) == [3, 2]
    assert req.state.enabled and not req.state.summaries
    req = ExplainSpec.build("m", None, 0, Baseline(custom=[0, 0, 0]), ["gate_mean"], False, None).request([4, 5, 6])
    assert req.target.HasField("class_index") and req.target.class_index == 0  # index 0 is set, not default
    assert list(req.baseline.custom.token_ids.ids) == [0, 0, 0] and list(req.state.summaries) == ["gate_mean"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": Method("integrated_gradients", quadrature="simpson")}, "quadrature must be one of"),  # type: ignore[arg-type]
    ({"methods": Method("occlusion", window=-1)}, "window must be >= 0"),
    ({"target": Target(class_index=1, label="pos")}, "not both"),
    ({"baseline": "mean"}, "baseline must be one of"),
    ({"baseline": Baseline(kind="custom")}, "needs custom="),
])
def test_bad_options_are_invalid_argument_before_any_call(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"methods": None, "target": None, "baseline": None, "state": None}
    args.update(kwargs)
    with pytest.raises(errors.InvalidArgument) as err:
        ExplainSpec.build("m", faithfulness=False, version=None, **args)  # type: ignore[arg-type]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message


# --- errors -------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "cls"), [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument), (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable), (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated), (grpc.StatusCode.INTERNAL, errors.Internal),
])
def test_errors_carry_code_and_message(code: grpc.StatusCode, cls: type[errors.SeqlensError]) -> None:
    for given in (code, code.value[0]):  # the enum, or its number as in a stream item error
        e = errors.error_from_code(given, "the message")
        assert type(e) is cls and isinstance(e, errors.SeqlensError)
        assert e.code == code and e.message == "the message" and str(e) == f"{code.name}: the message"
    again = pickle.loads(pickle.dumps(errors.error_from_code(code, "m")))
    assert type(again) is cls and again.code == code and again.message == "m"


# --- channel ------------------------------------------------------------------------
def test_service_config_retries_only_unavailable_and_balances_round_robin() -> None:
    opts = dict(channel_options(RetryPolicy(max_attempts=4, initial_backoff_s=0.05), Keepalive(time_s=30),
                                "round_robin", 1 << 20, TLS(server_name="seqlens.test")))
    assert opts["grpc.enable_retries"] == 1
    config = json.loads(opts["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["name"] == [{"service": "seqlens.v1.SequenceExplainerService"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] == 4 and method["retryPolicy"]["initialBackoff"] == "0.050s"
    assert opts["grpc.keepalive_time_ms"] == 30000 and opts["grpc.ssl_target_name_override"] == "seqlens.test"
    assert opts["grpc.max_receive_message_length"] == 1 << 20
    off = dict(channel_options(None, None, None, 1 << 20))
    assert off["grpc.enable_retries"] == 0 and "grpc.service_config" not in off
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=9)


def test_token_goes_in_metadata_on_plaintext_and_in_call_credentials_over_tls() -> None:
    assert token_metadata(None, "t0k") == (("authorization", "Bearer t0k"),)
    assert token_metadata(TLS(), "t0k") == ()
    assert channel_credentials(None, "t0k") is None
    assert isinstance(channel_credentials(TLS(), "t0k"), grpc.ChannelCredentials)
    with pytest.raises(ValueError, match="both cert and key"):
        TLS(cert=b"x").credentials()


# --- results ------------------------------------------------------------------------
def _prediction(probs: list[float] | None = None, **kw: object) -> predict_pb2.Prediction:
    scores = np.log(np.asarray(probs, dtype=np.float32)) if probs else np.array([1.5, 2.5], dtype=np.float32)
    msg = predict_pb2.Prediction(scores=from_numpy(scores), **kw)  # type: ignore[arg-type]
    if probs:
        msg.probabilities.CopyFrom(from_numpy(np.asarray(probs, dtype=np.float32)))
    return msg


def test_predict_result_decodes_classification_and_forecasts() -> None:
    resp = predict_pb2.PredictResponse(model_name="m", model_version="3", predictions=[
        _prediction([0.2, 0.8], label="pos", label_index=1, length=2,
                    tokens=[types_pb2.Token(text="so", id=5, start=0, end=2)]),
        _prediction([0.9, 0.1], label="neg", label_index=0, length=1),
        _prediction(None)])
    r = PredictResult.from_proto(resp)
    assert len(r) == 3 and r.model_version == "3" and r[0].label == "pos" and r[0].label_index == 1
    assert r[1].label_index == 0  # index 0 survives (label present)
    np.testing.assert_allclose(r[0].probabilities, [0.2, 0.8])  # type: ignore[arg-type]
    assert r[0].forecast is None and r[0].tokens[0].text == "so" and r[0].tokens[0].end == 2
    assert r[2].label is None and r[2].label_index is None
    np.testing.assert_allclose(r[2].forecast, [1.5, 2.5])  # type: ignore[arg-type]
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["predictions"][2]["forecast"] == [1.5, 2.5] and d["predictions"][0]["label"] == "pos"
    assert [p.label for p in r[:2]] == ["pos", "neg"]


def test_to_pandas_has_one_row_per_input() -> None:
    pd = pytest.importorskip("pandas")
    resp = predict_pb2.PredictResponse(predictions=[_prediction([0.2, 0.8], label="pos", label_index=1),
                                                    _prediction([0.6, 0.4], label="neg", label_index=0)])
    df = PredictResult.from_proto(resp).to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df["label"]) == ["pos", "neg"]
    np.testing.assert_allclose(df["confidence"], [0.8, 0.6], rtol=1e-6)


def test_model_messages_decode() -> None:
    s = ModelSummary.from_proto(models_pb2.ModelSummary(name="m", task=models_pb2.TASK_TAGGING,
                                                        input_kind=models_pb2.INPUT_KIND_TOKENS, versions=["1", "2"], ready=True))
    assert (s.task, s.input_kind, s.versions) == ("tagging", "tokens", ["1", "2"])
    info = ModelInfo.from_proto(models_pb2.ModelInfo(
        name="m", task=models_pb2.TASK_FORECASTING, horizon=4, default_version="2",
        versions=[models_pb2.VersionStatus(version="1", state=models_pb2.VERSION_STATE_FAILED, reason="parity 0.3"),
                  models_pb2.VersionStatus(version="2", state=models_pb2.VERSION_STATE_READY)],
        input=models_pb2.InputSchema(kind=models_pb2.INPUT_KIND_FEATURES, feature_names=["a", "b"]),
        architecture=models_pb2.Architecture(cell="gru", hidden_size=8, num_parameters=99),
        limits=models_pb2.Limits(max_length=64), attribution_methods=["saliency"]))
    assert info.ready and info.versions[0].state == "failed" and info.versions[0].reason == "parity 0.3"
    assert info.input.kind == "features" and info.input.feature_names == ["a", "b"]
    assert info.architecture.num_parameters == 99 and info.limits.max_length == 64 and info.horizon == 4
    assert json.loads(json.dumps(info.to_dict()))["versions"][1]["state"] == "ready"


def test_jsonable_turns_non_finite_numbers_into_null() -> None:
    assert jsonable({"a": np.array([1.0, np.nan, np.inf]), "b": np.float32(2.0), "c": (1, 2)}) == {
        "a": [1.0, None, None], "b": 2.0, "c": [1, 2]}
