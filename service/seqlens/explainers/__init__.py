"""Attribution methods, one per module, over a shared gradient / perturbation core."""

from __future__ import annotations

from ..schema import ModelConfig

# name -> applies to (config) ; filled as methods are implemented
GRADIENT_METHODS: tuple[str, ...] = ()
PERTURBATION_METHODS: tuple[str, ...] = ()


def available_methods(config: ModelConfig) -> list[str]:
    return [*GRADIENT_METHODS, *PERTURBATION_METHODS]
