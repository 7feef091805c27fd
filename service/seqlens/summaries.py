"""State summaries: what the hidden state did, per layer and direction (DESIGN.md table).

``compute_state`` recomputes the recurrence (``recurrence``) for one encoded sequence and
summarizes each (layer, direction). Conventions:
- arrays are in original time order; for a backward direction the "previous" state of step t
  (delta_norm, top_units) is the one at t+1, the step the recurrence read before t;
- ``saturation`` counts steps with a gate below 0.1 ("left") or above 0.9 ("right") on [0, 1]:
  sigmoid gates as they are, tanh gates (LSTM g, GRU n) mapped by (x + 1) / 2, i.e. x < -0.8
  and x > 0.8;
- ``prefix_prediction`` and ``unit_contribution`` belong to the top layer only (what the head
  reads); ``prefix_prediction`` needs a unidirectional model;
- ``unit_contribution`` of the target output k: the head reads features x (the concatenated
  directions' final states: forward at T-1 and backward at 0 for ``last`` heads, both at the
  target timestep for ``per_step`` heads); contribution = x ⊙ W_head[k] × s with s the output
  std of ``horizon`` heads (1 otherwise), split per direction. Summed over every unit of every
  direction, plus the bias term b_head[k] × s (+ output mean), it equals output k.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from .errors import InvalidInput, ResourceExhausted
from .recurrence import GATE_NAMES, DirectionTrace, recompute
from .schema import ModelConfig
from .state_maths import (
    _RETENTION_GATE,
    DEFAULT_MAX_STATE_ELEMENTS,
    DEFAULT_TOP_K,
    MAX_REFERENCE_STEPS,
    PROBE_SEEDS,
    SUMMARIES,
    GateSaturationResult,
    LayerStateResult,
    StateOptions,
    StateProjection,
    principal_axes,
    summarize_trace,
    timescale_of,
)
from .tensor_inputs import check_batch_shape, check_batch_values
from .version_cache import VersionCache
from .versions import REFERENCE_FILE, LoadedVersion, probe_inputs

# The maths' types and constants are part of this module's face (callers import them from here).
__all__ = ["DEFAULT_TOP_K", "PROJECTION", "SUMMARIES", "GateSaturationResult", "LayerStateResult",
           "StateOptions", "StateProjection", "available_for", "available_summaries", "compute_state",
           "resolve_for", "resolve_summaries", "state_projection", "timescale_of"]

log = logging.getLogger(__name__)

# --- which summaries ----------------------------------------------------------------
def not_applicable(config: ModelConfig, name: str) -> str | None:
    """Why summary ``name`` does not apply to models of ``config`` (built-in family), or None."""
    arch = config.family
    if name in ("gate_mean", "saturation") and not GATE_NAMES[arch.cell]:
        return f"cell {arch.cell!r} has no gates"
    if name == "timescale" and arch.cell not in _RETENTION_GATE:
        return f"cell {arch.cell!r} has no forget (LSTM) or update (GRU) gate"
    if name == "prefix_prediction" and arch.bidirectional:
        return "it needs a unidirectional model (a backward state at step t has already read the steps after t)"
    return None


def available_summaries(config: ModelConfig) -> list[str]:
    return [name for name in SUMMARIES if not_applicable(config, name) is None]


def available_for(loaded: LoadedVersion) -> list[str]:
    """The summaries GetModel lists: the family's by config, a custom graph's by its states."""
    if loaded.config.is_graph:
        from . import graph_state  # it builds on this module
        return graph_state.available(loaded)
    return available_summaries(loaded.config)


def resolve_for(loaded: LoadedVersion, options: StateOptions) -> list[str]:
    """``resolve_summaries`` for any kind of version."""
    if loaded.config.is_graph:
        from . import graph_state
        return graph_state.resolve(loaded, options)
    return resolve_summaries(loaded.config, options)


def resolve_summaries(config: ModelConfig, options: StateOptions) -> list[str]:
    """The summaries to compute, in SUMMARIES order; errors name the bad field."""
    unknown = sorted({n for n in options.summaries if n not in SUMMARIES})
    if unknown:
        raise InvalidInput(f"state.summaries: unknown {', '.join(map(repr, unknown))}; "
                           f"valid names: {', '.join(SUMMARIES)}")
    if not options.summaries:
        return available_summaries(config)
    for name in options.summaries:
        reason = not_applicable(config, name)
        if reason:
            raise InvalidInput(f"state.summaries: {name!r} does not apply to this model: {reason}")
    return [n for n in SUMMARIES if n in options.summaries]


def returned_elements(config: ModelConfig, steps: int, options: StateOptions) -> int:
    """Values of the opt-in matrices (hidden + gates, cell) over all layers and directions."""
    arch = config.family
    per_matrix = arch.num_layers * arch.directions * steps * arch.hidden_size
    n_gates = len(GATE_NAMES[arch.cell])
    return per_matrix * ((1 + n_gates) if options.include_hidden else 0) + (per_matrix if options.include_cell else 0)


def _check_request(config: ModelConfig, steps: int, options: StateOptions, max_elements: int) -> None:
    if options.include_cell and config.family.cell != "lstm":
        raise InvalidInput(f"state.include_cell: only LSTM models have a cell state; "
                           f"this model's cell is {config.family.cell!r}")
    if options.top_k < 1:
        raise InvalidInput(f"state.top_k must be >= 1, got {options.top_k}")
    n = returned_elements(config, steps, options)
    if n > max_elements:
        arch = config.family
        raise ResourceExhausted(
            f"state.include_hidden/include_cell would return {n} values ({arch.num_layers} layers x "
            f"{arch.directions} directions x T={steps} x D={arch.hidden_size} per matrix); the limit is "
            f"max_state_elements={max_elements} (SEQLENS_MAX_STATE_ELEMENTS): send a shorter sequence "
            f"or leave include_hidden/include_cell off")


# --- projections (fit once per loaded version) ----------------------------------------
PROJECTION: VersionCache[StateProjection] = VersionCache("state projection")


def state_projection(loaded: LoadedVersion) -> StateProjection:
    """The version's PCA axes, fitted once (the registry's load hook fits them at load)."""
    return PROJECTION.get_or_make(loaded, lambda: fit_projection(loaded))


def _read_reference(loaded: LoadedVersion) -> tuple[np.ndarray, np.ndarray]:
    """reference.safetensors -> (inputs, lengths), checked as a request batch; InvalidInput if unusable."""
    tensors = load_file(str(loaded.path / REFERENCE_FILE))
    if "inputs" not in tensors or "lengths" not in tensors:
        raise ValueError(f"needs tensors 'inputs' and 'lengths', has {sorted(tensors)}")
    where = f"{REFERENCE_FILE} tensor"
    lengths = check_batch_shape(loaded, tensors["inputs"], tensors["lengths"], max_batch=None,
                                inputs_where=f"{where} 'inputs'", lengths_where=f"{where} 'lengths'")
    x = check_batch_values(loaded, tensors["inputs"], lengths, loaded.config.max_length, f"{where} 'inputs'")
    keep = max(1, int(np.searchsorted(np.cumsum(lengths), MAX_REFERENCE_STEPS, side="right")))
    return x[:keep], lengths[:keep].astype(np.int64)


def _fit_batches(loaded: LoadedVersion) -> tuple[np.ndarray, np.ndarray, str]:
    if (loaded.path / REFERENCE_FILE).is_file():
        try:
            x, lengths = _read_reference(loaded)
            return x, lengths, "reference"
        except (InvalidInput, ValueError, SafetensorError, OSError) as exc:
            log.warning("%s/%s: %s is unusable (%s); fitting state projections on probe inputs",
                        loaded.name, loaded.version, REFERENCE_FILE, exc)
    batches = [probe_inputs(loaded.config, loaded.vocab_size, seed=s) for s in range(PROBE_SEEDS)]
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), "probe")


def fit_projection(loaded: LoadedVersion, chunk: int = 64) -> StateProjection:
    """Principal axes of every (layer, direction)'s h_t over the real steps of the fit data."""
    if loaded.config.is_graph:
        from . import graph_state
        return graph_state.fit_projection(loaded, chunk)
    x, lengths, source = _fit_batches(loaded)
    module = loaded.family_module
    rows: dict[tuple[int, int], list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb, lb = x[start:start + chunk], lengths[start:start + chunk]
            xb = xb[:, :int(lb.max())]
            outs = module.run_layers(module.embed(torch.from_numpy(xb)), torch.from_numpy(lb))
            real = np.arange(xb.shape[1])[None, :] < lb[:, None]  # [B,T]
            for layer, dirs in enumerate(outs):
                for d, h in enumerate(dirs):
                    rows.setdefault((layer, d), []).append(h.numpy()[real])
    mean, comps = {}, {}
    for key, parts in rows.items():
        mean[key], comps[key] = principal_axes(np.concatenate(parts))
    return StateProjection(source, mean, comps)


# --- the summaries ------------------------------------------------------------------
def _head_features(top: list[DirectionTrace], head: str, timestep: int) -> list[np.ndarray]:
    """What the head reads from each top-layer direction, [D] each."""
    if head == "per_step":
        return [tr.hidden[0, timestep] for tr in top]
    ends = [top[0].hidden[0, -1]]  # forward: the last step
    if len(top) > 1:
        ends.append(top[1].hidden[0, 0])  # backward: it ends at step 0
    return ends


def compute_state(loaded: LoadedVersion, values: np.ndarray, options: StateOptions,
                  target_class: int | None = None, *, timestep: int | None = None,
                  max_state_elements: int = DEFAULT_MAX_STATE_ELEMENTS,
                  initial: list[tuple[np.ndarray, ...]] | None = None) -> list[LayerStateResult]:
    """Summaries of every (layer, direction) for one encoded sequence.

    values: int64 [T] token ids or float32 [T,F] features (``inputs.encode``).
    target_class: the output index for ``unit_contribution`` (class for classification and
    tagging, horizon step for forecasting/regression); None = the predicted class (argmax),
    or horizon step 0. timestep: tagging only, the step whose output is explained (default T-1).
    Pass ``Settings.max_state_elements`` as ``max_state_elements``. ``initial``: the state
    carried from earlier chunks (``recurrence.recompute``); step indices stay chunk-relative.
    """
    if not options.enabled:
        return []
    config = loaded.config
    names = resolve_for(loaded, options)
    steps = int(values.shape[0])
    if steps < 1:
        raise InvalidInput("state: the sequence is empty")
    if config.is_graph:
        from . import graph_state
        graph_state.check_request(loaded, steps, options, max_state_elements)
    else:
        _check_request(config, steps, options, max_state_elements)
    n_out = config.num_outputs
    if target_class is not None and not 0 <= target_class < n_out:
        raise InvalidInput(f"target class index {target_class} is outside [0, {n_out})")
    tau = steps - 1 if timestep is None else timestep
    if not 0 <= tau < steps:
        raise InvalidInput(f"target timestep {tau} is outside [0, {steps})")

    projection = state_projection(loaded) if "projection" in names else None
    if config.is_graph:
        from . import graph_state
        return graph_state.compute(loaded, values, options, names, projection)
    arch = config.family
    module = loaded.family_module
    traces = recompute(module, values[None], np.array([steps], dtype=np.int64), initial)
    results = [summarize_trace(tr, names, options, arch.cell, projection) for layer in traces for tr in layer]

    top = traces[-1]
    top_results = results[-len(top):]
    if "prefix_prediction" in names:
        with torch.no_grad():
            top_results[0].prefix_prediction = module.apply_head(torch.from_numpy(top[0].hidden[0])).numpy()
    if "unit_contribution" in names:
        feats = _head_features(top, arch.head, tau)
        weight = module.head.weight.detach().numpy()  # [C, D*dirs]
        if target_class is None:
            with torch.no_grad():
                out = module.apply_head(torch.from_numpy(np.concatenate(feats)[None]))[0].numpy()
            target_class = int(np.argmax(out)) if config.task in ("classification", "tagging") else 0
        scale = float(module.output_std) if arch.head == "horizon" else 1.0
        d_size = arch.hidden_size
        for d, (res, x) in enumerate(zip(top_results, feats, strict=True)):
            res.unit_contribution = (x * weight[target_class, d * d_size:(d + 1) * d_size] * scale).astype(np.float32)
    return results
