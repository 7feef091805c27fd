"""Tiny seeded models of every family, exported into throwaway repositories, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from seqlens.export import export_model
from seqlens.families import SequenceModel, build_model
from seqlens.schema import ModelConfig

VOCAB = ["<pad>", "<unk>", *["the", "a", "film", "was", "good", "bad", "dull", "witty", "movie", "plot", ",", ".", "!", "not", "very"]]
FEATURES = ["f0", "f1", "f2"]


def tiny_config(*, cell: str = "lstm", task: str = "classification", tokens: bool = True, layers: int = 1,
                bidirectional: bool = False, hidden: int = 6, emb: int = 5, max_length: int = 64,
                tokenizer: str = "word") -> ModelConfig:
    head = {"classification": "last", "tagging": "per_step", "forecasting": "horizon", "regression": "horizon"}[task]
    data: dict[str, Any] = {
        "task": task,
        "max_length": max_length,
        "architecture": {"input_layer": "embedding" if tokens else "linear", "embedding_dim": emb, "cell": cell,
                         "num_layers": layers, "hidden_size": hidden, "bidirectional": bidirectional,
                         "head": head},
    }
    if tokens:
        data["input"] = {"kind": "tokens", "tokenizer": tokenizer}
        # not zeros: a TRAINING_MEAN baseline must differ from ZEROS for tests to tell them apart
        data["training_mean"] = [round(0.3 * np.sin(i + 1.0), 4) for i in range(emb)]
    else:
        data["input"] = {"kind": "features", "feature_names": FEATURES, "mean": [0.5, -1.0, 2.0],
                         "std": [1.0, 2.0, 0.5]}
        data["training_mean"] = [0.8, -0.4, 1.7]  # not input.mean: that would be zeros after scaling
    if task in ("classification", "tagging"):
        data["labels"] = ["neg", "neu", "pos"]
    else:
        data["horizon"] = 3
        data["output_scale"] = {"mean": 10.0, "std": 2.0}
    return ModelConfig.model_validate(data)


def tiny_model(seed: int = 0, **kw: Any) -> SequenceModel:
    config = tiny_config(**kw)
    return build_model(config, len(VOCAB) if config.is_tokens else None, seed=seed).eval()


def export_tiny(repo: Path, name: str, version: str = "1", seed: int = 0, **kw: Any) -> Path:
    module = tiny_model(seed=seed, **kw)
    vocab = VOCAB if module.config.is_tokens else None
    export_model(module, repo / name / version, vocabulary=vocab)
    return repo / name / version


def random_inputs(module: SequenceModel, batch: int, t_max: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(1, t_max + 1, size=batch).astype(np.int64)
    lengths[0] = t_max
    if module.config.is_tokens:
        x = rng.integers(0, len(VOCAB), size=(batch, t_max)).astype(np.int64)
    else:
        x = rng.normal(size=(batch, t_max, len(FEATURES))).astype(np.float32) * 2
    return x, lengths


def oip_calls(target: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run calls through tritonclient.grpc in a subprocess (see tests/oip_probe.py)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("oip_probe.py"))],
                          input=json.dumps({"target": target, "calls": calls}), check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout))
