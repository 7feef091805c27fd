"""StreamExplain: a client that stops reading stops the server from taking new items."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, service_pb2_grpc, state_pb2, types_pb2

from tests.factories import export_tiny


def test_unread_answers_hold_back_new_items(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "m", seed=1, hidden=128, max_length=256)
    srv = start_server(repo, explain_workers=1)
    # Large answers (~0.5 MB each: hidden states and gates) fill the HTTP/2 flow-control
    # window quickly, as a real bulk job's would; small ones would sit in transport buffers.
    ids = types_pb2.TokenIds(ids=[2 + i % 15 for i in range(200)])
    items = [explain_pb2.ExplainRequest(request_id=str(i), model_name="m",
                                        input=types_pb2.SequenceInput(token_ids=ids),
                                        methods=[explain_pb2.AttributionMethod(name="saliency")],
                                        state=state_pb2.StateOptions(enabled=True, include_hidden=True))
             for i in range(60)]

    def explained() -> float:
        value = srv.server.metrics.registry.get_sample_value(
            "seqlens_stage_duration_seconds_count", {"model": "m", "stage": "gradient"})
        return value or 0.0

    with grpc.insecure_channel(srv.target) as channel:
        stream = service_pb2_grpc.SequenceExplainerStub(channel).StreamExplain(iter(items), timeout=60)
        first = next(stream)
        assert first.request_id == "0" and not first.HasField("error")
        # The client reads nothing more; all 60 requests have been sent. Wait until the server
        # has stopped (no item explained for 20 polls in a row): a server without backpressure
        # would only stop at 60, however slow the machine, so this cannot pass by slowness.
        stalled, quiet, end = explained(), 0, time.monotonic() + 120
        while quiet < 20:
            assert time.monotonic() < end, "the server never stopped taking items"
            time.sleep(0.1)
            now = explained()
            quiet, stalled = (quiet + 1, stalled) if now == stalled else (0, now)
        assert 2 <= stalled <= 20, f"{stalled} items explained while the client was not reading"
        rest = list(stream)  # reading again lets the stream finish every item
    assert sorted(int(a.request_id) for a in [first, *rest]) == list(range(60))
    assert explained() == 60
