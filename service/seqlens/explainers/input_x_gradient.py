"""Input x Gradient (Shrikumar et al., 2016): the input at the attribution layer (the
embedding output for token models, like Captum's LayerGradientXActivation) times the
gradient of the target there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .gradients import gradient_at, gradient_attribution
from .options import MethodOptions, PlanContext, only_options
from .problem import Problem
from .result import MethodOutput

NAME = "input_x_gradient"
OPTIONS: tuple[str, ...] = ()  # options it reads


@dataclass(frozen=True)
class InputXGradient:
    length: int
    method: str = NAME
    runtime: Literal["torch"] = "torch"
    endpoints: Literal["torch"] = "torch"

    @property
    def work(self) -> int:
        return self.length

    def run(self, problem: Problem) -> MethodOutput:
        return gradient_attribution(problem, NAME, problem.x * gradient_at(problem, NAME), n_steps=1)


def plan(opts: MethodOptions, ctx: PlanContext) -> InputXGradient:
    only_options(NAME, opts, OPTIONS)
    return InputXGradient(ctx.length)
