"""Recompute the RNN/LSTM/GRU stack of a ``SequenceModel`` step by step, exposing the gates.

Each (layer, direction) reads the weights of its own single-layer module in
``SequenceModel.rnn[layer][direction]``; backward directions run on each sequence reversed
within its length, as in ``families``. Each (layer, direction) runs one loop over time, a few
numpy ops per step on ``[B, G*H]`` arrays, after one matmul for the input projections.
Per-step cost is numpy call overhead (~0.3 us per ufunc on these sizes, ~65 ns per view the
loop iterates) plus the hidden projection (~2.7 us for 128x512), so the loops keep calls
few: 2-D ``ndarray.dot`` (no ``np.dot`` dispatch), constants as 0-d arrays (a Python float
costs ~0.35 us more per call), outputs passed positionally. Directions run one after the
other: advancing both together as ``[2, B, ·]`` arrays (one batched ``matmul``) made every
step's ufuncs on the strided views slower (one layer of a bidirectional LSTM 64->128,
T=128: 2.2 ms vs 1.85 ms).

Equations (PyTorch's, gate order as in its weights, initial state zero):
- LSTM: i,f,o = σ(·), g = tanh(·), c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
- GRU:  r,z = σ(·), n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h_t = (1 - z) n + z h_{t-1}
- RNN:  h_t = tanh|relu(W_ih x + b_ih + W_hh h + b_hh)
Sigmoids are computed as σ(a) = (tanh(a/2) + 1)/2 with the /2 folded into the weights
(exact: a power of two), so one ``tanh`` per step covers every gate.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from .families import SequenceModel

GATE_NAMES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "rnn_tanh": (),
    "rnn_relu": (),
}
# Gates squashed by tanh (range -1..1); the others are sigmoids (0..1).
TANH_GATES: dict[str, tuple[str, ...]] = {"lstm": ("g",), "gru": ("n",), "rnn_tanh": (), "rnn_relu": ()}
DIRECTION_NAMES = ("forward", "backward")


@dataclass
class DirectionTrace:
    """What one (layer, direction) did, in original time order (padding steps are garbage)."""

    layer: int
    direction: int  # 0 forward, 1 backward
    hidden: np.ndarray  # [B,T,H] float32, h_t
    cell_state: np.ndarray | None  # [B,T,H] c_t (LSTM only)
    gates: np.ndarray  # [B,G,T,H] in GATE_NAMES order; G = 0 for plain RNNs
    initial_hidden: np.ndarray | None = None  # [B,H] h before the first step (None: zero)


def reverse_within_length(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """numpy twin of ``families.reverse_within_length`` over axis 1 of ``x`` [B,T,...]."""
    t = np.arange(x.shape[1])[None, :]  # [1,T]
    n = lengths.astype(np.int64)[:, None]  # [B,1]
    idx = np.where(t < n, n - 1 - t, t)  # [B,T]
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return np.take_along_axis(x, idx, axis=1)


def _reverse_time(x: np.ndarray, lengths: np.ndarray, axis: int) -> np.ndarray:
    """Reverse each sequence of ``x`` [B,...,T,...] along ``axis`` within its length."""
    if bool((lengths == x.shape[axis]).all()):
        return np.flip(x, axis)  # no padding: a view
    moved = np.moveaxis(x, axis, 1)
    flat = moved.reshape(moved.shape[0], moved.shape[1], -1)  # [B,T,rest]
    return np.moveaxis(reverse_within_length(flat, lengths).reshape(moved.shape), 1, axis)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=False)


@dataclass
class _Weights:
    """One (layer, direction)'s weights, rows permuted/scaled for the step loop."""

    w_ih_t: np.ndarray  # [E,G*H]
    w_hh_t: np.ndarray  # [H,G*H]
    b_x: np.ndarray  # [G*H]  biases added to the input projection
    b_hn: np.ndarray | None  # [H]  GRU: b_hn sits inside r * (.)
    torch_order: np.ndarray  # PyTorch gate j sits at computed index torch_order[j]


def _direction_weights(cell: str, rnn: nn.Module, hidden: int) -> _Weights:
    h = hidden
    if cell == "lstm":
        order = np.array([0, 1, 3, 2])  # compute i,f,o,g: the three sigmoids contiguous
        scale = np.r_[np.full(3 * h, 0.5), np.ones(h)].astype(np.float32)
    elif cell == "gru":
        order = np.array([0, 1, 2])
        scale = np.r_[np.full(2 * h, 0.5), np.ones(h)].astype(np.float32)
    else:
        order = np.array([0])
        scale = np.ones(h, dtype=np.float32)
    rows = (order[:, None] * h + np.arange(h)[None, :]).reshape(-1)  # permuted weight rows
    wi = _np(rnn.get_parameter("weight_ih_l0"))[rows] * scale[:, None]
    wh = _np(rnn.get_parameter("weight_hh_l0"))[rows] * scale[:, None]
    bi = _np(rnn.get_parameter("bias_ih_l0"))[rows]
    bh = _np(rnn.get_parameter("bias_hh_l0"))[rows]
    b_hn = None
    if cell == "gru":
        bx = bi + np.r_[bh[: 2 * h], np.zeros(h, dtype=np.float32)]
        b_hn = np.ascontiguousarray(bh[2 * h:])
    else:
        bx = bi + bh
    return _Weights(np.ascontiguousarray(wi.T), np.ascontiguousarray(wh.T), bx * scale, b_hn, np.argsort(order))


