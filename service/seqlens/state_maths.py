"""The maths of state summaries for one (layer, direction) trace: options, result types,
norms, deltas, saturation, timescales, top units and principal axes. Pure numpy over a
``recurrence.DirectionTrace``; ``summaries`` (built-in family) and ``graph_state`` (custom
graphs) both build on it, so neither imports the other (docs/architecture.md, "Rooms")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Settings
from .recurrence import DIRECTION_NAMES, GATE_NAMES, TANH_GATES, DirectionTrace

SUMMARIES: tuple[str, ...] = (
    "state_norm", "delta_norm", "gate_mean", "saturation", "timescale", "top_units",
    "prefix_prediction", "unit_contribution", "active_count", "projection",
)
SATURATION_LEFT = 0.1  # Karpathy et al. 2015
SATURATION_RIGHT = 0.9
ACTIVE_THRESHOLD = 0.3  # LSTMVis default, on |tanh h|
MAX_TIMESCALE = 1e4  # steps; a retention gate averaging ~1 would give infinity
DEFAULT_TOP_K = 5
DEFAULT_MAX_STATE_ELEMENTS: int = Settings.model_fields["max_state_elements"].default
PROBE_SEEDS = 8  # probe batches used when a version has no reference data
MAX_REFERENCE_STEPS = 50_000  # real steps of reference data used for the fit
_RETENTION_GATE = {"lstm": "f", "gru": "z"}


@dataclass(frozen=True)
class StateOptions:
    enabled: bool = True
    summaries: tuple[str, ...] = ()  # empty: every summary that applies to the model
    top_k: int = DEFAULT_TOP_K
    include_hidden: bool = False  # h_t [T,D] and the gates [G,T,D]
    include_cell: bool = False  # c_t [T,D], LSTM


@dataclass(frozen=True)
class GateSaturationResult:
    gate: str
    left_fraction: float  # mean over units of the fraction of steps with gate < 0.1
    right_fraction: float  # ... > 0.9


@dataclass
class LayerStateResult:
    layer: int
    direction: str  # "forward" or "backward"
    cell: str
    gate_names: list[str]
    hidden: np.ndarray | None = None  # [T,D]
    cell_state: np.ndarray | None = None  # [T,D]
    gates: np.ndarray | None = None  # [G,T,D]
    state_norm: np.ndarray | None = None  # [T]
    delta_norm: np.ndarray | None = None  # [T]
    gate_mean: np.ndarray | None = None  # [G,T]
    saturation: np.ndarray | None = None  # [G,D,2]
    saturation_summary: list[GateSaturationResult] = field(default_factory=list)
    timescale: np.ndarray | None = None  # [D]
    top_units: np.ndarray | None = None  # int64 [T,k]
    prefix_prediction: np.ndarray | None = None  # [T,C]
    unit_contribution: np.ndarray | None = None  # [D]
    active_count: np.ndarray | None = None  # int64 [T]
    projection: np.ndarray | None = None  # [T,2]
    source: str = ""  # custom graphs: the op or state output summarized (graph_state)


@dataclass(frozen=True)
class StateProjection:
    """Per (layer, direction): mean [D] and the first two principal axes [2,D] of h_t."""

    source: str  # "reference" (reference.safetensors) or "probe" (versions.probe_inputs)
    mean: dict[tuple[int, int], np.ndarray]
    components: dict[tuple[int, int], np.ndarray]


def principal_axes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows [N,D] -> mean [D], the first two principal axes [2,D] (zero rows when N or D < 2).

    Each axis is signed so that its largest-magnitude loading is positive (deterministic).
    """
    x = rows.astype(np.float64)
    mean = x.mean(axis=0)
    xc = torch.from_numpy(x - mean)
    # torch, not numpy: its thread count is the server's (numpy's OpenBLAS stalls on busy cores)
    vecs = torch.linalg.eigh(xc.T @ xc).eigenvectors.numpy()  # [D,D], ascending eigenvalues
    axes = np.zeros((2, x.shape[1]))
    n_axes = min(2, x.shape[1], max(x.shape[0] - 1, 0))
    for k in range(n_axes):
        v = vecs[:, -1 - k]
        axes[k] = v if v[np.argmax(np.abs(v))] > 0 else -v
    return mean.astype(np.float32), axes.astype(np.float32)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 matmul on torch (numpy's OpenBLAS threads stall when the cores are busy)."""
    return (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            @ torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))).numpy()


