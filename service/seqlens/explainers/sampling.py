"""Random draws of the sampling methods, seeded and independent of chunk sizes.

Noise is drawn one sample at a time, in sample order, from one ``torch.Generator``;
chunks take consecutive samples, so the values depend on the seed only. Tests hand in
the exact draws Captum made (``GivenDraws``) to compare with it number for number.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Draws(Protocol):
    def alphas(self, n: int) -> Tensor: ...  # [n] in [0,1), drawn once before any noise

    def noise(self, count: int) -> Tensor: ...  # the next ``count`` samples [count,T,D]


class SeededDraws:
    def __init__(self, seed: int, stdev: float, shape: tuple[int, ...]) -> None:
        self._gen = torch.Generator().manual_seed(seed)
        self._stdev = stdev
        self._shape = shape

    def alphas(self, n: int) -> Tensor:
        return torch.rand(n, generator=self._gen)

    def noise(self, count: int) -> Tensor:
        if self._stdev == 0.0:
            return torch.zeros((count, *self._shape))
        draws = [torch.randn(self._shape, generator=self._gen) * self._stdev for _ in range(count)]
        return torch.stack(draws)


class GivenDraws:
    """Draws fixed in advance: noise [S,T,D] and alphas [S] (tests, reproducing Captum)."""

    def __init__(self, noise: Tensor, alphas: Tensor | None = None) -> None:
        self._noise = noise
        self._alphas = alphas
        self._next = 0

    def alphas(self, n: int) -> Tensor:
        assert self._alphas is not None and self._alphas.shape[0] == n
        return self._alphas

    def noise(self, count: int) -> Tensor:
        out = self._noise[self._next:self._next + count]
        self._next += count
        return out


def permutations(seed: int, n: int, size: int) -> list[Tensor]:
    """``n`` random orders of ``size`` groups, as Captum draws them (torch.randperm in turn)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(size, generator=gen) for _ in range(n)]
