"""Deadlines and cancellation for explanation work, checked between chunks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..errors import DeadlineExceeded


class Cancelled(Exception):
    """The caller went away (RPC cancelled); the work stops and its result is dropped."""


@dataclass
class WorkControl:
    """Checked by the gradient and perturbation cores before every chunk.

    ``deadline`` is a ``time.monotonic()`` instant; ``cancelled`` is set from the event
    loop when the RPC is cancelled, and read here from the worker thread.
    """

    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self, what: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled(what)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(
                f"deadline exceeded during {what}; set a longer deadline or ask for fewer steps or samples")
