"""All conversion between protobuf messages and domain types lives here."""

from __future__ import annotations

import math

import numpy as np

from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.seqlens.v1 import models_pb2, predict_pb2, types_pb2

from ..errors import InvalidInput
from ..inputs import SequenceInput
from ..registry import VersionState
from ..results import ModelDescription, ModelSummary, Prediction, PredictResult
from ..tokenizers import TokenSpan

_DTYPES = {types_pb2.DATA_TYPE_UNSPECIFIED: np.float32, types_pb2.FLOAT32: np.float32, types_pb2.INT64: np.int64}
_TASKS = {"classification": models_pb2.CLASSIFICATION, "tagging": models_pb2.TAGGING,
          "forecasting": models_pb2.FORECASTING, "regression": models_pb2.REGRESSION}
_KINDS = {"tokens": models_pb2.TOKENS, "features": models_pb2.FEATURES}
_STATES = {VersionState.LOADING: models_pb2.LOADING, VersionState.READY: models_pb2.READY,
           VersionState.FAILED: models_pb2.FAILED, VersionState.UNLOADED: models_pb2.UNLOADED}
MAX_TENSOR_RANK = 4


# --- tensors ------------------------------------------------------------------------
def tensor_to_numpy(msg: types_pb2.Tensor, where: str) -> np.ndarray:
    """Checked decode: known dtype, sane shape, byte count matching the shape."""
    if msg.dtype not in _DTYPES:
        raise InvalidInput(f"{where}.dtype {msg.dtype} is not supported; use FLOAT32 or INT64")
    dtype = np.dtype(_DTYPES[msg.dtype]).newbyteorder("<")
    shape = list(msg.shape)
    if not 1 <= len(shape) <= MAX_TENSOR_RANK or any(d < 0 for d in shape):
        raise InvalidInput(f"{where}.shape {shape} is invalid: give 1-{MAX_TENSOR_RANK} non-negative dims")
    need = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
    if need != len(msg.data):
        raise InvalidInput(f"{where}.data has {len(msg.data)} bytes; shape {shape} of {dtype.name} needs {need}")
    return np.frombuffer(msg.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def numpy_to_tensor(arr: np.ndarray) -> types_pb2.Tensor:
    if np.issubdtype(arr.dtype, np.integer):
        a, dt = np.ascontiguousarray(arr, dtype="<i8"), types_pb2.INT64
    else:
        a, dt = np.ascontiguousarray(arr, dtype="<f4"), types_pb2.FLOAT32
    return types_pb2.Tensor(dtype=dt, shape=list(a.shape), data=a.tobytes())


# --- inputs -------------------------------------------------------------------------
def sequence_input(msg: types_pb2.SequenceInput, where: str) -> SequenceInput:
    kind = msg.WhichOneof("kind")
    if kind == "text":
        return SequenceInput(text=msg.text)
    if kind == "token_ids":
        return SequenceInput(token_ids=np.asarray(msg.token_ids.ids, dtype=np.int64))
    if kind == "features":
        arr = tensor_to_numpy(msg.features, f"{where}.features")
        if arr.dtype != np.float32:
            raise InvalidInput(f"{where}.features must be FLOAT32, got {arr.dtype}")
        if arr.ndim != 2:
            raise InvalidInput(f"{where}.features must be [T, F], got shape {list(arr.shape)}")
        return SequenceInput(features=arr)
    raise InvalidInput(f"{where}: set one of text, token_ids, features")


def tokens_to_proto(tokens: list[TokenSpan] | None) -> list[types_pb2.Token]:
    return [types_pb2.Token(text=t.text, id=t.id, start=t.start, end=t.end) for t in tokens or []]


# --- predictions --------------------------------------------------------------------
def prediction_to_proto(p: Prediction) -> predict_pb2.Prediction:
    msg = predict_pb2.Prediction(
        length=p.length, tokens=tokens_to_proto(p.tokens), scores=numpy_to_tensor(p.scores),
        label_index=p.label_index, label=p.label,
        step_label_indices=p.step_label_indices, step_labels=p.step_labels)
    if p.probabilities is not None:
        msg.probabilities.CopyFrom(numpy_to_tensor(p.probabilities))
    return msg


def predict_response(r: PredictResult) -> predict_pb2.PredictResponse:
    return predict_pb2.PredictResponse(model_name=r.model_name, model_version=r.model_version,
                                       predictions=[prediction_to_proto(p) for p in r.predictions])


# --- models -------------------------------------------------------------------------
def list_models_response(models: list[ModelSummary]) -> models_pb2.ListModelsResponse:
    return models_pb2.ListModelsResponse(models=[
        models_pb2.ModelSummary(name=m.name, task=_TASKS.get(m.task, models_pb2.TASK_UNSPECIFIED),
                                input_kind=_KINDS.get(m.input_kind, models_pb2.INPUT_KIND_UNSPECIFIED),
                                default_version=m.default_version, versions=m.versions, ready=m.ready)
        for m in models])


def model_info(d: ModelDescription) -> models_pb2.ModelInfo:
    info = models_pb2.ModelInfo(
        name=d.name, default_version=d.default_version,
        versions=[models_pb2.VersionStatus(
            version=r.version, state=_STATES[r.state], reason=r.reason,
            parity_max_abs_diff=r.loaded.parity_max_abs_diff if r.loaded else 0.0,
            load_seconds=r.loaded.load_seconds if r.loaded else 0.0) for r in d.records],
        attribution_methods=d.attribution_methods, state_summaries=d.state_summaries,
        limits=models_pb2.Limits(max_length=d.max_length, max_batch=d.max_batch,
                                 max_explain_work=d.max_explain_work, max_steps=d.max_steps))
    c = d.config
    if c is None:
        return info
    a = c.architecture
    info.task = _TASKS[c.task]
    info.labels.extend(c.labels or [])
    info.horizon = c.horizon or 0
    info.description = c.description
    info.architecture.CopyFrom(models_pb2.Architecture(
        input_layer=a.input_layer, cell=a.cell, num_layers=a.num_layers, hidden_size=a.hidden_size,
        bidirectional=a.bidirectional, head=a.head, embedding_dim=a.embedding_dim,
        num_parameters=d.num_parameters))
    if c.input.kind == "tokens":
        info.input.CopyFrom(models_pb2.InputSchema(
            kind=models_pb2.TOKENS, tokenizer=c.input.tokenizer, vocab_size=d.vocab_size,
            pad_id=c.input.pad_id, unk_id=c.input.unk_id, lowercase=c.input.lowercase))
    else:
        info.input.CopyFrom(models_pb2.InputSchema(kind=models_pb2.FEATURES,
                                                   feature_names=c.input.feature_names))
    return info


# --- Open Inference Protocol --------------------------------------------------------
_OIP_NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64}


