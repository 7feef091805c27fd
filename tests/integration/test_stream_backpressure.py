"""StreamExplain: a client that stops reading stops the server from taking new items."""

from __future__ import annotations

from pathlib import Path

import grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, service_pb2_grpc, state_pb2, types_pb2

from tests.factories import export_tiny


def test_unread_answers_hold_back_new_items(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "m", seed=1, hidden=128, max_length=256)
    export_tiny(repo, "probe", seed=2)
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
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        stream = stub.StreamExplain(iter(items), timeout=600)  # liveness only
        first = next(stream)
        assert first.request_id == "0" and not first.HasField("error")
        # The client reads nothing more; all 60 requests have been sent. The server has
        # stopped taking items once a probe explanation of another model runs on the only
        # worker (FIFO, behind any item waiting for it) and no item of the stream ran meanwhile,
        # twice in a row. Order of events, not time: a server without backpressure would keep
        # queueing items ahead of each probe until all 60 ran, however slow the machine.
        probe = explain_pb2.ExplainRequest(model_name="probe", input=types_pb2.SequenceInput(text="good"),
                                           methods=[explain_pb2.AttributionMethod(name="saliency")])
        stalled, quiet = explained(), 0
        while quiet < 2:
            stub.Explain(probe, timeout=600)
            now = explained()
            quiet, stalled = (quiet + 1, stalled) if now == stalled else (0, now)
        assert 2 <= stalled <= 20, f"{stalled} items explained while the client was not reading"
        rest = list(stream)  # reading again lets the stream finish every item
    assert sorted(int(a.request_id) for a in [first, *rest]) == list(range(60))
    assert explained() == 60
