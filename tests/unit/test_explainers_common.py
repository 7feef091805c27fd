"""Shared fixtures and Captum oracles for the explainer tests (no tests here).

Tiny seeded models of every family are exported once per session; each explainer test
builds the same Problem that ``seqlens.explain`` builds and compares with Captum run on
the torch module (Captum is a test-only dependency).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from seqlens import load_model
from seqlens.explainers.baselines import BaselineKind, BaselineSpec, resolve_baseline
from seqlens.explainers.control import WorkControl
from seqlens.explainers.problem import Problem
from seqlens.explainers.targets import ResolvedTarget, TargetSpec, resolve_target
from seqlens.versions import LoadedVersion

from tests.factories import FEATURES, VOCAB, export_tiny

# Every cell, both directions, token and feature inputs, all three head kinds.
FAMILIES: dict[str, dict[str, Any]] = {
    "lstm_tokens_cls": {"cell": "lstm", "tokens": True, "task": "classification"},
    "gru_tokens_bi_tag": {"cell": "gru", "tokens": True, "task": "tagging", "bidirectional": True},
    "rnn_features_fc": {"cell": "rnn_tanh", "tokens": False, "task": "forecasting"},
    "lstm_features_bi2_cls": {"cell": "lstm", "tokens": False, "task": "classification",
                              "bidirectional": True, "layers": 2},
    "gru_features_tag": {"cell": "gru", "tokens": False, "task": "tagging"},
    "relu_tokens_bi_fc": {"cell": "rnn_relu", "tokens": True, "task": "forecasting", "bidirectional": True},
}
TOKEN_FAMILIES = [n for n, s in FAMILIES.items() if s["tokens"]]
FEATURE_FAMILIES = [n for n, s in FAMILIES.items() if not s["tokens"]]
LENGTH = 9
CHUNK = 4_000_000


# Each test module that imports the fixtures gets its own fixture definition; this cache
# makes them share one export and one load per session.
_EXPORTED: list[Path] = []
_LOADED: dict[str, LoadedVersion] = {}


@pytest.fixture(scope="session")
def family_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _EXPORTED:
        root = tmp_path_factory.mktemp("explain-families")
        for i, (name, spec) in enumerate(FAMILIES.items()):
            export_tiny(root, name, seed=10 + i, **spec)
        _EXPORTED.append(root)
    return _EXPORTED[0]


@pytest.fixture(scope="session")
def family(family_repo: Path) -> Callable[[str], LoadedVersion]:
    def get(name: str) -> LoadedVersion:
        if name not in _LOADED:
            _LOADED[name] = load_model(family_repo, name)
        return _LOADED[name]

    return get


def sample_values(loaded: LoadedVersion, length: int = LENGTH, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if loaded.config.is_tokens:
        return rng.integers(2, len(VOCAB), size=length).astype(np.int64)  # no PAD inside
    return (rng.normal(size=(length, len(FEATURES))) * 2).astype(np.float32)


def make_problem(loaded: LoadedVersion, values: np.ndarray, target: TargetSpec | None = None,
                 baseline: BaselineKind = "default", custom: np.ndarray | None = None, *,
                 chunk_elements: int = CHUNK, control: WorkControl | None = None) -> Problem:
    """The Problem that seqlens.explain builds for one sequence."""
    t = values.shape[0]
    raw = loaded.onnx.run(values[None], np.array([t]))[0]
    resolved = resolve_target(loaded.config, target or TargetSpec(), raw, t)
    base = resolve_baseline(loaded.config, BaselineSpec(baseline, custom), values)
    return Problem(loaded, values, resolved, base, chunk_elements=chunk_elements, control=control)


# --- Captum side -------------------------------------------------------------------------
def captum_target(target: ResolvedTarget) -> int | tuple[int, int]:
    if not target.is_class:
        return target.horizon_step
    return (target.timestep, target.class_index) if target.timestep >= 0 else target.class_index


def _space(out: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
    return torch.softmax(out, dim=-1) if target.output_space == "probability" else out


def forward_inputs(loaded: LoadedVersion, target: ResolvedTarget) -> Callable[..., torch.Tensor]:
    """Captum forward_func over model inputs (token ids or features) and lengths."""
    module = loaded.torch_module
    return lambda inputs, lengths: _space(module(inputs, lengths), target)


def forward_embedding(loaded: LoadedVersion, target: ResolvedTarget) -> Callable[..., torch.Tensor]:
    """Captum forward_func over embedding outputs (token models) and lengths."""
    module = loaded.torch_module
    return lambda emb, lengths: _space(module.forward_from_embedding(emb, lengths), target)


def lengths_arg(problem: Problem) -> tuple[torch.Tensor]:
    return (torch.tensor([problem.length]),)


def assert_rel(ours: np.ndarray, ref: np.ndarray | torch.Tensor, tol: float = 1e-6, rtol: float = 1e-5,
               atol: float = 0.0) -> None:
    """Equal entry by entry: |ours - ref| <= tol x max|ref| + rtol x |ref| + atol (float32
    rounding, ~2e-7 of the largest, passes; an error of 0.001% on an entry, or of 1e-6 of the
    largest entry, fails). ``atol``: the rounding of outputs that perturbation scores subtract."""
    ref_np = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    ref_np = ref_np.reshape(ours.shape).astype(np.float64)
    scale = float(np.abs(ref_np).max())
    assert scale > 0, "the reference attribution is all zeros: the test would prove nothing"
    err = np.abs(ours.astype(np.float64) - ref_np)
    bound = tol * scale + rtol * np.abs(ref_np) + atol
    worst = int(np.argmax(err - bound))
    assert bool((err <= bound).all()), (f"entry {worst}: error {err.flat[worst]:.3g} > {tol:g} x max|ref| "
                                        f"{scale:.3g} + {rtol:g} x |ref| {abs(ref_np.flat[worst]):.3g} + {atol:g}")


def output_rounding(problem: Problem) -> float:
    """What ONNX Runtime vs torch float32 rounding of the target outputs can put into a
    difference of two of them (perturbation scores): 8 float32 ulps of the larger output."""
    fx, fb = problem.torch_endpoints
    return 8 * 2.0**-23 * max(1.0, abs(fx), abs(fb))
