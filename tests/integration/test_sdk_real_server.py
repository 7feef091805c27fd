"""The SDK against real servers (test_sdk_stream.py and test_sdk_channel.py use scripted ones):
explain_iter yields as items finish, round-robin spreads calls over two real replicas, as each
replica's own request counter shows, and calls refused by a really draining replica are retried
on the other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from seqlens_client import Client, Method

from tests.factories import VOCAB, export_tiny


def _requests(srv: Any, rpc: str) -> float:
    return srv.server.metrics.registry.get_sample_value(
        "seqlens_requests_total", {"rpc": rpc, "model": "", "code": "OK"}) or 0.0


def test_explain_iter_yields_as_items_finish(tmp_path: Path, start_server: Any) -> None:
    export_tiny(tmp_path / "repo", "m", seed=1, max_length=1024)
    srv = start_server(tmp_path / "repo", explain_workers=2, max_steps=100_000, max_explain_work=100_000_000)
    long_item = [2 + i % (len(VOCAB) - 2) for i in range(1000)]
    short_item = [2, 3]
    method = Method("smoothgrad", n_samples=400, seed=1)  # work grows with the length: ~500x apart
    with Client(srv.target, timeout=600) as client:
        order = [index for index, result in client.explain_iter("m", [long_item, short_item], method, concurrency=2)]
    assert order == [1, 0]  # the short item, sent second, came back first


def test_round_robin_spreads_calls_over_two_real_replicas(tmp_path: Path, start_server: Any) -> None:
    export_tiny(tmp_path / "repo", "m", seed=1)
    a = start_server(tmp_path / "repo")
    b = start_server(tmp_path / "repo")
    before = (_requests(a, "ListModels"), _requests(b, "ListModels"))
    with Client(f"ipv4:{a.target},{b.target}", timeout=60) as client:
        client.wait_ready(60)
        for _ in range(20):
            assert client.list_models()[0].name == "m"
    got = (_requests(a, "ListModels") - before[0], _requests(b, "ListModels") - before[1])
    assert sum(got) == 20 and min(got) >= 5, got


def test_calls_refused_by_a_draining_replica_are_retried_on_the_other(tmp_path: Path, start_server: Any) -> None:
    """A real drain on replica A refuses new calls (UNAVAILABLE, "retry on another replica");
    the SDK's retries land every call on B."""
    import asyncio

    from seqlens_client import RetryPolicy

    export_tiny(tmp_path / "repo", "m", seed=1)
    # A's drain holds its listener open until no call has arrived for drain_quiet_s
    a = start_server(tmp_path / "repo", drain_quiet_s=15.0, drain_grace_s=60.0)
    b = start_server(tmp_path / "repo")
    with Client(a.target, timeout=60) as only_a:
        only_a.list_models()  # a call has arrived: the drain waits for quiet from here
    with Client(f"ipv4:{a.target},{b.target}", timeout=60,
                retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.01)) as client:
        client.wait_ready(60)
        before_b = _requests(b, "ListModels")
        drain = asyncio.run_coroutine_threadsafe(a.server.drain(), a.loop)
        while not a.server.dataplane.draining:
            time.sleep(0.005)
        names = [client.list_models()[0].name for _ in range(10)]
    assert names == ["m"] * 10
    assert _requests(b, "ListModels") - before_b == 10  # every call was answered by B, none lost
    refused = a.server.metrics.registry.get_sample_value(
        "seqlens_requests_total", {"rpc": "ListModels", "model": "", "code": "UNAVAILABLE"}) or 0.0
    assert refused >= 1  # round robin did pick A: its refusals were retried on B
    drain.result(120)
