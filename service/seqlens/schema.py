"""The ``model.yaml`` schema: a declarative, validated description of one model version.

Parsed with ``yaml.safe_load`` into pydantic models; nothing in it is ever executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ModelConfigError

Task = Literal["classification", "tagging", "forecasting", "regression"]
Cell = Literal["rnn_tanh", "rnn_relu", "lstm", "gru"]
Head = Literal["last", "per_step", "horizon"]

_HEAD_FOR_TASK: dict[str, Head] = {
    "classification": "last",
    "tagging": "per_step",
    "forecasting": "horizon",
    "regression": "horizon",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenInput(_Strict):
    """Token-id inputs (text models)."""

    kind: Literal["tokens"] = "tokens"
    tokenizer: Literal["word", "char", "huggingface"] = "word"
    vocabulary: str = Field("vocab.json", pattern=r"^[A-Za-z0-9_.-]+$",
                            description="file in the version folder: vocab.json (JSON array, id = index), "
                                        "a one-token-a-line file, or tokenizer.json for huggingface")
    pad_id: int = Field(0, ge=0)
    unk_id: int = Field(1, ge=0)
    lowercase: bool = True
    add_special_tokens: bool = Field(True, description="huggingface: the post-processor adds [CLS], [SEP], ...")

    @model_validator(mode="before")
    @classmethod
    def _huggingface_defaults(cls, data: object) -> object:
        """A tokenizer.json carries its own normalizer: lowercasing is its business."""
        if isinstance(data, dict) and data.get("tokenizer") == "huggingface":
            if data.get("lowercase"):
                raise ValueError("a huggingface tokenizer lowercases (or not) in its own normalizer; "
                                 "remove input.lowercase")
            data = {"vocabulary": "tokenizer.json", **data, "lowercase": False}
        return data


class FeatureInput(_Strict):
    """Float feature inputs (time series), optionally normalized inside the model."""

    kind: Literal["features"] = "features"
    feature_names: list[str] = Field(min_length=1)
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _check_norm(self) -> FeatureInput:
        n = len(self.feature_names)
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if vals is not None and len(vals) != n:
                raise ValueError(f"input.{name} has {len(vals)} values for {n} features")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("input.std must be positive")
        return self


class OutputScale(_Strict):
    """Affine de-normalization of horizon outputs: y = raw * std + mean."""

    mean: float = 0.0
    std: float = Field(1.0, gt=0)


class Architecture(_Strict):
    """A built-in family: input layer -> RNN/LSTM/GRU stack -> head."""

    kind: Literal["family"] = "family"
    input_layer: Literal["embedding", "linear"]
    embedding_dim: int = Field(ge=1, le=4096)
    cell: Cell
    num_layers: int = Field(1, ge=1, le=8)
    hidden_size: int = Field(ge=1, le=4096)
    bidirectional: bool = False
    head: Head

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


class GraphArchitecture(_Strict):
    """Any ONNX sequence graph: ``model.onnx`` is the model, replayed in torch for gradients."""

    kind: Literal["onnx"]


_TENSOR_NAME = r"^[A-Za-z0-9_.:/\-]{1,200}$"


class StateOutput(_Strict):
    """A per-step state output [B,T,S] of the graph, with named slices of its last axis."""

    output: str = Field(pattern=_TENSOR_NAME)
    slices: dict[str, tuple[int, int]] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check_slices(self) -> StateOutput:
        for name, (lo, hi) in self.slices.items():
            if not 0 <= lo < hi:
                raise ValueError(f"slice {name!r} of {self.output!r} must be [start, end) with 0 <= start < end")
        return self


class GraphSpec(_Strict):
    """Which tensors of a custom graph play which part (``architecture.kind: onnx``)."""

    inputs: str = Field("inputs", pattern=_TENSOR_NAME)
    lengths: str = Field("lengths", pattern=_TENSOR_NAME)
    output: str = Field("outputs", pattern=_TENSOR_NAME)
    attribute_at: str = Field("input", pattern=_TENSOR_NAME,
                              description="'input' (features) or the embedding Gather's output (tokens)")
    causal: bool = False  # the state at step t depends only on steps <= t
    states: list[StateOutput] = Field(default_factory=list, max_length=16)


class ModelConfig(_Strict):
    description: str = ""
    task: Task
    input: Annotated[TokenInput | FeatureInput, Field(discriminator="kind")]
    max_length: int = Field(ge=1, le=65536)
    # Shortest input the model is meant for (e.g. a forecaster's history); shorter is INVALID_ARGUMENT.
    min_length: int | None = Field(None, ge=1, le=65536)
    labels: list[str] | None = None
    horizon: int | None = Field(None, ge=1, le=4096)
    output_scale: OutputScale | None = None
    architecture: Annotated[Architecture | GraphArchitecture, Field(discriminator="kind")]
    graph: GraphSpec | None = None
    # Training mean of the model input (features, raw units) or of the embedding
    # output (tokens): the TRAINING_MEAN baseline.
    training_mean: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: object) -> object:
        """``architecture.kind`` defaults to the built-in family."""
        if isinstance(data, dict) and isinstance(data.get("architecture"), dict) \
                and "kind" not in data["architecture"]:
            data = {**data, "architecture": {"kind": "family", **data["architecture"]}}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        tokens = isinstance(self.input, TokenInput)
        if self.task in ("classification", "tagging"):
            if not self.labels or len(self.labels) < 2:
                raise ValueError(f"task {self.task!r} needs at least 2 labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be unique")
        elif self.horizon is None:
            raise ValueError(f"task {self.task!r} needs horizon (number of outputs)")
        if self.min_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is over max_length {self.max_length}")
        arch = self.architecture
        if isinstance(arch, GraphArchitecture):
            return self._check_graph()
        if self.graph is not None:
            raise ValueError("graph: applies to architecture.kind 'onnx' only")
        want = _HEAD_FOR_TASK[self.task]
        if arch.head != want:
            raise ValueError(f"task {self.task!r} needs architecture.head {want!r}, got {arch.head!r}")
        if tokens != (arch.input_layer == "embedding"):
            raise ValueError("token inputs need input_layer 'embedding'; feature inputs need 'linear'")
        if self.training_mean is not None:
            want_len = arch.embedding_dim if tokens else len(self.input.feature_names)  # type: ignore[union-attr]
            if len(self.training_mean) != want_len:
                raise ValueError(f"training_mean has {len(self.training_mean)} values, expected {want_len}")
        return self

    def _check_graph(self) -> ModelConfig:
        graph = self.graph
        if graph is None:
            raise ValueError("architecture.kind 'onnx' needs a graph: section (inputs, lengths, output, "
                             "attribute_at)")
        if self.is_tokens and graph.attribute_at == "input":
            raise ValueError("graph.attribute_at: token inputs are attributed at the embedding; name the "
                             "output of the Gather that embeds the token input")
        if not self.is_tokens and graph.attribute_at != "input":
            raise ValueError("graph.attribute_at: feature inputs are attributed at the input; use 'input'")
        names = [graph.inputs, graph.lengths, graph.output, *(s.output for s in graph.states)]
        if len(set(names)) != len(names):
            raise ValueError(f"graph: tensor names must be distinct, got {names}")
        if self.training_mean is not None and not self.is_tokens and len(self.training_mean) != self.num_features:
            raise ValueError(f"training_mean has {len(self.training_mean)} values, expected {self.num_features}")
        return self

    @property
    def is_graph(self) -> bool:
        """A custom ONNX graph (``architecture.kind: onnx``) rather than the built-in family."""
        return isinstance(self.architecture, GraphArchitecture)

    @property
    def family(self) -> Architecture:
        """The built-in family's architecture; only for code that runs on family models."""
        if not isinstance(self.architecture, Architecture):
            raise TypeError("not a built-in family model")
        return self.architecture

    @property
    def head(self) -> Head:
        """What the output is: one vector (last), one per step (per_step) or a horizon."""
        return _HEAD_FOR_TASK[self.task]

    @property
    def starts_late(self) -> bool:
        """Perturbed runs may start from cached states (a unidirectional family stack)."""
        return isinstance(self.architecture, Architecture) and not self.architecture.bidirectional

    @property
    def num_outputs(self) -> int:
        return len(self.labels) if self.labels else int(self.horizon or 0)

    @property
    def is_tokens(self) -> bool:
        return isinstance(self.input, TokenInput)

    @property
    def num_features(self) -> int:
        return len(self.input.feature_names) if isinstance(self.input, FeatureInput) else 0


def parse_config(text: str, source: str = "model.yaml") -> ModelConfig:
    """Parse and validate config text; errors name the field and the rule."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{source}: expected a mapping at the top level")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ModelConfigError(f"{source}: {problems}") from None


def _location(loc: tuple[int | str, ...]) -> str:
    """A field path as written in model.yaml (without pydantic's union tags)."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["architecture"] and parts[1:2] in (["family"], ["onnx"]):
        del parts[1]
    return ".".join(parts) or "(root)"


def load_config(path: Path) -> ModelConfig:
    return parse_config(path.read_text(encoding="utf-8"), source=str(path.name))


def dump_config(config: ModelConfig) -> str:
    data = config.model_dump(mode="json", exclude_none=True)
    if data["architecture"].get("kind") == "family":
        del data["architecture"]["kind"]  # the default: family files stay as they were
    if not data.get("graph", True):
        del data["graph"]
    return yaml.safe_dump(data, sort_keys=False)
