"""Integrated Gradients (Sundararajan et al., 2017), Captum's definitions of the quadratures.

attr = (x - b) * sum_k w_k * grad f(b + a_k (x - b)), with nodes a_k and weights w_k of
Gauss-Legendre (default, mapped to [0,1]) or a Riemann rule (left, right, middle,
trapezoid: Captum's, whose trapezoid weights sum to (n-1)/n). A caller's ``n_steps`` (without
``adaptive``) runs exactly that many steps; with no ``n_steps`` the method is adaptive (the
default explanation must add up: docs/architecture.md, "Convergence"). Adaptive runs until |delta| <= tol x |f(x) - f(b)| (+1e-6 for float32 noise) **and** the
attributions moved by less than tol (relative L1 over the full [T,D] attribution) since the
previous refinement, or the step cap:
- Gauss-Legendre (the default): nested Gauss-Kronrod panels refined where the path needs
  it (``kronrod.py``); refining costs only the new points, and ``n_steps`` reports the
  gradient rows evaluated.
- Riemann rules: n, 2n, 4n, ... (the rungs do not share points).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInput
from .gradients import gradient_attribution, run_gradient_chunks
from .kronrod import PANEL, adaptive_integral
from .options import (
    DEFAULT_TOLERANCE,
    MethodOptions,
    PlanContext,
    Quadrature,
    count_option,
    only_options,
    tolerance_option,
)
from .problem import Problem
from .result import DELTA_FLOOR, MethodOutput, completeness_delta, within_tolerance

NAME = "integrated_gradients"
OPTIONS: tuple[str, ...] = ("n_steps", "quadrature", "adaptive", "tolerance", "max_steps")  # options it reads
DEFAULT_STEPS = 50  # Captum's default
ADAPTIVE_START = 8  # Riemann rules: the first rung
KRONROD_START = 16  # Gauss-Legendre: the first estimate takes <= 2 x n_steps rows -> 2 panels (30 rows)
__all__ = ["DEFAULT_TOLERANCE", "DELTA_FLOOR", "IntegratedGradients", "plan", "runs_adaptive"]
# numpy's leggauss solves an n x n eigenproblem: 0.6 s at n = 1024, ~8 s at 2048 (this VM).
# Nodes are cached per n; beyond this a Riemann rule is the tool.
MAX_GAUSS_LEGENDRE = 1024


@lru_cache(maxsize=64)
def quadrature(rule: Quadrature, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0,1] and weights, [n] float64 each, read-only (Captum's ``approximation_parameters``)."""
    nodes, weights = _quadrature(rule, n)
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def _quadrature(rule: Quadrature, n: int) -> tuple[np.ndarray, np.ndarray]:
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if n < 2:
        raise ValueError("Riemann rules need at least 2 steps")
    weights = np.full(n, 1.0 / n)
    if rule == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0.0, 1.0, n), weights
    if rule == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n, n), weights
    if rule == "riemann_middle":
        return np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n), weights
    return np.linspace(1.0 / n, 1.0, n), weights


def integrate(problem: Problem, rule: Quadrature, n: int) -> Tensor:
    """IG attributions [T,D] with ``n`` nodes of ``rule``, in chunks of rows."""
    alphas, weights = quadrature(rule, n)
    a = torch.from_numpy(alphas.astype(np.float32)).view(-1, 1, 1)  # [n,1,1]
    w = torch.from_numpy(weights.astype(np.float32)).view(-1, 1, 1)
    x, b = problem.x, problem.b
    diff = x - b  # [T,D]
    total = torch.zeros_like(x)

    def rows(start: int, stop: int) -> Tensor:
        return b + a[start:stop] * diff  # [c,T,D]

    def add(start: int, grads: Tensor, _out: Tensor) -> None:
        nonlocal total
        total = total + (grads * w[start:start + grads.shape[0]]).sum(dim=0)

    run_gradient_chunks(problem, n, rows, add, f"integrated_gradients ({n} steps)")
    return total * diff


def relative_l1(a: Tensor, b: Tensor) -> float:
    norm = float(a.abs().sum())
    moved = float((a - b).abs().sum())
    return 0.0 if moved == 0.0 else moved / max(norm, 1e-30)


