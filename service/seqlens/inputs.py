"""Validate and encode request sequences; pad batches. Pure functions over numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput
from .tokenizers import TokenSpan
from .versions import LoadedVersion


@dataclass(frozen=True)
class SequenceInput:
    """Exactly one of: text, token ids [T], features [T,F] (float32)."""

    text: str | None = None
    token_ids: np.ndarray | None = None
    features: np.ndarray | None = None


@dataclass(frozen=True)
class EncodedSequence:
    values: np.ndarray  # int64 [T] or float32 [T,F]
    tokens: list[TokenSpan] | None  # text and token-id inputs

    @property
    def length(self) -> int:
        return int(self.values.shape[0])


def max_length_for(version: LoadedVersion, server_cap: int) -> int:
    return min(version.config.max_length, server_cap)


def encode(version: LoadedVersion, item: SequenceInput, *, max_length: int, where: str) -> EncodedSequence:
    """Check one sequence against the model's input schema; ``where`` names it in errors."""
    config = version.config
    name = f"{version.name}"
    if config.is_tokens:
        assert version.tokenizer is not None
        if item.features is not None:
            raise InvalidInput(f"{where}: model {name!r} takes text or token_ids, not features")
        if item.text is not None:
            tokens = version.tokenizer.encode(item.text)
            ids = np.array([t.id for t in tokens], dtype=np.int64)
            if ids.size == 0:
                raise InvalidInput(f"{where}.text has no tokens: send at least one word")
        elif item.token_ids is not None:
            ids = np.asarray(item.token_ids, dtype=np.int64).reshape(-1)
            if ids.size == 0:
                raise InvalidInput(f"{where}.token_ids is empty: send at least one id")
            vocab = version.vocab_size
            bad = np.flatnonzero((ids < 0) | (ids >= vocab))
            if bad.size:
                raise InvalidInput(
                    f"{where}.token_ids[{bad[0]}] = {ids[bad[0]]} is outside the vocabulary [0, {vocab})")
            tokens = version.tokenizer.decode_ids(ids.tolist())
        else:
            raise InvalidInput(f"{where}: set one of text, token_ids")
        values = ids
    else:
        if item.features is None:
            raise InvalidInput(f"{where}: model {name!r} takes features (float32 [T, {config.num_features}])")
        x = item.features
        nf = config.num_features
        if x.ndim != 2 or x.shape[1] != nf:
            raise InvalidInput(f"{where}.features has shape {list(x.shape)}; model {name!r} needs [T, {nf}]")
        if x.shape[0] == 0:
            raise InvalidInput(f"{where}.features is empty: send at least one timestep")
        if not np.isfinite(x).all():
            t = int(np.argwhere(~np.isfinite(x))[0][0])
            raise InvalidInput(f"{where}.features has NaN or inf at timestep {t}")
        values = np.ascontiguousarray(x, dtype=np.float32)
        tokens = None
    if values.shape[0] > max_length:
        raise InvalidInput(
            f"{where} has {values.shape[0]} timesteps; model {name!r} accepts at most max_length={max_length}")
    return EncodedSequence(values, tokens)


def pad_batch(seqs: list[np.ndarray], pad_value: float | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[T_i] or [T_i,F] arrays -> padded [B,T_max(,F)] and lengths [B] int64."""
    lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    t_max = int(lengths.max())
    first = seqs[0]
    out = np.full((len(seqs), t_max, *first.shape[1:]), pad_value, dtype=first.dtype)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths
