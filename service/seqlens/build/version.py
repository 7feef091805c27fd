"""``build_version``: a user's torch module -> a verified ``kind: onnx`` repository version.

Runs in the user's environment (it executes their module). Nothing is written unless every check
passes; the folder is written next to its target and renamed into place (docs/build.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ..config import PARITY_TOLERANCE
from ..publish import refuse_existing, save_reference, staged
from ..schema import FeatureInput, TokenInput
from ..tokenizers import Vocabulary
from .checks import Probe, check_lengths, check_onnx_runtime, check_replay_gradients, make_probes
from .graph import (
    EMBEDDED,
    INPUTS,
    LENGTHS,
    OUTPUTS,
    STATES,
    BuildError,
    check_symbolic_axes,
    export_onnx,
    finish,
    name_embedding,
)
from .loop import FeaturesIn, OneHot
from .protocols import (
    State,
    eager_cell_rows,
    eager_sequence_rows,
    initial_state_of,
    prepare_cell,
)

Protocol = Literal["cell", "sequence"]
Task = Literal["classification", "tagging", "forecasting", "regression"]
CONFIG_FILE, ONNX_FILE, REFERENCE_FILE = "model.yaml", "model.onnx", "reference.safetensors"
TOLERANCE = PARITY_TOLERANCE  # the server's own parity gate
DEFAULT_EXPORT_LENGTH = 7


@dataclass
class BuildReport:
    """What was written and what the checks measured (max abs differences per batch length)."""

    path: Path
    protocol: str
    export_length: int
    onnx_vs_eager: dict[int, float]
    replay_vs_eager: dict[int, float]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        def fmt(d: dict[int, float]) -> str:
            return ", ".join(f"T={t} {v:.1e}" for t, v in sorted(d.items()))
        return (f"built {self.path} ({self.protocol} protocol, exported at T={self.export_length}); "
                f"ONNX Runtime vs eager: {fmt(self.onnx_vs_eager)}; replay vs eager (outputs and "
                f"gradients): {fmt(self.replay_vs_eager)}")


def _sampler(spec: TokenInput | FeatureInput, vocab_size: int):  # type: ignore[no-untyped-def]
    if isinstance(spec, TokenInput):
        return lambda b, t, rng: rng.integers(0, vocab_size, size=(b, t)).astype(np.int64)
    n = len(spec.feature_names)
    mean = np.array(spec.mean or [0.0] * n, dtype=np.float32)
    std = np.array(spec.std or [1.0] * n, dtype=np.float32)
    return lambda b, t, rng: (rng.standard_normal((b, t, n)) * std + mean).astype(np.float32)


def _find_embedding(module: nn.Module, given: nn.Embedding | None) -> nn.Embedding:
    if given is not None:
        return given
    found = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if len(found) != 1:
        raise ValueError(f"a token sequence module needs exactly one nn.Embedding (found {len(found)}); "
                         "pass embedding=<the one that embeds the ids>")
    return found[0]


def _manifest(*, description: str, task: str, spec: TokenInput | FeatureInput, max_length: int,
              labels: Sequence[str] | None, horizon: int | None, attribute_at: str, causal: bool,
              state_slices: dict[str, list[int]] | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"description": description, "task": task,
                            "input": spec.model_dump(mode="json", exclude_none=True), "max_length": max_length}
    if labels is not None:
        data["labels"] = list(labels)
    if horizon is not None:
        data["horizon"] = horizon
    data.update(extra or {})
    data["architecture"] = {"kind": "onnx"}
    graph: dict[str, Any] = {"inputs": INPUTS, "lengths": LENGTHS, "output": OUTPUTS,
                             "attribute_at": attribute_at, "causal": causal}
    if state_slices:
        graph["states"] = [{"output": STATES, "slices": state_slices}]
    data["graph"] = graph
    return data


def _validate_manifest(text: str) -> None:
    """Parse the written manifest with the server's own schema, when it knows ``kind: onnx``."""
    from ..schema import parse_config

    parse_config(text, source=CONFIG_FILE)


