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

_HEAD_FOR_TASK: dict[str, str] = {
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
    architecture: Architecture
    # Training mean of the model input (features, raw units) or of the embedding
    # output (tokens): the TRAINING_MEAN baseline.
    training_mean: list[float] | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        arch = self.architecture
        want = _HEAD_FOR_TASK[self.task]
        if arch.head != want:
            raise ValueError(f"task {self.task!r} needs architecture.head {want!r}, got {arch.head!r}")
        tokens = isinstance(self.input, TokenInput)
        if tokens != (arch.input_layer == "embedding"):
            raise ValueError("token inputs need input_layer 'embedding'; feature inputs need 'linear'")
        if self.task in ("classification", "tagging"):
            if not self.labels or len(self.labels) < 2:
                raise ValueError(f"task {self.task!r} needs at least 2 labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be unique")
        elif self.horizon is None:
            raise ValueError(f"task {self.task!r} needs horizon (number of outputs)")
        if self.min_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is over max_length {self.max_length}")
        if self.training_mean is not None:
            want_len = arch.embedding_dim if tokens else len(self.input.feature_names)  # type: ignore[union-attr]
            if len(self.training_mean) != want_len:
                raise ValueError(f"training_mean has {len(self.training_mean)} values, expected {want_len}")
        return self

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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelConfigError(f"{source}: {problems}") from None


def load_config(path: Path) -> ModelConfig:
    return parse_config(path.read_text(encoding="utf-8"), source=str(path.name))


def dump_config(config: ModelConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
