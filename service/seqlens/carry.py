"""Carried recurrent state: what a chunk of a sequence starts from and ends with.

A state is a set of named float32 tensors plus the model version that made it and the
number of steps it has consumed. For the built-in family the names are
``layer<l>.forward.h`` (and ``layer<l>.forward.c`` for LSTMs), each ``[hidden_size]``.
Chunks of different sequences run batched (one chunk per sequence), grouped by length, on
ONNX Runtime over the version's ``stateful.onnx`` (state in, final state out), parity-checked
against the torch module on first use; versions without it (exported before it existed) run
on the torch module, ~15x slower per one-step chunk (bench/bench_stateful.py;
docs/stateful.md). Bidirectional models cannot stream: their backward direction starts from
the end of the whole sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .errors import FailedPrecondition, InvalidInput
from .families import LayerStates, SequenceModel
from .inputs import pad_batch
from .runtimes.onnx_state import STATE_ONNX_FILE, StatefulOnnx
from .schema import ModelConfig
from .version_cache import VersionCache
from .versions import PARITY_TOLERANCE, LoadedVersion, probe_inputs, version_file

log = logging.getLogger(__name__)
# The version's stateful.onnx session, or None (no file, or it failed its check: torch runs the chunks).
_RUNTIME: VersionCache[StatefulOnnx | None] = VersionCache("stateful runtime")


@dataclass(frozen=True)
class CarriedState:
    model_name: str
    model_version: str
    steps: int  # timesteps consumed so far
    tensors: dict[str, np.ndarray]  # name -> float32 [H]

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.tensors.values())


@dataclass(frozen=True)
class Chunk:
    values: np.ndarray  # token ids [T] int64 or features [T,F] float32
    state: CarriedState


@dataclass(frozen=True)
class ChunkResult:
    output: np.ndarray  # [C], [T,C] (per-step: the chunk's steps) or [H]
    state: CarriedState


def state_layout(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the state tensors of the built-in family, in layer order."""
    arch = config.family
    parts = ("h", "c") if arch.cell == "lstm" else ("h",)
    return [(f"layer{layer}.forward.{p}", (arch.hidden_size,)) for layer in range(arch.num_layers) for p in parts]


def require_streamable(loaded: LoadedVersion) -> None:
    """Raise FailedPrecondition unless the version can carry its state across chunks."""
    if not isinstance(loaded.torch_module, SequenceModel):
        raise FailedPrecondition(
            f"model {loaded.name!r} version {loaded.version} does not expose a recurrent state; "
            "only built-in family models can be fed in chunks")
    if loaded.config.family.bidirectional:
        raise FailedPrecondition(
            f"model {loaded.name!r} is bidirectional: its backward direction reads each sequence from its "
            "end, so it cannot be fed in chunks; send the whole sequence in one call")


def zero_state(loaded: LoadedVersion) -> CarriedState:
    return CarriedState(loaded.name, loaded.version, 0,
                        {name: np.zeros(shape, dtype=np.float32) for name, shape in state_layout(loaded.config)})


def check_state(loaded: LoadedVersion, state: CarriedState, where: str) -> CarriedState:
    """A caller's state against the version answering the call; errors name ``where``."""
    if state.model_name != loaded.name:
        raise FailedPrecondition(
            f"{where} came from model {state.model_name!r}; this call is for model {loaded.name!r}")
    if state.model_version != loaded.version:
        raise FailedPrecondition(
            f"{where} came from version {state.model_version!r} of model {loaded.name!r}, but version "
            f"{loaded.version!r} answers this call; a state does not carry across versions: start the sequence "
            f"again from zero (or pin model_version={state.model_version!r} while it is served)")
    if state.steps < 0:
        raise InvalidInput(f"{where}.steps is {state.steps}; it must be >= 0")
    layout = dict(state_layout(loaded.config))
    missing = sorted(set(layout) - set(state.tensors))
    unexpected = sorted(set(state.tensors) - set(layout))
    if missing or unexpected:
        raise InvalidInput(f"{where}.tensors: missing {missing}, unexpected {unexpected}; model {loaded.name!r} "
                           f"version {loaded.version} carries {sorted(layout)}")
    for name, shape in layout.items():
        arr = state.tensors[name]
        if arr.dtype != np.float32:
            raise InvalidInput(f"{where}.tensors[{name!r}] is {arr.dtype}; states are FLOAT32")
        if tuple(arr.shape) != shape:
            raise InvalidInput(f"{where}.tensors[{name!r}] has shape {list(arr.shape)}; "
                               f"model {loaded.name!r} needs {list(shape)}")
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{where}.tensors[{name!r}] has NaN or inf values; states must be finite")
    return state


