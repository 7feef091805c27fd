"""Method options as the caller sent them, the context they are checked in, and the Plan protocol.

Each method module turns ``MethodOptions`` into a frozen plan: defaults filled in,
every option checked (``InvalidInput`` naming the field and the limit), and the work it
will do (rows x timesteps) known before any model code runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ..errors import InvalidInput

if TYPE_CHECKING:
    from .problem import Problem
    from .result import MethodOutput

Quadrature = Literal["gauss_legendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
AblationMode = Literal["per_timestep", "per_feature"]
Runtime = Literal["torch", "onnx"]


@dataclass(frozen=True)
class MethodOptions:
    """One requested method; 0 / None mean "the method's default" (see each method)."""

    name: str
    n_steps: int = 0
    quadrature: Quadrature = "gauss_legendre"
    adaptive: bool = False
    tolerance: float = 0.0
    max_steps: int = 0
    n_samples: int = 0
    noise_stdev: float = 0.0
    seed: int = 0
    window: int = 0
    stride: int = 0
    ablation: AblationMode = "per_timestep"
    abs_saliency: bool | None = None


@dataclass(frozen=True)
class PlanContext:
    """What options are checked against: the input's shape, the baseline, the server limits."""

    length: int
    num_features: int  # 0 for token models
    is_tokens: bool
    max_steps: int  # Settings.max_steps: most steps or samples per method
    baseline_kind: str
    baseline_replaces_ids: bool  # token perturbation needs PAD or caller ids
    adaptive_budget: int = 0  # work left for an adaptive IG without an explicit step cap
    bidirectional: bool = False  # unidirectional stacks run ablations from cached states (torch)


class Plan(Protocol):
    """A checked method, ready to run on a Problem."""

    @property
    def method(self) -> str: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def endpoints(self) -> Runtime: ...  # whose f(x), f(baseline) the result reports and is judged by

    @property
    def work(self) -> int: ...  # model rows x timesteps

    def run(self, problem: Problem) -> MethodOutput: ...


#: What each option is when the caller left it unset (the proto's zero values).
_UNSET: dict[str, object] = {
    "n_steps": 0, "quadrature": "gauss_legendre", "adaptive": False, "tolerance": 0.0, "max_steps": 0,
    "n_samples": 0, "noise_stdev": 0.0, "seed": 0, "window": 0, "stride": 0, "ablation": "per_timestep",
    "abs_saliency": None,
}


def only_options(method: str, opts: MethodOptions, takes: tuple[str, ...]) -> None:
    """Refuse an option the method does not take (it would be ignored silently otherwise);
    ``takes`` lists the method's own options. See docs/method-options.md."""
    for name, unset in _UNSET.items():
        value = getattr(opts, name)
        if name not in takes and value is not None and value != unset:  # None: an optional field left out
            shown = value.upper() if isinstance(value, str) else value
            own = f"its options are {', '.join(takes)}" if takes else "it takes no options"
            raise InvalidInput(f"{method}.{name} is {shown}, but {method} does not take {name} ({own}); "
                               f"leave {name} unset or ask for a method that uses it")


def count_option(value: int, default: int, field: str, ctx: PlanContext, *, minimum: int = 1) -> int:
    """A step or sample count: 0 -> the default (lowered to Settings.max_steps when the server
    caps below it); a caller's explicit count above the cap is refused."""
    n = value or min(default, max(ctx.max_steps, minimum))
    if n < minimum:
        raise InvalidInput(f"{field} is {n}; it must be at least {minimum}")
    if n > ctx.max_steps:
        raise InvalidInput(f"{field} is {n}; the server allows at most max_steps={ctx.max_steps}")
    return n


DEFAULT_TOLERANCE = 0.01  # relative: what ``converged`` is judged against by default


def tolerance_option(value: float, field: str) -> float:
    """A relative tolerance in (0, 1); 0 means DEFAULT_TOLERANCE."""
    tol = value or DEFAULT_TOLERANCE
    if not math.isfinite(tol) or not 0 < tol < 1:
        raise InvalidInput(f"{field} is {value}; it must be in (0, 1) (0 = {DEFAULT_TOLERANCE})")
    return tol


def noise_option(value: float, field: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{field} is {value}; it must be a finite number >= 0")
    return value


def per_feature_ablation(method: str, opts: MethodOptions, ctx: PlanContext) -> bool:
    """Whether ``ablation`` asks for one group per (timestep, feature); token models have none."""
    per_feature = opts.ablation == "per_feature"
    if per_feature and ctx.is_tokens:
        raise InvalidInput(f"{method}.ablation PER_FEATURE applies to feature models; token models ablate "
                           "whole timesteps (PER_TIMESTEP)")
    return per_feature


def token_perturbation_baseline(method: str, ctx: PlanContext) -> None:
    """Perturbing token models replaces ids, so the baseline must be ids (PAD or caller)."""
    if ctx.is_tokens and not ctx.baseline_replaces_ids:
        raise InvalidInput(
            f"{method} replaces token ids, so baseline {ctx.baseline_kind.upper()} (an embedding, not ids) "
            "cannot be used; use baseline PAD or CUSTOM token ids")
