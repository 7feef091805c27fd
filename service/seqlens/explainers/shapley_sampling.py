"""Shapley value sampling (Castro et al., 2009), with Captum's ``ShapleyValueSampling``
semantics: for each of S seeded random orders of the groups, start from the baseline, add
the groups of x one at a time, and credit each group with the change of f. Groups are
timesteps or (timestep, feature) cells, as in feature ablation. Each order's credits sum
to f(x) - f(baseline), so the delta is only rounding. Default: Captum's 25 orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .options import (
    DEFAULT_TOLERANCE,
    MethodOptions,
    PlanContext,
    count_option,
    only_options,
    per_feature_ablation,
    token_perturbation_baseline,
    tolerance_option,
)
from .perturbation import apply_masks, perturbation_attribution, timestep_groups
from .problem import Problem
from .result import MethodOutput, completeness_delta
from .sampling import permutations

NAME = "shapley_sampling"
OPTIONS: tuple[str, ...] = ("n_samples", "seed", "ablation", "tolerance")  # options it reads
DEFAULT_SAMPLES = 25


@dataclass(frozen=True)
class ShapleySampling:
    n_samples: int
    per_feature: bool
    seed: int
    length: int
    num_features: int
    tolerance: float = DEFAULT_TOLERANCE
    method: str = NAME
    runtime: Literal["onnx"] = "onnx"
    endpoints: Literal["onnx"] = "onnx"

    @property
    def groups(self) -> int:
        return self.length * self.num_features if self.per_feature else self.length

    @property
    def work(self) -> int:
        return (self.n_samples * max(self.groups - 1, 0) + 2) * self.length

    def run(self, problem: Problem, orders: list[torch.Tensor] | None = None) -> MethodOutput:
        g = self.groups
        orders = orders or permutations(self.seed, self.n_samples, g)
        # rank[s, group] = position of the group in order s: after j additions, the groups
        # with rank < j hold x and the others the baseline.
        rank = np.empty((self.n_samples, g), dtype=np.int64)
        for s, order in enumerate(orders):
            rank[s, order.numpy()] = np.arange(g)
        inner = g - 1  # states with 1..g-1 groups added; 0 and g are f(baseline) and f(x)
        shape = (self.length, self.num_features) if self.per_feature else (self.length,)

        def variants(lo: int, hi: int) -> np.ndarray:
            s, j = np.divmod(np.arange(lo, hi), inner)
            removed = rank[s] >= (j + 1)[:, None]  # [k,G]
            return apply_masks(problem, removed.reshape(hi - lo, *shape))

        fx, fb = problem.onnx_endpoints
        evals = problem.onnx_targets(self.n_samples * inner, variants, f"{NAME} ({self.n_samples} orders)")
        path = np.concatenate([np.full((self.n_samples, 1), fb), evals.reshape(self.n_samples, inner),
                               np.full((self.n_samples, 1), fx)], axis=1)  # [S, G+1]
        gains = np.diff(path, axis=1)  # gain of the j-th added group [S,G]
        credit = np.zeros(g)
        for s in range(self.n_samples):
            credit[orders[s].numpy()] += gains[s]
        credit /= self.n_samples
        if self.per_feature:
            out = perturbation_attribution(problem, NAME, credit.reshape(shape), n_steps=self.n_samples)
        else:
            out = perturbation_attribution(problem, NAME, timestep_groups(problem, credit), per_step=credit,
                                           n_steps=self.n_samples)
        return out.with_delta(completeness_delta(credit, fx, fb), self.tolerance)


def plan(opts: MethodOptions, ctx: PlanContext) -> ShapleySampling:
    only_options(NAME, opts, OPTIONS)
    token_perturbation_baseline(NAME, ctx)
    per_feature = per_feature_ablation(NAME, opts, ctx)
    n = count_option(opts.n_samples, DEFAULT_SAMPLES, f"{NAME}.n_samples", ctx)
    return ShapleySampling(n, per_feature, opts.seed, ctx.length, ctx.num_features,
                           tolerance_option(opts.tolerance, f"{NAME}.tolerance"))
