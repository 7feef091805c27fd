"""Request building and response finishing shared by :class:`Client` and :class:`AsyncClient`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ._proto.seqlens.v1 import explain_pb2, predict_pb2, state_pb2, types_pb2
from .carry import StateArg, predict_states
from .errors import Internal, InvalidArgument, SeqlensError, error_from_code
from .inputs import Inputs, SequenceLike, to_sequence_input, to_sequence_inputs
from .options import (
    BaselineLike,
    MethodsLike,
    StateLike,
    TargetLike,
    baseline_proto,
    methods_proto,
    state_proto,
    target_proto,
)
from .results import Explanation, ModelInfo
from .tensors import to_numpy

__all__ = [
    "ExplainSpec",
    "Outcome",
    "ProgressCallback",
    "bulk_items",
    "finish_explanation",
    "local_error",
    "predict_request",
    "stream_outcome",
]

#: ``progress(done, total)``; ``total`` is None when the inputs are an iterator of unknown length.
ProgressCallback = Callable[[int, "int | None"], None]
#: What a bulk explanation yields per input: its index and the explanation or the item's error.
Outcome = tuple[int, "Explanation | SeqlensError"]


def predict_request(model: str, inputs: Inputs, version: str | None, state: StateArg = None,
                    return_state: bool = False) -> predict_pb2.PredictRequest:
    try:
        seqs = to_sequence_inputs(inputs)
    except ValueError as e:
        raise local_error(e) from e
    req = predict_pb2.PredictRequest(model_name=model, model_version=version or "", inputs=seqs)
    if state is not None or return_state:
        req.states.extend(predict_states(state, len(seqs)))
        req.return_state = True
    return req


def local_error(e: ValueError) -> InvalidArgument:
    """Inputs the client can tell are wrong fail like the server would, without a round trip."""
    return InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, str(e))


@dataclass(frozen=True)
class ExplainSpec:
    """The options of an explain call, converted once and reused for every input of a bulk job."""

    model: str
    version: str
    methods: list[explain_pb2.AttributionMethod]
    target: explain_pb2.Target | None
    baseline: explain_pb2.Baseline | None
    state: state_pb2.StateOptions | None
    faithfulness: bool

    @classmethod
    def build(cls, model: str, methods: MethodsLike, target: TargetLike, baseline: BaselineLike,
              state: StateLike, faithfulness: bool, version: str | None) -> ExplainSpec:
        try:
            return cls(model=model, version=version or "", methods=methods_proto(methods),
                       target=target_proto(target), baseline=baseline_proto(baseline), state=state_proto(state),
                       faithfulness=faithfulness)
        except ValueError as e:
            raise local_error(e) from e

    def request(self, item: SequenceLike | types_pb2.SequenceInput, request_id: str = "") -> explain_pb2.ExplainRequest:
        try:
            seq = to_sequence_input(item)  # type: ignore[arg-type]
        except ValueError as e:
            raise local_error(e) from e
        req = explain_pb2.ExplainRequest(request_id=request_id, model_name=self.model,
                                         model_version=self.version, input=seq, methods=self.methods,
                                         faithfulness=self.faithfulness)
        if self.target is not None:
            req.target.CopyFrom(self.target)
        if self.baseline is not None:
            req.baseline.CopyFrom(self.baseline)
        if self.state is not None:
            req.state.CopyFrom(self.state)
        return req


def finish_explanation(resp: explain_pb2.ExplainResponse, seq: types_pb2.SequenceInput,
                       info: ModelInfo | None) -> Explanation:
    """Decode a response and attach what the report needs: the input and label/feature names."""
    exp = Explanation.from_proto(resp)
    kind = seq.WhichOneof("kind")
    if kind == "text":
        exp.text = seq.text
    elif kind == "features":
        exp.features = to_numpy(seq.features).astype(np.float32)
    if info is not None:
        exp.labels = list(info.labels)
        exp.feature_names = list(info.input.feature_names)
    return exp


def stream_outcome(resp: explain_pb2.ExplainResponse, sent: dict[str, types_pb2.SequenceInput],
                   info: ModelInfo | None) -> Outcome:
    """One StreamExplain answer -> (input index, explanation or that item's error)."""
    seq = sent.pop(resp.request_id, None)
    if seq is None:
        raise Internal(grpc.StatusCode.INTERNAL, f"the server answered unknown request id {resp.request_id!r}")
    index = int(resp.request_id)
    if resp.HasField("error") and resp.error.code != 0:
        return index, error_from_code(resp.error.code, resp.error.message)
    return index, finish_explanation(resp, seq, info)


def bulk_items(inputs: Iterable[SequenceLike] | str | np.ndarray) -> tuple[Iterable[SequenceLike], int | None]:
    """The sequences of a bulk job and their count (None for iterators): a str is one text,
    an int ``[B,T]`` or float ``[B,T,F]`` array is B sequences, anything else is iterated."""
    if isinstance(inputs, str):
        return [inputs], 1
    if isinstance(inputs, np.ndarray):
        batched = (np.issubdtype(inputs.dtype, np.integer) and inputs.ndim == 2) or (
            np.issubdtype(inputs.dtype, np.floating) and inputs.ndim == 3)
        return (list(inputs), len(inputs)) if batched else ([inputs], 1)
    return inputs, len(inputs) if isinstance(inputs, Sized) else None


class ProgressCounter:
    """Counts finished stream items and reports ``(done, total)`` to the caller's callback."""

    def __init__(self, progress: ProgressCallback | None, total: int | None) -> None:
        self._progress = progress
        self._total = total
        self.done = 0

    def __call__(self, outcome: Outcome) -> Outcome:
        self.done += 1
        if self._progress is not None:
            self._progress(self.done, self._total)
        return outcome


def in_input_order(outcomes: Iterable[Outcome], return_errors: bool) -> list[Any]:
    """Stream outcomes ``(index, result)`` -> results by input index; the first item error is
    raised unless ``return_errors`` keeps errors in their places."""
    results = dict(outcomes)
    ordered = [results[i] for i in sorted(results)]
    if not return_errors:
        for r in ordered:
            if isinstance(r, SeqlensError):
                raise r
    return ordered