def _deltas(h: np.ndarray, direction: int, h0: np.ndarray | None = None) -> np.ndarray:
    """h_t minus the state the step started from, in processing order (zero initial state)."""
    delta = np.empty_like(h)
    if direction == 0:
        delta[0] = h[0] if h0 is None else h[0] - h0
        np.subtract(h[1:], h[:-1], out=delta[1:])
    else:
        delta[-1] = h[-1]
        np.subtract(h[:-1], h[1:], out=delta[:-1])
    return delta


def _top_units(abs_delta: np.ndarray, k: int) -> np.ndarray:
    """abs_delta [T,D] -> int64 [T,k] unit indices, largest first (torch.topk: ~2x argpartition)."""
    return torch.topk(torch.from_numpy(abs_delta), k, dim=1, sorted=True).indices.numpy()


def saturation_thresholds(gate_names: list[str], cell: str) -> tuple[np.ndarray, np.ndarray]:
    """Per gate [G,1,1]: the raw values matching 0.1 / 0.9 on [0, 1] (tanh gates: -0.8 / 0.8)."""
    tanh = np.array([name in TANH_GATES[cell] for name in gate_names])
    left = np.where(tanh, 2 * SATURATION_LEFT - 1, SATURATION_LEFT).astype(np.float32)
    right = np.where(tanh, 2 * SATURATION_RIGHT - 1, SATURATION_RIGHT).astype(np.float32)
    return left[:, None, None], right[:, None, None]


def saturation_of(gates: np.ndarray, gate_names: list[str], cell: str) -> np.ndarray:
    """gates [G,T,D] -> [G,D,2]: fractions of steps below / above the saturation thresholds."""
    left, right = saturation_thresholds(gate_names, cell)
    steps = gates.shape[1]
    return np.stack([np.count_nonzero(gates < left, axis=1), np.count_nonzero(gates > right, axis=1)],
                    axis=-1).astype(np.float32) / np.float32(steps)


def timescale_of(retention: np.ndarray) -> np.ndarray:
    """retention gate [T,D] -> -1 / ln(mean_t gate) in (0, MAX_TIMESCALE] steps."""
    m = np.clip(retention.astype(np.float64).mean(axis=0), 1e-30, np.exp(-1.0 / MAX_TIMESCALE))
    return (-1.0 / np.log(m)).astype(np.float32)


def summarize_trace(trace: DirectionTrace, names: list[str], options: StateOptions, cell: str,
               projection: StateProjection | None) -> LayerStateResult:
    gate_names = list(GATE_NAMES[cell])
    h = trace.hidden[0]  # [T,D]
    gates = trace.gates[0]  # [G,T,D]
    r = LayerStateResult(trace.layer, DIRECTION_NAMES[trace.direction], cell, gate_names)
    if options.include_hidden:
        r.hidden = h
        r.gates = gates if gate_names else None  # plain RNNs have no gates
    if options.include_cell and trace.cell_state is not None:
        r.cell_state = trace.cell_state[0]
    if "state_norm" in names:
        r.state_norm = np.sqrt(np.einsum("td,td->t", h, h))
    if "delta_norm" in names or "top_units" in names:
        h0 = trace.initial_hidden[0] if trace.initial_hidden is not None else None
        delta = _deltas(h, trace.direction, h0)
        if "delta_norm" in names:
            r.delta_norm = np.sqrt(np.einsum("td,td->t", delta, delta))
        if "top_units" in names:
            r.top_units = _top_units(np.abs(delta), min(options.top_k, h.shape[1]))
    if "gate_mean" in names:
        r.gate_mean = gates.mean(axis=2)
    if "saturation" in names:
        r.saturation = saturation_of(gates, gate_names, cell)
        per_gate = r.saturation.mean(axis=1, dtype=np.float64).tolist()  # [G][left, right]
        r.saturation_summary = [GateSaturationResult(g, lr[0], lr[1]) for g, lr in zip(gate_names, per_gate, strict=True)]
    if "timescale" in names:
        r.timescale = timescale_of(gates[gate_names.index(_RETENTION_GATE[cell])])
    if "active_count" in names:
        r.active_count = np.count_nonzero(np.abs(np.tanh(h)) >= ACTIVE_THRESHOLD, axis=1).astype(np.int64)
    if projection is not None:
        key = (trace.layer, trace.direction)
        r.projection = _mm(h - projection.mean[key], projection.components[key].T)
    return r
