"""Hypothesis strategies for the request messages, built from the proto descriptors.

Every field of a message gets random values of its wire type (unknown enum numbers, the full
integer ranges, NaN and inf, nested messages), so fields added later are fuzzed too. Fields
where pure noise would only ever hit the first check (model names, inputs, tensors, method
names) are biased towards values that reach deeper: known names, consistent shapes and byte
buffers, plausible lengths, with hostile values mixed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.seqlens.v1 import types_pb2

MODELS = ("words", "chars", "series", "tagger", "forecast")
BAD_NAMES = ("", "../words", "words/1", "..", "words\n", "wörds", "x" * 300, "/etc/passwd", "words\x00")
METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "smoothgrad", "occlusion",
           "feature_ablation", "shapley_sampling")
DATATYPES = ("INT64", "INT32", "FP32", "FP64", "FP16", "BYTES", "BOOL", "UINT8", "", "int64")
_OIP_ITEMSIZE = {"INT64": 8, "INT32": 4, "FP32": 4, "FP64": 8, "FP16": 2, "BOOL": 1, "UINT8": 1}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
MAX_DEPTH = 4


def names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(MODELS), st.sampled_from(BAD_NAMES), st.text(max_size=12))


def _small_or_any(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Mostly small values (they pass the first checks), sometimes anything in range."""
    return st.one_of(st.integers(max(lo, -3), min(hi, 80)), st.integers(lo, hi))


def _floats(width: Literal[32, 64] = 64) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(-10, 10, width=width), st.floats(width=width))


@st.composite
def float_tensor(draw: st.DrawFn, features: int | None = None) -> types_pb2.Tensor:
    """A [T,F] float32 tensor: usually consistent, sometimes with NaN/inf, a wrong dtype or
    shape, or a byte buffer that does not match the shape."""
    t = draw(st.integers(0, 40))
    f = features if features is not None else draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).normal(size=(t, f)).astype("<f4")
    if x.size and draw(st.integers(0, 9)) == 0:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
    msg = types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=[t, f], data=x.tobytes())
    damage = draw(st.integers(0, 11))
    if damage == 0:
        msg.dtype = draw(st.sampled_from([types_pb2.DATA_TYPE_INT64, types_pb2.DATA_TYPE_UNSPECIFIED, 3, -1, 99]))
    elif damage == 1:
        msg.shape[:] = draw(st.lists(_small_or_any(-(2**63), 2**63 - 1), max_size=6))
    elif damage == 2:
        msg.data = draw(st.binary(max_size=64))
    return msg


def sequence_input() -> st.SearchStrategy[types_pb2.SequenceInput]:
    text = st.one_of(st.text(max_size=60), st.text(alphabet="good bad film the a , . !", max_size=200),
                     st.sampled_from(["", " ", "\u200b", "e\u0301", "\U0001F600" * 70, "a" * 5000]))
    ids = st.lists(st.one_of(st.integers(-2, 20), st.integers(-(2**63), 2**63 - 1)), max_size=80)
    return st.one_of(
        text.map(lambda s: types_pb2.SequenceInput(text=s)),
        ids.map(lambda v: types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=v))),
        st.one_of(float_tensor(3), float_tensor()).map(lambda t: types_pb2.SequenceInput(features=t)),
        st.just(types_pb2.SequenceInput()),
    )


@st.composite
def infer_inputs(draw: st.DrawFn) -> tuple[list[oip.ModelInferRequest.InferInputTensor], list[bytes]]:
    """OIP input tensors with raw contents that usually match their shapes and datatypes."""
    tensors, raws = [], []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["inputs", "inputs", "lengths", "x", ""]))
        datatype = draw(st.sampled_from(DATATYPES))
        rank = draw(st.sampled_from([1, 2, 3, 3, 0, 5]))
        shape = [draw(st.integers(0, 12)) for _ in range(rank)]
        if draw(st.integers(0, 9)) == 0:
            shape = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
        count = math.prod(shape) if all(0 <= d <= 64 for d in shape) else 0
        size = count * _OIP_ITEMSIZE.get(datatype, 1)
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        if datatype in ("INT64", "INT32"):
            raw = rng.integers(-1, 20, size=count).astype("<i8" if datatype == "INT64" else "<i4").tobytes()
        else:
            raw = rng.bytes(size)
        if draw(st.integers(0, 7)) == 0:
            raw = draw(st.binary(max_size=64))
        tensors.append(oip.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape))
        raws.append(raw)
    return tensors, raws


@st.composite
def model_infer_request(draw: st.DrawFn) -> oip.ModelInferRequest:
    tensors, raws = draw(infer_inputs())
    msg = oip.ModelInferRequest(model_name=draw(names()), model_version=draw(st.sampled_from(["", "1", "9", ".."])),
                                id=draw(st.text(max_size=8)), inputs=tensors)
    if draw(st.integers(0, 5)):
        msg.raw_input_contents.extend(raws)
    else:  # typed contents instead of raw bytes (or neither)
        for t in msg.inputs:
            field = draw(st.sampled_from(["int64_contents", "fp32_contents", "int_contents", "fp64_contents"]))
            values = draw(st.lists(st.integers(-1, 20), max_size=30))
            getattr(t.contents, field).extend([float(v) for v in values] if "fp" in field else values)
    return msg


