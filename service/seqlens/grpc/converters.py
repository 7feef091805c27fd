"""All conversion between protobuf messages and domain types lives here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
from seqlens_client import vocabulary
from seqlens_client.stubs import (
    explain_pb2,
    models_pb2,
    predict_pb2,
    recurrent_pb2,
    sequence_pb2,
    state_pb2,
    types_pb2,
)
from seqlens_client.stubs import oip_pb2 as oip

from ..carry import CarriedState
from ..errors import InvalidInput
from ..explain import ExplainRequest, ExplainResult
from ..explainers.baselines import BaselineKind
from ..explainers.options import AblationMode, MethodOptions, Quadrature
from ..explainers.result import Attribution
from ..explainers.targets import OutputSpace, ResolvedTarget, TargetSpec
from ..inputs import SequenceInput
from ..registry import VersionState
from ..results import ModelDescription, ModelSummary, ModelTensors, Prediction, PredictResult
from ..streaming import ChunkOutcome, SequenceRef, StatefulPredictResult
from ..summaries import DEFAULT_TOP_K, LayerStateResult, StateOptions
from ..tokenizers import TokenSpan

# Enums in the wire vocabulary (seqlens_client.vocabulary): the domain's names are the wire's names;
# tests/unit/test_wire_vocabulary.py checks every value both ways.
_DTYPES = {types_pb2.DATA_TYPE_UNSPECIFIED: np.float32,  # unset: the default, FLOAT32
           types_pb2.DATA_TYPE_FLOAT32: np.float32, types_pb2.DATA_TYPE_INT64: np.int64}
_TASKS = vocabulary.names(models_pb2.Task)
_KINDS = vocabulary.names(models_pb2.InputKind)
_STATES = {s: vocabulary.number(models_pb2.VersionState, s.name) for s in VersionState}
MAX_TENSOR_RANK = 4


# --- tensors ------------------------------------------------------------------------
def tensor_to_numpy(msg: types_pb2.Tensor, where: str) -> np.ndarray:
    """Checked decode: known dtype, sane shape, byte count matching the shape."""
    if msg.dtype not in _DTYPES:
        raise InvalidInput(f"{where}.dtype {msg.dtype} is not supported; use DATA_TYPE_FLOAT32 or DATA_TYPE_INT64")
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
        a, dt = np.ascontiguousarray(arr, dtype="<i8"), types_pb2.DATA_TYPE_INT64
    else:
        a, dt = np.ascontiguousarray(arr, dtype="<f4"), types_pb2.DATA_TYPE_FLOAT32
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
    return [types_pb2.Token(text=t.text, id=t.id, start=t.start, end=t.end, special=t.special)
            for t in tokens or []]


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
        versions=[models_pb2.VersionStatus(version=v.version, state=_STATES[v.state], reason=v.reason,
                                           parity_max_abs_diff=v.parity_max_abs_diff, load_seconds=v.load_seconds)
                  for v in d.versions],
        attribution_methods=d.attribution_methods, state_summaries=d.state_summaries,
        limits=models_pb2.Limits(max_length=d.max_length, min_length=d.min_length, max_batch=d.max_batch,
                                 max_explain_work=d.max_explain_work, max_steps=d.max_steps),
        labels=d.labels, horizon=d.horizon, description=d.description)
    if d.task:
        info.task = _TASKS[d.task]
    if d.architecture is not None:
        a = d.architecture
        info.architecture.CopyFrom(models_pb2.Architecture(
            kind=a.kind, input_layer=a.input_layer, cell=a.cell, num_layers=a.num_layers,
            hidden_size=a.hidden_size, bidirectional=a.bidirectional, head=a.head, embedding_dim=a.embedding_dim,
            num_parameters=a.num_parameters, recurrent_ops=a.recurrent_ops))
    if d.input is not None:
        i = d.input
        info.input.CopyFrom(models_pb2.InputSchema(
            kind=_KINDS[i.kind], tokenizer=i.tokenizer, vocab_size=i.vocab_size, pad_id=i.pad_id, unk_id=i.unk_id,
            lowercase=i.lowercase, vocabulary=i.vocabulary, special_tokens=i.special_tokens,
            add_special_tokens=i.add_special_tokens, feature_names=i.feature_names))
    return info


# --- Open Inference Protocol --------------------------------------------------------
_OIP_NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64}
_OIP_WIRE = {k: np.dtype(v).newbyteorder("<") for k, v in _OIP_NUMPY.items()}  # made once, not per call
_OIP_NAMES = {"int64": "INT64", "float32": "FP32"}  # domain dtype -> OIP datatype (metadata)
_OIP_FIELDS = {"INT64": "int64_contents", "INT32": "int_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}


def oip_where(index: int, name: str) -> str:
    """An OIP request tensor as errors name it: the protocol's fields, not the typed API's."""
    return f"ModelInferRequest.inputs[{index}] ({name!r})"


def oip_input(req: oip.ModelInferRequest, index: int) -> np.ndarray:
    """Decode input ``index`` from raw_input_contents or typed contents."""
    t = req.inputs[index]
    where = oip_where(index, t.name)
    if t.datatype not in _OIP_NUMPY:
        raise InvalidInput(f"{where}: datatype {t.datatype!r} not supported; use INT64 (or INT32) token ids or "
                           "FP32 (or FP64) features")
    shape = list(t.shape)
    if not 1 <= len(shape) <= MAX_TENSOR_RANK or any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {shape} is invalid")
    count = math.prod(shape)
    dtype = _OIP_WIRE[t.datatype]
    if req.raw_input_contents:
        if len(req.raw_input_contents) != len(req.inputs):
            raise InvalidInput("ModelInferRequest.raw_input_contents must have one entry per input")
        raw = req.raw_input_contents[index]
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(f"{where}: {len(raw)} raw bytes, shape {shape} of {t.datatype} needs "
                               f"{count * dtype.itemsize}")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        field = _OIP_FIELDS[t.datatype]
        arr = np.asarray(getattr(t.contents, field), dtype=dtype)
        if arr.size != count:
            raise InvalidInput(f"{where}: {arr.size} values in contents.{field}, shape {shape} needs {count}")
    return arr.reshape(shape)


@dataclass(frozen=True)
class OipInputs:
    """A ModelInferRequest's tensors, decoded; ``*_where`` name them the OIP way in later errors."""

    inputs: np.ndarray
    lengths: np.ndarray | None
    inputs_where: str
    lengths_where: str


