"""The wire vocabulary: one spelling of every ``seqlens.v1`` enum value, for the SDK, its CLI
and the server alike.

A value's name is its proto name without the enum's prefix, in lower case:
``QUADRATURE_GAUSS_LEGENDRE`` is ``"gauss_legendre"``, ``BASELINE_KIND_TRAINING_MEAN`` is
``"training_mean"``. The zero value ``*_UNSPECIFIED`` means "the default" (each enum's comment
in ``protos/`` names it) and is spelled ``"default"`` here. The server's domain types use these
same names (tests/unit/test_wire_vocabulary.py checks both sides).

>>> from seqlens_client.stubs import explain_pb2
>>> number(explain_pb2.Quadrature, "riemann_left") == explain_pb2.QUADRATURE_RIEMANN_LEFT
True
>>> name(explain_pb2.Quadrature, explain_pb2.QUADRATURE_GAUSS_LEGENDRE)
'gauss_legendre'
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

__all__ = ["DEFAULT", "EnumType", "name", "names", "number", "prefix"]

#: The name of every enum's zero value (``*_UNSPECIFIED``): "the default".
DEFAULT = "default"

_V = TypeVar("_V", bound=int)
#: A generated enum class, e.g. ``explain_pb2.Quadrature`` (its values are ints).
EnumType = type[int]


def _descriptor(enum: type[int]) -> Any:
    return enum.DESCRIPTOR  # type: ignore[attr-defined]  # set by protobuf's EnumTypeWrapper


def prefix(enum: type[int]) -> str:
    """The prefix every value of ``enum`` carries (protobuf style): ``OutputSpace`` -> ``OUTPUT_SPACE_``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", _descriptor(enum).name).upper() + "_"


def names(enum: type[_V]) -> dict[str, _V]:
    """Every value but the zero value: short name -> number."""
    pre = prefix(enum)
    return {v.name.removeprefix(pre).lower(): cast(_V, v.number) for v in _descriptor(enum).values if v.number}


def name(enum: type[int], value: int) -> str | None:
    """The short name of ``value``; ``"default"`` for 0; None for a number this build does not know."""
    if value == 0:
        return DEFAULT
    return next((n for n, v in names(enum).items() if v == value), None)


def number(enum: type[_V], value: str, what: str = "") -> _V:
    """The number of a name: short (``per_feature``, any case), the proto's own
    (``ABLATION_MODE_PER_FEATURE``) or ``"default"`` (0). A ValueError, naming the option ``what``,
    lists the names."""
    key = value.lower().removeprefix(prefix(enum).lower())
    if key in (DEFAULT, "unspecified"):
        return cast(_V, 0)
    table = names(enum)
    if key not in table:
        raise ValueError(f"{what or _descriptor(enum).name} must be one of {[DEFAULT, *table]} (upper case and "
                         f"{prefix(enum)}* names too), got {value!r}")
    return table[key]
