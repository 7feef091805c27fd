"""SmoothGrad (Smilkov et al., 2017), as Captum's ``NoiseTunnel(Saliency)`` with
nt_type="smoothgrad": the mean over S noisy copies x + N(0, stdev^2) of the saliency
(absolute gradient by default, like Saliency). Defaults: Captum's 5 samples; stdev 0 means
15% of the input's range at the attribution layer (the paper's 10-20%)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .gradients import gradient_attribution, run_gradient_chunks
from .options import MethodOptions, PlanContext, count_option, noise_option, only_options
from .problem import Problem
from .result import MethodOutput
from .sampling import Draws, SeededDraws

NAME = "smoothgrad"
OPTIONS: tuple[str, ...] = ("n_samples", "noise_stdev", "seed", "abs_saliency")  # options it reads
DEFAULT_SAMPLES = 5
DEFAULT_NOISE_FRACTION = 0.15


@dataclass(frozen=True)
class SmoothGrad:
    n_samples: int
    stdev: float  # 0: DEFAULT_NOISE_FRACTION of the input's range
    absolute: bool
    seed: int
    length: int
    method: str = NAME
    runtime: Literal["torch"] = "torch"
    endpoints: Literal["torch"] = "torch"

    @property
    def work(self) -> int:
        return self.n_samples * self.length

    def noise_stdev(self, problem: Problem) -> float:
        x = problem.x
        return self.stdev or DEFAULT_NOISE_FRACTION * float(x.max() - x.min())

    def run(self, problem: Problem, draws: Draws | None = None) -> MethodOutput:
        x = problem.x
        draws = draws or SeededDraws(self.seed, self.noise_stdev(problem), tuple(x.shape))
        total = torch.zeros_like(x)

        def rows(lo: int, hi: int) -> Tensor:
            return x + draws.noise(hi - lo)

        def add(_lo: int, grads: Tensor, _out: Tensor) -> None:
            nonlocal total
            total = total + (grads.abs() if self.absolute else grads).sum(dim=0)

        run_gradient_chunks(problem, self.n_samples, rows, add, f"{NAME} ({self.n_samples} samples)")
        return gradient_attribution(problem, NAME, total / self.n_samples, n_steps=self.n_samples)


def plan(opts: MethodOptions, ctx: PlanContext) -> SmoothGrad:
    only_options(NAME, opts, OPTIONS)
    n = count_option(opts.n_samples, DEFAULT_SAMPLES, f"{NAME}.n_samples", ctx)
    stdev = noise_option(opts.noise_stdev, f"{NAME}.noise_stdev")
    return SmoothGrad(n, stdev, opts.abs_saliency is not False, opts.seed, ctx.length)