# Field-specific strategies, by full field name, or by field name for any message.
HINTS: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    "model_name": names,
    "seqlens.v1.GetModelRequest.name": names,
    "model_version": lambda: st.sampled_from(["", "1", "2", "x", "../1", "1\n"]),
    "seqlens.v1.AttributionMethod.name": lambda: st.one_of(st.sampled_from(METHODS), st.text(max_size=10)),
    "seqlens.v1.StateOptions.summaries": lambda: st.lists(st.one_of(st.sampled_from(
        ["state_norm", "delta_norm", "gate_mean", "saturation", "timescale", "top_units", "prefix_prediction",
         "unit_contribution", "active_count", "projection"]), st.text(max_size=8)), max_size=4),
    "seqlens.v1.Target.label": lambda: st.one_of(st.sampled_from(["neg", "neu", "pos"]), st.text(max_size=8)),
    "seqlens.v1.Tensor": float_tensor,
    "seqlens.v1.SequenceInput": sequence_input,
    "seqlens.v1.PredictRequest.inputs": lambda: st.lists(sequence_input(), max_size=6),
}


def _hint(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
    make = HINTS.get(field.full_name) or HINTS.get(field.name)
    if make is None and field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
        make = HINTS.get(field.message_type.full_name)
    return make() if make else None


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_RANGES:
        return _small_or_any(*_INT_RANGES[t])
    if t == FieldDescriptor.TYPE_DOUBLE:
        return _floats(64)
    if t == FieldDescriptor.TYPE_FLOAT:
        return _floats(32)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=20)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: unknown numbers are legal on the wire
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-3, 40))
    raise TypeError(f"unhandled field type {t} of {field.full_name}")


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, depth + 1) if depth < MAX_DEPTH else None
    return _scalar(field)


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``: each field set or not, with values of its type."""
    cls = message_factory.GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        hinted = _hint(field)
        if hinted is not None:
            optional[field.name] = hinted
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key = _scalar(field.message_type.fields_by_name["key"])
            val = _value(field.message_type.fields_by_name["value"], depth)
            if val is not None:
                optional[field.name] = st.dictionaries(key, val, max_size=3)
            continue
        value = _value(field, depth)
        if value is None:
            continue
        optional[field.name] = st.lists(value, max_size=4) if field.is_repeated else value

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, v in values.items():
            field = descriptor.fields_by_name[name]
            target = getattr(msg, name)
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                for k, item in v.items():
                    if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                        target[k].CopyFrom(item)
                    else:
                        target[k] = item
            elif field.is_repeated:
                target.extend(v)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)  # type: ignore[arg-type]


# --- well-formed requests, perturbed ---------------------------------------------------------
# Pure noise is refused at the first check; these start from a request the model accepts and
# change 0-2 of its fields to noise, so the deeper checks and the runtimes get exercised.
TOKEN_MODELS, FEATURE_MODELS = ("words", "chars", "tagger"), ("series", "forecast")
VOCAB_SIZE, NUM_FEATURES = 17, 3


@st.composite
def model_input(draw: st.DrawFn, model: str, max_t: int = 12) -> types_pb2.SequenceInput:
    """An input the model takes, sometimes with one hostile value."""
    t = draw(st.integers(1, max_t))
    if model in TOKEN_MODELS:
        if draw(st.booleans()):
            words = draw(st.lists(st.sampled_from(["the", "a", "film", "was", "good", "bad", "dull", "witty", ",", ".", "!", "not", "very"]),
                                  min_size=1, max_size=t))
            return types_pb2.SequenceInput(text=" ".join(words))
        ids = draw(st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=1, max_size=t))
        if draw(st.integers(0, 9)) == 0:
            ids[draw(st.integers(0, len(ids) - 1))] = draw(st.integers(-(2**63), 2**63 - 1))
        return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=ids))
    return types_pb2.SequenceInput(features=types_pb2.Tensor(**_features_fields(draw, t)))


def _features_fields(draw: st.DrawFn, t: int) -> dict[str, Any]:
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=(t, NUM_FEATURES)).astype("<f4")
    if draw(st.integers(0, 9)) == 0:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, 1e38]))
    return {"dtype": types_pb2.DATA_TYPE_FLOAT32, "shape": [t, NUM_FEATURES], "data": x.tobytes()}


def _perturb(draw: st.DrawFn, msg: Message) -> Message:
    """Replace 0-2 top-level fields of ``msg`` with noise of their type."""
    noise = draw(message(msg.DESCRIPTOR))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        name = draw(st.sampled_from([f.name for f in msg.DESCRIPTOR.fields]))
        only = type(msg)()
        only.CopyFrom(noise)
        for other in msg.DESCRIPTOR.fields:
            if other.name != name:
                only.ClearField(other.name)
        msg.ClearField(name)
        msg.MergeFrom(only)  # works alike for scalars, messages, repeated fields, maps and oneofs
    return msg


@st.composite
def predict_request(draw: st.DrawFn) -> Message:
    from seqlens_client._proto.seqlens.v1 import predict_pb2

    model = draw(st.sampled_from(MODELS))
    inputs = draw(st.lists(model_input(model, max_t=40), min_size=1, max_size=6))
    return _perturb(draw, predict_pb2.PredictRequest(model_name=model, inputs=inputs))


def _mostly(valid: list[Any], hostile: list[Any]) -> st.SearchStrategy[Any]:
    """A valid value about nine times in ten (hypothesis favours small integers: 9 is rare)."""
    return st.tuples(st.integers(0, 9), st.sampled_from(valid), st.sampled_from(hostile)).map(
        lambda t: t[2] if t[0] == 9 else t[1])


@st.composite
def attribution_method(draw: st.DrawFn, features: bool) -> Message:
    from seqlens_client._proto.seqlens.v1 import explain_pb2
    from seqlens_client.options import METHOD_OPTIONS

    name = draw(st.sampled_from(METHODS))
    options: dict[str, Any] = {
        "n_steps": draw(st.integers(0, 16)), "quadrature": draw(st.integers(0, 4)),
        "adaptive": draw(st.booleans()),
        "tolerance": draw(_mostly([0.0, 0.01, 0.2], [-1.0, float("nan"), 1e300])),
        "max_steps": draw(st.integers(0, 40)), "n_samples": draw(st.integers(0, 6)),
        "noise_stdev": draw(_mostly([0.0, 0.1, 1.0], [-1.0, float("inf")])),
        "seed": draw(st.integers(0, 2**64 - 1)), "window": draw(st.integers(0, 4)),
        "stride": draw(st.integers(0, 3)), "ablation": draw(_mostly([0, 1] if features else [0], [1, 2]))}
    # Options the method does not take are refused up front; send them only now and then.
    takes = METHOD_OPTIONS.get(name, ())
    options = {k: v for k, v in options.items() if k in takes or draw(st.integers(0, 9)) == 9}
    return explain_pb2.AttributionMethod(name=name, **options)


@st.composite
def explain_request(draw: st.DrawFn) -> Message:
    from seqlens_client._proto.seqlens.v1 import explain_pb2, state_pb2

    model = draw(st.sampled_from(MODELS))
    features = model in FEATURE_MODELS
    msg = explain_pb2.ExplainRequest(
        request_id=draw(st.text(max_size=8)), model_name=model, input=draw(model_input(model)),
        methods=draw(st.lists(attribution_method(features), max_size=2)), faithfulness=draw(st.booleans()))
    if model == "tagger":
        msg.target.timestep = draw(_mostly([0, 1], [-1, 40]))
    elif model == "forecast":
        msg.target.horizon_step = draw(_mostly([0, 1, 2], [3, -1]))
    else:
        ref = draw(st.sampled_from(["none", "index", "label"]))
        if ref == "index":
            msg.target.class_index = draw(_mostly([0, 1, 2], [-1, 3, 2**31 - 1]))
        elif ref == "label":
            msg.target.label = draw(_mostly(["neg", "neu", "pos"], ["nope", ""]))
    msg.target.output_space = draw(st.integers(0, 1))
    msg.baseline.kind = draw(_mostly([0, 2, 3, 4] if features else [0, 1, 2, 3, 4], [1, 4, 9]))
    if msg.baseline.kind == explain_pb2.BASELINE_KIND_CUSTOM:
        msg.baseline.custom.CopyFrom(msg.input if draw(st.booleans()) else draw(model_input(model)))
    if draw(st.booleans()):
        names = ["state_norm", "delta_norm", "gate_mean", "saturation", "timescale", "top_units", "prefix_prediction",
                 "unit_contribution", "active_count", "projection"]
        msg.state.CopyFrom(state_pb2.StateOptions(
            enabled=True, summaries=draw(st.lists(_mostly(names, ["", "nope"]), max_size=4)),
            top_k=draw(st.integers(0, 8)), include_hidden=draw(st.booleans()), include_cell=draw(st.booleans())))
    return _perturb(draw, msg)


@st.composite
def valid_model_infer_request(draw: st.DrawFn) -> Message:
    model = draw(st.sampled_from(MODELS))
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tensor = oip.ModelInferRequest.InferInputTensor
    if model in TOKEN_MODELS:
        x, datatype, shape = rng.integers(0, VOCAB_SIZE, size=(b, t)).astype("<i8"), "INT64", [b, t]
    else:
        x, datatype, shape = rng.normal(size=(b, t, NUM_FEATURES)).astype("<f4"), "FP32", [b, t, NUM_FEATURES]
    msg = oip.ModelInferRequest(model_name=model, inputs=[tensor(name="inputs", datatype=datatype, shape=shape)],
                                raw_input_contents=[x.tobytes()])
    if draw(st.booleans()):
        lengths = rng.integers(1, t + 1, size=b).astype("<i8")
        msg.inputs.append(tensor(name="lengths", datatype="INT64", shape=[b]))
        msg.raw_input_contents.append(lengths.tobytes())
    return _perturb(draw, msg)
