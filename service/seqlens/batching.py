"""Dynamic batching in front of ONNX Runtime, one batcher per loaded model version.

Sequences from concurrent requests wait in one FIFO queue. Whenever a worker is free, the
batcher takes up to ``max_batch`` queued sequences (optionally waiting up to ``max_delay``
for more), sorts them by length, splits them into sub-batches where padding would cost more
than an extra run (``plan_buckets``), pads each and runs them in the prediction executor. The
model families handle padding exactly, so every sequence gets its unbatched answer.

Batches form by themselves under load: while the workers are busy, new sequences queue up
and the next free worker takes them all at once. So ``max_delay`` can stay 0 (no added
latency at low load) without losing throughput at high load.

The batcher never blocks the event loop and owns no task: it is driven by callbacks
(enqueue, batch done, delay timer), so an idle batcher is a plain object that goes away
with its model version. A full queue sheds load at once (``ResourceExhausted``), and a
caller that goes away (cancelled, deadline passed) takes its queued sequences with it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .errors import ResourceExhausted, shutting_down
from .inputs import pad_batch

Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (inputs [B,T(,F)], lengths [B]) -> outputs [B,...]
# (sequences in the batch, seconds each request in it waited in the queue, seconds the runs took)
BatchObserver = Callable[[int, list[float], float], None]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int  # most sequences per collected batch
    max_delay_s: float  # longest a queued sequence waits for a fuller batch while a worker is free
    max_queue: int  # queued sequences before new requests are refused
    max_concurrent: int  # batches running at once (the prediction workers)
    bucket_overhead_steps: int  # padded timesteps one extra ONNX Runtime call is worth; 0 = never split


def plan_buckets(lengths: Sequence[int], overhead_steps: int) -> list[list[int]]:
    """Group sequence indices into sub-batches (shortest first) that limit padding.

    Walking the sequences by increasing length, sequence j (length t) opens a new sub-batch when
    adding it would pad the c sequences already in the current one (longest T) by more than one
    extra ONNX Runtime call is worth: ``c * (t - T) > overhead_steps``. Each split therefore
    saves more than it costs, so the plan never costs more than one padded batch
    (sum of count x longest, plus ``overhead_steps`` per extra call). O(n log n).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if overhead_steps <= 0:
        return [order] if order else []
    buckets: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        t = lengths[i]
        if current and len(current) * (t - longest) > overhead_steps:
            buckets.append(current)
            current = []
        current.append(i)
        longest = t
    if current:
        buckets.append(current)
    return buckets


_NO_OUTPUT = np.empty(0, dtype=np.float32)  # placeholder until a batch fills the slot


class _Request:
    """One caller's sequences; its future resolves when the last of them has an output."""

    __slots__ = ("enqueued", "future", "outputs", "queued", "remaining", "seqs")

    # Items are sequences [T(,F)] here; subclasses that override ``_compute`` batch other
    # items through the same queue (stateful chunks: streaming.ChunkBatcher).
    def __init__(self, seqs: list[Any], future: asyncio.Future[list[Any]], now: float) -> None:
        self.seqs = seqs
        self.future = future
        self.outputs: list[Any] = [_NO_OUTPUT] * len(seqs)
        self.remaining = len(seqs)  # sequences without an output yet
        self.queued = len(seqs)  # sequences still in the queue (not taken by a batch)
        self.enqueued = now


