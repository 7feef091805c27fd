"""``seqlens.v1.Tensor`` <-> numpy: row-major little-endian bytes plus a shape."""

from __future__ import annotations

import math

import numpy as np

from ._proto.seqlens.v1 import types_pb2

__all__ = ["from_numpy", "optional_numpy", "to_numpy"]

_DTYPES = {types_pb2.DATA_TYPE_UNSPECIFIED: "<f4",  # unset: the default, FLOAT32
           types_pb2.DATA_TYPE_FLOAT32: "<f4", types_pb2.DATA_TYPE_INT64: "<i8"}


def to_numpy(msg: types_pb2.Tensor) -> np.ndarray:
    """Decode a Tensor into a native-endian array (float32 or int64) of its shape.

    >>> to_numpy(from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    if msg.dtype not in _DTYPES:
        raise ValueError(f"tensor dtype {msg.dtype} is not supported by this client")
    dtype = np.dtype(_DTYPES[msg.dtype])
    shape = tuple(int(d) for d in msg.shape)
    if math.prod(shape) * dtype.itemsize != len(msg.data):
        raise ValueError(f"tensor of shape {list(shape)} and {dtype.name} has {len(msg.data)} bytes")
    return np.frombuffer(msg.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def optional_numpy(parent: object, field: str) -> np.ndarray | None:
    """``to_numpy(parent.<field>)`` when the message field is set, else None."""
    if not parent.HasField(field):  # type: ignore[attr-defined]
        return None
    return to_numpy(getattr(parent, field))


def from_numpy(arr: np.ndarray) -> types_pb2.Tensor:
    """Encode an array: integers as INT64, everything else as FLOAT32."""
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        a, dt = np.ascontiguousarray(arr, dtype="<i8"), types_pb2.DATA_TYPE_INT64
    else:
        a, dt = np.ascontiguousarray(arr, dtype="<f4"), types_pb2.DATA_TYPE_FLOAT32
    return types_pb2.Tensor(dtype=dt, shape=list(a.shape), data=a.tobytes())
