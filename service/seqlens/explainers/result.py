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
    has_delta: bool = False  # completeness applies: sum(attr) = f(x) - f(baseline) in theory
    convergence_delta: float = 0.0
    n_steps: int = 0  # steps (IG) or samples (sampling methods) actually used
    converged: bool = True
    target_at_input: float = 0.0
    target_at_baseline: float = 0.0
    faithfulness: Faithfulness | None = None
    seconds: float = 0.0

    @property
    def relative_delta(self) -> float | None:
        """|delta| / |f(x) - f(baseline)|, the quality metric exported per method; None when
        completeness does not apply or the two outputs are equal."""
        gap = abs(self.target_at_input - self.target_at_baseline)
        if not self.has_delta or gap == 0.0:
            return None
        return abs(self.convergence_delta) / gap


def completeness_delta(full: np.ndarray, f_input: float, f_baseline: float) -> float:
    """sum(attributions) - (f(x) - f(baseline)), summed in float64."""
    return float(np.sum(full, dtype=np.float64) - (f_input - f_baseline))
