"""The two module protocols a build accepts, as exportable wrappers and as eager references.

Cell protocol: ``cell(x_t [B,E], state) -> (out_t, state)``, ``state`` a tensor or a tuple of
tensors, each batch-first. seqlens owns the time loop (``CellLoop``): it embeds the token ids
(one-hot or the user's ``nn.Embedding``) once, steps the cell, freezes each row's state after its
length, and reads the output at the last real step (or keeps every step, for taggers). The loop is
``torch.jit.script``-ed so the ONNX graph gets a ``Loop`` over a symbolic time axis; the user's
cell is traced (at one step, where tracing is exact for any cell without data-dependent Python
control flow) and carried as one flat ``[B,S]`` state (see docs/build.md).

The eager references run the user's module on each sequence alone, with no padding: they are the
oracles the build's checks compare the ONNX graph against.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .loop import CellLoop

State = Tensor | tuple[Tensor, ...]


def as_tuple(state: State) -> tuple[Tensor, ...]:
    if isinstance(state, Tensor):
        return (state,)
    if isinstance(state, (tuple, list)) and all(isinstance(s, Tensor) for s in state) and state:
        return tuple(state)
    raise TypeError(f"a cell's state must be a tensor or a tuple of tensors, not {type(state).__name__}")


@dataclass(frozen=True)
class StateLayout:
    """Shapes (without the batch axis) of the state tensors and whether the cell takes a tuple."""

    shapes: tuple[tuple[int, ...], ...]
    is_tuple: bool

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def pack(self, state: State) -> Tensor:
        return torch.cat([s.reshape(s.shape[0], -1) for s in as_tuple(state)], dim=1)

    def unpack(self, flat: Tensor) -> State:
        parts: list[Tensor] = []
        offset = 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(flat[:, offset : offset + size].reshape(-1, *shape))
            offset += size
        return tuple(parts) if self.is_tuple else parts[0]

    def slices(self, names: Sequence[str] | None) -> dict[str, list[int]]:
        """Named ``[start, end)`` column ranges of the packed state (the manifest's ``slices``)."""
        if names is None:
            names = (["hidden"] if len(self.shapes) == 1 else ["hidden", "cell"] if len(self.shapes) == 2
                     else [f"state_{i}" for i in range(len(self.shapes))])
        if len(names) != len(self.shapes):
            raise ValueError(f"state_names has {len(names)} names for {len(self.shapes)} state tensors")
        out: dict[str, list[int]] = {}
        offset = 0
        for name, size in zip(names, self.sizes, strict=True):
            out[name] = [offset, offset + size]
            offset += size
        return out


def initial_state_of(cell: nn.Module, given: State | None) -> State:
    """The state before the first step, batch axis of size 1 (broadcast to the batch)."""
    if given is None:
        init = getattr(cell, "initHidden", None) or getattr(cell, "init_hidden", None)
        if init is None:
            raise ValueError("a cell needs its initial state: pass initial_state=... (each tensor [1, ...]) "
                             "or give the module an initHidden() method")
        given = init()
    state = as_tuple(given)
    for s in state:
        if s.dim() < 2 or s.shape[0] != 1:
            raise ValueError(f"each initial state tensor must be [1, ...] (batch first, broadcast to the batch); "
                             f"got shape {tuple(s.shape)}")
    return state if isinstance(given, (tuple, list)) else state[0]


class _FlatCell(nn.Module):
    """The user's cell on one packed state tensor: the loop then carries a single ``[B,S]``."""

    def __init__(self, cell: nn.Module, layout: StateLayout) -> None:
        super().__init__()
        self.cell = cell
        self.layout = layout

    def forward(self, x: Tensor, flat: Tensor) -> tuple[Tensor, Tensor]:
        out, new = self.cell(x, self.layout.unpack(flat))
        return out, self.layout.pack(new)


@dataclass
class CellBuild:
    """A cell prepared for export: the scripted loop and what the manifest needs to know."""

    loop: nn.Module
    layout: StateLayout
    out_size: int


def prepare_cell(cell: nn.Module, front: nn.Module, initial: State, input_size: int, per_step: bool
                 ) -> CellBuild:
    """Probe the cell once (shapes), trace it at one step, script the loop around it."""
    init = as_tuple(initial)
    layout = StateLayout(tuple(tuple(s.shape[1:]) for s in init), isinstance(initial, tuple))
    probe_x = torch.zeros(2, input_size)
    probe_state = layout.unpack(layout.pack(initial).expand(2, -1))
    with torch.no_grad():
        out, new = cell(probe_x, probe_state)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        raise ValueError("a cell must return (out_t [B, C], state); its first output is "
                         f"{type(out).__name__} {tuple(out.shape) if isinstance(out, Tensor) else ''}")
    got = tuple(tuple(s.shape[1:]) for s in as_tuple(new))
    if got != layout.shapes:
        raise ValueError(f"the cell returned state shapes {got}; the initial state has {layout.shapes} "
                         "(without the batch axis)")
    flat = _FlatCell(cell, layout).eval()
    example = (torch.randn(2, input_size), torch.randn(2, layout.width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the Python-side shape arithmetic
        traced = torch.jit.trace(flat, example, check_trace=False)
        loop = torch.jit.script(CellLoop(front, traced, layout.pack(initial).detach().clone(),
                                         int(out.shape[1]), per_step))
    return CellBuild(loop, layout, int(out.shape[1]))


# --- eager references: each sequence alone, no padding -----------------------------------------
def eager_cell_rows(cell: nn.Module, initial: State, x: Tensor, lengths: Tensor, per_step: bool) -> list[Tensor]:
    """Row i: ``[C]`` (the output after its last step) or ``[L_i, C]``, by the user's own cell in a
    Python loop; ``x`` is ``[B,T,E]`` (already embedded; may require grad)."""
    rows: list[Tensor] = []
    for i in range(x.shape[0]):
        state = initial
        outs: list[Tensor] = []
        for t in range(int(lengths[i])):
            out, state = cell(x[i : i + 1, t], state)
            outs.append(out[0])
        rows.append(torch.stack(outs) if per_step else outs[-1])
    return rows


def eager_sequence_rows(module: nn.Module, x: Tensor, lengths: Tensor, per_step: bool) -> list[Tensor]:
    """Row i: the module on ``x[i, :L_i]`` alone."""
    rows: list[Tensor] = []
    for i in range(x.shape[0]):
        n = int(lengths[i])
        out = module(x[i : i + 1, :n], lengths[i : i + 1])
        rows.append(out[0, :n] if per_step else out[0])
    return rows