def stack_states(loaded: LoadedVersion, states: list[CarriedState]) -> LayerStates:
    """Per-sequence states -> the module's per-layer batched tensors ([B,H] each)."""
    names = [name for name, _ in state_layout(loaded.config)]
    per = 2 if loaded.config.family.cell == "lstm" else 1
    batched = [torch.from_numpy(np.stack([s.tensors[n] for s in states])) for n in names]
    return [tuple(batched[i:i + per]) for i in range(0, len(batched), per)]


def unstack_states(loaded: LoadedVersion, finals: LayerStates, steps: list[int]) -> list[CarriedState]:
    names = [name for name, _ in state_layout(loaded.config)]
    flat = [t.numpy() for layer in finals for t in layer]  # each [B,H]
    return [CarriedState(loaded.name, loaded.version, n, {name: np.array(a[b]) for name, a in zip(names, flat)})
            for b, n in enumerate(steps)]


def stateful_runtime(loaded: LoadedVersion) -> StatefulOnnx | None:
    """The version's ``stateful.onnx`` session, loaded and parity-checked on first use (in a
    worker thread); None when the version has none or it fails: chunks then run on torch."""
    return _RUNTIME.get_or_make(loaded, lambda: _load_runtime(loaded))


def _load_runtime(loaded: LoadedVersion) -> StatefulOnnx | None:
    if not (loaded.path / STATE_ONNX_FILE).is_file() or not isinstance(loaded.torch_module, SequenceModel):
        return None
    names = [n for n, _ in state_layout(loaded.config)]
    try:
        rt = StatefulOnnx(version_file(loaded.path, STATE_ONNX_FILE), names)
        x, _ = probe_inputs(loaded.config, loaded.vocab_size)
        rng = np.random.default_rng(0)
        start = [CarriedState(loaded.name, loaded.version, 1, {n: rng.normal(size=s).astype(np.float32) * 0.5
                                                               for n, s in state_layout(loaded.config)})
                 for _ in range(x.shape[0])]
        worst = 0.0
        for t in (1, min(5, x.shape[1])):
            chunks = [Chunk(row[:t], s) for row, s in zip(x, start)]
            got, want = _run_onnx(loaded, rt, chunks), _run_torch(loaded, chunks)
            for g, w in zip(got, want, strict=True):
                worst = max(worst, float(np.max(np.abs(g.output - w.output))),
                            *(float(np.max(np.abs(g.state.tensors[n] - w.state.tensors[n]))) for n in names))
        if not worst <= PARITY_TOLERANCE:
            raise ValueError(f"parity check failed: {worst:.3g} (> {PARITY_TOLERANCE:g})")
    except Exception as exc:  # noqa: BLE001 - any failure: chunks run on torch, and the log says why
        log.warning("stateful.onnx not used; chunks run on torch",
                    extra={"model": loaded.name, "version": loaded.version, "reason": str(exc)[:200]})
        return None
    return rt


def run_chunks(loaded: LoadedVersion, chunks: list[Chunk], *, torch_only: bool = False) -> list[ChunkResult]:
    """Chunks of different sequences, each from its own state: ONNX Runtime when the version has
    a stateful graph (and not ``torch_only``), else one padded torch pass."""
    rt = None if torch_only else stateful_runtime(loaded)
    return _run_onnx(loaded, rt, chunks) if rt is not None else _run_torch(loaded, chunks)


def _run_onnx(loaded: LoadedVersion, rt: StatefulOnnx, chunks: list[Chunk]) -> list[ChunkResult]:
    """One ONNX Runtime call per distinct chunk length (one-step chunks: one call)."""
    names = rt.names
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(chunks):
        by_length.setdefault(int(c.values.shape[0]), []).append(i)
    out: list[ChunkResult | None] = [None] * len(chunks)
    for t, idx in by_length.items():
        inputs = np.stack([chunks[i].values for i in idx])
        states = [np.stack([chunks[i].state.tensors[n] for i in idx]) for n in names]
        outputs, finals = rt.run(inputs, states)
        for k, i in enumerate(idx):
            s = chunks[i].state
            out[i] = ChunkResult(outputs[k], CarriedState(loaded.name, loaded.version, s.steps + t,
                                                          {n: f[k] for n, f in zip(names, finals)}))
    return [r for r in out if r is not None]


def _run_torch(loaded: LoadedVersion, chunks: list[Chunk]) -> list[ChunkResult]:
    module = loaded.family_module
    inputs, lengths = pad_batch([c.values for c in chunks])
    with torch.no_grad():
        out, finals = module.forward_with_state(torch.from_numpy(inputs), torch.from_numpy(lengths),
                                                stack_states(loaded, [c.state for c in chunks]))
    outs = out.numpy()
    per_step = loaded.config.head == "per_step"
    states = unstack_states(loaded, finals, [c.state.steps + int(n) for c, n in zip(chunks, lengths)])
    return [ChunkResult(np.array(outs[i, : int(lengths[i])] if per_step else outs[i]), states[i])
            for i in range(len(chunks))]
