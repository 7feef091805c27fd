"""The SDK against real servers (test_sdk_stream.py and test_sdk_channel.py use scripted ones):
explain_iter yields as items finish, and round-robin spreads calls over two real replicas, as
each replica's own request counter shows."""

from __future__ import annotations

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
