"""Saliency (Simonyan et al., 2014): the gradient of the target at the input, absolute by
default like Captum's ``Saliency(abs=True)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .gradients import gradient_at, gradient_attribution
from .options import MethodOptions, PlanContext, only_options
from .problem import Problem
from .result import MethodOutput

NAME = "saliency"
OPTIONS: tuple[str, ...] = ("abs_saliency",)  # options it reads


@dataclass(frozen=True)
class Saliency:
    absolute: bool
    length: int
    method: str = NAME
    runtime: Literal["torch"] = "torch"
    endpoints: Literal["torch"] = "torch"

    @property
    def work(self) -> int:
        return self.length

    def run(self, problem: Problem) -> MethodOutput:
        grad = gradient_at(problem, NAME)
        return gradient_attribution(problem, NAME, grad.abs() if self.absolute else grad, n_steps=1)


def plan(opts: MethodOptions, ctx: PlanContext) -> Saliency:
    only_options(NAME, opts, OPTIONS)
    return Saliency(opts.abs_saliency is not False, ctx.length)
