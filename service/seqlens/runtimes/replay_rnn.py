"""ONNX ``LSTM``/``GRU``/``RNN`` replayed step by step in torch, optionally recording the gates.

Spec semantics (opset 14+): weights ``W [D,G*H,I]``, ``R [D,G*H,H]``, ``B [D,2*G*H]``; gate order
LSTM i,o,f,c; GRU z,r,h; directions forward, reverse, bidirectional; ``sequence_lens`` (steps past
a sequence's length keep the state and give zero outputs, a reverse direction starts at each
sequence's own last step); ``initial_h``/``initial_c``; LSTM peepholes ``P [D,3H]`` (i,o,f),
``input_forget``, ``clip``; GRU ``linear_before_reset``; ``layout`` 0 (time-major) or 1.
Recorded gates use the summaries' names: LSTM i,f,g,o and GRU r,z,n (PyTorch's order).

Without a recorder, ops PyTorch's fused kernels compute exactly (default activations, no clip,
no peepholes or input_forget, GRU with linear_before_reset=1) run on them: weights permuted to
PyTorch's gate order, each direction as one forward pass (a reverse direction on each sequence
reversed within its length). A Python step loop costs ~10x that at T = 128.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelConfigError

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "softsign": torch.nn.functional.softsign, "softplus": torch.nn.functional.softplus,
}
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class RecordedDirection:
    """One direction of one recurrent op, in original time order (padding steps hold the state)."""

    op_index: int  # order of the recurrent op in the graph's execution
    direction: int  # 0 forward, 1 backward
    cell: str  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    hidden: np.ndarray  # [B,T,H]
    cell_state: np.ndarray | None  # [B,T,H] (LSTM)
    gates: np.ndarray  # [B,G,T,H]


@dataclass
class Recorder:
    """Passed to ``ReplayGraph.run``: collects every recurrent op's per-step states and gates."""

    directions: list[RecordedDirection] = field(default_factory=list)
    ops_seen: int = 0


# ONNX gate blocks -> PyTorch's order: LSTM i,o,f,c -> i,f,g(c),o; GRU z,r,h -> r,z,n.
_TORCH_BLOCKS = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
_FUSED = {"LSTM": "lstm", "GRU": "gru", "rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu"}


