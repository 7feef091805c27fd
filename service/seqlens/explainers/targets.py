"""What an explanation attributes: one scalar of the model output, in logit or probability space.

Classification: a class (default: the predicted one). Tagging: a (timestep, class) pair
(default: the last timestep and its predicted class). Forecasting and regression: one
horizon step (default: 0). Probabilities are the softmax over classes (per step for tagging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInput
from ..schema import ModelConfig

OutputSpace = Literal["logit", "probability"]


@dataclass(frozen=True)
class TargetSpec:
    """The caller's target; unset fields take the defaults above."""

    class_index: int | None = None
    label: str | None = None
    timestep: int | None = None
    horizon_step: int | None = None
    output_space: OutputSpace = "logit"


@dataclass(frozen=True)
class ResolvedTarget:
    """A concrete output scalar; fields that do not apply to the task are -1 / empty."""

    class_index: int = -1
    label: str = ""
    timestep: int = -1
    horizon_step: int = -1
    output_space: OutputSpace = "logit"

    @property
    def is_class(self) -> bool:
        return self.class_index >= 0


def check_target(config: ModelConfig, spec: TargetSpec, length: int) -> None:
    """Refuse an explicit target that cannot apply, before any model runs: fields of another
    task, unknown labels, class indexes, timesteps and horizon steps out of range."""
    task = config.task
    labels = config.labels or []
    if task in ("forecasting", "regression"):
        if spec.class_index is not None or spec.label is not None:
            raise InvalidInput(f"target: a {task} model has no classes; set target.horizon_step instead")
        if spec.timestep is not None:
            raise InvalidInput(f"target.timestep applies to tagging models only, not to {task}")
        if spec.output_space == "probability":
            raise InvalidInput(
                f"target.output_space PROBABILITY needs classes; a {task} model outputs values")
        horizon = config.num_outputs
        if spec.horizon_step is not None and not 0 <= spec.horizon_step < horizon:
            raise InvalidInput(
                f"target.horizon_step {spec.horizon_step} is outside [0, {horizon}) (the model's horizon)")
        return
    if spec.horizon_step is not None:
        raise InvalidInput(f"target.horizon_step applies to forecasting models only, not to {task}")
    if task == "tagging":
        if spec.timestep is not None and not 0 <= spec.timestep < length:
            raise InvalidInput(f"target.timestep {spec.timestep} is outside [0, {length}) (the sequence length)")
    elif spec.timestep is not None:
        raise InvalidInput(f"target.timestep applies to tagging models only, not to {task}")
    if spec.label is not None:
        if spec.label not in labels:
            raise InvalidInput(f"target.label {spec.label!r} is not one of the model's labels {labels}")
    elif spec.class_index is not None and not 0 <= spec.class_index < len(labels):
        raise InvalidInput(
            f"target.class_index {spec.class_index} is outside [0, {len(labels)}) (the model's classes)")


def resolve_target(config: ModelConfig, spec: TargetSpec, outputs: np.ndarray, length: int) -> ResolvedTarget:
    """Check ``spec`` (:func:`check_target`) and fill the defaults from ``outputs`` (the raw
    outputs of the sequence: logits [C], per-step logits [T,C] or values [H])."""
    check_target(config, spec, length)
    if config.task in ("forecasting", "regression"):
        step = 0 if spec.horizon_step is None else spec.horizon_step
        return ResolvedTarget(horizon_step=step, output_space=spec.output_space)
    labels = config.labels or []
    timestep = -1
    scores = outputs
    if config.task == "tagging":
        timestep = length - 1 if spec.timestep is None else spec.timestep
        scores = outputs[timestep]
    if spec.label is not None:
        cls = labels.index(spec.label)
    elif spec.class_index is not None:
        cls = spec.class_index
    else:
        cls = int(np.argmax(scores))
    return ResolvedTarget(class_index=cls, label=labels[cls], timestep=timestep,
                          output_space=spec.output_space)


def select(out: Tensor, target: ResolvedTarget, space: OutputSpace | None = None) -> Tensor:
    """Raw model outputs of a batch ([B,C], [B,T,C] or [B,H]) -> the target scalar per row [B]."""
    space = space or target.output_space
    if not target.is_class:
        return out[:, target.horizon_step]
    step = out[:, target.timestep, :] if target.timestep >= 0 else out  # [B,C]
    if space == "probability":
        step = torch.softmax(step, dim=-1)
    return step[:, target.class_index]


def select_numpy(out: np.ndarray, target: ResolvedTarget, space: OutputSpace | None = None) -> np.ndarray:
    """numpy twin of :func:`select` for ONNX Runtime outputs; float64 [B]."""
    return select(torch.from_numpy(np.asarray(out, dtype=np.float32)), target, space).double().numpy()
