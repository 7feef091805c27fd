"""Feature ablation, with Captum's ``FeatureAblation`` semantics: each group's attribution is
f(x) - f(x with the group replaced by the baseline). Groups are timesteps (default) or, for
feature models, single (timestep, feature) cells (``ablation=PER_FEATURE``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .options import (
    MethodOptions,
    PlanContext,
    Runtime,
    only_options,
    per_feature_ablation,
    token_perturbation_baseline,
)
from .perturbation import ablation_effects, perturbation_attribution, timestep_groups
from .problem import Problem
from .result import MethodOutput

NAME = "feature_ablation"
OPTIONS: tuple[str, ...] = ("ablation",)  # options it reads


@dataclass(frozen=True)
class FeatureAblation:
    per_feature: bool
    length: int
    num_features: int
    runtime: Runtime  # torch: late-start runs from cached states (unidirectional); else ONNX Runtime
    method: str = NAME
    endpoints: Literal["onnx"] = "onnx"

    @property
    def groups(self) -> int:
        return self.length * self.num_features if self.per_feature else self.length

    @property
    def work(self) -> int:
        return (self.groups + 2) * self.length

    def run(self, problem: Problem) -> MethodOutput:
        t, f = self.length, self.num_features
        what = f"{NAME} ({self.groups} groups)"
        if self.per_feature:
            eye = np.eye(t * f, dtype=bool)

            def cells(lo: int, hi: int) -> np.ndarray:  # [k,T,F]
                return eye[lo:hi].reshape(hi - lo, t, f)

            steps = np.repeat(np.arange(t), f)  # cell (t, f) changes step t first
            full = ablation_effects(problem, cells, self.groups, what, first=steps).reshape(t, f)
            att = perturbation_attribution(problem, NAME, full, n_steps=self.groups)
        else:
            eye_t = np.eye(t, dtype=bool)
            per_step = ablation_effects(problem, lambda lo, hi: eye_t[lo:hi], t, what, first=np.arange(t))
            full = timestep_groups(problem, per_step)
            att = perturbation_attribution(problem, NAME, full, per_step=per_step, n_steps=self.groups)
        return att


def plan(opts: MethodOptions, ctx: PlanContext) -> FeatureAblation:
    only_options(NAME, opts, OPTIONS)
    token_perturbation_baseline(NAME, ctx)
    per_feature = per_feature_ablation(NAME, opts, ctx)
    runtime: Runtime = "onnx" if ctx.bidirectional else "torch"
    return FeatureAblation(per_feature, ctx.length, ctx.num_features, runtime)
