"""Recompute the RNN/LSTM/GRU stack of a ``SequenceModel`` step by step, exposing the gates.

Each (layer, direction) reads the weights of its own single-layer module in
``SequenceModel.rnn[layer][direction]``; backward directions run on each sequence reversed
within its length, as in ``families``. The loop runs over time only: each step is a few
numpy ops on ``[directions, B, G*H]`` arrays, both directions of a layer advancing together
(torch runs them one after the other), and input projections are one matmul per layer.

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
    """One layer's weights stacked over directions, rows permuted/scaled for the step loop."""

    w_ih_t: np.ndarray  # [Dirs,E,G*H]
    w_hh_t: np.ndarray  # [Dirs,H,G*H]
    b_x: np.ndarray  # [Dirs,1,G*H]  biases added to the input projection
    b_hn: np.ndarray | None  # [Dirs,1,H]  GRU: b_hn sits inside r * (.)
    torch_order: np.ndarray  # PyTorch gate j sits at computed index torch_order[j]


def _layer_weights(cell: str, rnns: list[nn.Module], hidden: int) -> _Weights:
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
    w_ih, w_hh, b_x, b_hn = [], [], [], []
    for rnn in rnns:
        wi = _np(rnn.get_parameter("weight_ih_l0"))[rows] * scale[:, None]
        wh = _np(rnn.get_parameter("weight_hh_l0"))[rows] * scale[:, None]
        bi = _np(rnn.get_parameter("bias_ih_l0"))[rows]
        bh = _np(rnn.get_parameter("bias_hh_l0"))[rows]
        if cell == "gru":
            bx = bi + np.r_[bh[: 2 * h], np.zeros(h, dtype=np.float32)]
            b_hn.append(bh[2 * h:][None, :])
        else:
            bx = bi + bh
        w_ih.append(wi.T)
        w_hh.append(wh.T)
        b_x.append((bx * scale)[None, :])
    return _Weights(np.ascontiguousarray(np.stack(w_ih)), np.ascontiguousarray(np.stack(w_hh)),
                    np.stack(b_x), np.stack(b_hn) if b_hn else None, np.argsort(order))


def _input_projection(xs: np.ndarray, w: _Weights) -> np.ndarray:
    """xs [Dirs,B,T,E] -> x W_ih^T + b, time-major [T,Dirs,B,G*H].

    One torch matmul per layer: torch's thread count is set by the server, while numpy's
    OpenBLAS picks its own threads and slows ~100x when the cores are busy.
    """
    dirs, b, steps, e = xs.shape
    x = torch.from_numpy(np.ascontiguousarray(xs)).reshape(dirs, b * steps, e)
    a = torch.baddbmm(torch.from_numpy(w.b_x), x, torch.from_numpy(w.w_ih_t))  # [Dirs,B*T,G*H]
    return a.reshape(dirs, b, steps, -1).permute(2, 0, 1, 3).contiguous().numpy()


# Prepared weights per module, rebuilt when a parameter changes (training bumps _version).
_PREPARED: weakref.WeakKeyDictionary[SequenceModel, tuple[tuple[tuple[int, int], ...], list[_Weights]]] = \
    weakref.WeakKeyDictionary()


def _prepared_weights(module: SequenceModel) -> list[_Weights]:
    stamp = tuple((p.data_ptr(), p._version) for p in module.rnn.parameters())
    cached = _PREPARED.get(module)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    arch = module.config.architecture
    prepared = [_layer_weights(arch.cell, list(cast(nn.ModuleList, rnns)), arch.hidden_size) for rnns in module.rnn]
    _PREPARED[module] = (stamp, prepared)
    return prepared


def _run_lstm(a: np.ndarray, w: _Weights, h_size: int) -> tuple[np.ndarray, np.ndarray]:
    """a [T,Dirs,B,4H] input projections, overwritten by the gates -> (h, c) [T,Dirs,B,H]."""
    steps, dirs, b, _ = a.shape
    hs = np.empty((steps, dirs, b, h_size), dtype=np.float32)
    cs = np.empty_like(hs)
    h_prev = c_prev = np.zeros((dirs, b, h_size), dtype=np.float32)
    rec = np.empty((dirs, b, 4 * h_size), dtype=np.float32)
    ig = np.empty_like(h_prev)
    h1, h2, h3 = h_size, 2 * h_size, 3 * h_size
    # Views over all steps, sliced once: computed gate order i,f,o,g.
    sig, i_, f_, o_, g_ = a[..., :h3], a[..., :h1], a[..., h1:h2], a[..., h2:h3], a[..., h3:]
    w_hh, matmul, tanh, mul = w.w_hh_t, np.matmul, np.tanh, np.multiply
    for pre, s, i, f, o, g, c, h in zip(a, sig, i_, f_, o_, g_, cs, hs):  # one step each (views)
        matmul(h_prev, w_hh, out=rec)
        pre += rec
        tanh(pre, out=pre)
        s *= 0.5
        s += 0.5
        mul(f, c_prev, out=c)
        mul(i, g, out=ig)
        c += ig
        tanh(c, out=h)
        h *= o
        h_prev, c_prev = h, c
    return hs, cs


