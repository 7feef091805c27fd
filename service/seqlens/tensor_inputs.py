"""Validate padded batches against a model's config in bulk: whole-array numpy checks, no
per-sequence Python objects and no token spans (OIP never returns tokens). One place for OIP
``ModelInfer`` tensors and a version's ``reference.safetensors``.

The checks and their messages are those of ``inputs.encode`` for each row, named the OIP way
(``ModelInferRequest.inputs[0] ('inputs') row i``, ``inputs.Where``); only each row's first
``lengths[i]`` timesteps are looked at (padding may hold anything). docs/performance.md has the why.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInput
from .inputs import Where
from .versions import LoadedVersion


def check_batch_shape(version: LoadedVersion, inputs: np.ndarray, lengths: np.ndarray | None, *,
                      max_batch: int | None, inputs_where: str, lengths_where: str) -> np.ndarray:
    """Rank, shape and kind of a padded batch; lengths (default: all T) -> int64 [B] in [1, T].

    Cheap (no scan of the values), so a caller can refuse a full queue between the two checks."""
    config = version.config
    want_ndim = 2 if config.is_tokens else 3
    shape = "[B, T]" if config.is_tokens else f"[B, T, {config.num_features}]"
    if inputs.ndim != want_ndim or inputs.shape[0] == 0 or inputs.shape[1] == 0 or (
            not config.is_tokens and inputs.shape[2] != config.num_features):
        raise InvalidInput(f"{inputs_where} has shape {list(inputs.shape)}; model {version.name!r} needs {shape}"
                           " with B, T >= 1")
    if config.is_tokens != np.issubdtype(inputs.dtype, np.integer):
        want = "INT64 or INT32 token ids" if config.is_tokens else "FP32 (or FP64) features"
        raise InvalidInput(f"{inputs_where} is {inputs.dtype}; model {version.name!r} needs {want}")
    b, t = inputs.shape[:2]
    if max_batch is not None and b > max_batch:
        raise InvalidInput(f"{inputs_where} has batch {b}; at most max_batch={max_batch}")
    if lengths is None:
        return np.full(b, t, dtype=np.int64)
    if not np.issubdtype(lengths.dtype, np.integer):
        raise InvalidInput(f"{lengths_where} must be INT64 or INT32")
    lengths = lengths.reshape(-1).astype(np.int64)
    if lengths.shape[0] != b or (lengths < 1).any() or (lengths > t).any():
        raise InvalidInput(f"{lengths_where} must be [{b}] integers in [1, {t}]")
    return lengths


def check_batch_values(version: LoadedVersion, inputs: np.ndarray, lengths: np.ndarray, max_length: int,
                       where: str) -> np.ndarray:
    """After ``check_batch_shape``: every row's values and length -> int64 ids or float32 features."""
    if version.config.is_tokens:
        return check_token_batch(version, inputs, lengths, max_length, where)
    return check_feature_batch(version, inputs, lengths, max_length, where)


def _row(where: str, i: int) -> Where:
    return Where(f"{where} row {i}", oip=True)


def _check_lengths(version: LoadedVersion, lengths: np.ndarray, max_length: int, where: str) -> None:
    over = np.flatnonzero(lengths > max_length)
    if over.size:
        i = int(over[0])
        raise InvalidInput(f"{_row(where, i)} has {int(lengths[i])} timesteps; model {version.name!r} accepts at "
                           f"most max_length={max_length} timesteps")
    min_length = version.config.min_length
    short = np.flatnonzero(lengths < min_length) if min_length is not None else np.empty(0)
    if short.size:
        i = int(short[0])
        raise InvalidInput(
            f"{_row(where, i)} has {int(lengths[i])} timesteps; model {version.name!r} needs at least "
            f"min_length={min_length} (its config: min_length in model.yaml, reported by GetModel)")


def _valid_mask(lengths: np.ndarray, t: int) -> np.ndarray:
    """[B,T] True where a timestep is inside its row's length."""
    return np.arange(t)[None, :] < lengths[:, None]


def check_token_batch(version: LoadedVersion, ids: np.ndarray, lengths: np.ndarray, max_length: int,
                      where: str = "ModelInferRequest.inputs[0] ('inputs')") -> np.ndarray:
    """Integer ids [B,T] -> int64 [B,T] with every id inside its length in the vocabulary."""
    _check_lengths(version, lengths, max_length, where)
    ids = ids.astype(np.int64, copy=False)
    vocab = version.vocab_size
    outside = (ids < 0) | (ids >= vocab)
    if outside.any():
        _b, t = ids.shape
        if not bool(lengths.min() == t):  # padding may hold anything: look inside the lengths only
            outside &= _valid_mask(lengths, t)
        if outside.any():
            i, j = (int(v) for v in np.argwhere(outside)[0])
            raise InvalidInput(f"{_row(where, i).item('token_ids', j)} = {int(ids[i, j])} is outside the vocabulary "
                               f"[0, {vocab})")
    return ids


def check_feature_batch(version: LoadedVersion, x: np.ndarray, lengths: np.ndarray, max_length: int,
                        where: str = "ModelInferRequest.inputs[0] ('inputs')") -> np.ndarray:
    """Numeric features [B,T,F] -> float32 [B,T,F], finite inside every row's length."""
    nf = version.config.num_features
    if x.shape[2] != nf:
        raise InvalidInput(f"{_row(where, 0)} has shape {[int(lengths[0]), int(x.shape[2])]}; "
                           f"model {version.name!r} needs [T, {nf}]")
    _check_lengths(version, lengths, max_length, where)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise InvalidInput(f"{where} is {x.dtype}; features must be numbers (float32)")
    # Cast first: float64 values beyond the float32 range become inf here, and are refused.
    with np.errstate(over="ignore"):
        values = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        t = values.shape[1]
        if not bool(lengths.min() == t):
            bad &= _valid_mask(lengths, t)[:, :, None]
        if bad.any():
            i, j, f = (int(v) for v in np.argwhere(bad)[0])
            raise InvalidInput(f"{_row(where, i)} has NaN or inf at timestep {j} (feature {f} is {x[i, j, f]}); "
                               "values must be finite float32")
    return values
