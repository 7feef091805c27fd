"""Dynamic batching in front of ONNX Runtime.

Sequences from concurrent requests are gathered for up to ``max_delay`` (or until
``max_batch``), padded together and run as one ONNX Runtime call in a worker thread.
The model families handle padding exactly, so each sequence gets its unbatched answer.
A full queue sheds load at once instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .errors import ResourceExhausted
from .inputs import pad_batch
from .runtimes.onnx import OnnxRuntime


@dataclass
class _Item:
    values: np.ndarray  # [T] or [T,F]
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float, float], None]  # (batch size, queue seconds, run seconds)


class DynamicBatcher:
    def __init__(self, runtime: OnnxRuntime, executor: Executor, *, per_step: bool, max_batch: int,
                 max_delay_s: float, max_queue: int, max_concurrent: int = 2,
                 observer: BatchObserver | None = None) -> None:
        self._runtime = runtime
        self._executor = executor
        self._per_step = per_step
        self.max_batch = max_batch
        self._max_delay = max_delay_s
        self.max_queue = max_queue
        self._observer = observer
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrent)
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def _ensure_started(self) -> asyncio.Queue[_Item]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect())
        return self._queue

    async def run(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for each sequence: [C], [T_i,C] (per-step) or [H]."""
        queue = self._ensure_started()
        if self._pending + len(seqs) > self.max_queue:
            raise ResourceExhausted(
                f"prediction queue is full ({self._pending} sequences waiting, batch_max_queue={self.max_queue});"
                " retry with backoff")
        loop = asyncio.get_running_loop()
        items = [_Item(s, loop.create_future()) for s in seqs]
        self._pending += len(items)
        for item in items:
            queue.put_nowait(item)
        try:
            return list(await asyncio.gather(*(i.future for i in items)))
        finally:
            for item in items:
                if not item.future.done():
                    item.future.cancel()  # caller gone: the collector skips it

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            deadline = time.perf_counter() + self._max_delay
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    while len(batch) < self.max_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = []
            for item in batch:
                if item.future.cancelled():
                    self._pending -= 1
                else:
                    live.append(item)
            if live:
                await self._slots.acquire()
                asyncio.get_running_loop().create_task(self._run_batch(live))

    async def _run_batch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            inputs, lengths = pad_batch([i.values for i in batch])
            out = await loop.run_in_executor(self._executor, self._runtime.run, inputs, lengths)
        except Exception as exc:  # deliver the failure to every caller in the batch
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self._pending -= len(batch)
            self._slots.release()
        if self._observer is not None:
            queued = started - min(i.enqueued for i in batch)
            self._observer(len(batch), queued, time.perf_counter() - started)
        for k, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(out[k, : int(lengths[k])] if self._per_step else out[k])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