def _input_projection(x: np.ndarray, w: _Weights, out: np.ndarray) -> None:
    """x [B,T,E] -> x W_ih^T + b written into ``out`` [T,B,G*H] (time-major; may be a view).

    A torch matmul: torch's thread count is set by the server, while numpy's OpenBLAS picks
    its own threads and slows ~100x when the cores are busy.
    """
    b, steps, e = x.shape
    xt = torch.from_numpy(np.ascontiguousarray(x)).reshape(b * steps, e)
    a = torch.addmm(torch.from_numpy(w.b_x), xt, torch.from_numpy(w.w_ih_t))  # [B*T,G*H]
    torch.from_numpy(out).copy_(a.reshape(b, steps, -1).transpose(0, 1))


# Prepared weights per module, per layer, per direction, rebuilt when a parameter changes
# (training bumps _version).
_PREPARED: weakref.WeakKeyDictionary[SequenceModel, tuple[tuple[tuple[int, int], ...], list[list[_Weights]]]] = \
    weakref.WeakKeyDictionary()


def _prepared_weights(module: SequenceModel) -> list[list[_Weights]]:
    stamp = tuple((p.data_ptr(), p._version) for p in module.rnn.parameters())
    cached = _PREPARED.get(module)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    arch = module.config.family
    prepared = [[_direction_weights(arch.cell, rnn, arch.hidden_size) for rnn in cast(nn.ModuleList, rnns)]
                for rnns in module.rnn]
    _PREPARED[module] = (stamp, prepared)
    return prepared


_HALF = np.array(0.5, dtype=np.float32)  # 0-d: cheaper per ufunc call than a Python float
_ZERO = np.array(0.0, dtype=np.float32)


def _initial(b: int, h_size: int, given: np.ndarray | None) -> np.ndarray:
    return np.zeros((b, h_size), dtype=np.float32) if given is None else np.ascontiguousarray(given, np.float32)


