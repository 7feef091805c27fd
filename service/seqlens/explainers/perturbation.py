"""The shared perturbation core: masked copies of the input, run as large ONNX Runtime batches.

A variant replaces the masked timesteps (or (timestep, feature) cells) of the input by
the removal baseline: PAD or caller token ids, or baseline features. Variants are built a
chunk at a time (``Problem.onnx_targets``), so memory is bounded by the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import prefix
from .problem import Problem
from .result import MethodOutput

MaskMaker = Callable[[int, int], np.ndarray]  # (lo, hi) -> masks [hi-lo, T] or [hi-lo, T, F]


def apply_masks(problem: Problem, masks: np.ndarray) -> np.ndarray:
    """masks [k,T] (timesteps) or [k,T,F] (cells), True = removed -> variants [k,T(,F)]."""
    values, removal = problem.values, problem.removal_values
    if masks.ndim == 2 and values.ndim == 2:
        masks = masks[:, :, None]
    return np.where(masks, removal[None], values[None])


def ablation_effects(problem: Problem, masks_for: MaskMaker, n: int, what: str,
                     first: np.ndarray | None = None) -> np.ndarray:
    """f(x) - f(variant) for variants 0..n-1 -> [n] float64.

    ``first`` [n] (non-decreasing): the first step each variant changes. With it, a
    unidirectional model runs each variant from there on, from cached states (``prefix``);
    otherwise every variant runs whole on ONNX Runtime.
    """
    def make(lo: int, hi: int) -> np.ndarray:
        return apply_masks(problem, masks_for(lo, hi))

    if first is not None and prefix.applies(problem):
        evals, fx = prefix.suffix_targets(problem, first, make, what)
        return fx - evals
    evals = problem.onnx_targets(n, make, what)
    fx, _ = problem.onnx_endpoints
    return fx - evals


def perturbation_attribution(problem: Problem, method: str, full: np.ndarray, *, n_steps: int,
                             per_step: np.ndarray | None = None) -> MethodOutput:
    """Per-group attributions -> the method's output.

    ``full`` is [T] (token models) or [T,F] (feature models). When groups are whole
    timesteps (``per_step`` [T] given), a feature model's [T,F] repeats each step's value
    over its features as Captum does, and ``scores`` is that per-step value; for
    per-cell groups ``scores`` sums over features.
    """
    full = full.astype(np.float32)
    if problem.is_tokens:
        return MethodOutput(method, full, full, n_steps=n_steps)
    scores = per_step.astype(np.float32) if per_step is not None else full.sum(axis=1)
    return MethodOutput(method, full, scores, feature_scores=full, n_steps=n_steps)


def timestep_groups(problem: Problem, per_step: np.ndarray) -> np.ndarray:
    """Per-step values [T] -> the full attribution: [T] (tokens) or [T,F] repeated over features."""
    if problem.is_tokens:
        return per_step
    return np.repeat(per_step[:, None], problem.values.shape[1], axis=1)
