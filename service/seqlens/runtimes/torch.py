"""PyTorch: the gradient path. Weights come only from safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ModelConfigError
from ..families import SequenceModel, build_model
from ..schema import ModelConfig

WEIGHTS_FILE = "weights.safetensors"


def save_weights(module: SequenceModel, path: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "family": "seqlens"})


def load_torch_module(config: ModelConfig, path: Path, vocab_size: int | None) -> SequenceModel:
    """Build the family module for ``config`` and fill it from ``path``, checking every tensor."""
    module = build_model(config, vocab_size)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelConfigError(f"{WEIGHTS_FILE}: cannot read: {str(exc)[:200]}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelConfigError(
            f"{WEIGHTS_FILE} does not match model.yaml: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise ModelConfigError(
                f"{WEIGHTS_FILE}: tensor {name!r} is {got.dtype} {tuple(got.shape)}, "
                f"model.yaml needs {want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise ModelConfigError(f"{WEIGHTS_FILE}: tensor {name!r} has NaN or inf values")
    module.load_state_dict(tensors)
    return module.eval()