def oip_infer_inputs(req: oip.ModelInferRequest) -> OipInputs:
    """All OIP decoding checks: input names, datatypes, shapes and byte counts."""
    names = [t.name for t in req.inputs]
    if "inputs" not in names or set(names) - {"inputs", "lengths"} or len(names) != len(set(names)):
        raise InvalidInput(f"ModelInferRequest.inputs needs input 'inputs' (token ids or features) and "
                           f"optionally 'lengths', got {names}")
    tensors = {name: oip_input(req, i) for i, name in enumerate(names)}
    where = {name: oip_where(i, name) for i, name in enumerate(names)}
    return OipInputs(tensors["inputs"], tensors.get("lengths"), where["inputs"],
                     where.get("lengths", "input 'lengths'"))


def oip_metadata_response(m: ModelTensors) -> oip.ModelMetadataResponse:
    meta = oip.ModelMetadataResponse.TensorMetadata
    return oip.ModelMetadataResponse(
        name=m.name, versions=m.versions, platform=m.platform,
        inputs=[meta(name=t.name, datatype=_OIP_NAMES[t.dtype], shape=t.shape) for t in m.inputs],
        outputs=[meta(name=t.name, datatype=_OIP_NAMES[t.dtype], shape=t.shape) for t in m.outputs])


def oip_infer_response(req: oip.ModelInferRequest, version: str, outputs: np.ndarray) -> oip.ModelInferResponse:
    out = np.ascontiguousarray(outputs, dtype="<f4")
    msg = oip.ModelInferResponse(model_name=req.model_name, model_version=version, id=req.id,
                                 raw_output_contents=[out.tobytes()])
    msg.outputs.add(name="outputs", datatype="FP32", shape=out.shape)
    return msg


# --- state summaries ----------------------------------------------------------------
_STATE_TENSORS = ("hidden", "cell_state", "gates", "state_norm", "delta_norm", "gate_mean", "saturation",
                  "timescale", "top_units", "prefix_prediction", "unit_contribution", "active_count",
                  "projection")


