"""DynamicBatcher on real ONNX Runtime sessions of tiny models: each sequence gets exactly its
unbatched answer (oracle: in-process ONNX Runtime on the sequence alone), the queue sheds load,
cancelled callers leave the queue, and length buckets never cost more than one padded batch."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqlens.batching import BatchPolicy, DynamicBatcher, plan_buckets
from seqlens.errors import ModelUnavailable, ResourceExhausted
from seqlens.export import export_onnx_bytes
from seqlens.runtimes.onnx import OnnxRuntime

from tests.factories import random_inputs, tiny_model

TIMEOUT = 10.0  # no test waits longer than this on anything


def _runtime(tmp_path: Path, **spec: object) -> tuple[OnnxRuntime, bool]:
    module = tiny_model(seed=3, **spec)  # type: ignore[arg-type]
    path = tmp_path / f"m{abs(hash(tuple(sorted(spec.items()))))}.onnx"
    path.write_bytes(export_onnx_bytes(module))
    return OnnxRuntime(path), module.config.architecture.head == "per_step"


def _sequences(n: int, t_max: int, seed: int, **spec: object) -> list[np.ndarray]:
    module = tiny_model(seed=3, **spec)  # type: ignore[arg-type]
    x, lengths = random_inputs(module, n, t_max, np.random.default_rng(seed))
    return [x[i, : int(lengths[i])] for i in range(n)]


def _alone(rt: OnnxRuntime, seq: np.ndarray) -> np.ndarray:
    return rt.run(seq[None], np.array([seq.shape[0]], dtype=np.int64))[0]  # [C], [T,C] or [H]


def _policy(**kw: float) -> BatchPolicy:
    base: dict[str, float] = {"max_batch": 64, "max_delay_s": 0.0, "max_queue": 1024, "max_concurrent": 2,
                              "bucket_overhead_steps": 32}
    base.update(kw)
    return BatchPolicy(**base)  # type: ignore[arg-type]


class Gate:
    """A forward that waits until opened: keeps the workers busy so the queue can be observed."""

    def __init__(self, forward: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self._forward = forward
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)
        self.batches: list[list[int]] = []  # lengths of every sub-batch run

    def __call__(self, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self.batches.append([int(n) for n in lengths])
        self.entered.release()
        assert self.opened.wait(TIMEOUT)
        return self._forward(inputs, lengths)


async def _entered(gate: Gate) -> None:
    assert await asyncio.to_thread(gate.entered.acquire, True, TIMEOUT)


# --- length buckets ------------------------------------------------------------------------------
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=80), overhead=st.integers(0, 500))
def test_buckets_partition_the_batch_and_never_cost_more(lengths: list[int], overhead: int) -> None:
    buckets = plan_buckets(lengths, overhead)
    flat = [i for b in buckets for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in buckets:
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    cost = sum(len(b) * lengths[b[-1]] for b in buckets) + overhead * (len(buckets) - 1)
    assert cost <= len(lengths) * max(lengths)
    if overhead == 0:
        assert len(buckets) == 1


def test_buckets_split_long_from_short() -> None:
    lengths = [200, 3, 190, 5, 4, 2, 210, 6]
    buckets = plan_buckets(lengths, 32)
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[2, 3, 4, 5, 6], [190, 200, 210]]


# --- exact answers ---------------------------------------------------------------------------------
families = st.fixed_dictionaries({
    "cell": st.sampled_from(["lstm", "gru", "rnn_tanh"]),
    "task": st.sampled_from(["classification", "tagging", "forecasting"]),
    "tokens": st.booleans(),
    "bidirectional": st.booleans(),
    "layers": st.integers(1, 2),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=families, seed=st.integers(0, 2**16), max_batch=st.integers(1, 9), overhead=st.sampled_from([0, 4, 64]))
def test_concurrent_mixed_lengths_get_their_unbatched_answers(
        tmp_path: Path, spec: dict[str, object], seed: int, max_batch: int, overhead: int) -> None:
    rt, per_step = _runtime(tmp_path, **spec)
    seqs = _sequences(24, 17, seed, **spec)
    sizes: list[int] = []

    async def main() -> list[list[np.ndarray]]:
        with ThreadPoolExecutor(2) as pool:
            batcher = DynamicBatcher("m", rt.run, pool, per_step=per_step,
                                     policy=_policy(max_batch=max_batch, bucket_overhead_steps=overhead),
                                     observer=lambda n, _w, _r: sizes.append(n))
            # requests of 1-3 sequences each, all in flight together
            groups = [seqs[i: i + 1 + i % 3] for i in range(0, len(seqs), 3)]
            return await asyncio.wait_for(asyncio.gather(*(batcher.run(g) for g in groups)), TIMEOUT)

    results = asyncio.run(main())
    got = [out for group in results for out in group]
    want = [_alone(rt, s) for i in range(0, len(seqs), 3) for s in seqs[i: i + 1 + i % 3]]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
    assert max(sizes) <= max_batch
    assert sum(sizes) == len(want)


def test_batches_form_while_workers_are_busy(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(40, 12, 0)
    gate = Gate(rt.run)
    sizes: list[int] = []

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("m", gate, pool, per_step=False,
                                     policy=_policy(max_concurrent=1, max_batch=16, bucket_overhead_steps=0),
                                     observer=lambda n, _w, _r: sizes.append(n))
            tasks = [asyncio.ensure_future(batcher.run([s])) for s in seqs]
            await _entered(gate)  # the first sequence runs alone (no delay), the rest queue up
            await asyncio.sleep(0)
            assert batcher.pending == len(seqs) - 1
            gate.opened.set()
            await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)

    asyncio.run(main())
    assert sizes == [1, 16, 16, 7]


def test_max_delay_waits_for_a_fuller_batch(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(3, 12, 1)
    sizes: list[int] = []

    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("m", rt.run, pool, per_step=False, policy=_policy(max_delay_s=0.2),
                                     observer=lambda n, _w, _r: sizes.append(n))
            t0 = time.perf_counter()
            first = asyncio.ensure_future(batcher.run([seqs[0]]))
            await asyncio.sleep(0)  # the first is queued; its timer cannot fire before the next line
            await asyncio.wait_for(asyncio.gather(first, batcher.run(seqs[1:])), TIMEOUT)
            return time.perf_counter() - t0

    took = asyncio.run(main())
    assert sizes == [3]  # one batch: the first waited for the others
    assert took >= 0.19  # it waited out max_delay (a lower bound: a busy machine only lengthens it)


# --- backpressure, cancellation, failures ------------------------------------------------------------
def test_full_queue_refuses_at_once_and_names_the_limit(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(8, 10, 2)
    gate = Gate(rt.run)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("tiny", gate, pool, per_step=False,
                                     policy=_policy(max_concurrent=1, max_queue=4))
            running = asyncio.ensure_future(batcher.run(seqs[:1]))
            await _entered(gate)
            queued = asyncio.ensure_future(batcher.run(seqs[1:5]))  # exactly fills the queue
            await asyncio.sleep(0)
            assert batcher.pending == 4
            with pytest.raises(ResourceExhausted, match=r"batch_max_queue=4") as info:
                await batcher.run(seqs[5:6])  # refused while the worker is gated: it did not wait for it
            assert "'tiny'" in info.value.message
            gate.opened.set()
            await asyncio.wait_for(asyncio.gather(running, queued), TIMEOUT)
            assert batcher.pending == 0
            assert len(await batcher.run(seqs[5:8])) == 3  # room again

    asyncio.run(main())


def test_cancelled_callers_leave_the_queue(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(6, 10, 3)
    gate = Gate(rt.run)

    async def main() -> list[np.ndarray]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("m", gate, pool, per_step=False,
                                     policy=_policy(max_concurrent=1, max_queue=5, bucket_overhead_steps=0))
            running = asyncio.ensure_future(batcher.run(seqs[:1]))
            await _entered(gate)
            doomed = asyncio.ensure_future(batcher.run(seqs[1:5]))
            await asyncio.sleep(0)
            assert batcher.pending == 4
            doomed.cancel()  # what grpc does when the deadline passes or the caller goes away
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert batcher.pending == 0  # room at once, before any worker frees up
            kept = asyncio.ensure_future(batcher.run(seqs[5:6]))
            await asyncio.sleep(0)
            gate.opened.set()
            await asyncio.wait_for(running, TIMEOUT)
            return await asyncio.wait_for(kept, TIMEOUT)

    out = asyncio.run(main())
    np.testing.assert_allclose(out[0], _alone(rt, seqs[5]), atol=1e-5)
    # the cancelled sequences never reached ONNX Runtime
    assert gate.batches == [[seqs[0].shape[0]], [seqs[5].shape[0]]]


def test_a_failing_run_fails_its_callers_and_the_batcher_goes_on(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(4, 10, 4)
    calls = []

    def flaky(inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        calls.append(len(lengths))
        if len(calls) == 1:
            raise RuntimeError("onnxruntime exploded")
        return rt.run(inputs, lengths)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("m", flaky, pool, per_step=False, policy=_policy(max_concurrent=1))
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.run(seqs[:2])
            out = await asyncio.wait_for(batcher.run(seqs[2:]), TIMEOUT)
            np.testing.assert_allclose(out[1], _alone(rt, seqs[3]), atol=1e-5)
            assert batcher.pending == 0 and batcher.running == 0

    asyncio.run(main())


def test_close_fails_queued_callers_with_unavailable(tmp_path: Path) -> None:
    rt, _ = _runtime(tmp_path)
    seqs = _sequences(3, 10, 5)
    gate = Gate(rt.run)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher("m", gate, pool, per_step=False, policy=_policy(max_concurrent=1))
            running = asyncio.ensure_future(batcher.run(seqs[:1]))
            await _entered(gate)
            queued = asyncio.ensure_future(batcher.run(seqs[1:]))
            await asyncio.sleep(0)
            batcher.close()
            with pytest.raises(ModelUnavailable, match="shutting down"):
                await queued
            with pytest.raises(ModelUnavailable):
                await batcher.run(seqs[:1])
            gate.opened.set()
            assert len(await asyncio.wait_for(running, TIMEOUT)) == 1  # a running batch still delivers

    asyncio.run(main())
