"""Domain results returned by the dataplane; converted to protobuf in ``grpc.converters``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .registry import VersionState
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


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: VersionState
    reason: str  # why not READY ("" when READY)
    parity_max_abs_diff: float = 0.0  # ORT vs torch at load (loaded versions)
    load_seconds: float = 0.0


@dataclass(frozen=True)
class ArchitectureInfo:
    kind: str  # "family" or "onnx"
    head: str
    embedding_dim: int  # family: embedding width; onnx: width of the attributed layer
    num_parameters: int
    recurrent_ops: list[str] = field(default_factory=list)  # onnx: the graph's recurrent ops
    input_layer: str = ""  # family only from here on
    cell: str = ""
    num_layers: int = 0
    hidden_size: int = 0
    bidirectional: bool = False


@dataclass(frozen=True)
class InputInfo:
    kind: str  # "tokens" or "features"
    tokenizer: str = ""
    vocab_size: int = 0
    pad_id: int = 0
    unk_id: int = 0
    lowercase: bool = False
    vocabulary: str = ""
    special_tokens: list[str] = field(default_factory=list)
    add_special_tokens: bool = False  # true only where the tokenizer adds them
    feature_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelDescription:
    """GetModel's answer as plain values; the model fields describe the default version (or the
    newest loaded one) and are empty while none is loaded."""

    name: str
    default_version: str
    versions: list[VersionInfo]
    attribution_methods: list[str]
    state_summaries: list[str]
    max_length: int
    min_length: int
    max_batch: int
    max_explain_work: int
    max_steps: int
    task: str = ""
    labels: list[str] = field(default_factory=list)
    horizon: int = 0
    description: str = ""
    architecture: ArchitectureInfo | None = None
    input: InputInfo | None = None


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
