"""Turn what callers pass (text, token ids, feature arrays; one or many) into SequenceInputs.

Rules, applied in order:

- ``str`` -> one text (tokenized by the server with the model's tokenizer);
- a numpy array: integer 1-D -> one token-id sequence, integer 2-D -> a batch of them;
  float 2-D ``[T,F]`` -> one feature sequence, float 3-D ``[B,T,F]`` -> a batch;
- a list or tuple of ints -> one token-id sequence;
- a list or tuple of floats/lists of floats (2-D, not all ints) -> one feature sequence ``[T,F]``;
- any other list or tuple -> a batch, each item read by the rules above for one sequence.

>>> [s.WhichOneof("kind") for s in to_sequence_inputs(["a b", [3, 4], np.zeros((5, 2))])]
['text', 'token_ids', 'features']
>>> len(to_sequence_inputs(np.zeros((4, 7), dtype=np.int64)))
4
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, TypeAlias

import numpy as np

from ._proto.seqlens.v1 import types_pb2
from .tensors import from_numpy

__all__ = ["Inputs", "SequenceLike", "to_sequence_input", "to_sequence_inputs"]

#: One sequence: text, token ids, or features ``[T,F]``.
SequenceLike: TypeAlias = str | Sequence[int] | Sequence[Sequence[float]] | np.ndarray
#: One sequence or a batch of them.
Inputs: TypeAlias = SequenceLike | Sequence[SequenceLike]


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _is_matrix(x: Any) -> bool:
    """A non-empty list of equal-length lists of numbers, not all ints."""
    if not x or not all(isinstance(r, Sequence) and not isinstance(r, str) for r in x):
        return False
    if not all(_is_number(v) for r in x for v in r):
        return False
    return not all(_is_int(v) for r in x for v in r)


def _array_input(arr: np.ndarray, where: str) -> types_pb2.SequenceInput:
    if np.issubdtype(arr.dtype, np.integer):
        if arr.ndim != 1:
            raise ValueError(f"{where}: token ids must be 1-D, got shape {list(arr.shape)}")
        return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=arr.astype(np.int64).tolist()))
    if np.issubdtype(arr.dtype, np.floating):
        if arr.ndim != 2:
            raise ValueError(f"{where}: features must be [T, F], got shape {list(arr.shape)}")
        return types_pb2.SequenceInput(features=from_numpy(arr.astype(np.float32)))
    raise ValueError(f"{where}: arrays must hold integers (token ids) or floats (features), got {arr.dtype}")


def _check_unicode(text: str, where: str) -> None:
    """Lone surrogates (what a JSON reader makes of an unpaired ``\\ud800``) cannot travel as
    UTF-8; name the place instead of failing inside protobuf."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}.text has a lone surrogate {text[exc.start]!a} at character {exc.start}: "
                         "text must be valid Unicode (fix the escape in the source JSON)") from None


def to_sequence_input(item: SequenceLike, where: str = "input") -> types_pb2.SequenceInput:
    """One sequence -> a SequenceInput; ``where`` names it in error messages."""
    if isinstance(item, types_pb2.SequenceInput):
        return item
    if isinstance(item, str):
        _check_unicode(item, where)
        return types_pb2.SequenceInput(text=item)
    if isinstance(item, np.ndarray):
        return _array_input(item, where)
    if isinstance(item, Sequence):
        values: Sequence[Any] = item
        if all(_is_int(v) for v in values):
            return types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[int(v) for v in values]))
        if _is_matrix(values):
            widths = {len(r) for r in values}
            if len(widths) != 1:
                raise ValueError(f"{where}: feature rows have different lengths {sorted(widths)}")
            return _array_input(np.asarray(item, dtype=np.float32), where)
    raise ValueError(f"{where}: expected text, token ids or a [T, F] float array, got {type(item).__name__}")


def to_sequence_inputs(inputs: Inputs) -> list[types_pb2.SequenceInput]:
    """One sequence or a batch -> a list of SequenceInputs (see the module rules)."""
    if isinstance(inputs, np.ndarray):
        batched = (np.issubdtype(inputs.dtype, np.integer) and inputs.ndim == 2) or (
            np.issubdtype(inputs.dtype, np.floating) and inputs.ndim == 3)
        if batched:
            return [_array_input(row, f"inputs[{i}]") for i, row in enumerate(inputs)]
        return [_array_input(inputs, "inputs")]
    if isinstance(inputs, str | types_pb2.SequenceInput):
        return [to_sequence_input(inputs)]
    if isinstance(inputs, Sequence):
        if len(inputs) == 0:
            raise ValueError("inputs is empty: give at least one sequence")
        if all(_is_int(v) for v in inputs) or _is_matrix(inputs):
            return [to_sequence_input(inputs)]  # type: ignore[arg-type]
        batch: Sequence[Any] = inputs
        return [to_sequence_input(x, f"inputs[{i}]") for i, x in enumerate(batch)]
    raise ValueError(f"inputs: expected text, token ids, features or a list of them, got {type(inputs).__name__}")
