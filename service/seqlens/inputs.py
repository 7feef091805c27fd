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


@dataclass(frozen=True)
class Where:
    """How errors name one sequence: a typed-API field path (``inputs[2]``, then
    ``inputs[2].token_ids[5]``) or, for the Open Inference Protocol, a row of a request tensor
    (``ModelInferRequest.inputs[0] ('inputs') row 2``, then ``..., timestep 5``)."""

    path: str
    oip: bool = False

    def __str__(self) -> str:
        return self.path

    def field(self, name: str) -> str:
        return self.path if self.oip else f"{self.path}.{name}"

    def item(self, name: str, index: int) -> str:
        return f"{self.path}, timestep {index}" if self.oip else f"{self.path}.{name}[{index}]"


def max_length_for(version: LoadedVersion, server_cap: int) -> int:
    return min(version.config.max_length, server_cap)


def encode(version: LoadedVersion, item: SequenceInput, *, max_length: int, where: str | Where,
           whole: bool = True) -> EncodedSequence:
    """Check one sequence against the model's input schema; ``where`` names it in errors.
    ``whole=False``: a chunk of a longer sequence (stateful calls), not held to ``min_length``.

    Cheap checks run first (kind, rank, length), so a hostile input costs at most
    ``max_length`` timesteps of work before it is refused, never its full size.
    """
    enc = _encode(version, item, max_length, where if isinstance(where, Where) else Where(where))
    min_length = version.config.min_length
    if whole and min_length is not None and enc.length < min_length:
        raise InvalidInput(
            f"{where} has {enc.length} timesteps; model {version.name!r} needs at least "
            f"min_length={min_length} (its config: min_length in model.yaml, reported by GetModel)")
    return enc


def _encode(version: LoadedVersion, item: SequenceInput, max_length: int, where: Where) -> EncodedSequence:
    config = version.config
    name = version.name
    too_long = f"model {name!r} accepts at most max_length={max_length} timesteps"
    if config.is_tokens:
        tokenizer = version.tokenizer
        assert tokenizer is not None
        if item.features is not None:
            raise InvalidInput(f"{where}: model {name!r} takes text or token_ids, not features")
        if item.text is not None:
            max_chars = tokenizer.max_chars(max_length)
            if len(item.text) > max_chars:
                raise InvalidInput(
                    f"{where.field('text')} has {len(item.text)} characters; {too_long} "
                    f"(at most {max_chars} characters with its {tokenizer.spec.tokenizer!r} tokenizer)")
            tokens = tokenizer.encode(item.text, limit=max_length + 1)
            if len(tokens) > max_length:
                raise InvalidInput(f"{where.field('text')} has more than {max_length} tokens; {too_long}")
            if all(t.special for t in tokens):  # also when empty; [CLS] [SEP] alone is no text
                raise InvalidInput(f"{where.field('text')} has no tokens: send at least one word")
            ids = np.array([t.id for t in tokens], dtype=np.int64)
        elif item.token_ids is not None:
            ids = np.asarray(item.token_ids).reshape(-1)
            if ids.size == 0:
                raise InvalidInput(f"{where.field('token_ids')} is empty: send at least one id")
            if ids.size > max_length:
                raise InvalidInput(f"{where} has {ids.size} timesteps; {too_long}")
            if not np.issubdtype(ids.dtype, np.integer):
                raise InvalidInput(f"{where.field('token_ids')} are {ids.dtype}; token ids must be integers")
            ids = ids.astype(np.int64)
            vocab = version.vocab_size
            bad = np.flatnonzero((ids < 0) | (ids >= vocab))
            if bad.size:
                raise InvalidInput(
                    f"{where.item('token_ids', int(bad[0]))} = {ids[bad[0]]} is outside the vocabulary [0, {vocab})")
            tokens = tokenizer.decode_ids(ids.tolist())
        else:
            raise InvalidInput(f"{where}: set one of text, token_ids")
        return EncodedSequence(ids, tokens)
    if item.features is None:
        raise InvalidInput(f"{where}: model {name!r} takes features (float32 [T, {config.num_features}])")
    x = item.features
    nf = config.num_features
    if x.ndim != 2 or x.shape[1] != nf:
        raise InvalidInput(f"{where.field('features')} has shape {list(x.shape)}; model {name!r} needs [T, {nf}]")
    if x.shape[0] == 0:
        raise InvalidInput(f"{where.field('features')} is empty: send at least one timestep")
    if x.shape[0] > max_length:
        raise InvalidInput(f"{where} has {x.shape[0]} timesteps; {too_long}")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise InvalidInput(f"{where.field('features')} are {x.dtype}; features must be numbers (float32)")
    # Cast first: float64 values beyond the float32 range become inf here, and are refused.
    with np.errstate(over="ignore"):
        values = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        t, f = (int(v) for v in np.argwhere(~finite)[0])
        raise InvalidInput(f"{where.field('features')} has NaN or inf at timestep {t} (feature {f} is {x[t, f]}); "
                           "values must be finite float32")
    return EncodedSequence(values, None)


def pad_batch(seqs: list[np.ndarray], pad_value: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """[T_i] or [T_i,F] arrays -> padded [B,T_max(,F)] and lengths [B] int64."""
    lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    t_max = int(lengths.max())
    first = seqs[0]
    out = np.full((len(seqs), t_max, *first.shape[1:]), pad_value, dtype=first.dtype)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths
