"""Domain results returned by the dataplane; converted to protobuf in ``grpc.converters``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .registry import VersionRecord
from .schema import ModelConfig
from .tokenizers import TokenSpan


@dataclass
class Prediction:
    length: int
    tokens: list[TokenSpan] | None
    scores: np.ndarray  # logits [C], per-step logits [T,C], values [H]
    probabilities: np.ndarray | None = None
    label_index: int = -1
    label: str = ""
    step_label_indices: list[int] = field(default_factory=list)
    step_labels: list[str] = field(default_factory=list)


@dataclass
class PredictResult:
    model_name: str
    model_version: str
    predictions: list[Prediction]


@dataclass
class ModelSummary:
    name: str
    task: str
    input_kind: str
    default_version: str
    versions: list[str]
    ready: bool


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: "int64", "float32"
    shape: list[int]  # -1: any size


@dataclass(frozen=True)
class ModelTensors:
    """A version's padded-batch interface (OIP ModelMetadata): what goes in, what comes out."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class ModelDescription:
    name: str
    default_version: str
    records: list[VersionRecord]
    config: ModelConfig | None  # of the default version (or the newest loaded one)
    vocab_size: int
    num_parameters: int
    attribution_methods: list[str]
    state_summaries: list[str]
    max_length: int
    max_batch: int
    max_explain_work: int
    max_steps: int
    special_tokens: list[str] = field(default_factory=list)
    min_length: int = 1  # shortest accepted input (model.yaml min_length)
    kind: str = ""  # "family" or "onnx"
    attribution_width: int = 0
    recurrent_ops: list[str] = field(default_factory=list)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def make_prediction(config: ModelConfig, scores: np.ndarray, tokens: list[TokenSpan] | None,
                    length: int) -> Prediction:
    """Raw outputs of one sequence of ``length`` timesteps -> a Prediction with labels and probabilities."""
    scores = np.asarray(scores, dtype=np.float32)
    pred = Prediction(length=length, tokens=tokens, scores=scores)
    labels = config.labels or []
    if config.task == "classification":
        pred.probabilities = softmax(scores).astype(np.float32)
        pred.label_index = int(np.argmax(scores))
        pred.label = labels[pred.label_index]
    elif config.task == "tagging":
        pred.probabilities = softmax(scores, axis=-1).astype(np.float32)
        idx = np.argmax(scores, axis=-1)
        pred.step_label_indices = [int(i) for i in idx]
        pred.step_labels = [labels[int(i)] for i in idx]
    return pred
