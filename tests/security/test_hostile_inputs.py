"""Hostile requests against a real server: each gets a precise status and message and runs no
model at all: ``seqlens_model_runs_total`` (every ONNX Runtime and torch run of every version)
does not move, on every RPC (Explain items also through StreamExplain).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import (
    explain_pb2,
    models_pb2,
    predict_pb2,
    service_pb2_grpc,
    state_pb2,
    types_pb2,
)

from tests.conftest import ServerThread
from tests.factories import export_tiny

INVALID, NOT_FOUND, EXHAUSTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                 grpc.StatusCode.RESOURCE_EXHAUSTED)
MAX_MESSAGE = 4 << 20
MAX_WORK = 50_000
WORDS, CHARS, SERIES, TAGGER, FORECAST = "words", "chars", "series", "tagger", "forecast"
MODELS = (WORDS, CHARS, SERIES, TAGGER, FORECAST)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    export_tiny(repo, WORDS, seed=1, max_length=64)
    export_tiny(repo, CHARS, seed=2, tokenizer="char", max_length=64)
    export_tiny(repo, SERIES, seed=3, tokens=False, cell="gru", max_length=64)
    export_tiny(repo, TAGGER, seed=4, task="tagging", max_length=64)
    export_tiny(repo, FORECAST, seed=5, tokens=False, task="forecasting", max_length=64)
    with ServerThread(repo, poll_interval_s=0, max_message_bytes=MAX_MESSAGE, max_batch=8,
                      max_explain_work=MAX_WORK) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield ch


def _model_runs(server: ServerThread, runtime: str | None = None) -> float:
    """ONNX Runtime and torch runs of every version, as /metrics exports them."""
    registry = server.server.metrics.registry
    return sum(registry.get_sample_value("seqlens_model_runs_total",
                                         {"model": m, "version": "1", "runtime": r}) or 0.0
               for m in MODELS for r in ([runtime] if runtime else ["onnxruntime", "torch"]))


def _text(s: str) -> types_pb2.SequenceInput:
    return types_pb2.SequenceInput(text=s)


def _ids(ids: list[int]) -> types_pb2.SequenceInput:
    return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=ids))


def _tensor(shape: list[int], data: bytes, dtype: int = types_pb2.DATA_TYPE_FLOAT32) -> types_pb2.SequenceInput:
    return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=dtype, shape=shape, data=data))


def _features(x: np.ndarray) -> types_pb2.SequenceInput:
    x = np.ascontiguousarray(x, dtype="<f4")
    return _tensor(list(x.shape), x.tobytes())


def _predict(model: str, *inputs: types_pb2.SequenceInput, version: str = "") -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(model_name=model, model_version=version, inputs=list(inputs))


def _infer(model: str, datatype: str, shape: list[int], raw: bytes, *, lengths: list[int] | None = None,
           version: str = "") -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor
    inputs, contents = [tensor(name="inputs", datatype=datatype, shape=shape)], [raw]
    if lengths is not None:
        inputs.append(tensor(name="lengths", datatype="INT64", shape=[len(lengths)]))
        contents.append(np.asarray(lengths, dtype="<i8").tobytes())
    return oip.ModelInferRequest(model_name=model, model_version=version, inputs=inputs,
                                 raw_input_contents=contents)


def _sequence_input_with_unknown_field() -> types_pb2.SequenceInput:
    """A SequenceInput whose only field is number 9 (not in the oneof): parses, sets nothing."""
    msg = types_pb2.SequenceInput()
    msg.MergeFromString(b"\x4a\x03abc")  # field 9, wire type 2, 3 bytes
    return msg


def _explain(model: str = WORDS, text: str = "a good film", **method: Any) -> explain_pb2.ExplainRequest:
    methods = [explain_pb2.AttributionMethod(**method)] if method else []
    inputs = _features(np.ones((3, 3))) if model in (SERIES, FORECAST) else _text(text)
    return explain_pb2.ExplainRequest(model_name=model, input=inputs, methods=methods)


def _explain_with(model: str = WORDS, **fields: Any) -> explain_pb2.ExplainRequest:
    msg = _explain(model)
    for name, value in fields.items():
        getattr(msg, name).CopyFrom(value)
    return msg


IG = "integrated_gradients"
EXPLAIN_CASES: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    ("n_steps 1e9", "Explain", _explain(name=IG, n_steps=10**9), INVALID, "at most max_steps=1024"),
    ("n_samples 1e9", "Explain", _explain(name="gradient_shap", n_samples=10**9), INVALID, "max_steps=1024"),
    ("adaptive max_steps 1e9", "Explain", _explain(name=IG, adaptive=True, max_steps=4_000_000_000), INVALID,
     "max_steps"),
    ("work over the limit", "Explain", _explain(text="good " * 60, name=IG, n_steps=1000), EXHAUSTED,
     f"max_explain_work={MAX_WORK}"),
    ("window 0", "Explain", _explain(name="occlusion", window=0), INVALID, "occlusion.window is 0"),
    ("window beyond length", "Explain", _explain(name="occlusion", window=40), INVALID,
     "cannot exceed the sequence length"),
    ("stride beyond window", "Explain", _explain(name="occlusion", window=1, stride=3), INVALID, "occlusion.stride"),
    ("negative tolerance", "Explain", _explain(name=IG, adaptive=True, tolerance=-0.5), INVALID,
     "integrated_gradients.tolerance is -0.5"),
    ("nan tolerance", "Explain", _explain(name=IG, adaptive=True, tolerance=float("nan")), INVALID,
     "tolerance is nan"),
    ("negative noise", "Explain", _explain(name="smoothgrad", noise_stdev=-1.0), INVALID, "noise_stdev"),
    ("inf noise", "Explain", _explain(name="gradient_shap", noise_stdev=float("inf")), INVALID, "noise_stdev"),
    ("unknown method", "Explain", _explain(name="deeplift"), INVALID, "unknown attribution method 'deeplift'"),
    ("empty method name", "Explain", _explain(name=""), INVALID, "unknown attribution method ''"),
    ("unknown quadrature", "Explain", _explain(name=IG, quadrature=99), INVALID, "quadrature has unknown value 99"),
    ("unknown ablation", "Explain", _explain(name="feature_ablation", ablation=7), INVALID, "unknown value 7"),
    ("unknown label", "Explain", _explain_with(target=explain_pb2.Target(label="nope")), INVALID, "'nope'"),
    ("class index int32 max", "Explain", _explain_with(target=explain_pb2.Target(class_index=2**31 - 1)), INVALID,
     "class_index"),
    ("timestep on a classifier", "Explain", _explain_with(target=explain_pb2.Target(timestep=0)), INVALID,
     "tagging models only"),
    ("class index -1", "Explain", _explain_with(target=explain_pb2.Target(class_index=-1)), INVALID,
     "class_index -1 is outside [0, 3)"),
    ("label on a forecaster", "Explain", _explain_with(FORECAST, target=explain_pb2.Target(label="neg")), INVALID,
     "has no classes"),
    ("horizon step beyond the horizon", "Explain", _explain_with(FORECAST, target=explain_pb2.Target(
        horizon_step=3)), INVALID, "horizon_step 3 is outside [0, 3)"),
    ("horizon step on a classifier", "Explain", _explain_with(target=explain_pb2.Target(horizon_step=0)), INVALID,
     "forecasting models only"),
    ("timestep beyond the sequence", "Explain", _explain_with(TAGGER, target=explain_pb2.Target(timestep=3)),
     INVALID, "timestep 3 is outside [0, 3)"),
    ("unknown label on a tagger", "Explain", _explain_with(TAGGER, target=explain_pb2.Target(label="B-X")),
     INVALID, "'B-X'"),
    ("probability of a forecast", "Explain", _explain_with(FORECAST, target=explain_pb2.Target(
        output_space=explain_pb2.OUTPUT_SPACE_PROBABILITY)), INVALID, "PROBABILITY needs classes"),
    ("unknown output space", "Explain", _explain_with(target=explain_pb2.Target(output_space=5)), INVALID,
     "output_space has unknown value 5"),
    ("unknown baseline kind", "Explain", _explain_with(baseline=explain_pb2.Baseline(kind=42)), INVALID,
     "baseline.kind has unknown value 42"),
    ("custom baseline missing", "Explain", _explain_with(baseline=explain_pb2.Baseline(kind=explain_pb2.BASELINE_KIND_CUSTOM)),
     INVALID, "baseline.custom must be set"),
    ("custom baseline wrong length", "Explain", _explain_with(baseline=explain_pb2.Baseline(
        kind=explain_pb2.BASELINE_KIND_CUSTOM, custom=_text("good"))), INVALID, "baseline.custom has shape"),
    ("nan custom baseline", "Explain", explain_pb2.ExplainRequest(
        model_name=SERIES, input=_features(np.zeros((2, 3))), baseline=explain_pb2.Baseline(
            kind=explain_pb2.BASELINE_KIND_CUSTOM, custom=_features(np.array([[0, 0, 0], [np.nan, 0, 0]])))), INVALID,
     "NaN or inf"),
    ("unknown summary", "Explain", _explain_with(state=state_pb2.StateOptions(enabled=True,
                                                                               summaries=["x" * 10_000])),
     INVALID, "state.summaries: unknown"),
    ("100 KB method name", "Explain", _explain(name="é" * 50_000), INVALID, "bytes, cut)"),
    ("1 MB text", "Explain", _explain(text="good " * 200_000), INVALID, "characters"),
    ("explain path name", "Explain", explain_pb2.ExplainRequest(model_name="../words", input=_text("good")),
     INVALID, "not a valid name"),
    ("explain no input", "Explain", explain_pb2.ExplainRequest(model_name=WORDS), INVALID, "set one of"),
]

BAD_NAMES = ["../words", "words/../words", "/etc/passwd", "..", "words\n", "words\x00", "%2e%2e", "wörds",
             " words", "w" * 200, "words\\x", ".words", "words/1", ""]

# (label, rpc, request, status, text the message must contain)
CASES: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    # shapes and buffers
    ("huge shape", "Predict", _predict(SERIES, _tensor([2**40, 2**40], b"")), INVALID, "needs"),
    ("product overflows int64", "Predict", _predict(SERIES, _tensor([2**62, 2**62, 4], b"")), INVALID, "needs"),
    ("negative shape", "Predict", _predict(SERIES, _tensor([-1, 3], b"")), INVALID, "invalid"),
    ("rank 5", "Predict", _predict(SERIES, _tensor([1, 1, 1, 1, 3], b"\0" * 12)), INVALID, "invalid"),
    ("rank 1 features", "Predict", _predict(SERIES, _tensor([3], b"\0" * 12)), INVALID, "[T, F]"),
    ("bytes short of shape", "Predict", _predict(SERIES, _tensor([2, 3], b"\0" * 20)), INVALID, "has 20 bytes"),
    ("bytes beyond shape", "Predict", _predict(SERIES, _tensor([1, 3], b"\0" * 16)), INVALID, "has 16 bytes"),
    ("unknown dtype enum", "Predict", _predict(SERIES, _tensor([1, 3], b"\0" * 12, dtype=7)), INVALID,
     "dtype 7 is not supported"),
    ("int64 features", "Predict", _predict(SERIES, _tensor([1, 3], b"\0" * 24, dtype=types_pb2.DATA_TYPE_INT64)), INVALID,
     "must be FLOAT32"),
    ("wrong feature count", "Predict", _predict(SERIES, _features(np.zeros((2, 5)))), INVALID, "needs [T, 3]"),
    ("too many timesteps", "Predict", _predict(SERIES, _features(np.zeros((65, 3)))), INVALID, "max_length=64"),
    # values
    ("nan", "Predict", _predict(SERIES, _features(np.array([[0, 0, 0], [0, np.nan, 0]]))), INVALID,
     "NaN or inf at timestep 1"),
    ("inf", "Predict", _predict(SERIES, _features(np.array([[np.inf, 0, 0]]))), INVALID, "NaN or inf"),
    ("-inf late", "Predict", _predict(SERIES, _features(np.r_[np.zeros((9, 3)), [[0, 0, -np.inf]]])), INVALID,
     "timestep 9"),
    ("oov id", "Predict", _predict(WORDS, _ids([2, 17])), INVALID, "token_ids[1] = 17 is outside"),
    ("negative id", "Predict", _predict(WORDS, _ids([-5])), INVALID, "outside the vocabulary"),
    ("int64 max id", "Predict", _predict(WORDS, _ids([2**63 - 1])), INVALID, "outside the vocabulary"),
    # empty things
    ("no inputs", "Predict", _predict(WORDS), INVALID, "inputs is empty"),
    ("empty text", "Predict", _predict(WORDS, _text("")), INVALID, "has no tokens"),
    ("only spaces", "Predict", _predict(WORDS, _text(" \t\n\u3000")), INVALID, "has no tokens"),
    ("empty ids", "Predict", _predict(WORDS, _ids([])), INVALID, "token_ids is empty"),
    ("empty features", "Predict", _predict(SERIES, _features(np.zeros((0, 3)))), INVALID, "is empty"),
    ("unset oneof", "Predict", _predict(WORDS, types_pb2.SequenceInput()), INVALID, "set one of"),
    ("unknown oneof field", "Predict", _predict(WORDS, _sequence_input_with_unknown_field()), INVALID,
     "set one of"),
    ("too many sequences", "Predict", _predict(WORDS, *[_text("good")] * 9), INVALID, "max_batch=8"),
    # wrong kind for the model
    ("features to a token model", "Predict", _predict(WORDS, _features(np.zeros((2, 3)))), INVALID,
     "takes text or token_ids"),
    ("text to a feature model", "Predict", _predict(SERIES, _text("hi")), INVALID, "takes features"),
    # text length: refused from its size, before tokenizing it
    ("1 MB of words", "Predict", _predict(WORDS, _text("good " * 200_000)), INVALID,
     "inputs[0].text has 1000000 characters"),
    ("1 MB of one word", "Predict", _predict(WORDS, _text("a" * 1_000_000)), INVALID, "at most 4096 characters"),
    ("1 MB of spaces", "Predict", _predict(WORDS, _text(" " * 1_000_000)), INVALID, "characters"),
    ("1 MB to a char model", "Predict", _predict(CHARS, _text("é" * 1_000_000)), INVALID,
     "at most 64 characters"),
    ("65 words in 4 KB", "Predict", _predict(WORDS, _text("good " * 65)), INVALID, "more than 64 tokens"),
    ("65 chars", "Predict", _predict(CHARS, _text("a" * 65)), INVALID, "max_length=64"),
    # Open Inference Protocol
    ("oip fp64 beyond float32", "ModelInfer", _infer(SERIES, "FP64", [1, 1, 3],
                                                     np.array([1e300, 0, 0], "<f8").tobytes()), INVALID, "NaN or inf"),
    ("oip nan", "ModelInfer", _infer(SERIES, "FP32", [1, 1, 3], np.array([0, np.nan, 0], "<f4").tobytes()),
     INVALID, "NaN or inf"),
    ("oip raw bytes short", "ModelInfer", _infer(WORDS, "INT64", [1, 4], b"\0" * 31), INVALID, "31 raw bytes"),
    ("oip huge shape", "ModelInfer", _infer(WORDS, "INT64", [2**31, 2**31], b""), INVALID, "raw bytes"),
    ("oip zero timesteps", "ModelInfer", _infer(WORDS, "INT64", [2**40, 0], b""), INVALID, "B, T >= 1"),
    ("oip negative dim", "ModelInfer", _infer(WORDS, "INT64", [1, -2], b""), INVALID, "invalid"),
    ("oip BYTES", "ModelInfer", _infer(WORDS, "BYTES", [1, 1], b"\0" * 8), INVALID, "'BYTES' not supported"),
    ("oip FP16", "ModelInfer", _infer(SERIES, "FP16", [1, 1, 3], b"\0" * 6), INVALID, "not supported"),
    ("oip float ids", "ModelInfer", _infer(WORDS, "FP32", [1, 2], b"\0" * 8), INVALID, "INT64"),
    ("oip lengths beyond T", "ModelInfer", _infer(WORDS, "INT64", [1, 2], b"\0" * 16, lengths=[3]), INVALID,
     "'lengths'"),
    ("oip zero length", "ModelInfer", _infer(WORDS, "INT64", [1, 2], b"\0" * 16, lengths=[0]), INVALID,
     "'lengths'"),
    ("oip batch over max", "ModelInfer", _infer(WORDS, "INT64", [9, 1], b"\0" * 72), INVALID, "max_batch=8"),
    ("oip too long", "ModelInfer", _infer(WORDS, "INT64", [1, 65], b"\0" * 520), INVALID, "max_length=64"),
    ("oip 100 KB input name", "ModelInfer", oip.ModelInferRequest(model_name=WORDS, inputs=[
        oip.ModelInferRequest.InferInputTensor(name="\U0001F600" * 25_000, datatype="INT64", shape=[1, 1])],
        raw_input_contents=[b"\0" * 8]), INVALID, "bytes, cut)"),
    ("oip unknown input", "ModelInfer", oip.ModelInferRequest(model_name=WORDS, inputs=[
        oip.ModelInferRequest.InferInputTensor(name="x", datatype="INT64", shape=[1, 1])],
        raw_input_contents=[b"\0" * 8]), INVALID, "needs input 'inputs'"),
    # names: never a path
    *[(f"predict name {n!r}", "Predict", _predict(n, _text("good")), INVALID, "not a valid name")
      for n in BAD_NAMES if n],
    *[(f"version {v!r}", "Predict", _predict(WORDS, _text("good"), version=v), INVALID, "not a valid name")
      for v in BAD_NAMES if v],
    *[(f"get_model {n!r}", "GetModel", models_pb2.GetModelRequest(name=n), INVALID, "not a valid name")
      for n in BAD_NAMES],
    *[(f"model_infer {n!r}", "ModelInfer", _infer(n, "INT64", [1, 1], b"\0" * 8), INVALID, "not a valid name")
      for n in BAD_NAMES],
    ("metadata '..'", "ModelMetadata", oip.ModelMetadataRequest(name=".."), INVALID, "not a valid name"),
    ("ready '../x'", "ModelReady", oip.ModelReadyRequest(name="../x"), INVALID, "not a valid name"),
    *EXPLAIN_CASES,
    ("unknown model", "Predict", _predict("nope", _text("good")), NOT_FOUND, "'nope'"),
    ("unknown version", "Predict", _predict(WORDS, _text("good"), version="7"), NOT_FOUND, "no version '7'"),
]


def _stubs(channel: grpc.Channel) -> dict[str, Any]:
    ours, oips = service_pb2_grpc.SequenceExplainerServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
    return {"Predict": ours.Predict, "Explain": ours.Explain, "GetModel": ours.GetModel, "ModelInfer": oips.ModelInfer,
            "ModelMetadata": oips.ModelMetadata, "ModelReady": oips.ModelReady}


@pytest.mark.parametrize("label, rpc, request_msg, code, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_precisely_before_any_model_run(
        server: ServerThread, channel: grpc.Channel, label: str, rpc: str, request_msg: Any,
        code: grpc.StatusCode, message: str) -> None:
    call = _stubs(channel)[rpc]
    before = _model_runs(server)
    with pytest.raises(grpc.RpcError) as info:
        call(request_msg, timeout=30)
    assert (info.value.code(), message in info.value.details()) == (code, True), info.value.details()
    assert _model_runs(server) == before, f"{label} ran a model before it was refused"


@pytest.mark.parametrize("label, request_msg, code, message", [(c[0], c[2], c[3], c[4]) for c in EXPLAIN_CASES],
                         ids=[c[0] for c in EXPLAIN_CASES])
def test_hostile_stream_item_is_refused_precisely_before_any_model_run(
        server: ServerThread, channel: grpc.Channel, label: str, request_msg: Any, code: grpc.StatusCode,
        message: str) -> None:
    """The same Explain requests as StreamExplain items: an item error each, no model run."""
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    item = explain_pb2.ExplainRequest()
    item.CopyFrom(request_msg)
    item.request_id = "hostile-item"
    before = _model_runs(server)
    answers = list(stub.StreamExplain(iter([item]), timeout=30))
    assert len(answers) == 1 and answers[0].request_id == "hostile-item"
    error = answers[0].error
    assert (error.code, message in error.message) == (code.value[0], True), error.message
    assert _model_runs(server) == before, f"{label} ran a model before it was refused"


def test_oversize_message_is_resource_exhausted(server: ServerThread, channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    big = _predict(SERIES, _tensor([1, 3], b"\0" * (MAX_MESSAGE + 1)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(big, timeout=10)
    assert info.value.code() == EXHAUSTED
    assert str(MAX_MESSAGE) in info.value.details()  # "Received message larger than max (... vs. 4194304)"


UNICODE = {
    "combining": "cafe\u0301 film",  # e + COMBINING ACUTE ACCENT
    "rtl": "\u05e1\u05e8\u05d8 \u05d8\u05d5\u05d1 good",  # Hebrew, then Latin
    "rtl override": "good \u202efilm\u202c bad",
    "zero width": "good\u200bfilm\u200d \ufeffbad",
    "emoji zwj": "\U0001F469\u200d\U0001F4BB film \U0001F44D\U0001F3FD!",
    "astral letters": "\U0001D4B7\U0001D4C7\U0001D4C2 good",  # mathematical script letters (\\w)
    "nul and controls": "good\x00film\x07bad\x1b[31m",
    "lowercase grows": "\u0130stanbul FILM",  # capital I with dot: lower() is 2 code points
}


@pytest.mark.parametrize("text", list(UNICODE.values()), ids=list(UNICODE))
@pytest.mark.parametrize("model", [WORDS, CHARS])
def test_unicode_text_tokens_point_into_the_text(channel: grpc.Channel, model: str, text: str) -> None:
    """Offsets are code points into the request text; every token's span is its surface text."""
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    pred = stub.Predict(_predict(model, _text(text)), timeout=10).predictions[0]
    assert pred.length == len(pred.tokens) > 0
    for tok in pred.tokens:
        assert text[tok.start:tok.end] == tok.text
    if model == CHARS:
        assert "".join(t.text for t in pred.tokens) == text