def oip_input(req: oip.ModelInferRequest, index: int) -> np.ndarray:
    """Decode input ``index`` from raw_input_contents or typed contents."""
    t = req.inputs[index]
    where = f"inputs[{index}] ({t.name!r})"
    if t.datatype not in _OIP_NUMPY:
        raise InvalidInput(f"{where}: datatype {t.datatype!r} not supported; use INT64 token ids or FP32 features")
    shape = list(t.shape)
    if not 1 <= len(shape) <= MAX_TENSOR_RANK or any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {shape} is invalid")
    count = math.prod(shape)
    dtype = np.dtype(_OIP_NUMPY[t.datatype]).newbyteorder("<")
    if req.raw_input_contents:
        if len(req.raw_input_contents) != len(req.inputs):
            raise InvalidInput("raw_input_contents must have one entry per input")
        raw = req.raw_input_contents[index]
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(f"{where}: {len(raw)} raw bytes, shape {shape} of {t.datatype} needs "
                               f"{count * dtype.itemsize}")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        field = {"INT64": "int64_contents", "INT32": "int_contents", "FP32": "fp32_contents",
                 "FP64": "fp64_contents"}[t.datatype]
        arr = np.asarray(getattr(t.contents, field), dtype=dtype)
        if arr.size != count:
            raise InvalidInput(f"{where}: {arr.size} values in contents.{field}, shape {shape} needs {count}")
    return arr.reshape(shape)


def oip_infer_response(req: oip.ModelInferRequest, version: str, outputs: np.ndarray) -> oip.ModelInferResponse:
    out = np.ascontiguousarray(outputs, dtype="<f4")
    return oip.ModelInferResponse(
        model_name=req.model_name, model_version=version, id=req.id,
        outputs=[oip.ModelInferResponse.InferOutputTensor(name="outputs", datatype="FP32", shape=list(out.shape))],
        raw_output_contents=[out.tobytes()])
