"""GradientSHAP (Lundberg and Lee, 2017), as Captum's ``GradientShap``.

For each of S samples: a noisy input x_s = x + N(0, stdev^2) and a point
r_s = a_s x_s + (1 - a_s) b with a_s ~ U(0,1); attr = mean_s (x_s - b) * grad f(r_s).
Completeness holds in expectation: delta = sum(attr) - (mean_s f(x_s) - f(b)), the mean
of Captum's per-sample deltas. Defaults follow Captum: 5 samples, no noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .gradients import gradient_attribution, run_gradient_chunks
from .options import (
    DEFAULT_TOLERANCE,
    MethodOptions,
    PlanContext,
    count_option,
    noise_option,
    only_options,
    tolerance_option,
)
from .problem import Problem
from .result import MethodOutput, completeness_delta
from .sampling import Draws, SeededDraws

NAME = "gradient_shap"
OPTIONS: tuple[str, ...] = ("n_samples", "noise_stdev", "seed", "tolerance")  # options it reads
DEFAULT_SAMPLES = 5


@dataclass(frozen=True)
class GradientShap:
    n_samples: int
    stdev: float
    seed: int
    length: int
    tolerance: float = DEFAULT_TOLERANCE
    method: str = NAME
    runtime: Literal["torch"] = "torch"
    endpoints: Literal["torch"] = "torch"

    @property
    def work(self) -> int:
        return self.n_samples * self.length * (2 if self.stdev else 1)  # + f(x_s) when noisy

    def run(self, problem: Problem, draws: Draws | None = None) -> MethodOutput:
        draws = draws or SeededDraws(self.seed, self.stdev, tuple(problem.x.shape))
        x, b = problem.x, problem.b
        alphas = draws.alphas(self.n_samples).to(x.dtype).view(-1, 1, 1)  # [S,1,1]
        noisy: list[Tensor] = []  # the current chunk's x_s [c,T,D]
        total = torch.zeros_like(x)
        f_noisy = 0.0

        def rows(lo: int, hi: int) -> Tensor:
            noisy[:] = [x + draws.noise(hi - lo)]
            a = alphas[lo:hi]
            return a * noisy[0] + (1.0 - a) * b

        def add(_lo: int, grads: Tensor, _out: Tensor) -> None:
            nonlocal total, f_noisy
            total = total + ((noisy[0] - b) * grads).sum(dim=0)
            if self.stdev:
                with torch.no_grad():
                    f_noisy += float(problem.forward(noisy[0]).double().sum())

        run_gradient_chunks(problem, self.n_samples, rows, add, f"{NAME} ({self.n_samples} samples)")
        full = total / self.n_samples
        fx, fb = problem.torch_endpoints
        mean_fx = f_noisy / self.n_samples if self.stdev else fx
        out = gradient_attribution(problem, NAME, full, n_steps=self.n_samples)
        return out.with_delta(completeness_delta(out.full, mean_fx, fb), self.tolerance)


def plan(opts: MethodOptions, ctx: PlanContext) -> GradientShap:
    only_options(NAME, opts, OPTIONS)
    n = count_option(opts.n_samples, DEFAULT_SAMPLES, f"{NAME}.n_samples", ctx)
    return GradientShap(n, noise_option(opts.noise_stdev, f"{NAME}.noise_stdev"), opts.seed, ctx.length,
                        tolerance_option(opts.tolerance, f"{NAME}.tolerance"))
