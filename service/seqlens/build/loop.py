"""The modules that ``torch.jit.script`` compiles into the ONNX graph: seqlens' time loop around a
user cell, and the token/feature front ends.

No ``from __future__ import annotations`` here: TorchScript reads the class-level annotations
(the buffers' types) as real objects, not strings.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OneHot(nn.Module):
    """Token ids -> one-hot vectors, as a Gather of an identity matrix (the attribution point)."""

    eye: Tensor

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.register_buffer("eye", torch.eye(vocab_size))

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.eye)


class FeaturesIn(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class CellLoop(nn.Module):
    """``forward(inputs, lengths) -> (outputs, states)``: outputs ``[B,C]`` at each row's last
    real step (``per_step=False``) or ``[B,T,C]``; states ``[B,T,S]`` after each step, frozen
    after each row's length so padding never changes a row's answer."""

    __constants__ = ("out_size", "per_step")  # script folds the unused branch away
    initial: Tensor

    def __init__(self, front: nn.Module, cell: nn.Module, initial: Tensor, out_size: int, per_step: bool) -> None:
        super().__init__()
        self.front = front
        self.cell = cell
        self.register_buffer("initial", initial)
        self.out_size = out_size
        self.per_step = per_step

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.front(inputs)
        batch = x.size(0)
        state = self.initial.expand(batch, self.initial.size(1))
        last = torch.zeros(batch, self.out_size, dtype=x.dtype)
        outs: list[Tensor] = []
        states: list[Tensor] = []
        for t in range(x.size(1)):
            out, new = self.cell(x[:, t], state)
            state = torch.where((lengths > t).unsqueeze(1), new, state)
            if self.per_step:
                outs.append(out)
            else:
                last = torch.where((lengths - 1 == t).unsqueeze(1), out, last)
            states.append(state)
        result = torch.stack(outs, 1) if self.per_step else last
        return result, torch.stack(states, 1)
