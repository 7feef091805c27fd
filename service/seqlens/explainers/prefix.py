"""Perturbed runs that start late: changing step t leaves h_0..h_{t-1} unchanged.

For a unidirectional stack, a variant whose first changed step is s only needs the steps
from s on, started from the states the unchanged input had there. Variants are sorted by
their first changed step and cut into blocks; block j starts every row at the block's
first step a_j, from the states at a_j (one pass of the unchanged input through each
layer's own ``nn.LSTM``/``nn.GRU``/``nn.RNN``, segment by segment, so the states are the
module's own). About half the steps of running every variant from step 0.

Tagging heads read step tau only, so the sequence ends at tau and variants changing only
later steps have no effect. Bidirectional stacks read the future, so they cannot start
late: they take the ONNX Runtime path. This runs on torch because the ONNX graph takes
no initial state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..families import RNNModule, SequenceModel
from .problem import Problem
from .targets import ResolvedTarget, select


def block_count(length: int) -> int:
    """More blocks skip more unchanged steps but make more calls (~0.5 ms each): measured
    best near T/16 (8 blocks at T = 128, 32 at T = 512, LSTM 64 -> 128)."""
    return min(32, max(4, length // 16))


State = Tensor | tuple[Tensor, Tensor]


def applies(problem: Problem) -> bool:
    return problem.config.starts_late


def _expand(state: State | None, k: int) -> State | None:
    if state is None:
        return None
    if isinstance(state, tuple):
        return (state[0].expand(-1, k, -1).contiguous(), state[1].expand(-1, k, -1).contiguous())
    return state.expand(-1, k, -1).contiguous()


def _forward_direction(directions: nn.Module) -> RNNModule:
    assert isinstance(directions, nn.ModuleList)
    rnn = directions[0]
    assert isinstance(rnn, nn.LSTM | nn.GRU | nn.RNN)
    return rnn


class SuffixRunner:
    """Runs same-length variants of one sequence from cached states of the unchanged input."""

    def __init__(self, problem: Problem, starts: list[int]) -> None:
        self.problem = problem
        module = problem.module
        assert isinstance(module, SequenceModel)  # starts_late: family models only
        target = problem.target
        self.end = target.timestep + 1 if target.timestep >= 0 else problem.length  # steps the target reads
        # The head reads the final state, so a tagging target becomes "last step" of the cut sequence.
        self.target = ResolvedTarget(target.class_index, target.label, -1, target.horizon_step,
                                     target.output_space)
        self.layers = [_forward_direction(directions) for directions in module.rnn]
        bounds = sorted({s for s in starts if 0 < s < self.end})
        carried: list[State | None] = [None] * len(self.layers)
        if problem.initial is not None:  # a chunk of a longer sequence: start from its state ([1,1,H])
            carried = [(layer[0][None], layer[1][None]) if len(layer) == 2 else layer[0][None]
                       for layer in problem.initial]
        self.states: dict[int, list[State | None]] = {0: carried}
        with torch.no_grad():
            x = self._embed(problem.values[None, :self.end])
            for i, rnn in enumerate(self.layers):
                outs, state = [], carried[i]
                for a, b in zip([0, *bounds], [*bounds, self.end], strict=True):
                    y, state = rnn(x[:, a:b], state)
                    outs.append(y)
                    if b in bounds:
                        self.states.setdefault(b, [None] * len(self.layers))[i] = state
                x = torch.cat(outs, dim=1)
            self.base = float(self._head(x[:, -1]).double()[0])  # f(x) on the same path

    def _embed(self, values: np.ndarray) -> Tensor:
        return self.problem.module.embed(torch.from_numpy(np.ascontiguousarray(values)))

    def _head(self, last: Tensor) -> Tensor:
        module = self.problem.module
        assert isinstance(module, SequenceModel)
        return select(module.apply_head(last), self.target)

    def run(self, start: int, variants: np.ndarray) -> np.ndarray:
        """Target outputs [k] of variants [k,T(,F)] that equal the input before ``start``."""
        k = variants.shape[0]
        if start >= self.end:
            return np.full(k, self.base)
        with torch.no_grad():
            x = self._embed(variants[:, start:self.end])
            for rnn, state in zip(self.layers, self.states[start], strict=True):
                x, _ = rnn(x, _expand(state, k))
            return self._head(x[:, -1]).double().numpy()


def suffix_targets(problem: Problem, first: np.ndarray, make: Callable[[int, int], np.ndarray],
                   what: str) -> tuple[np.ndarray, float]:
    """Target outputs [n] of variants 0..n-1 (``make(lo, hi)``), whose first changed steps
    ``first`` [n] never decrease; and f(x) on the same path."""
    n = len(first)
    if np.any(np.diff(first) < 0):
        raise ValueError("variants must be ordered by their first changed step")
    cuts = np.unique(np.linspace(0, n, min(block_count(problem.length), n) + 1).astype(int))
    blocks = list(itertools.pairwise(cuts))
    runner = SuffixRunner(problem, [int(first[lo]) for lo, _ in blocks])
    width = problem.width
    out = np.empty(n, dtype=np.float64)
    for lo, hi in blocks:
        start = min(int(first[lo]), runner.end)
        rows = max(1, problem.chunk_elements // (max(1, runner.end - start) * width))
        for a in range(lo, hi, rows):
            problem.control.check(what)
            b = min(hi, a + rows)
            out[a:b] = runner.run(start, make(a, b))
    return out, runner.base