def _run_gru(a: np.ndarray, w: _Weights, h_size: int) -> np.ndarray:
    """a [T,Dirs,B,3H] input projections, overwritten by the gates -> h [T,Dirs,B,H]."""
    steps, dirs, b, _ = a.shape
    assert w.b_hn is not None
    hs = np.empty((steps, dirs, b, h_size), dtype=np.float32)
    h_prev = np.zeros((dirs, b, h_size), dtype=np.float32)
    rec = np.empty((dirs, b, 3 * h_size), dtype=np.float32)
    h1, h2 = h_size, 2 * h_size
    rec_rz, rec_n = rec[..., :h2], rec[..., h2:]
    rz_, r_, z_, n_ = a[..., :h2], a[..., :h1], a[..., h1:h2], a[..., h2:]
    w_hh, b_hn, matmul, tanh = w.w_hh_t, w.b_hn, np.matmul, np.tanh
    for rz, r, z, n, h in zip(rz_, r_, z_, n_, hs):  # one step each (views)
        matmul(h_prev, w_hh, out=rec)
        rz += rec_rz
        tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        rec_n += b_hn
        rec_n *= r  # r * (W_hn h + b_hn)
        n += rec_n
        tanh(n, out=n)
        np.subtract(h_prev, n, out=h)
        h *= z
        h += n
        h_prev = h
    return hs


def _run_rnn(a: np.ndarray, w: _Weights, h_size: int, relu: bool) -> np.ndarray:
    """a [T,Dirs,B,H] input projections -> h [T,Dirs,B,H]."""
    steps, dirs, b, _ = a.shape
    hs = np.empty((steps, dirs, b, h_size), dtype=np.float32)
    h_prev = np.zeros((dirs, b, h_size), dtype=np.float32)
    rec = np.empty_like(h_prev)
    w_hh, matmul = w.w_hh_t, np.matmul
    for pre, h in zip(a, hs):
        matmul(h_prev, w_hh, out=rec)
        np.add(pre, rec, out=h)
        if relu:
            np.maximum(h, 0.0, out=h)
        else:
            np.tanh(h, out=h)
        h_prev = h
    return hs


def recompute(module: SequenceModel, inputs: np.ndarray, lengths: np.ndarray) -> list[list[DirectionTrace]]:
    """inputs [B,T] int64 or [B,T,F] float32, lengths [B] -> per layer, per direction, the trace."""
    arch = module.config.architecture
    cell, h_size = arch.cell, arch.hidden_size
    lengths = np.asarray(lengths, dtype=np.int64)
    with torch.no_grad():
        x = _np(module.embed(torch.from_numpy(inputs)))  # [B,T,E]
    out: list[list[DirectionTrace]] = []
    weights = _prepared_weights(module)
    with np.errstate(over="ignore", under="ignore"):
        for layer, w in enumerate(weights):
            dirs = w.w_ih_t.shape[0]
            xs = np.stack([x if d == 0 else reverse_within_length(x, lengths) for d in range(dirs)])  # [Dirs,B,T,E]
            a = _input_projection(xs, w)  # [T,Dirs,B,G*H], time-major for the loop
            cs: np.ndarray | None = None
            if cell == "lstm":
                hs, cs = _run_lstm(a, w, h_size)
            elif cell == "gru":
                hs = _run_gru(a, w, h_size)
            else:
                hs = _run_rnn(a, w, h_size, relu=cell == "rnn_relu")
            n_gates = len(GATE_NAMES[cell])
            steps, _, batch, _ = a.shape
            # [T,Dirs,B,G,H] in computed order -> [Dirs,B,G,T,H] in PyTorch order, one copy
            gates = a.reshape(steps, dirs, batch, -1, h_size).transpose(1, 2, 3, 0, 4)[:, :, w.torch_order] \
                if n_gates else np.empty((dirs, batch, 0, steps, h_size), dtype=np.float32)
            traces: list[DirectionTrace] = []
            for d in range(dirs):
                h = hs[:, d].swapaxes(0, 1)  # [B,T,H]
                c = cs[:, d].swapaxes(0, 1) if cs is not None else None
                g = gates[d]  # [B,G,T,H]
                if d == 1:  # back to original time order
                    h = _reverse_time(h, lengths, axis=1)
                    c = _reverse_time(c, lengths, axis=1) if c is not None else None
                    g = _reverse_time(g, lengths, axis=2)
                traces.append(DirectionTrace(layer, d, np.ascontiguousarray(h),
                                             None if c is None else np.ascontiguousarray(c), np.ascontiguousarray(g)))
            out.append(traces)
            x = np.concatenate([tr.hidden for tr in traces], axis=2) if dirs > 1 else traces[0].hidden
    return out
