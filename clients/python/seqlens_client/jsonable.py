"""JSON-ready values: a leaf module, so that results and the report renderers both use it
without importing each other (results -> report is the only direction)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import fields
from typing import Any

import numpy as np

__all__ = ["as_dict", "jsonable"]


def jsonable(value: Any) -> Any:
    """Arrays -> lists, dataclasses and named tuples -> dicts, non-finite floats -> None."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):  # NamedTuple
        return jsonable(value._asdict())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