class DynamicBatcher:
    """Batches ``forward`` calls of concurrent callers; composed around the runtime, not in it."""

    def __init__(self, name: str, forward: Forward, executor: Executor, *, per_step: bool,
                 policy: BatchPolicy, observer: BatchObserver | None = None) -> None:
        self.name = name
        self.policy = policy
        self._forward = forward
        self._executor = executor
        self._per_step = per_step
        self._observer = observer
        self._queue: deque[tuple[_Request, int]] = deque()  # FIFO of (request, sequence index)
        self._pending = 0  # live sequences in the queue
        self._running = 0  # batches in the executor
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Sequences waiting for a worker."""
        return self._pending

    @property
    def running(self) -> int:
        """Batches being computed now."""
        return self._running

    async def run_items(self, items: list[Any]) -> list[Any]:
        """Queue ``items`` (whatever an overridden ``_compute`` takes) and return its outputs."""
        return await self.run(cast(list[np.ndarray], items))

    async def run(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for each sequence ([T_i] or [T_i,F] in): [C], [T_i,C] (per-step) or [H]."""
        self.admit(len(seqs))
        loop = asyncio.get_running_loop()
        request = _Request(seqs, loop.create_future(), loop.time())
        self._queue.extend((request, i) for i in range(len(seqs)))
        self._pending += len(seqs)
        self._dispatch()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._forget(request)  # the caller is gone: its queued sequences are dropped
            raise

    def admit(self, n: int) -> None:
        """Raise unless ``n`` more sequences fit in the queue now. Callers check before costly
        preparation (tokenizing) too, so that shedding load stays cheap; ``run`` checks again."""
        if self._closed:
            raise shutting_down(self.name)
        limit = self.policy.max_queue
        if self._pending + n > limit:
            raise ResourceExhausted(
                f"prediction queue of model {self.name!r} is full: {self._pending} sequences waiting, "
                f"{n} more would pass batch_max_queue={limit}; retry with backoff")

    def close(self) -> None:
        """Refuse new work and fail what is still queued; running batches still deliver."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            request, _ = self._queue.popleft()
            self._fail(request, shutting_down(self.name))

    # --- scheduling (always on the event loop) ------------------------------------------------
    def _forget(self, request: _Request) -> None:
        self._pending -= request.queued
        request.queued = 0

    def _fail(self, request: _Request, exc: BaseException) -> None:
        self._forget(request)
        if not request.future.done():
            request.future.set_exception(exc)

    def _oldest_live(self) -> _Request | None:
        """The request at the head of the queue, dropping dead entries in front of it."""
        while self._queue:
            request = self._queue[0][0]
            if not request.future.done():
                return request
            self._queue.popleft()
        return None

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _dispatch(self) -> None:
        policy = self.policy
        loop = asyncio.get_running_loop()
        while self._running < policy.max_concurrent and self._pending > 0:
            oldest = self._oldest_live()
            if oldest is None:
                break
            if policy.max_delay_s > 0 and self._pending < policy.max_batch:
                wait_until = oldest.enqueued + policy.max_delay_s
                if wait_until > loop.time():
                    if self._timer is None:
                        self._timer = loop.call_at(wait_until, self._on_timer)
                    return
            batch = self._take(policy.max_batch)
            if batch:
                self._submit(loop, batch)

    def _take(self, limit: int) -> list[tuple[_Request, int]]:
        batch: list[tuple[_Request, int]] = []
        while self._queue and len(batch) < limit:
            request, index = self._queue.popleft()
            if request.future.done():
                continue  # cancelled or failed: already subtracted from _pending
            request.queued -= 1
            self._pending -= 1
            batch.append((request, index))
        return batch

    def _submit(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Request, int]]) -> None:
        started = loop.time()
        seqs = [request.seqs[index] for request, index in batch]
        try:
            job = loop.run_in_executor(self._executor, self._compute, seqs)
        except RuntimeError:  # executor shut down: the server is stopping
            for request, _ in batch:
                self._fail(request, shutting_down(self.name))
            return
        self._running += 1
        job.add_done_callback(lambda done: self._deliver(batch, done, started))

    def _deliver(self, batch: list[tuple[_Request, int]], done: asyncio.Future[tuple[list[Any], float]],
                 started: float) -> None:
        self._running -= 1
        try:
            outputs, ran = done.result()
        except BaseException as exc:  # noqa: BLE001 - every caller in the batch gets the failure
            for request, _ in batch:
                self._fail(request, exc if isinstance(exc, Exception) else RuntimeError("batch cancelled"))
        else:
            for (request, index), out in zip(batch, outputs, strict=True):
                request.outputs[index] = out
                request.remaining -= 1
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result(request.outputs)
            if self._observer is not None:
                waits = [started - r.enqueued for r in {id(r): r for r, _ in batch}.values()]
                self._observer(len(batch), waits, ran)
        self._dispatch()

    # --- the work (in the executor) -----------------------------------------------------------
    def _compute(self, seqs: list[Any]) -> tuple[list[Any], float]:
        """Runs in a prediction worker: pad each sub-batch, run it, cut every row to its length."""
        t0 = time.perf_counter()
        outputs: list[np.ndarray] = [_NO_OUTPUT] * len(seqs)
        for bucket in plan_buckets([s.shape[0] for s in seqs], self.policy.bucket_overhead_steps):
            inputs, lengths = pad_batch([seqs[i] for i in bucket])  # [b,T(,F)], [b]
            out = self._forward(inputs, lengths)  # [b,C], [b,T,C] or [b,H]
            for k, i in enumerate(bucket):
                outputs[i] = out[k, : int(lengths[k])] if self._per_step else out[k]
        return outputs, time.perf_counter() - t0
