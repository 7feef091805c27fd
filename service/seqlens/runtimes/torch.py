"""PyTorch: the gradient path. Weights come only from safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import ModelConfigError
from ..families import SequenceModel, build_model
from ..schema import ModelConfig

WEIGHTS_FILE = "weights.safetensors"


def save_weights(module: SequenceModel, path: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    # One metadata key: safetensors' header order of several keys varies between runs, and
    # byte-identical rebuilds are worth having.
    save_file(tensors, str(path), metadata={"format": "pt"})


# torch dtype -> the name safetensors headers use
_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}


def _check_header(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes from the file header against ``expected`` (meta tensors), before
    any tensor is read: a hostile or mismatched file costs a header read, not its size."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelConfigError(f"{WEIGHTS_FILE}: cannot read: {str(exc)[:200]}") from None
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise ModelConfigError(
            f"{WEIGHTS_FILE} does not match model.yaml: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, want in expected.items():
        shape, dtype = header[name]
        want_dtype = _SAFETENSORS_DTYPE.get(want.dtype, str(want.dtype))
        if shape != tuple(want.shape) or dtype != want_dtype:
            raise ModelConfigError(
                f"{WEIGHTS_FILE}: tensor {name!r} is {dtype} {shape}, model.yaml needs {want_dtype} {tuple(want.shape)}")


def load_torch_module(config: ModelConfig, path: Path, vocab_size: int | None) -> SequenceModel:
    """Build the family module for ``config`` and fill it from ``path``, checking every tensor.

    The module is first built on the meta device (no memory) to check the file header, so a
    config asking for a huge architecture is refused unless the file really holds its weights.
    """
    with torch.device("meta"):
        _check_header(path, build_model(config, vocab_size).state_dict())
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelConfigError(f"{WEIGHTS_FILE}: cannot read: {str(exc)[:200]}") from None
    for name, got in tensors.items():
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise ModelConfigError(f"{WEIGHTS_FILE}: tensor {name!r} has NaN or inf values")
    module = build_model(config, vocab_size)
    module.load_state_dict(tensors)
    return module.eval()
