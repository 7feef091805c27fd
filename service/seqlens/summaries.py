"""State summaries of the hidden state (per layer and direction)."""

from __future__ import annotations

from .schema import ModelConfig

SUMMARIES: tuple[str, ...] = ()


def available_summaries(config: ModelConfig) -> list[str]:
    return list(SUMMARIES)
