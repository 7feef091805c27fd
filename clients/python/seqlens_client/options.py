"""Explain options: attribution methods, target, baseline and state summaries.

Each option is a small frozen dataclass with a ``to_proto()``; the client also accepts the
short forms noted on each (a method name, a class index or label, a baseline kind name, ...).

>>> Method("integrated_gradients", n_steps=32).to_proto().n_steps
32
>>> target_proto("positive").label
'positive'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypeVar

import numpy as np

from . import vocabulary
from ._proto.seqlens.v1 import explain_pb2, state_pb2
from .inputs import SequenceLike, to_sequence_input

__all__ = [
    "INTEGRAL_METHODS",
    "METHODS",
    "METHOD_OPTIONS",
    "STATE_SUMMARIES",
    "Baseline",
    "BaselineLike",
    "Method",
    "MethodsLike",
    "StateLike",
    "StateOptions",
    "Target",
    "TargetLike",
    "baseline_proto",
    "methods_proto",
    "state_proto",
    "target_proto",
]

#: Attribution methods the server knows (``GetModel`` lists those a model supports).
METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "smoothgrad",
           "occlusion", "feature_ablation", "shapley_sampling")
#: Methods that integrate gradients along a path (``n_steps``, ``quadrature``). Whether an attribution
#: carries a convergence delta is on the wire (``Attribution.has_delta``), not inferred from its name.
INTEGRAL_METHODS = frozenset({"integrated_gradients", "gradient_shap"})
#: State summaries the server knows.
STATE_SUMMARIES = ("state_norm", "delta_norm", "gate_mean", "saturation", "timescale", "top_units",
                   "prefix_prediction", "unit_contribution", "active_count", "projection")

QuadratureName = Literal["gauss_legendre", "riemann_left", "riemann_right", "riemann_middle",
                         "riemann_trapezoid"]


#: The options each method takes (the server refuses the others with INVALID_ARGUMENT).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "integrated_gradients": ("n_steps", "quadrature", "adaptive", "tolerance", "max_steps"),
    "saliency": ("abs_saliency",),
    "input_x_gradient": (),
    "gradient_shap": ("n_samples", "noise_stdev", "seed", "tolerance"),
    "smoothgrad": ("n_samples", "noise_stdev", "seed", "abs_saliency"),
    "occlusion": ("window", "stride"),
    "feature_ablation": ("ablation",),
    "shapley_sampling": ("n_samples", "seed", "ablation", "tolerance"),
}
_UNSET: dict[str, object] = {"n_steps": 0, "quadrature": "gauss_legendre", "adaptive": False, "tolerance": 0.0,
                             "max_steps": 0, "n_samples": 0, "noise_stdev": 0.0, "seed": 0, "window": 0,
                             "stride": 0, "ablation": "per_timestep", "abs_saliency": None}

_V = TypeVar("_V", bound=int)
_ENUMS: dict[str, type[int]] = {"quadrature": explain_pb2.Quadrature, "ablation": explain_pb2.AblationMode}


def _pick(enum: type[_V], value: str, what: str) -> _V:
    """``value`` in the wire vocabulary (``per_feature``; ``PER_FEATURE`` and ``ABLATION_MODE_PER_FEATURE``
    too; ``default`` for the zero value), see :mod:`seqlens_client.vocabulary`."""
    return vocabulary.number(enum, value if isinstance(value, str) else repr(value), what)


@dataclass(frozen=True)
class Method:
    """One attribution method and its options; zeros mean "the server's default".

    >>> Method("integrated_gradients", adaptive=True, tolerance=0.01)  # doctest: +ELLIPSIS
    Method(name='integrated_gradients', ...adaptive=True, tolerance=0.01...)
    >>> Method("occlusion", window=3, stride=1).to_proto().window
    3
    """

    name: str
    n_steps: int = 0
    quadrature: QuadratureName = "gauss_legendre"
    adaptive: bool = False
    tolerance: float = 0.0
    max_steps: int = 0
    n_samples: int = 0
    noise_stdev: float = 0.0
    seed: int = 0
    window: int = 0
    stride: int = 0
    ablation: Literal["per_timestep", "per_feature"] = "per_timestep"
    abs_saliency: bool | None = None  # saliency, smoothgrad: None = the server's default (absolute, as Captum)

    def options_set(self) -> list[str]:
        """The options given a value other than "unset" (as the server sees them: an enum's
        ``default`` and its documented default value are both unset)."""
        values: dict[str, object] = {f: getattr(self, f) for f in _UNSET}
        for f, enum in _ENUMS.items():
            v = values[f]
            if isinstance(v, str) and _pick(enum, v, f) in (0, vocabulary.number(enum, str(_UNSET[f]))):
                values[f] = _UNSET[f]
        return [f for f, unset in _UNSET.items() if values[f] is not None and values[f] != unset]

    def to_proto(self) -> explain_pb2.AttributionMethod:
        if not self.name:
            raise ValueError("method name is empty")
        takes = METHOD_OPTIONS.get(self.name)
        extra = [f for f in self.options_set() if takes is not None and f not in takes]
        if extra and takes is not None:  # unknown names are left to the server (it may know newer methods)
            own = f"its options are {', '.join(takes)}" if takes else "it takes no options"
            raise ValueError(f"method {self.name} does not take {', '.join(extra)} ({own})")
        for f in ("n_steps", "max_steps", "n_samples", "seed", "window", "stride"):
            if getattr(self, f) < 0:
                raise ValueError(f"method {self.name}: {f} must be >= 0, got {getattr(self, f)}")
        msg = explain_pb2.AttributionMethod(
            name=self.name, n_steps=self.n_steps, quadrature=_pick(explain_pb2.Quadrature, self.quadrature, "quadrature"),
            adaptive=self.adaptive, tolerance=self.tolerance, max_steps=self.max_steps, n_samples=self.n_samples,
            noise_stdev=self.noise_stdev, seed=self.seed, window=self.window, stride=self.stride,
            ablation=_pick(explain_pb2.AblationMode, self.ablation, "ablation"))
        if self.abs_saliency is not None:
            msg.abs_saliency = self.abs_saliency
        return msg


@dataclass(frozen=True)
class Target:
    """What to explain; unset fields take the server's defaults (the predicted class, the last
    timestep for tagging, horizon step 0 for forecasts).

    >>> Target(label="negative", output_space="probability").to_proto().output_space
    1
    """

    class_index: int | None = None
    label: str | None = None
    timestep: int | None = None
    horizon_step: int | None = None
    output_space: Literal["logit", "probability"] = "logit"

    def to_proto(self) -> explain_pb2.Target:
        if self.class_index is not None and self.label is not None:
            raise ValueError("target: give class_index or label, not both")
        msg = explain_pb2.Target(output_space=_pick(explain_pb2.OutputSpace, self.output_space, "output_space"))
        if self.class_index is not None:
            msg.class_index = self.class_index
        if self.label is not None:
            msg.label = self.label
        if self.timestep is not None:
            msg.timestep = self.timestep
        if self.horizon_step is not None:
            msg.horizon_step = self.horizon_step
        return msg


@dataclass(frozen=True)
class Baseline:
    """The attribution baseline: a kind name, or ``custom`` (same length as the input)."""

    kind: Literal["default", "pad", "zeros", "training_mean", "custom"] = "default"
    custom: SequenceLike | None = None

    def to_proto(self) -> explain_pb2.Baseline:
        kind = _pick(explain_pb2.BaselineKind, self.kind, "baseline")
        if kind == explain_pb2.BASELINE_KIND_CUSTOM or self.custom is not None:
            if self.custom is None:
                raise ValueError("baseline kind 'custom' needs custom=<token ids or [T, F] features>")
            return explain_pb2.Baseline(kind=explain_pb2.BASELINE_KIND_CUSTOM,
                                        custom=to_sequence_input(self.custom, "baseline"))
        return explain_pb2.Baseline(kind=kind)


@dataclass(frozen=True)
class StateOptions:
    """Which hidden-state summaries to compute; an empty ``summaries`` asks for all defaults.

    >>> StateOptions(["state_norm", "gate_mean"], top_k=3).to_proto().top_k
    3
    """

    summaries: Sequence[str] = field(default_factory=tuple)
    top_k: int = 0
    include_hidden: bool = False
    include_cell: bool = False

    def to_proto(self) -> state_pb2.StateOptions:
        if self.top_k < 0:
            raise ValueError(f"state top_k must be >= 0, got {self.top_k}")
        return state_pb2.StateOptions(enabled=True, summaries=list(self.summaries), top_k=self.top_k,
                                      include_hidden=self.include_hidden, include_cell=self.include_cell)


#: ``"saliency"``, ``Method(...)``, or a list of them; None = integrated gradients.
MethodsLike: TypeAlias = str | Method | Sequence[str | Method] | None
#: A class index, a label, a ``Target``, or None (the predicted class).
TargetLike: TypeAlias = int | str | Target | None
#: A kind name, a ``Baseline``, custom token ids/features, or None (the model's default).
BaselineLike: TypeAlias = str | Baseline | np.ndarray | Sequence[int] | None
#: True (all defaults), a list of summary names, ``StateOptions``, or None/False (off).
StateLike: TypeAlias = bool | Sequence[str] | StateOptions | None


def methods_proto(methods: MethodsLike) -> list[explain_pb2.AttributionMethod]:
    if methods is None:
        return []
    items: Sequence[str | Method] = [methods] if isinstance(methods, str | Method) else methods
    return [(Method(m) if isinstance(m, str) else m).to_proto() for m in items]


def target_proto(target: TargetLike) -> explain_pb2.Target | None:
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError("target must be a class index, a label or a Target, not a bool")
    if isinstance(target, int):
        return Target(class_index=target).to_proto()
    if isinstance(target, str):
        return Target(label=target).to_proto()
    return target.to_proto()


def baseline_proto(baseline: BaselineLike) -> explain_pb2.Baseline | None:
    if baseline is None:
        return None
    if isinstance(baseline, str):
        return Baseline(kind=baseline).to_proto()  # type: ignore[arg-type]
    if isinstance(baseline, Baseline):
        return baseline.to_proto()
    return Baseline(kind="custom", custom=baseline).to_proto()


def state_proto(state: StateLike) -> state_pb2.StateOptions | None:
    if state is None or state is False:
        return None
    if state is True:
        return state_pb2.StateOptions(enabled=True)
    if isinstance(state, StateOptions):
        return state.to_proto()
    if isinstance(state, str):
        return StateOptions([state]).to_proto()
    return StateOptions(list(state)).to_proto()