@dataclass(frozen=True)
class IntegratedGradients:
    n_steps: int  # fixed steps, or the first rung when adaptive
    quadrature: Quadrature
    adaptive: bool
    tolerance: float  # relative: adaptive refinement's target, and what ``converged`` is judged against
    cap: int  # adaptive: most steps of one rung (Riemann), most gradient rows in all (Gauss-Kronrod)
    length: int
    panels: int = 0  # adaptive Gauss-Kronrod: panels of the first estimate (0 = the doubling ladder)
    method: str = NAME
    runtime: Literal["torch"] = "torch"
    endpoints: Literal["torch"] = "torch"

    def ladder(self) -> list[int]:
        if not self.adaptive:
            return [self.n_steps]
        rungs = [self.n_steps]
        while rungs[-1] * 2 <= self.cap:
            rungs.append(rungs[-1] * 2)
        return rungs

    @property
    def work(self) -> int:
        if self.panels:
            return self.cap * self.length
        return sum(self.ladder()) * self.length

    def run(self, problem: Problem) -> MethodOutput:
        fx, fb = problem.torch_endpoints
        gap = fx - fb
        if self.panels:
            outcome = adaptive_integral(problem, self.panels, self.tolerance, self.cap, gap, DELTA_FLOOR)
            out = gradient_attribution(problem, NAME, outcome.attributions, n_steps=outcome.rows)
            return out.with_delta(completeness_delta(out.full, fx, fb), self.tolerance, refined=outcome.converged)
        previous: Tensor | None = None
        refined = not self.adaptive  # a fixed count has no refinement rule, only the delta
        for n in self.ladder():
            full = integrate(problem, self.quadrature, n)
            delta = completeness_delta(full.numpy(), fx, fb)
            if (self.adaptive and previous is not None and within_tolerance(delta, gap, self.tolerance)
                    and relative_l1(full, previous) < self.tolerance):
                refined = True
                break
            previous = full
        out = gradient_attribution(problem, NAME, full, n_steps=n)
        return out.with_delta(delta, self.tolerance, refined=refined)


def _cap_for_budget(start: int, budget: int, length: int, limit: int) -> int:
    """The largest doubling rung whose whole ladder fits in ``budget`` work (at least ``start``)."""
    cap, total = start, start * length
    while cap * 2 <= limit and total + cap * 2 * length <= budget:
        cap *= 2
        total += cap * length
    return cap


def _check_rule(rule: Quadrature, n: int, field: str) -> int:
    if rule == "gauss_legendre" and n > MAX_GAUSS_LEGENDRE:
        raise InvalidInput(f"{field} is {n}; Gauss-Legendre takes at most {MAX_GAUSS_LEGENDRE} steps "
                           "(use a Riemann quadrature for more)")
    return n


def runs_adaptive(opts: MethodOptions) -> bool:
    """Adaptive when asked, or when the caller fixed no step count (the default must add up)."""
    return opts.adaptive or not opts.n_steps


def plan(opts: MethodOptions, ctx: PlanContext) -> IntegratedGradients:
    only_options(NAME, opts, OPTIONS)
    rule = opts.quadrature
    minimum = 1 if rule == "gauss_legendre" else 2  # Captum's Riemann rules need n > 1
    tol = tolerance_option(opts.tolerance, f"{NAME}.tolerance")
    if not runs_adaptive(opts):
        n = count_option(opts.n_steps, DEFAULT_STEPS, f"{NAME}.n_steps", ctx, minimum=minimum)
        return IntegratedGradients(_check_rule(rule, n, f"{NAME}.n_steps"), rule, False, tol, n, ctx.length)
    kronrod = rule == "gauss_legendre"
    default = KRONROD_START if kronrod else ADAPTIVE_START
    start = count_option(opts.n_steps, default, f"{NAME}.n_steps", ctx, minimum=minimum)
    if opts.max_steps:
        field = f"{NAME}.max_steps"
        cap = count_option(opts.max_steps, 0, field, ctx)
        if cap < start * 2:
            raise InvalidInput(f"{NAME}.max_steps is {cap}; adaptive refinement needs at least 2 x n_steps "
                               f"= {start * 2} (n, then 2n)")
        if kronrod and cap < PANEL:
            raise InvalidInput(f"{NAME}.max_steps is {cap}; adaptive Gauss-Kronrod needs at least {PANEL} "
                               "(one 15-node panel)")
    elif kronrod:
        if ctx.max_steps < PANEL:
            raise InvalidInput(f"adaptive Gauss-Kronrod needs at least {PANEL} steps (one 15-node panel); the "
                               f"server's max_steps is {ctx.max_steps} (use a Riemann quadrature)")
        cap = max(PANEL, min(ctx.adaptive_budget // max(1, ctx.length), ctx.max_steps))
    else:
        cap = _cap_for_budget(start, ctx.adaptive_budget, ctx.length, ctx.max_steps)
    if kronrod:
        # The first estimate (15 rows per panel) within 2 x n_steps rows, as the rungs n then 2n were.
        panels = max(1, min(2 * start // PANEL, cap // PANEL))
        return IntegratedGradients(start, rule, True, tol, cap, ctx.length, panels=panels)
    return IntegratedGradients(start, rule, True, tol, cap, ctx.length)
