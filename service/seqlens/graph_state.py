"""State summaries of custom graphs (``architecture.kind: onnx``).

Two sources, each a ``LayerStateResult``:
- every ONNX ``LSTM``/``GRU``/``RNN`` op the replay runs, per direction (``layer`` = the op's
  order in the graph): all summaries of the built-in family except those reading a head
  (``unit_contribution``, ``prefix_prediction``), gates recorded by ``runtimes.replay_rnn``;
- every named slice of the per-step state outputs ``model.yaml`` lists (``graph.states``):
  ``state_norm``, ``delta_norm``, ``top_units``, ``active_count``, ``projection``;
  ``prefix_prediction`` (the graph's own per-step outputs) when the graph is a causal tagger.
``source`` names where each result comes from ("LSTM op 0", "states[hidden]").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidInput, ResourceExhausted
from .recurrence import DIRECTION_NAMES, GATE_NAMES, DirectionTrace
from .runtimes.replay import Recorder
from .state_maths import (
    SUMMARIES,
    LayerStateResult,
    StateOptions,
    StateProjection,
    principal_axes,
    summarize_trace,
)
from .version_cache import VersionCache
from .versions import LoadedVersion, probe_inputs

PROBE_SEEDS = 8
_STATE_SUMMARIES = ("state_norm", "delta_norm", "top_units", "active_count", "projection")
_GATE_SUMMARIES = ("gate_mean", "saturation", "timescale")


@dataclass(frozen=True)
class Source:
    """One summarized state of a custom graph."""

    layer: int
    direction: int
    cell: str  # "lstm", "gru", "rnn_tanh", "rnn_relu", or "state" for a named slice
    width: int
    label: str  # what GetModel/Explain show as its source
    output: str = ""  # state output name (slices)
    lo: int = 0
    hi: int = 0


_LAYOUT: VersionCache[list[Source]] = VersionCache("graph state layout")


def layout(loaded: LoadedVersion) -> list[Source]:
    """The summarized states of the version, found once by recording a probe run."""
    return _LAYOUT.get_or_make(loaded, lambda: _find_layout(loaded))


def _find_layout(loaded: LoadedVersion) -> list[Source]:
    x, lengths = probe_inputs(loaded.config, loaded.vocab_size)
    recorder = Recorder()
    with torch.no_grad():
        loaded.replay.run(torch.from_numpy(x[:1]), torch.from_numpy(lengths[:1]), [_output(loaded)], recorder)
    ops = [Source(d.op_index, d.direction, d.cell, d.hidden.shape[2], f"{d.cell.split('_')[0].upper()} op {d.op_index}")
           for d in recorder.directions]
    first = 1 + max((s.layer for s in ops), default=-1)
    spec = loaded.config.graph
    slices = [Source(first + i, 0, "state", hi - lo, f"{out}[{name}]", out, lo, hi)
              for i, (out, name, (lo, hi)) in enumerate(
                  (s.output, name, rng) for s in (spec.states if spec else []) for name, rng in s.slices.items())]
    return ops + slices


def _output(loaded: LoadedVersion) -> str:
    spec = loaded.config.graph
    assert spec is not None
    return spec.output


def not_applicable(loaded: LoadedVersion, name: str) -> str | None:
    sources = layout(loaded)
    if name == "unit_contribution":
        return "a custom graph has no known head to split into units"
    if not sources:
        return "the graph has no LSTM/GRU/RNN op and model.yaml names no graph.states"
    if name in _GATE_SUMMARIES:
        gated = [s for s in sources if s.cell in ("lstm", "gru")]
        if not gated:
            return "the graph has no ONNX LSTM or GRU op (gates come from those)"
    if name == "prefix_prediction":
        spec = loaded.config.graph
        if loaded.config.head != "per_step" or spec is None or not spec.causal:
            return "it needs a causal graph with a per-step output (graph.causal: true, task tagging)"
    return None


def available(loaded: LoadedVersion) -> list[str]:
    return [n for n in SUMMARIES if not_applicable(loaded, n) is None]


def resolve(loaded: LoadedVersion, options: StateOptions) -> list[str]:
    unknown = sorted({n for n in options.summaries if n not in SUMMARIES})
    if unknown:
        raise InvalidInput(f"state.summaries: unknown {', '.join(map(repr, unknown))}; "
                           f"valid names: {', '.join(SUMMARIES)}")
    if not options.summaries:
        return available(loaded)
    for name in options.summaries:
        reason = not_applicable(loaded, name)
        if reason:
            raise InvalidInput(f"state.summaries: {name!r} does not apply to this model: {reason}")
    return [n for n in SUMMARIES if n in options.summaries]


def check_request(loaded: LoadedVersion, steps: int, options: StateOptions, max_elements: int) -> None:
    sources = layout(loaded)
    if options.include_cell and not any(s.cell == "lstm" for s in sources):
        raise InvalidInput("state.include_cell: only ONNX LSTM ops have a cell state; this graph has none")
    if options.top_k < 1:
        raise InvalidInput(f"state.top_k must be >= 1, got {options.top_k}")
    n = 0
    for s in sources:
        gates = len(GATE_NAMES.get(s.cell, ()))
        n += steps * s.width * ((1 + gates) if options.include_hidden else 0)
        n += steps * s.width if options.include_cell and s.cell == "lstm" else 0
    if n > max_elements:
        raise ResourceExhausted(
            f"state.include_hidden/include_cell would return {n} values over {len(sources)} states at "
            f"T={steps}; the limit is max_state_elements={max_elements} (SEQLENS_MAX_STATE_ELEMENTS): send a "
            "shorter sequence or leave include_hidden/include_cell off")


def _traces(loaded: LoadedVersion, x: np.ndarray, lengths: np.ndarray
            ) -> tuple[list[tuple[Source, DirectionTrace]], np.ndarray]:
    """Run the replay once with the recorder: (source, trace) per state, and the raw outputs."""
    spec = loaded.config.graph
    assert spec is not None
    states = sorted({s.output for s in spec.states})
    recorder = Recorder()
    with torch.no_grad():
        outs = loaded.replay.run(torch.from_numpy(x), torch.from_numpy(lengths), [spec.output, *states], recorder)
    found: list[tuple[Source, DirectionTrace]] = []
    sources = layout(loaded)
    for src, rec in zip(sources, recorder.directions, strict=False):
        found.append((src, DirectionTrace(src.layer, rec.direction, rec.hidden, rec.cell_state, rec.gates)))
    for src in sources[len(recorder.directions):]:
        h = outs[src.output][..., src.lo:src.hi].float().numpy()
        found.append((src, DirectionTrace(src.layer, 0, np.ascontiguousarray(h), None,
                                          np.empty((h.shape[0], 0, h.shape[1], h.shape[2]), dtype=np.float32))))
    return found, outs[spec.output].float().numpy()


def fit_projection(loaded: LoadedVersion, chunk: int = 64) -> StateProjection:
    """Principal axes of every summarized state over the real steps of probe batches."""
    batches = [probe_inputs(loaded.config, loaded.vocab_size, seed=s) for s in range(PROBE_SEEDS)]
    x = np.concatenate([b[0] for b in batches])
    lengths = np.concatenate([b[1] for b in batches])
    rows: dict[tuple[int, int], list[np.ndarray]] = {}
    for start in range(0, x.shape[0], chunk):
        xb, lb = x[start:start + chunk], lengths[start:start + chunk]
        traces, _ = _traces(loaded, xb, lb)
        real = np.arange(xb.shape[1])[None, :] < lb[:, None]
        for src, tr in traces:
            rows.setdefault((src.layer, src.direction), []).append(tr.hidden[real])
    mean, comps = {}, {}
    for key, parts in rows.items():
        mean[key], comps[key] = principal_axes(np.concatenate(parts))
    return StateProjection("probe", mean, comps)


def compute(loaded: LoadedVersion, values: np.ndarray, options: StateOptions, names: list[str],
            projection: StateProjection | None) -> list[LayerStateResult]:
    """Summaries of every state of a custom graph for one encoded sequence."""
    steps = int(values.shape[0])
    traces, raw = _traces(loaded, values[None], np.array([steps], dtype=np.int64))
    results = []
    for src, tr in traces:
        own = [n for n in names if n in _STATE_SUMMARIES or (n in _GATE_SUMMARIES and src.cell in ("lstm", "gru"))]
        if src.cell == "state":
            r = summarize_trace(tr, own, options, "rnn_tanh", projection)  # no gates: the plain-state summaries
            r.cell, r.gate_names, r.gates = "state", [], None
        else:
            r = summarize_trace(tr, own, options, src.cell, projection)
        r.direction = DIRECTION_NAMES[src.direction]
        r.source = src.label
        results.append(r)
    if "prefix_prediction" in names and results:
        results[-1].prefix_prediction = raw[0].astype(np.float32)  # the causal graph's own per-step outputs
    return results
