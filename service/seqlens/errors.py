"""Domain errors raised by the core; the gRPC layer maps each to one status code.

No gRPC import here: the dataplane, registry and runtimes know nothing of transport.
"""

from __future__ import annotations


class SeqlensError(Exception):
    """Base class. ``message`` is safe to show to callers."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SeqlensError):
    """The request is malformed: bad shape, dtype, value, option or an exceeded length limit."""


class ModelNotFound(SeqlensError):
    """No such model or version in the repository."""


class ModelUnavailable(SeqlensError):
    """The model exists but no version of it is READY, or the server is draining."""


class ResourceExhausted(SeqlensError):
    """A work limit or a queue is full; the message names the limit."""


class DeadlineExceeded(SeqlensError):
    """The caller's deadline passed before the work finished."""


class FailedPrecondition(SeqlensError):
    """The request is well formed but the server's state refuses it (an ended or evicted
    sequence, a state from another model version, a model that cannot stream)."""


class SequenceNotFound(SeqlensError):
    """No live sequence has this id (never started, forgotten, or the server restarted)."""


class ModelConfigError(SeqlensError):
    """A model version on disk is invalid (config, weights, graph); the version is not served."""


def shutting_down(model: str | None = None) -> ModelUnavailable:
    """The refusal of work while the server drains; clients retry on another replica."""
    prefix = f"model {model!r}: " if model else ""
    return ModelUnavailable(f"{prefix}server is shutting down; retry on another replica")