def state_options(msg: state_pb2.StateOptions) -> StateOptions:
    """ExplainRequest.state -> StateOptions (names are checked by summaries.compute_state)."""
    return StateOptions(enabled=msg.enabled, summaries=tuple(msg.summaries), top_k=msg.top_k or DEFAULT_TOP_K,
                        include_hidden=msg.include_hidden, include_cell=msg.include_cell)


def layer_state_to_proto(r: LayerStateResult) -> state_pb2.LayerState:
    """One (layer, direction) of ExplainResponse.state; summaries not computed stay unset."""
    msg = state_pb2.LayerState(
        layer=r.layer, direction=r.direction, cell=r.cell, gate_names=r.gate_names, source=r.source,
        saturation_summary=[state_pb2.GateSaturation(gate=s.gate, left_fraction=s.left_fraction,
                                                     right_fraction=s.right_fraction)
                            for s in r.saturation_summary])
    for name in _STATE_TENSORS:
        arr = getattr(r, name)
        if arr is not None:
            getattr(msg, name).CopyFrom(numpy_to_tensor(arr))
    return msg


# --- explanations -------------------------------------------------------------------
_E = TypeVar("_E")


def _wire_to_domain(enum: vocabulary.EnumType, default: _E) -> dict[int, _E]:
    """Wire number -> domain name; 0 (``*_UNSPECIFIED``) reads as ``default``, the enum's documented default."""
    return {0: default, **{n: cast(_E, name) for name, n in vocabulary.names(enum).items()}}


# The defaults are the domain types' own (a dataclass field's default, read from the class).
_QUADRATURES: dict[int, Quadrature] = _wire_to_domain(explain_pb2.Quadrature, MethodOptions.quadrature)
_ABLATIONS: dict[int, AblationMode] = _wire_to_domain(explain_pb2.AblationMode, MethodOptions.ablation)
_BASELINES: dict[int, BaselineKind] = _wire_to_domain(explain_pb2.BaselineKind, ExplainRequest.baseline_kind)
_SPACES: dict[int, OutputSpace] = _wire_to_domain(explain_pb2.OutputSpace, TargetSpec.output_space)
_SPACE_TO_PROTO = vocabulary.names(explain_pb2.OutputSpace)


def _enum(table: dict[int, _E], value: int, where: str, enum: vocabulary.EnumType) -> _E:
    if value not in table:
        known = ", ".join(f"{vocabulary.prefix(enum)}{n.upper()}" for n in vocabulary.names(enum))
        raise InvalidInput(f"{where} has unknown value {value}; use one of {known} (or leave it unset for "
                           "the default)")
    return table[value]


def method_options(msg: explain_pb2.AttributionMethod, where: str) -> MethodOptions:
    return MethodOptions(
        name=msg.name, n_steps=msg.n_steps,
        quadrature=_enum(_QUADRATURES, msg.quadrature, f"{where}.quadrature", explain_pb2.Quadrature),
        adaptive=msg.adaptive, tolerance=msg.tolerance, max_steps=msg.max_steps, n_samples=msg.n_samples,
        noise_stdev=msg.noise_stdev, seed=msg.seed, window=msg.window, stride=msg.stride,
        ablation=_enum(_ABLATIONS, msg.ablation, f"{where}.ablation", explain_pb2.AblationMode),
        abs_saliency=msg.abs_saliency if msg.HasField("abs_saliency") else None)


def target_spec(msg: explain_pb2.Target) -> TargetSpec:
    ref = msg.WhichOneof("class_ref")
    return TargetSpec(
        class_index=msg.class_index if ref == "class_index" else None,
        label=msg.label if ref == "label" else None,
        timestep=msg.timestep if msg.HasField("timestep") else None,
        horizon_step=msg.horizon_step if msg.HasField("horizon_step") else None,
        output_space=_enum(_SPACES, msg.output_space, "target.output_space", explain_pb2.OutputSpace))


def explain_request(msg: explain_pb2.ExplainRequest) -> ExplainRequest:
    kind = _enum(_BASELINES, msg.baseline.kind, "baseline.kind", explain_pb2.BaselineKind)
    custom = None
    if msg.baseline.HasField("custom"):
        custom = sequence_input(msg.baseline.custom, "baseline.custom")
    return ExplainRequest(
        model_name=msg.model_name, model_version=msg.model_version, request_id=msg.request_id,
        input=sequence_input(msg.input, "input"), target=target_spec(msg.target),
        methods=tuple(method_options(m, f"methods[{i}]") for i, m in enumerate(msg.methods)),
        baseline_kind=kind, baseline_custom=custom,
        state=state_options(msg.state) if msg.HasField("state") else None,
        faithfulness=msg.faithfulness,
        initial_state=recurrent_state(msg.initial_state, "initial_state") if msg.HasField("initial_state") else None,
        return_state=msg.return_state)


