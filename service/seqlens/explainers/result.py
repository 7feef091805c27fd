"""Attribution results (domain types; converted to protobuf in ``grpc.converters``)."""

from __future__ import annotations

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


@dataclass
class Attribution:
    """One method's answer.

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
    # Completeness: sum(attr) = f(x) - f(baseline) in theory. None for methods without it
    # (absent on the wire, never 0.0 / true): set together by ``record_delta``.
    convergence_delta: float | None = None
    converged: bool | None = None
    tolerance: float | None = None  # the relative tolerance ``converged`` was judged against
    n_steps: int = 0  # steps (IG) or samples (sampling methods) actually used
    target_at_input: float = 0.0
    target_at_baseline: float = 0.0
    faithfulness: Faithfulness | None = None
    seconds: float = 0.0  # set by the runner (explain.explain), which times every plan

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

    def record_delta(self, delta: float, f_input: float, f_baseline: float, tolerance: float,
                     *, refined: bool = True) -> None:
        """Set the endpoints, the delta and an honest ``converged``: |delta| <= tolerance x
        |f(x) - f(b)| + DELTA_FLOOR, and (adaptive IG) the refinement's own stopping rule held."""
        self.target_at_input, self.target_at_baseline = f_input, f_baseline
        self.convergence_delta, self.tolerance = delta, tolerance
        self.converged = refined and within_tolerance(delta, f_input - f_baseline, tolerance)


DELTA_FLOOR = 1e-6  # float32 rounding of f(x) - f(b)


def within_tolerance(delta: float, gap: float, tolerance: float) -> bool:
    return abs(delta) <= tolerance * abs(gap) + DELTA_FLOOR


def completeness_delta(full: np.ndarray, f_input: float, f_baseline: float) -> float:
    """sum(attributions) - (f(x) - f(baseline)), summed in float64."""
    return float(np.sum(full, dtype=np.float64) - (f_input - f_baseline))
