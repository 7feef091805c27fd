"""The demo model repository: real data, trained deterministically, exported as version "1".

``build_demo(output)`` trains every model in ``DEMO_MODELS`` and writes ``output/<name>/1/``;
``ensure_demo_repository()`` returns the cached build, building it on first use.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..build import build_version
from ..export import export_model
from .bio import CUSTOM_BUILDERS
from .cache import build_hash, ensure_demo_repository
from .models import BUILDERS
from .report import headline

DEMO_MODELS: list[str] = [*BUILDERS, *CUSTOM_BUILDERS]  # built-in family, then kind: onnx builds
DEMO_VERSION = "1"
METRICS_FILE = "metrics.json"  # at the repository root; the repository scan only reads folders
BUILD_THREADS = 2


def build_demo(output: Path, progress: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Train and export every demo model into ``output/<name>/1/``; return held-out metrics
    (with the baselines and ``build_seconds``) per model, also written to ``metrics.json``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    # Fixed thread count and deterministic kernels: the same inputs give the same weights.
    torch.set_num_threads(min(BUILD_THREADS, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    results: dict[str, dict[str, float]] = {}
    try:
        for name in DEMO_MODELS:
            start = time.perf_counter()
            progress(f"[{name}] training")
            if name in CUSTOM_BUILDERS:
                custom = CUSTOM_BUILDERS[name](progress)
                report = build_version(custom.module, output, name, DEMO_VERSION, overwrite=True, **custom.build)
                progress(f"[{name}] {report.summary()}")
                metrics = custom.metrics
            else:
                trained = BUILDERS[name](progress)
                export_model(trained.module, output / name / DEMO_VERSION, vocabulary=trained.vocabulary,
                             reference=trained.reference, overwrite=True)
                metrics = trained.metrics
            results[name] = {**metrics, "build_seconds": round(time.perf_counter() - start, 1)}
            progress(f"[{name}] exported to {output / name / DEMO_VERSION}: {headline(name, results[name])}")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    (output / METRICS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results


__all__ = ["DEMO_MODELS", "DEMO_VERSION", "build_demo", "build_hash", "ensure_demo_repository"]