def attribution_to_proto(a: Attribution) -> explain_pb2.Attribution:
    msg = explain_pb2.Attribution(
        method=a.method, scores=numpy_to_tensor(a.scores), n_steps=a.n_steps, target_at_input=a.target_at_input,
        target_at_baseline=a.target_at_baseline, seconds=a.seconds)
    if a.convergence_delta is not None:  # absent, not 0.0 / true, for methods without a delta
        msg.convergence_delta, msg.converged = a.convergence_delta, bool(a.converged)
        msg.tolerance = float(a.tolerance or 0.0)
        rel = a.relative_delta
        if rel is not None:
            msg.relative_delta = rel
    if a.feature_scores is not None:
        msg.feature_scores.CopyFrom(numpy_to_tensor(a.feature_scores))
    if a.l2_norm is not None:
        msg.l2_norm.CopyFrom(numpy_to_tensor(a.l2_norm))
    f = a.faithfulness
    if f is not None:
        msg.faithfulness.CopyFrom(explain_pb2.Faithfulness(
            top_k_percent=f.top_k_percent, comprehensiveness=f.comprehensiveness, sufficiency=f.sufficiency,
            aopc_comprehensiveness=f.aopc_comprehensiveness, aopc_sufficiency=f.aopc_sufficiency,
            random_comprehensiveness=f.random_comprehensiveness, random_sufficiency=f.random_sufficiency,
            random_aopc_comprehensiveness=f.random_aopc_comprehensiveness,
            random_aopc_sufficiency=f.random_aopc_sufficiency))
    return msg


def resolved_target_to_proto(t: ResolvedTarget) -> explain_pb2.ResolvedTarget:
    return explain_pb2.ResolvedTarget(class_index=t.class_index, label=t.label, timestep=t.timestep,
                                      horizon_step=t.horizon_step, output_space=_SPACE_TO_PROTO[t.output_space])


def explain_response(r: ExplainResult) -> explain_pb2.ExplainResponse:
    return explain_pb2.ExplainResponse(
        request_id=r.request_id, model_name=r.model_name, model_version=r.model_version,
        prediction=prediction_to_proto(r.prediction), tokens=tokens_to_proto(r.tokens),
        target=resolved_target_to_proto(r.target),
        attributions=[attribution_to_proto(a) for a in r.attributions],
        state=[layer_state_to_proto(s) for s in r.state],
        timings=[explain_pb2.StageTiming(stage=s, seconds=sec) for s, sec in r.timings],
        final_state=recurrent_state_to_proto(r.final_state) if r.final_state is not None else None,
        step_offset=r.step_offset)


def explain_error(request_id: str, code: int, message: str) -> explain_pb2.ExplainResponse:
    """A StreamExplain item that failed: its request id and the gRPC status code number."""
    return explain_pb2.ExplainResponse(request_id=request_id,
                                       error=types_pb2.ItemError(code=code, message=message))


# --- stateful sequences (docs/stateful.md) ------------------------------------------
def recurrent_state(msg: recurrent_pb2.RecurrentState, where: str) -> CarriedState:
    """A caller's state; checked against the answering version by ``carry.check_state``."""
    tensors: dict[str, np.ndarray] = {}
    for i, t in enumerate(msg.tensors):
        here = f"{where}.tensors[{i}]"
        if not t.name:
            raise InvalidInput(f"{here}.name is empty")
        if t.name in tensors:
            raise InvalidInput(f"{here}.name {t.name!r} appears twice")
        if t.tensor.dtype not in (types_pb2.DATA_TYPE_FLOAT32, types_pb2.DATA_TYPE_UNSPECIFIED):
            raise InvalidInput(f"{here}.tensor.dtype must be DATA_TYPE_FLOAT32")
        tensors[t.name] = tensor_to_numpy(t.tensor, f"{here}.tensor")
    return CarriedState(msg.model_name, msg.model_version, msg.steps, tensors)