def test_longest_accepted_text_is_served_by_one_run(server: ServerThread, channel: grpc.Channel) -> None:
    """At the character cap but within max_length tokens: served, not refused, by one ONNX Runtime run."""
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    text = ("good" + " " * 60) * 64  # 64 tokens in 4096 characters
    before = (_model_runs(server, "onnxruntime"), _model_runs(server, "torch"))
    pred = stub.Predict(_predict(WORDS, _text(text)), timeout=30).predictions[0]
    assert pred.length == 64
    assert (_model_runs(server, "onnxruntime"), _model_runs(server, "torch")) == (before[0] + 1, before[1])


def test_server_still_serves_after_the_hostile_requests(server: ServerThread, channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    before = (_model_runs(server, "onnxruntime"), _model_runs(server, "torch"))
    assert stub.Predict(_predict(WORDS, _text("a good film")), timeout=30).predictions[0].label
    assert (_model_runs(server, "onnxruntime"), _model_runs(server, "torch")) == (before[0] + 1, before[1])
    # ... and Explain runs: the oracle above sees both runtimes
    stub.Explain(_explain(name="saliency"), timeout=60)
    after = (_model_runs(server, "onnxruntime"), _model_runs(server, "torch"))
    assert after[0] > before[0] + 1 and after[1] > before[1]


# Field 1 is a string in every request type, so these fail to parse as any of them.
UNDECODABLE = {
    "lone surrogate": b"\x0a\x03\xed\xa0\x80",  # UTF-8-encoded U+D800: not valid UTF-8
    "bad utf-8": b"\x0a\x02\xc3\x28",
    "truncated field": b"\x0a\x05wor",
    "varint overflow": b"\x10" + b"\xff" * 11,
}
# Predict with inputs[0].text = a lone surrogate: a nested string field.
SURROGATE_TEXT = b"\x0a\x05words\x1a\x05\x0a\x03\xed\xa0\x80"


@pytest.mark.parametrize("payload", list(UNDECODABLE.values()), ids=list(UNDECODABLE))
@pytest.mark.parametrize("path", ["/seqlens.v1.SequenceExplainerService/Predict", "/seqlens.v1.SequenceExplainerService/Explain",
                                  "/seqlens.v1.SequenceExplainerService/GetModel",
                                  "/inference.GRPCInferenceService/ModelInfer"])
def test_undecodable_bytes_are_invalid_argument(channel: grpc.Channel, path: str, payload: bytes) -> None:
    """Bytes that do not parse as the request type: INVALID_ARGUMENT naming the type, not UNKNOWN."""
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(path)(payload, timeout=10)
    assert info.value.code() == INVALID, info.value.details()
    assert info.value.details().startswith("undecodable request: Error parsing message with type")


def test_surrogate_in_nested_text_is_invalid_argument(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/seqlens.v1.SequenceExplainerService/Predict")(SURROGATE_TEXT, timeout=10)
    assert info.value.code() == INVALID and "bad UTF-8" in info.value.details()


def test_undecodable_item_in_a_stream_fails_the_stream_precisely(channel: grpc.Channel) -> None:
    good = _explain(name="saliency").SerializeToString()
    stream = channel.stream_stream("/seqlens.v1.SequenceExplainerService/StreamExplain")
    with pytest.raises(grpc.RpcError) as info:
        list(stream(iter([good, SURROGATE_TEXT]), timeout=20))
    assert info.value.code() == INVALID, info.value.details()
    assert "undecodable request" in info.value.details()
