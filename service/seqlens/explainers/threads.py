"""The threads that run gradient work, and the extra lanes a lone explanation may borrow.

Every such thread flushes denormal floats to zero (``init_gradient_thread``): the flag is per
thread, and torch's own intra-op (OpenMP) threads keep whatever floating-point mode they were
created with, so seqlens keeps torch at one intra-op thread and gets parallelism from threads
it made itself. A lone explanation (no other gradient job running or waiting) splits each
chunk of gradient rows across ``GradientLanes``; under load every explanation uses one core,
so that predictions keep theirs. docs/performance.md has the measurements.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

GRADIENT_NICE = 10
MIN_ROWS_PER_LANE = 4  # fewer rows per pass are not worth a thread hop
_T = TypeVar("_T")


def init_gradient_thread() -> None:
    """Prepare the calling thread for gradient work: flush-to-zero denormals (per thread),
    cuDNN off (process-wide: eval-mode RNN backward is unsupported on cuDNN, and a
    per-call context would race between workers)."""
    torch.set_flush_denormal(True)
    torch.backends.cudnn.enabled = False
    # Predictions first: a lower scheduling priority for this thread (Linux: per-thread nice)
    # cut Predict p50 under concurrent explanations from 1.65 to 1.33 ms on 2 cores.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), GRADIENT_NICE)


def gradient_executor(workers: int, prefix: str = "seqlens-torch") -> ThreadPoolExecutor:
    """A pool of flush-to-zero, low-priority threads for gradient work."""
    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=init_gradient_thread)


class GradientLanes:
    """``extra`` helper threads, lent to an explanation while it runs alone.

    ``contended()`` says whether another gradient job runs or waits now (the explain
    runner's counters); it is asked before every chunk, so a running explanation gives
    its helpers back at its next chunk once a second one arrives.
    """

    def __init__(self, extra: int, contended: Callable[[], bool]) -> None:
        self.extra = max(0, extra)
        self._contended = contended
        self._pool = gradient_executor(self.extra, "seqlens-torch-lane") if self.extra else None
        self.splits = 0  # chunks split across lanes so far (tests and docs read it)

    def width(self) -> int:
        """Threads the next chunk may use: all lanes when uncontended, else one."""
        if self._pool is None or self._contended():
            return 1
        return 1 + self.extra

    def map(self, tasks: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run ``tasks[0]`` here and the others on the helpers; results in order."""
        futures: list[Future[_T]] = []
        try:
            for task in tasks[1:]:
                assert self._pool is not None
                futures.append(self._pool.submit(task))
        except RuntimeError:  # shut down (the server is stopping): the rest runs here
            pass
        self.splits += 1
        first = tasks[0]()
        rest = [f.result() for f in futures]
        rest += [task() for task in tasks[1 + len(futures):]]
        return [first, *rest]

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


_local = threading.local()


def current_lanes() -> GradientLanes | None:
    """The lanes lent to the gradient job on this thread (None: one thread)."""
    lanes: GradientLanes | None = getattr(_local, "lanes", None)
    return lanes


@contextlib.contextmanager
def lent(lanes: GradientLanes | None) -> Iterator[None]:
    """Within the block, gradient work on this thread may split chunks across ``lanes``."""
    before = current_lanes()
    _local.lanes = lanes
    try:
        yield
    finally:
        _local.lanes = before


def split_rows(start: int, stop: int, width: int) -> list[tuple[int, int]]:
    """[start, stop) in up to ``width`` near-equal consecutive parts of >= MIN_ROWS_PER_LANE rows."""
    n = stop - start
    parts = max(1, min(width, n // MIN_ROWS_PER_LANE))
    bounds = [start + n * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))
