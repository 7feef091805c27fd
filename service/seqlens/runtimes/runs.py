"""Counts of model runs per loaded version and runtime: what ``seqlens_model_runs_total`` exports.

Every ONNX Runtime ``run`` counts one. A torch run is one call into the module: of the module
itself, or, outside such a call, of its input layer (embedding or input projection) or its
first recurrent layer (``forward_from_embedding``). Tests read
these counts to prove that a refused request ran no model at all (docs/testing.md).
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from torch import nn

Runtime = Literal["onnxruntime", "torch"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "torch")


class RunCounts:
    """Thread-safe run counters of one loaded version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Runtime, int] = dict.fromkeys(RUNTIMES, 0)

    def add(self, runtime: Runtime, n: int = 1) -> None:
        with self._lock:
            self._counts[runtime] += n

    def get(self, runtime: Runtime) -> int:
        with self._lock:
            return self._counts[runtime]

    def snapshot(self) -> dict[Runtime, int]:
        with self._lock:
            return dict(self._counts)


def count_torch_runs(module: nn.Module, counts: RunCounts) -> None:
    """Hook ``module`` so that each call into it adds one to ``counts`` (torch): a call of the
    module itself, or, outside one, of its input layer or its first recurrent layer (the
    explainers call ``embed`` and ``forward_from_embedding`` separately)."""
    inside = threading.local()  # per thread: within a call of the whole module
    entries = [getattr(module, "embedding", None), getattr(module, "input_proj", None),
               next((m for m in module.modules() if isinstance(m, nn.RNNBase)), None)]

    def enter_module(_m: nn.Module, _args: Any) -> None:
        inside.depth = getattr(inside, "depth", 0) + 1
        if inside.depth == 1:
            counts.add("torch")

    def leave_module(_m: nn.Module, _args: Any, _out: Any) -> None:
        inside.depth -= 1

    def enter_part(_m: nn.Module, _args: Any) -> None:
        if not getattr(inside, "depth", 0):
            counts.add("torch")

    module.register_forward_pre_hook(enter_module)
    module.register_forward_hook(leave_module, always_call=True)
    for part in entries:
        if isinstance(part, nn.Module):
            part.register_forward_pre_hook(enter_part)
