"""The reference input an attribution is measured against.

Token models are attributed at the embedding output, so a baseline is an embedding
sequence [T,E]: the embeddings of PAD ids (default) or of caller-given ids, all zeros, or
the training-mean embedding at every step. Perturbation methods and faithfulness replace
token *ids*, so only PAD and caller ids work for them. Feature models are attributed at the
raw input [T,F]: zeros, the training mean in raw units (default when the config has one),
or caller-given features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InvalidInput
from ..schema import ModelConfig, TokenInput

BaselineKind = Literal["default", "pad", "zeros", "training_mean", "custom"]


@dataclass(frozen=True)
class BaselineSpec:
    kind: BaselineKind = "default"
    custom: np.ndarray | None = None  # encoded CUSTOM input: token ids [T] or features [T,F]


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline.

    ``values`` is in the model's input space (token ids [T] int64 or features [T,F]
    float32), or None for token baselines that exist only at the embedding (zeros,
    training mean). ``embedding_mean`` is the training-mean embedding [E] for that case.
    """

    kind: BaselineKind
    values: np.ndarray | None
    embedding_zeros: bool = False
    embedding_mean: np.ndarray | None = None

    @property
    def replaces_ids(self) -> bool:
        """Whether perturbation methods can use it (token models need ids)."""
        return self.values is not None


def resolve_baseline(config: ModelConfig, spec: BaselineSpec, values: np.ndarray) -> Baseline:
    """``values`` is the encoded input (ids [T] or features [T,F]); errors name the field."""
    length = values.shape[0]
    kind = spec.kind
    if kind == "default":
        feature_default: BaselineKind = "training_mean" if config.training_mean is not None else "zeros"
        kind = "pad" if config.is_tokens else feature_default
    if kind == "custom":
        if spec.custom is None:
            raise InvalidInput("baseline.custom must be set when baseline.kind is CUSTOM")
        custom = spec.custom
        if custom.shape != values.shape:
            raise InvalidInput(f"baseline.custom has shape {list(custom.shape)}; it must match the input's "
                               f"{list(values.shape)} (same length after tokenization)")
        return Baseline("custom", custom)
    if spec.custom is not None:
        raise InvalidInput("baseline.custom is set but baseline.kind is not CUSTOM")
    if isinstance(config.input, TokenInput):
        if kind == "pad":
            return Baseline("pad", np.full(length, config.input.pad_id, dtype=np.int64))
        if kind == "zeros":
            return Baseline("zeros", None, embedding_zeros=True)
        if config.training_mean is None:
            raise InvalidInput("baseline TRAINING_MEAN: the model config has no training_mean")
        mean = np.asarray(config.training_mean, dtype=np.float32)
        return Baseline("training_mean", None, embedding_mean=mean)
    if kind == "pad":
        raise InvalidInput("baseline PAD applies to token models; "
                           "use ZEROS, TRAINING_MEAN or CUSTOM for features")
    if kind == "zeros":
        return Baseline("zeros", np.zeros_like(values, dtype=np.float32))
    if config.training_mean is None:
        raise InvalidInput("baseline TRAINING_MEAN: the model config has no training_mean")
    mean = np.asarray(config.training_mean, dtype=np.float32)
    return Baseline("training_mean", np.ascontiguousarray(np.broadcast_to(mean, values.shape)))
