"""The shared gradient core: many rows at the attribution layer, batched, chunked forward+backward.

Every gradient method reduces to "the gradient of the target output at N rows": IG rows
are points on the path from the baseline, GradientSHAP and SmoothGrad rows are noisy
copies. The rows are built a chunk at a time (``rows_per_chunk`` keeps rows x T x E
within ``Settings.gradient_chunk_elements``), so memory is bounded by the chunk, not by
T x steps. Between chunks the deadline and cancellation are checked.

Gradient threads flush denormal floats to zero (``init_gradient_thread``): backpropagated
gradients through long RNNs decay into subnormal numbers, which are ~10x slower on x86
and change no attribution (the tests compare with unflushed runs). The flag is per
thread, so it is set in every worker of the gradient pool.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .problem import Problem
from .result import Attribution

ChunkConsumer = Callable[[int, Tensor, Tensor], None]  # (first row, grads [c,T,D], outputs [c])


GRADIENT_NICE = 10


def init_gradient_thread() -> None:
    """Prepare the calling thread for gradient work: flush-to-zero denormals (per thread),
    cuDNN off (process-wide: eval-mode RNN backward is unsupported on cuDNN, and a
    per-call context would race between workers)."""
    torch.set_flush_denormal(True)
    torch.backends.cudnn.enabled = False
    # Predictions first: a lower scheduling priority for this thread (Linux: per-thread nice)
    # cut Predict p50 under concurrent explanations from 1.65 to 1.33 ms on 2 cores.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), GRADIENT_NICE)


def gradient_executor(workers: int) -> ThreadPoolExecutor:
    """The pool that runs explanations, separate from the prediction pool."""
    return ThreadPoolExecutor(workers, thread_name_prefix="seqlens-torch", initializer=init_gradient_thread)


def run_gradient_chunks(problem: Problem, n_rows: int, make_rows: Callable[[int, int], Tensor],
                        consume: ChunkConsumer, what: str) -> None:
    """For rows 0..n_rows-1 (built by ``make_rows(start, stop)`` as [c,T,D]), hand each
    chunk's gradients of the target output, and the outputs, to ``consume``."""
    if problem.module.training:
        raise RuntimeError("explanations need the module in eval mode")
    step = problem.rows_per_chunk
    with torch.enable_grad():
        for start in range(0, n_rows, step):
            problem.control.check(what)
            stop = min(n_rows, start + step)
            rows = make_rows(start, stop).detach().requires_grad_(True)
            out = problem.forward(rows)  # [c]
            (grads,) = torch.autograd.grad(out.sum(), rows)  # rows are independent: per-row grads
            consume(start, grads, out.detach())


def gradient_attribution(problem: Problem, method: str, full: Tensor) -> Attribution:
    """[T,D] attributions at the attribution layer -> per-timestep scores.

    Token models: scores = signed sum over the embedding, plus its L2 norm. Feature
    models: feature_scores = [T,F], scores = sum over features.
    """
    arr = full.detach().numpy().astype(np.float32)
    scores = arr.sum(axis=1)
    if problem.is_tokens:
        return Attribution(method, arr, scores, l2_norm=np.linalg.norm(arr, axis=1).astype(np.float32))
    return Attribution(method, arr, scores, feature_scores=arr)


def gradient_at(problem: Problem, what: str) -> Tensor:
    """The gradient of the target at the input itself [T,D]."""
    found: list[Tensor] = []
    run_gradient_chunks(problem, 1, lambda _a, _b: problem.x[None],
                        lambda _s, g, _o: found.append(g[0]), what)
    return found[0]
