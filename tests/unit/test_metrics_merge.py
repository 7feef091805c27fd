"""The workers' /metrics merge into one view; CPU counting honours cgroup quotas."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from seqlens.cpus import available_cpus, cgroup_cpu_quota
from seqlens.metrics_merge import merge


def _process(calls: int, ready: int, inflight: int) -> str:
    r = CollectorRegistry()
    Counter("seqlens_requests", "RPCs answered", ["rpc"], registry=r).labels("ModelInfer").inc(calls)
    Gauge("seqlens_model_ready", "ready", ["model"], registry=r).labels("words").set(ready)
    Gauge("seqlens_inflight_requests", "in progress", ["rpc"], registry=r).labels("ModelInfer").set(inflight)
    h = Histogram("seqlens_batch_size", "batch", ["model"], buckets=(1, 8), registry=r)
    for _ in range(calls):
        h.labels("words").observe(4)
    return generate_latest(r).decode()


def _samples(texts: list[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in merge(texts) for s in fam.samples}


def test_counters_and_histograms_add_up_gauges_follow_their_meaning() -> None:
    got = _samples([_process(3, 1, 2), _process(5, 0, 1)])
    assert got[("seqlens_requests_total", (("rpc", "ModelInfer"),))] == 8
    assert got[("seqlens_batch_size_count", (("model", "words"),))] == 8
    assert got[("seqlens_batch_size_bucket", (("le", "8.0"), ("model", "words")))] == 8
    assert got[("seqlens_batch_size_bucket", (("le", "1.0"), ("model", "words")))] == 0
    assert got[("seqlens_inflight_requests", (("rpc", "ModelInfer"),))] == 3  # in flight anywhere: summed
    assert got[("seqlens_model_ready", (("model", "words"),))] == 0  # ready only when ready everywhere


def test_cgroup_quota_caps_the_cpu_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) == 0.5 and available_cpus(v1) == 1
