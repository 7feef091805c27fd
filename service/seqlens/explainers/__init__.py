"""Attribution methods, one per module, over a shared gradient core (``gradients``, torch) and a
shared perturbation core (``perturbation``, ONNX Runtime).

``plan(options, context)`` checks a method's options and returns a plan that knows its
work and runs on a ``Problem`` (one sequence, its target and baseline).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidInput
from . import (
    feature_ablation,
    gradient_shap,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    saliency,
    shapley_sampling,
    smoothgrad,
)
from .options import MethodOptions, Plan, PlanContext

PLANNERS: dict[str, Callable[[MethodOptions, PlanContext], Plan]] = {
    integrated_gradients.NAME: integrated_gradients.plan,
    saliency.NAME: saliency.plan,
    input_x_gradient.NAME: input_x_gradient.plan,
    gradient_shap.NAME: gradient_shap.plan,
    smoothgrad.NAME: smoothgrad.plan,
    occlusion.NAME: occlusion.plan,
    feature_ablation.NAME: feature_ablation.plan,
    shapley_sampling.NAME: shapley_sampling.plan,
}
DEFAULT_METHOD = integrated_gradients.NAME


def available_methods() -> list[str]:
    """Every method applies to every model (built-in family or custom graph, tokens or features):
    what differs by model is which options apply, checked when a method is planned."""
    return list(PLANNERS)


def plan_method(options: MethodOptions, context: PlanContext) -> Plan:
    planner = PLANNERS.get(options.name)
    if planner is None:
        raise InvalidInput(f"unknown attribution method {options.name!r}; available: {', '.join(PLANNERS)}")
    return planner(options, context)
