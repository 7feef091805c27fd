"""Occlusion (Zeiler and Fergus, 2014) over timesteps, with Captum's ``Occlusion`` semantics.

Windows of ``window`` steps start at 0, s, 2s, ... (ceil((T - w) / s) + 1 of them, the
last one cut at T); each timestep's attribution is the mean of f(x) - f(x with the window
replaced by the baseline) over the windows that cover it. A window covers all features of
its steps. All windows run as a few large ONNX Runtime batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InvalidInput
from .options import MethodOptions, PlanContext, Runtime, only_options, token_perturbation_baseline
from .perturbation import ablation_effects, perturbation_attribution, timestep_groups
from .problem import Problem
from .result import MethodOutput

NAME = "occlusion"
OPTIONS: tuple[str, ...] = ("window", "stride")  # options it reads


@dataclass(frozen=True)
class Occlusion:
    window: int
    stride: int
    length: int
    runtime: Runtime  # torch: late-start runs from cached states (unidirectional); else ONNX Runtime
    method: str = NAME
    endpoints: Literal["onnx"] = "onnx"

    @property
    def starts(self) -> np.ndarray:
        count = math.ceil((self.length - self.window) / self.stride) + 1
        return np.arange(count) * self.stride

    @property
    def work(self) -> int:
        return (len(self.starts) + 2) * self.length

    def run(self, problem: Problem) -> MethodOutput:
        starts = self.starts
        steps = np.arange(self.length)

        def masks(lo: int, hi: int) -> np.ndarray:  # [k,T]
            s = starts[lo:hi, None]
            return (steps[None] >= s) & (steps[None] < s + self.window)

        what = f"{NAME} ({len(starts)} windows)"
        effects = ablation_effects(problem, masks, len(starts), what, first=starts)
        cover = masks(0, len(starts)).astype(np.float64)  # [W,T]
        per_step = (effects @ cover) / cover.sum(axis=0)
        return perturbation_attribution(problem, NAME, timestep_groups(problem, per_step), per_step=per_step,
                                        n_steps=len(starts))


def plan(opts: MethodOptions, ctx: PlanContext) -> Occlusion:
    only_options(NAME, opts, OPTIONS)
    token_perturbation_baseline(NAME, ctx)
    if opts.window < 1:
        raise InvalidInput(f"{NAME}.window is {opts.window}; set it to the timesteps per window (>= 1)")
    if opts.window > ctx.length:
        raise InvalidInput(
            f"{NAME}.window is {opts.window}; it cannot exceed the sequence length {ctx.length}")
    stride = opts.stride or 1  # Captum's default
    if stride > opts.window and opts.window < ctx.length:
        raise InvalidInput(f"{NAME}.stride is {stride}; it cannot exceed window={opts.window} "
                           "(timesteps would never be occluded)")
    return Occlusion(opts.window, stride, ctx.length, "onnx" if ctx.bidirectional else "torch")
