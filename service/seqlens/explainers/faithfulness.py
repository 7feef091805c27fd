"""Faithfulness of an attribution (ERASER, DeYoung et al., 2020), on ONNX Runtime.

Rank timesteps by their signed score (highest first). For k in {1, 5, 10, 20, 50}% of
the timesteps (ceil, so at least one):
- comprehensiveness_k = f(x) - f(x with the top-k steps removed): high when the ranking
  found what the output depends on;
- sufficiency_k = f(x) - f(x with only the top-k steps kept): low when they suffice;
- AOPC = the mean over the five k.
"Removed" means replaced by the baseline (PAD ids for token models whose baseline lives
only at the embedding). f is the target's probability for classification and tagging
(as in ERASER) and the raw value for forecasting and regression. The same numbers for
random rankings (seeded, the mean over RANDOM_RANKINGS orders) say what chance gives.
All variants of all methods run as one batched ONNX Runtime job.
"""

from __future__ import annotations

import math

import numpy as np

from .perturbation import apply_masks
from .problem import Problem
from .result import Faithfulness
from .targets import OutputSpace

PERCENTS = (1.0, 5.0, 10.0, 20.0, 50.0)
RANDOM_RANKINGS = 8
RANDOM_SEED = 0


def space_for(problem: Problem) -> OutputSpace:
    return "probability" if problem.target.is_class else "logit"


def top_counts(length: int) -> list[int]:
    return [min(length, max(1, math.ceil(p * length / 100.0))) for p in PERCENTS]


def work(length: int, rankings: int) -> int:
    return ((rankings + RANDOM_RANKINGS) * 2 * len(PERCENTS) + 1) * length


def faithfulness(problem: Problem, scores: list[np.ndarray]) -> list[Faithfulness]:
    """One Faithfulness per score vector [T]; the random rankings are shared."""
    t = problem.length
    rng = np.random.default_rng(RANDOM_SEED)
    orders = [np.argsort(-s, kind="stable") for s in scores]
    orders += [rng.permutation(t) for _ in range(RANDOM_RANKINGS)]
    counts = top_counts(t)
    # masks[r, k, 0] removes the top-k of ranking r; masks[r, k, 1] keeps only them.
    masks = np.zeros((len(orders), len(counts), 2, t), dtype=bool)
    for r, order in enumerate(orders):
        for i, k in enumerate(counts):
            masks[r, i, 0, order[:k]] = True
            masks[r, i, 1] = ~masks[r, i, 0]
    # Row 0 removes nothing: f(x) in the faithfulness space, from the same batch.
    flat = np.concatenate([np.zeros((1, t), dtype=bool), masks.reshape(-1, t)])
    evals = problem.onnx_targets(flat.shape[0], lambda lo, hi: apply_masks(problem, flat[lo:hi]),
                                 "faithfulness", space_for(problem))
    drop = (evals[0] - evals[1:]).reshape(len(orders), len(counts), 2)  # f(x) - f(variant)
    comp, suff = drop[..., 0], drop[..., 1]
    rand_comp = comp[len(scores):].mean(axis=0)
    rand_suff = suff[len(scores):].mean(axis=0)
    return [Faithfulness(
        top_k_percent=list(PERCENTS),
        comprehensiveness=comp[m].tolist(), sufficiency=suff[m].tolist(),
        aopc_comprehensiveness=float(comp[m].mean()), aopc_sufficiency=float(suff[m].mean()),
        random_comprehensiveness=rand_comp.tolist(), random_sufficiency=rand_suff.tolist(),
        random_aopc_comprehensiveness=float(rand_comp.mean()),
        random_aopc_sufficiency=float(rand_suff.mean()),
    ) for m in range(len(scores))]
