"""Hidden-state summaries of an explanation, per layer and direction, as numpy arrays.

``StateSummary.from_proto(response.state)`` decodes the ``LayerState`` messages of an
``ExplainResponse``; ``correlated_units`` finds the units whose activation follows a
per-timestep signal you supply (the LSTMVis / Karpathy et al. workflow: "which unit tracks
being inside a string?"). Arrays are in original time order; gate order follows PyTorch
(LSTM i,f,g,o; GRU r,z,n).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from ._proto.seqlens.v1 import state_pb2, types_pb2

_DTYPES = {types_pb2.DATA_TYPE_UNSPECIFIED: "<f4", types_pb2.DATA_TYPE_FLOAT32: "<f4", types_pb2.DATA_TYPE_INT64: "<i8"}
_TENSORS = ("hidden", "cell_state", "gates", "state_norm", "delta_norm", "gate_mean", "saturation",
            "timescale", "top_units", "prefix_prediction", "unit_contribution", "active_count", "projection")


def decode_tensor(msg: types_pb2.Tensor) -> np.ndarray:
    """A ``seqlens.v1.Tensor`` (little-endian bytes + shape) -> a native-endian numpy array."""
    if msg.dtype not in _DTYPES:
        raise ValueError(f"Tensor dtype {msg.dtype} is not DATA_TYPE_FLOAT32 or DATA_TYPE_INT64")
    dtype = np.dtype(_DTYPES[msg.dtype])
    shape = tuple(int(d) for d in msg.shape)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(msg.data):
        raise ValueError(f"Tensor of shape {list(shape)} ({dtype}) cannot hold {len(msg.data)} bytes")
    return np.frombuffer(msg.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


class GateSaturation(NamedTuple):
    gate: str
    left_fraction: float  # mean over units of the fraction of steps with gate < 0.1
    right_fraction: float  # ... > 0.9 (tanh gates rescaled to [0, 1])


class UnitCorrelation(NamedTuple):
    layer: int
    direction: str
    unit: int
    r: float  # Pearson correlation over timesteps


@dataclass
class LayerStateSummary:
    """One (layer, direction); summaries that were not requested are None."""

    layer: int
    direction: str
    cell: str
    gate_names: list[str]
    hidden: np.ndarray | None = None  # [T,D] h_t
    cell_state: np.ndarray | None = None  # [T,D] c_t (LSTM)
    gates: np.ndarray | None = None  # [G,T,D]
    state_norm: np.ndarray | None = None  # [T]
    delta_norm: np.ndarray | None = None  # [T]
    gate_mean: np.ndarray | None = None  # [G,T]
    saturation: np.ndarray | None = None  # [G,D,2] left/right fractions
    saturation_summary: list[GateSaturation] = field(default_factory=list)
    timescale: np.ndarray | None = None  # [D] steps
    top_units: np.ndarray | None = None  # int64 [T,k]
    prefix_prediction: np.ndarray | None = None  # [T,C]
    unit_contribution: np.ndarray | None = None  # [D]
    active_count: np.ndarray | None = None  # int64 [T]
    projection: np.ndarray | None = None  # [T,2]
    source: str = ""  # custom graphs: the ONNX op ("LSTM op 0") or state slice ("states[hidden]")

    @classmethod
    def from_proto(cls, msg: state_pb2.LayerState) -> LayerStateSummary:
        out = cls(layer=msg.layer, direction=msg.direction, cell=msg.cell, gate_names=list(msg.gate_names),
                  source=msg.source, saturation_summary=[GateSaturation(s.gate, s.left_fraction, s.right_fraction)
                                      for s in msg.saturation_summary])
        for name in _TENSORS:
            if msg.HasField(name):
                setattr(out, name, decode_tensor(getattr(msg, name)))
        return out

    def series(self, use: Literal["hidden", "cell", "gates"] = "hidden", gate: str | None = None) -> np.ndarray:
        """The per-unit time series [T,D] to correlate: h_t, c_t, or one gate."""
        if use == "hidden":
            arr = self.hidden
        elif use == "cell":
            arr = self.cell_state
        elif use == "gates":
            if gate not in self.gate_names:
                raise ValueError(f"use='gates' needs gate= one of {self.gate_names} (layer {self.layer} "
                                 f"{self.direction}, cell {self.cell}), got {gate!r}")
            arr = None if self.gates is None else self.gates[self.gate_names.index(gate)]
        else:
            raise ValueError(f"use must be 'hidden', 'cell' or 'gates', got {use!r}")
        if arr is None:
            flag = "include_cell" if use == "cell" else "include_hidden"
            raise ValueError(f"layer {self.layer} {self.direction} has no {use} values: request them with "
                             f"state {flag}=True")
        return arr


def pearson_per_unit(series: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """series [T,D], signal [T] -> r [D]; a constant unit (or signal) gives r = 0."""
    x = series.astype(np.float64) - series.mean(axis=0)
    s = signal.astype(np.float64) - signal.mean()
    denom = np.sqrt((x * x).sum(axis=0) * (s * s).sum())
    num = (s[:, None] * x).sum(axis=0)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


@dataclass
class StateSummary:
    """All layers and directions of one explanation's state summaries."""

    layers: list[LayerStateSummary]

    @classmethod
    def from_proto(cls, messages: Iterable[state_pb2.LayerState]) -> StateSummary:
        return cls([LayerStateSummary.from_proto(m) for m in messages])

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerStateSummary]:
        return iter(self.layers)

    def layer(self, layer: int, direction: str = "forward") -> LayerStateSummary:
        for s in self.layers:
            if s.layer == layer and s.direction == direction:
                return s
        have = [(s.layer, s.direction) for s in self.layers]
        raise KeyError(f"no state for layer {layer} direction {direction!r}; have {have}")

    def correlated_units(self, signal: Sequence[float] | np.ndarray, layer: int | None = None,
                         direction: str | None = None, top: int = 5,
                         use: Literal["hidden", "cell", "gates"] = "hidden",
                         gate: str | None = None) -> list[UnitCorrelation]:
        """The ``top`` units whose series correlate most (by |r|) with ``signal`` [T].

        ``use``: 'hidden' (h_t, needs include_hidden), 'cell' (c_t, include_cell) or 'gates'
        (one gate named by ``gate``, e.g. 'f'; include_hidden). ``layer``/``direction`` restrict
        the search; by default every layer and direction is searched.
        """
        sig = np.asarray(signal, dtype=np.float64).reshape(-1)
        chosen = [s for s in self.layers
                  if (layer is None or s.layer == layer) and (direction is None or s.direction == direction)]
        if not chosen:
            raise KeyError(f"no state for layer={layer} direction={direction!r}")
        found: list[UnitCorrelation] = []
        for s in chosen:
            series = s.series(use, gate)
            if series.shape[0] != sig.shape[0]:
                raise ValueError(f"signal has {sig.shape[0]} steps; the state has T={series.shape[0]}")
            r = pearson_per_unit(series, sig)
            found.extend(UnitCorrelation(s.layer, s.direction, int(u), float(r[u])) for u in range(r.shape[0]))
        found.sort(key=lambda c: -abs(c.r))
        return found[:top]