def _reverse_within_length(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Time-major x [T,B,...]: each sequence reversed within its length, padding left in place."""
    if lengths is None:
        return x.flip(0)
    t = torch.arange(x.shape[0]).unsqueeze(1)  # [T,1]
    n = lengths.to(torch.int64).unsqueeze(0)  # [1,B]
    idx = torch.where(t < n, n - 1 - t, t)  # [T,B]
    return x.gather(0, idx.reshape(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))


def _torch_rows(t: Tensor, op: str, hidden: int) -> Tensor:
    blocks = _TORCH_BLOCKS[op]
    if len(blocks) == 1:
        return t
    return torch.cat([t[b * hidden:(b + 1) * hidden] for b in blocks])


def _fused_direction(op: str, cell: str, x: Tensor, w: Tensor, r: Tensor, b: Tensor | None, h0: Tensor,
                     c0: Tensor | None, hidden: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """One forward pass over x [T,B,I] on PyTorch's kernel -> (y [T,B,H], h_T, c_T)."""
    g = _GATES[op]
    params = [_torch_rows(w, op, hidden), _torch_rows(r, op, hidden)]
    if b is not None:
        params += [_torch_rows(b[: g * hidden], op, hidden), _torch_rows(b[g * hidden:], op, hidden)]
    fn = getattr(torch._VF, _FUSED[cell if op == "RNN" else op])
    if op == "LSTM":
        assert c0 is not None
        y, h, c = fn(x, (h0[None], c0[None]), params, b is not None, 1, 0.0, False, False, False)
        return y, h[0], c[0]
    y, h = fn(x, h0[None], params, b is not None, 1, 0.0, False, False, False)
    return y, h[0], None


def build_recurrent(op: str, attrs: dict[str, Any], where: str,
                    want_cell: bool = False) -> Callable[..., tuple[Tensor | None, ...]]:
    hidden = int(attrs.get("hidden_size", 0))
    if hidden < 1:
        raise ModelConfigError(f"{where}: {op} needs the hidden_size attribute")
    direction = str(attrs.get("direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ModelConfigError(f"{where}: {op} direction {direction!r} is not an ONNX direction")
    dirs = [1] if direction == "reverse" else [0, 1] if direction == "bidirectional" else [0]
    names = [str(a) for a in attrs.get("activations", [])] or _DEFAULTS[op] * len(dirs)
    per_dir = len(_DEFAULTS[op])
    if len(names) != per_dir * len(dirs):
        raise ModelConfigError(f"{where}: {op} needs {per_dir * len(dirs)} activations, got {len(names)}")
    unknown = [n for n in names if n.lower() not in _ACTIVATIONS]
    if unknown or attrs.get("activation_alpha") or attrs.get("activation_beta"):
        raise ModelConfigError(f"{where}: {op} activation {unknown or names} is not supported by the replay; "
                               f"supported: {', '.join(sorted(n.capitalize() for n in _ACTIVATIONS))}")
    acts = [[_ACTIVATIONS[n.lower()] for n in names[i * per_dir:(i + 1) * per_dir]] for i in range(len(dirs))]
    clip = attrs.get("clip")
    layout = int(attrs.get("layout", 0))
    input_forget = bool(attrs.get("input_forget", 0))
    lbr = bool(attrs.get("linear_before_reset", 0))
    g = _GATES[op]
    if op == "RNN":
        act = names[0].lower()
        cell = "rnn_relu" if act == "relu" else "rnn_tanh"
    else:
        cell = op.lower()
    default_acts = names == _DEFAULTS[op] * len(dirs) or (op == "RNN" and all(n.lower() == act for n in names)
                                                          and act in ("tanh", "relu"))
    fusable = default_acts and clip is None and not input_forget and (op != "GRU" or lbr)

    def run(x: Tensor, w: Tensor, r: Tensor, b: Tensor | None = None, seq_lens: Tensor | None = None,
            h0: Tensor | None = None, c0: Tensor | None = None, p: Tensor | None = None,
            *, recorder: Recorder | None = None) -> tuple[Tensor | None, ...]:
        if layout == 1:
            x = x.transpose(0, 1)
            h0 = h0.transpose(0, 1) if h0 is not None else None
            c0 = c0.transpose(0, 1) if c0 is not None else None
        steps, batch, _ = x.shape
        op_index = recorder.ops_seen if recorder is not None else 0
        if recorder is not None:
            recorder.ops_seen += 1
        mask = None
        if seq_lens is not None and not bool((seq_lens == steps).all()):
            mask = (torch.arange(steps)[:, None] < seq_lens.to(torch.int64)[None, :]).unsqueeze(-1)  # [T,B,1]
        if recorder is None and fusable and p is None and not (want_cell and mask is not None):
            return fused(x, w, r, b, seq_lens if mask is not None else None, h0, c0, mask)
        ys, hs, cs = [], [], []
        for k, d in enumerate(dirs):
            bias = b[k] if b is not None else None
            wb = bias[: g * hidden] if bias is not None else None
            rb = bias[g * hidden:] if bias is not None else None
            xw = x @ w[k].T  # [T,B,G*H]
            if wb is not None:
                xw = xw + wb
            h = h0[k] if h0 is not None else x.new_zeros(batch, hidden)
            c = c0[k] if c0 is not None else x.new_zeros(batch, hidden)
            order = range(steps - 1, -1, -1) if d == 1 else range(steps)
            out: list[Tensor | None] = [None] * steps
            states: list[Tensor | None] = [None] * steps
            cells: list[Tensor | None] = [None] * steps
            gates: list[Tensor | None] = [None] * steps
            f_act = acts[k][0]
            for t in order:
                if op == "LSTM":
                    h_new, c_new, gate_t = _lstm_step(xw[t], h, c, r[k], rb, p[k] if p is not None else None,
                                                      acts[k], clip, input_forget, hidden)
                elif op == "GRU":
                    h_new, gate_t = _gru_step(xw[t], h, r[k], rb, acts[k], clip, lbr, hidden)
                    c_new = c
                else:
                    pre = xw[t] + h @ r[k].T + (rb if rb is not None else 0.0)
                    if clip is not None:
                        pre = pre.clamp(-clip, clip)
                    h_new, c_new, gate_t = f_act(pre), c, None
                if mask is not None:
                    m = mask[t]
                    h = torch.where(m, h_new, h)
                    c = torch.where(m, c_new, c)
                    out[t] = torch.where(m, h_new, torch.zeros_like(h_new))
                else:
                    h, c = h_new, c_new
                    out[t] = h_new
                if recorder is not None:
                    states[t], cells[t], gates[t] = h, c, gate_t
            y = torch.stack(out)  # type: ignore[arg-type]
            ys.append(y)
            hs.append(h)
            cs.append(c)
            if recorder is not None:
                recorder.directions.append(RecordedDirection(
                    op_index, d, cell, _np(torch.stack(states).transpose(0, 1)),  # type: ignore[arg-type]
                    _np(torch.stack(cells).transpose(0, 1)) if op == "LSTM" else None,  # type: ignore[arg-type]
                    _np(torch.stack(gates).permute(2, 1, 0, 3)) if op != "RNN"  # type: ignore[arg-type]
                    else np.empty((batch, 0, steps, hidden), dtype=np.float32)))
        y_all = torch.stack(ys, 1)  # [T,D,B,H]
        y_h, y_c = torch.stack(hs), torch.stack(cs)
        if layout == 1:
            y_all, y_h, y_c = y_all.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
        return (y_all, y_h, y_c) if op == "LSTM" else (y_all, y_h)

    def fused(x: Tensor, w: Tensor, r: Tensor, b: Tensor | None, lens: Tensor | None, h0: Tensor | None,
              c0: Tensor | None, mask: Tensor | None) -> tuple[Tensor | None, ...]:
        batch = x.shape[1]
        ys, hs, cs = [], [], []
        for k, d in enumerate(dirs):
            h_init = h0[k] if h0 is not None else x.new_zeros(batch, hidden)
            c_init = (c0[k] if c0 is not None else x.new_zeros(batch, hidden)) if op == "LSTM" else None
            src = _reverse_within_length(x, lens) if d == 1 else x
            y, h_last, c_last = _fused_direction(op, cell, src, w[k], r[k], b[k] if b is not None else None,
                                                 h_init, c_init, hidden)
            if lens is not None:  # the state at each sequence's own last step; zero outputs after it
                n = lens.to(torch.int64)
                last = y.gather(0, (n - 1).clamp(min=0).view(1, -1, 1).expand(1, -1, hidden))[0]
                h_last = torch.where((n > 0).unsqueeze(1), last, h_init)
            if d == 1:
                y = _reverse_within_length(y, lens)
            if mask is not None:
                y = torch.where(mask, y, torch.zeros_like(y))
            ys.append(y)
            hs.append(h_last)
            cs.append(c_last if c_last is not None else h_last)
        y_all = torch.stack(ys, 1)
        y_h, y_c = torch.stack(hs), torch.stack(cs)
        if layout == 1:
            y_all, y_h, y_c = y_all.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
        return (y_all, y_h, y_c) if op == "LSTM" else (y_all, y_h)

    return run


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy()


def _lstm_step(xw: Tensor, h: Tensor, c: Tensor, r: Tensor, rb: Tensor | None, p: Tensor | None,
               acts: list[Callable[[Tensor], Tensor]], clip: float | None, input_forget: bool,
               hidden: int) -> tuple[Tensor, Tensor, Tensor]:
    pre = xw + h @ r.T
    if rb is not None:
        pre = pre + rb
    i, o, f, cc = pre.split(hidden, -1)
    if p is not None:
        pi, po, pf = p.split(hidden)
        i = i + pi * c
        f = f + pf * c
    if clip is not None:
        i, f, cc = i.clamp(-clip, clip), f.clamp(-clip, clip), cc.clamp(-clip, clip)
    f_act, g_act, h_act = acts
    i = f_act(i)
    f = 1 - i if input_forget else f_act(f)
    g = g_act(cc)
    c_new = f * c + i * g
    if p is not None:
        o = o + po * c_new
    if clip is not None:
        o = o.clamp(-clip, clip)
    o = f_act(o)
    h_new = o * h_act(c_new)
    return h_new, c_new, torch.stack([i, f, g, o]).detach()


def _gru_step(xw: Tensor, h: Tensor, r: Tensor, rb: Tensor | None, acts: list[Callable[[Tensor], Tensor]],
              clip: float | None, lbr: bool, hidden: int) -> tuple[Tensor, Tensor]:
    xz, xr, xh = xw.split(hidden, -1)
    rz, rr, rh = r.split(hidden, 0)
    bz, br, bh = rb.split(hidden) if rb is not None else (0.0, 0.0, 0.0)
    f_act, g_act = acts
    zp, rp = xz + h @ rz.T + bz, xr + h @ rr.T + br
    if clip is not None:
        zp, rp = zp.clamp(-clip, clip), rp.clamp(-clip, clip)
    z, rg = f_act(zp), f_act(rp)
    hp = xh + rg * (h @ rh.T + bh) if lbr else xh + (rg * h) @ rh.T + bh
    if clip is not None:
        hp = hp.clamp(-clip, clip)
    n = g_act(hp)
    h_new = (1 - z) * n + z * h
    return h_new, torch.stack([rg, z, n]).detach()