def build_version(module: nn.Module, repository: str | Path, name: str, version: str = "1", *,
                  protocol: Protocol = "cell", task: Task, input: TokenInput | FeatureInput,
                  max_length: int, labels: Sequence[str] | None = None, horizon: int | None = None,
                  vocabulary: Sequence[str] | None = None, embedding: nn.Embedding | None = None,
                  initial_state: State | None = None, state_names: Sequence[str] | None = None,
                  example_inputs: tuple[Tensor, Tensor] | None = None, causal: bool | None = None,
                  reference: tuple[np.ndarray, np.ndarray] | None = None, description: str = "",
                  config_extra: dict[str, Any] | None = None, overwrite: bool = False,
                  tolerance: float = TOLERANCE, load: bool = True) -> BuildReport:
    """Export ``module`` as ``<repository>/<name>/<version>/`` (``model.yaml``, ``model.onnx``,
    ``vocab.txt`` for tokens) after checking the graph; raise ``BuildError`` and write nothing when
    a check fails.

    protocol ``"cell"``: ``module(x_t [B,E], state) -> (out_t [B,C], state)``; the initial state is
    ``initial_state`` or ``module.initHidden()`` (each tensor ``[1, ...]``, broadcast to the batch).
    Token ids reach the cell one-hot (E = vocabulary size) or through ``embedding``.
    protocol ``"sequence"``: ``module(inputs, lengths)`` -> ``[B,C]`` / ``[B,T,C]`` / ``[B,H]``; its
    answers must not depend on padding (each row is compared with the row run alone).
    ``example_inputs`` (batch >= 2) fixes the export length; every check runs at other lengths.
    """
    started = time.perf_counter()
    target = Path(repository) / name / version
    refuse_existing(target, overwrite, "overwrite=True (seqlens build --force)")
    if protocol not in ("cell", "sequence"):
        raise ValueError(f"protocol must be 'cell' or 'sequence', not {protocol!r}")
    per_step = task == "tagging"
    want_out = len(labels) if labels is not None else horizon
    if want_out is None:
        raise ValueError(f"task {task!r} needs labels (classification, tagging) or horizon")
    tokens = isinstance(input, TokenInput)
    if tokens and vocabulary is None:
        raise ValueError("token models need vocabulary= (line i = token id i)")
    vocab_size = len(vocabulary) if vocabulary is not None else 0
    module = module.eval()
    sample = _sampler(input, vocab_size)
    if example_inputs is None:
        t0 = min(DEFAULT_EXPORT_LENGTH, max_length)
        ex = sample(3, t0, np.random.default_rng(3))
        example_inputs = (torch.from_numpy(ex), torch.tensor([t0, max(1, t0 - 2), 1]))
    if example_inputs[0].shape[0] < 2:
        raise ValueError("example_inputs need a batch of at least 2 (a batch of 1 can freeze the batch axis)")
    export_length = int(example_inputs[0].shape[1])

    state_slices: dict[str, list[int]] | None = None
    if protocol == "cell":
        front: nn.Module = (embedding if embedding is not None else OneHot(vocab_size)) if tokens else FeaturesIn()
        initial = initial_state_of(module, initial_state)
        with torch.no_grad():
            input_size = int(front(example_inputs[0][:1, :1]).shape[-1])
        built = prepare_cell(module, front, initial, input_size, per_step)
        export_module, out_size = built.loop, built.out_size
        state_slices = built.layout.slices(state_names)
        is_causal = True

        def point_of(x: Tensor) -> Tensor:
            return front(x)

        def eager_from_point(emb: Tensor, lengths: Tensor) -> list[Tensor]:
            return eager_cell_rows(module, initial, emb, lengths, per_step)

        def eager(x: Tensor, lengths: Tensor) -> list[Tensor]:
            return eager_from_point(front(x), lengths)
    else:
        export_module = module
        with torch.no_grad():
            out_size = int(module(*example_inputs).shape[-1])
        is_causal = bool(causal)
        emb_module = _find_embedding(module, embedding) if tokens else None

        def point_of(x: Tensor) -> Tensor:
            return emb_module(x) if emb_module is not None else x

        def eager(x: Tensor, lengths: Tensor) -> list[Tensor]:
            return eager_sequence_rows(module, x, lengths, per_step)

        def eager_from_point(emb: Tensor, lengths: Tensor) -> list[Tensor]:
            if emb_module is None:
                return eager_sequence_rows(module, emb, lengths, per_step)
            rows: list[Tensor] = []
            for i in range(emb.shape[0]):  # each row alone, its embedding output replaced by ours
                n = int(lengths[i])
                handle = emb_module.register_forward_hook(lambda _m, _a, _o, i=i, n=n: emb[i : i + 1, :n])
                try:
                    out = module(torch.zeros(1, n, dtype=torch.int64), lengths[i : i + 1])
                finally:
                    handle.remove()
                rows.append(out[0, :n] if per_step else out[0])
            return rows
    if out_size != want_out:
        raise ValueError(f"the module gives {out_size} outputs per {'step' if per_step else 'sequence'}; "
                         f"{'labels' if labels is not None else 'horizon'} says {want_out}")

    t = time.perf_counter()
    model = export_onnx(export_module, example_inputs, per_step=per_step, with_states=state_slices is not None)
    export_s = time.perf_counter() - t
    attribute_at = name_embedding(model) if tokens else "input"
    check_symbolic_axes(model, per_step)
    data = finish(model)
    probes: list[Probe] = make_probes(check_lengths(export_length, max_length), sample)
    t = time.perf_counter()
    ort_diffs = check_onnx_runtime(data, probes, eager, per_step=per_step, export_length=export_length,
                                   tolerance=tolerance)
    ort_s = time.perf_counter() - t
    t = time.perf_counter()
    replay_diffs = check_replay_gradients(model, probes, attribute_at=EMBEDDED if tokens else INPUTS,
                                          point_of=point_of, eager_from_point=eager_from_point,
                                          per_step=per_step, tolerance=tolerance)
    replay_s = time.perf_counter() - t

    manifest = yaml.safe_dump(_manifest(description=description, task=task, spec=input, max_length=max_length,
                                        labels=labels, horizon=horizon, attribute_at=attribute_at,
                                        causal=is_causal, state_slices=state_slices, extra=config_extra),
                              sort_keys=False)
    _validate_manifest(manifest)
    _write(target, manifest, data, vocabulary if tokens else None,
           input.vocabulary if isinstance(input, TokenInput) else "", reference, load=load)
    return BuildReport(target, protocol, export_length, ort_diffs, replay_diffs,
                       {"export": round(export_s, 3), "onnx_check": round(ort_s, 3),
                        "replay_check": round(replay_s, 3), "total": round(time.perf_counter() - started, 3)})


def _write(target: Path, manifest: str, onnx_bytes: bytes, vocabulary: Sequence[str] | None, vocab_file: str,
           reference: tuple[np.ndarray, np.ndarray] | None, *, load: bool) -> None:
    """Write into a hidden sibling folder, load it as the server would, rename into place."""
    with staged(target) as tmp:
        (tmp / CONFIG_FILE).write_text(manifest, encoding="utf-8")
        (tmp / ONNX_FILE).write_bytes(onnx_bytes)
        if vocabulary is not None:
            Vocabulary(list(vocabulary)).save(tmp / vocab_file)
        save_reference(tmp, reference)
        if load:
            from ..versions import load_version

            load_version(tmp, target.parent.name, target.name)  # the server's own load and parity gate


__all__ = ["BuildError", "BuildReport", "build_version"]
