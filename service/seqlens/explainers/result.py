"""Attribution results (domain types; converted to protobuf in ``grpc.converters``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass
class Faithfulness:
    """ERASER comprehensiveness / sufficiency at top-k% (DeYoung et al., 2020), and the same for
    a seeded random ranking. Values are f(x) - f(x'), in the space ``faithfulness`` documents."""

    top_k_percent: list[float]
    comprehensiveness: list[float]
    sufficiency: list[float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    random_comprehensiveness: list[float]
    random_sufficiency: list[float]
    random_aopc_comprehensiveness: float
    random_aopc_sufficiency: float


@dataclass(frozen=True)
class Completeness:
    """A method's completeness measurement: ``delta`` = sum(attr) - (f(x) - f(baseline)), the
    relative ``tolerance`` it is judged against, and whether the method's own stopping rule held
    (adaptive IG's refinement; True for the others)."""

    delta: float
    tolerance: float
    refined: bool = True


@dataclass(frozen=True)
class MethodOutput:
    """What a plan's ``run`` computed, before the runner (``running.run_plan``) adds what every
    method shares: the target's endpoints, the time taken and the convergence verdict.

    ``full`` is the attribution at full resolution: [T,E] at the embedding (token gradient
    methods), [T,F] (feature models) or [T] (token perturbation methods). ``scores`` [T] is
    the per-timestep score the caller sees; ``feature_scores`` [T,F] (feature models) and
    ``l2_norm`` [T] (token gradient methods) are set where they apply.
    """

    method: str
    full: np.ndarray
    scores: np.ndarray
    feature_scores: np.ndarray | None = None
    l2_norm: np.ndarray | None = None
    n_steps: int = 0  # steps (IG) or samples (sampling methods) actually used
    completeness: Completeness | None = None  # None for methods without a completeness property

    @property
    def convergence_delta(self) -> float | None:
        return self.completeness.delta if self.completeness is not None else None

    def with_delta(self, delta: float, tolerance: float, *, refined: bool = True) -> MethodOutput:
        """The same output with its completeness measurement."""
        return dataclasses.replace(self, completeness=Completeness(delta, tolerance, refined))


@dataclass(frozen=True)
class Attribution:
    """One method's answer, built once by ``attribution`` (fields as ``MethodOutput``)."""

    method: str
    full: np.ndarray
    scores: np.ndarray
    feature_scores: np.ndarray | None = None
    l2_norm: np.ndarray | None = None
    # Completeness: sum(attr) = f(x) - f(baseline) in theory. None for methods without it
    # (absent on the wire, never 0.0 / true).
    convergence_delta: float | None = None
    converged: bool | None = None
    tolerance: float | None = None  # the relative tolerance ``converged`` was judged against
    n_steps: int = 0
    target_at_input: float = 0.0
    target_at_baseline: float = 0.0
    faithfulness: Faithfulness | None = None
    seconds: float = 0.0  # the plan's run, endpoints included

    @property
    def has_delta(self) -> bool:
        return self.convergence_delta is not None

    @property
    def relative_delta(self) -> float | None:
        """|delta| / |f(x) - f(baseline)|, the quality metric exported per method; None when
        completeness does not apply or the two outputs are equal."""
        gap = abs(self.target_at_input - self.target_at_baseline)
        if self.convergence_delta is None or gap == 0.0:
            return None
        return abs(self.convergence_delta) / gap


def attribution(out: MethodOutput, endpoints: tuple[float, float], seconds: float) -> Attribution:
    """The one place an Attribution is built: ``endpoints`` are f(x) and f(baseline) on the
    runtime the method declares, and ``converged`` is honest: |delta| <= tolerance x
    |f(x) - f(b)| + DELTA_FLOOR, and the method's own stopping rule held."""
    f_input, f_baseline = endpoints
    c = out.completeness
    return Attribution(
        out.method, out.full, out.scores, feature_scores=out.feature_scores, l2_norm=out.l2_norm,
        convergence_delta=c.delta if c else None, tolerance=c.tolerance if c else None,
        converged=(c.refined and within_tolerance(c.delta, f_input - f_baseline, c.tolerance)) if c else None,
        n_steps=out.n_steps, target_at_input=f_input, target_at_baseline=f_baseline, seconds=seconds)


DELTA_FLOOR = 1e-6  # float32 rounding of f(x) - f(b)


def within_tolerance(delta: float, gap: float, tolerance: float) -> bool:
    return abs(delta) <= tolerance * abs(gap) + DELTA_FLOOR


def completeness_delta(full: np.ndarray, f_input: float, f_baseline: float) -> float:
    """sum(attributions) - (f(x) - f(baseline)), summed in float64."""
    return float(np.sum(full, dtype=np.float64) - (f_input - f_baseline))