def _run_lstm(x: np.ndarray, w: _Weights, h_size: int, h0: np.ndarray | None = None,
              c0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [B,T,E] -> (gates [T,B,4H] in computed order i,f,o,g; h, c [T,B,H]).

    Step t works in ``buf[t]`` = [i f o g | c_{t-1}] and writes c_t into ``buf[t+1]``: with c_{t-1}
    next to g, f c_{t-1} + i g is one multiply over [i f] * [g c_{t-1}] and one add of its halves.
    """
    b, steps, _ = x.shape
    h1, h2, h3, h4 = h_size, 2 * h_size, 3 * h_size, 4 * h_size
    buf = np.empty((steps + 1, b, 5 * h_size), dtype=np.float32)
    _input_projection(x, w, buf[:steps, :, :h4])
    buf[0, :, h4:] = 0.0 if c0 is None else c0  # c_0
    hs = np.empty((steps, b, h_size), dtype=np.float32)
    h_prev = _initial(b, h_size, h0)
    rec = np.empty((b, h4), dtype=np.float32)
    prod = np.empty((b, h2), dtype=np.float32)
    prod_ig, prod_fc = prod[:, :h1], prod[:, h1:]
    w_hh, dot, half, tanh, mul, add = w.w_hh_t, np.ndarray.dot, _HALF, np.tanh, np.multiply, np.add
    # Views over all steps, sliced once.
    rows = buf[:steps]
    pre_, sig_, if_, o_, gc_, c_ = rows[..., :h4], rows[..., :h3], rows[..., :h2], rows[..., h2:h3], \
        rows[..., h3:], buf[1:, :, h4:]
    for pre, s, i_f, o, g_c, c, h in zip(pre_, sig_, if_, o_, gc_, c_, hs):  # one step each (views)
        dot(h_prev, w_hh, rec)
        add(pre, rec, pre)
        tanh(pre, pre)
        mul(s, half, s)  # sigmoid = (tanh(a/2) + 1) / 2
        add(s, half, s)
        mul(i_f, g_c, prod)  # [i g, f c_{t-1}]
        add(prod_ig, prod_fc, c)
        tanh(c, h)
        mul(h, o, h)
        h_prev = h
    return buf[:steps, :, :h4], hs, buf[1:, :, h4:]


def _run_gru(x: np.ndarray, w: _Weights, h_size: int, h0: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """x [B,T,E] -> (gates [T,B,3H] r,z,n; h [T,B,H])."""
    b, steps, _ = x.shape
    assert w.b_hn is not None
    a = np.empty((steps, b, 3 * h_size), dtype=np.float32)
    _input_projection(x, w, a)
    hs = np.empty((steps, b, h_size), dtype=np.float32)
    h_prev = _initial(b, h_size, h0)
    rec = np.empty((b, 3 * h_size), dtype=np.float32)
    h1, h2 = h_size, 2 * h_size
    rec_rz, rec_n = rec[:, :h2], rec[:, h2:]
    rz_, r_, z_, n_ = a[..., :h2], a[..., :h1], a[..., h1:h2], a[..., h2:]
    w_hh, b_hn, dot, half, tanh, mul, add = w.w_hh_t, w.b_hn, np.ndarray.dot, _HALF, np.tanh, np.multiply, np.add
    for rz, r, z, n, h in zip(rz_, r_, z_, n_, hs):  # one step each (views)
        dot(h_prev, w_hh, rec)
        add(rz, rec_rz, rz)
        tanh(rz, rz)
        mul(rz, half, rz)
        add(rz, half, rz)
        add(rec_n, b_hn, rec_n)
        mul(rec_n, r, rec_n)  # r * (W_hn h + b_hn)
        add(n, rec_n, n)
        tanh(n, n)
        np.subtract(h_prev, n, h)
        mul(h, z, h)
        add(h, n, h)
        h_prev = h
    return a, hs


def _run_rnn(x: np.ndarray, w: _Weights, h_size: int, relu: bool, h0: np.ndarray | None = None) -> np.ndarray:
    """x [B,T,E] -> h [T,B,H]."""
    b, steps, _ = x.shape
    hs = np.empty((steps, b, h_size), dtype=np.float32)
    _input_projection(x, w, hs)  # each step then adds W_hh h and squashes in place
    h_prev = _initial(b, h_size, h0)
    rec = np.empty_like(h_prev)
    w_hh, dot = w.w_hh_t, np.ndarray.dot
    for h in hs:
        dot(h_prev, w_hh, rec)
        np.add(h, rec, h)
        if relu:
            np.maximum(h, _ZERO, h)
        else:
            np.tanh(h, h)
        h_prev = h
    return hs


def recompute(module: SequenceModel, inputs: np.ndarray, lengths: np.ndarray,
              initial: list[tuple[np.ndarray, ...]] | None = None) -> list[list[DirectionTrace]]:
    """inputs [B,T] int64 or [B,T,F] float32, lengths [B] -> per layer, per direction, the trace.

    ``initial``: unidirectional stacks only, per layer (h0 [B,H],) or (h0, c0) for LSTMs: the
    state carried from earlier chunks of the sequence (default zero)."""
    arch = module.config.family
    cell, h_size = arch.cell, arch.hidden_size
    lengths = np.asarray(lengths, dtype=np.int64)
    with torch.no_grad():
        x = _np(module.embed(torch.from_numpy(inputs)))  # [B,T,E]
    out: list[list[DirectionTrace]] = []
    with np.errstate(over="ignore", under="ignore"):
        for layer, layer_weights in enumerate(_prepared_weights(module)):
            traces: list[DirectionTrace] = []
            for d, w in enumerate(layer_weights):
                xd = x if d == 0 else reverse_within_length(x, lengths)  # [B,T,E]
                batch, steps, _ = xd.shape
                cs: np.ndarray | None = None
                a: np.ndarray | None = None  # gates [T,B,G*H] in computed order
                given = initial[layer] if initial is not None and d == 0 else None
                h0 = given[0] if given is not None else None
                if cell == "lstm":
                    a, hs, cs = _run_lstm(xd, w, h_size, h0, given[1] if given is not None else None)
                elif cell == "gru":
                    a, hs = _run_gru(xd, w, h_size, h0)
                else:
                    hs = _run_rnn(xd, w, h_size, relu=cell == "rnn_relu", h0=h0)
                # [T,B,G,H] in computed order -> [B,G,T,H] in PyTorch order, one copy
                g = a.reshape(steps, batch, -1, h_size).transpose(1, 2, 0, 3)[:, w.torch_order] \
                    if a is not None else np.empty((batch, 0, steps, h_size), dtype=np.float32)
                h = hs.swapaxes(0, 1)  # [B,T,H]
                c = cs.swapaxes(0, 1) if cs is not None else None
                if d == 1:  # back to original time order
                    h = _reverse_time(h, lengths, axis=1)
                    c = _reverse_time(c, lengths, axis=1) if c is not None else None
                    g = _reverse_time(g, lengths, axis=2)
                traces.append(DirectionTrace(layer, d, np.ascontiguousarray(h),
                                             None if c is None else np.ascontiguousarray(c), np.ascontiguousarray(g),
                                             h0))
            out.append(traces)
            x = np.concatenate([tr.hidden for tr in traces], axis=2) if len(traces) > 1 else traces[0].hidden
    return out