def recurrent_state_to_proto(s: CarriedState) -> recurrent_pb2.RecurrentState:
    return recurrent_pb2.RecurrentState(
        model_name=s.model_name, model_version=s.model_version, steps=s.steps,
        tensors=[recurrent_pb2.StateTensor(name=k, tensor=numpy_to_tensor(v)) for k, v in s.tensors.items()])


def predict_states(msg: predict_pb2.PredictRequest) -> list[CarriedState | None]:
    """PredictRequest.states -> one initial state per input (None: zero)."""
    if not msg.states:
        return [None] * len(msg.inputs)
    return [recurrent_state(s, f"states[{i}]") for i, s in enumerate(msg.states)]


def stateful_predict_response(r: StatefulPredictResult) -> predict_pb2.PredictResponse:
    msg = predict_response(r.result)
    for p, s in zip(msg.predictions, r.states, strict=True):
        p.state.CopyFrom(recurrent_state_to_proto(s))
    return msg


def sequence_ref(msg: recurrent_pb2.SequenceControl, where: str) -> SequenceRef:
    kind = msg.WhichOneof("id")
    if kind is None or (kind == "string_id" and not msg.string_id) or (kind == "uint_id" and msg.uint_id == 0):
        raise InvalidInput(f"{where}: set string_id (non-empty) or uint_id (non-zero)")
    seq_id: str | int = msg.string_id if kind == "string_id" else msg.uint_id
    return SequenceRef(seq_id, start=msg.start, end=msg.end)


def sequence_status(o: ChunkOutcome) -> recurrent_pb2.SequenceStatus:
    return recurrent_pb2.SequenceStatus(offset=o.offset, steps=o.steps, ended=o.ended)


def chunk_predict_response(o: ChunkOutcome) -> predict_pb2.PredictResponse:
    preds = [prediction_to_proto(o.prediction)] if o.prediction is not None else []
    return predict_pb2.PredictResponse(model_name=o.model_name, model_version=o.model_version,
                                       predictions=preds, sequence=sequence_status(o))


def chunk_input(msg: sequence_pb2.StreamSequenceRequest) -> SequenceInput | None:
    return sequence_input(msg.input, "input") if msg.HasField("input") else None


def chunk_response(request_id: str, o: ChunkOutcome) -> sequence_pb2.StreamSequenceResponse:
    msg = sequence_pb2.StreamSequenceResponse(request_id=request_id, model_name=o.model_name,
                                             model_version=o.model_version, sequence=sequence_status(o))
    if o.prediction is not None:
        msg.prediction.CopyFrom(prediction_to_proto(o.prediction))
    return msg


def chunk_error(request_id: str, code: int, message: str) -> sequence_pb2.StreamSequenceResponse:
    return sequence_pb2.StreamSequenceResponse(request_id=request_id,
                                              error=types_pb2.ItemError(code=code, message=message))


def oip_sequence(req: oip.ModelInferRequest) -> SequenceRef | None:
    """Triton's sequence parameters (``sequence_id``, ``sequence_start``, ``sequence_end``), or None."""
    params = req.parameters
    if "sequence_id" not in params:
        if "sequence_start" in params or "sequence_end" in params:
            raise InvalidInput("parameters sequence_start/sequence_end need parameter sequence_id")
        return None
    p = params["sequence_id"]
    kind = p.WhichOneof("parameter_choice")
    if kind == "int64_param" and p.int64_param > 0:
        seq_id: str | int = p.int64_param
    elif kind == "string_param" and p.string_param:
        seq_id = p.string_param
    else:
        raise InvalidInput("parameter sequence_id must be a positive integer or a non-empty string")
    flags = {}
    for name in ("sequence_start", "sequence_end"):
        flag = params.get(name)
        if flag is not None and flag.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidInput(f"parameter {name} must be a bool")
        flags[name] = bool(flag is not None and flag.bool_param)
    return SequenceRef(seq_id, start=flags["sequence_start"], end=flags["sequence_end"])


def sequence_explain_response(msg: explain_pb2.ExplainResponse, r: ExplainResult, ended: bool
                              ) -> explain_pb2.ExplainResponse:
    """A server-held sequence keeps its state: the response says where the sequence stands."""
    msg.ClearField("final_state")
    steps = r.final_state.steps if r.final_state is not None else r.step_offset
    msg.sequence.CopyFrom(recurrent_pb2.SequenceStatus(offset=r.step_offset, steps=steps, ended=ended))
    return msg
