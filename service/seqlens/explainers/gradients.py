"""The shared gradient core: many rows at the attribution layer, batched, chunked forward+backward.

Every gradient method reduces to "the gradient of the target output at N rows": IG rows
are points on the path from the baseline, GradientSHAP and SmoothGrad rows are noisy
copies. The rows are built a chunk at a time (``rows_per_chunk`` keeps rows x T x E
within ``Settings.gradient_chunk_elements``), so memory is bounded by the chunk, not by
T x steps. Between chunks the deadline and cancellation are checked.

Gradient threads flush denormal floats to zero (``init_gradient_thread``): backpropagated
gradients through long RNNs decay into subnormal numbers, which are ~10x slower on x86
and change no attribution (the tests compare with unflushed runs). The flag is per
thread, so it is set in every worker of the gradient pool and in every lane (threads.py):
a lone explanation splits each chunk's rows across lanes, each a forward+backward of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from .problem import Problem
from .result import MethodOutput
from .threads import GRADIENT_NICE, current_lanes, gradient_executor, init_gradient_thread, split_rows

__all__ = ["GRADIENT_NICE", "gradient_at", "gradient_attribution", "gradient_executor", "init_gradient_thread",
           "run_gradient_chunks"]

ChunkConsumer = Callable[[int, Tensor, Tensor], None]  # (first row, grads [c,T,D], outputs [c])


def run_gradient_chunks(problem: Problem, n_rows: int, make_rows: Callable[[int, int], Tensor],
                        consume: ChunkConsumer, what: str) -> None:
    """For rows 0..n_rows-1 (built by ``make_rows(start, stop)`` as [c,T,D]), hand each
    chunk's gradients of the target output, and the outputs, to ``consume``."""
    if problem.module.training:
        raise RuntimeError("explanations need the module in eval mode")
    step = problem.rows_per_chunk
    lanes = current_lanes()

    def grad_of(rows: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():  # grad mode is per thread
            rows = rows.detach().requires_grad_(True)
            out = problem.forward(rows)  # [c]
            (grads,) = torch.autograd.grad(out.sum(), rows)  # rows are independent: per-row grads
            return grads, out.detach()

    for start in range(0, n_rows, step):
        problem.control.check(what)
        stop = min(n_rows, start + step)
        rows = make_rows(start, stop)  # built here, in order (samplers draw as they go)
        parts = split_rows(0, stop - start, lanes.width()) if lanes is not None else [(0, stop - start)]
        if len(parts) == 1:
            consume(start, *grad_of(rows))
            continue
        assert lanes is not None  # a lone job: each lane a forward+backward of some rows
        results = lanes.map([partial(grad_of, rows[a:b]) for a, b in parts])
        consume(start, torch.cat([g for g, _ in results]), torch.cat([o for _, o in results]))


def gradient_attribution(problem: Problem, method: str, full: Tensor, *, n_steps: int) -> MethodOutput:
    """[T,D] attributions at the attribution layer -> per-timestep scores.

    Token models: scores = signed sum over the embedding, plus its L2 norm. Feature
    models: feature_scores = [T,F], scores = sum over features.
    """
    arr = full.detach().numpy().astype(np.float32)
    scores = arr.sum(axis=1)
    if problem.is_tokens:
        return MethodOutput(method, arr, scores, l2_norm=np.linalg.norm(arr, axis=1).astype(np.float32),
                            n_steps=n_steps)
    return MethodOutput(method, arr, scores, feature_scores=arr, n_steps=n_steps)


def gradient_at(problem: Problem, what: str) -> Tensor:
    """The gradient of the target at the input itself [T,D]."""
    found: list[Tensor] = []
    run_gradient_chunks(problem, 1, lambda _a, _b: problem.x[None],
                        lambda _s, g, _o: found.append(g[0]), what)
    return found[0]
