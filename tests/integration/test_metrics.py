"""Prometheus metrics and request ids through a real server: the /metrics page (on its own port)
parses with prometheus_client's parser, has the DESIGN.md names and labels, and its counters
match the calls made; x-request-id is echoed back and tags the JSON log lines of the call."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from seqlens.logs import JsonFormatter
from seqlens_client._proto.seqlens.v1 import models_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny

# name -> (type, label names): DESIGN.md, "Metrics"
DESIGNED = {
    "seqlens_request_duration_seconds": ("histogram", {"rpc", "model", "code"}),
    "seqlens_requests": ("counter", {"rpc", "model", "code"}),
    "seqlens_inflight_requests": ("gauge", {"rpc"}),
    "seqlens_stage_duration_seconds": ("histogram", {"model", "stage"}),
    "seqlens_batch_size": ("histogram", {"model"}),
    "seqlens_attribution_relative_delta": ("histogram", {"model", "method"}),
    "seqlens_unconverged_attributions": ("counter", {"model", "method"}),
    "seqlens_model_ready": ("gauge", {"model", "version"}),
    "seqlens_model_load_seconds": ("gauge", {"model"}),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "words", seed=1)
    export_tiny(root, "series", seed=2, tokens=False, cell="gru")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.yaml").write_text("task: nonsense\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, poll_interval_s=0) as srv:
        yield srv


def _scrape(server: ServerThread) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, object], family: str, sample: str, **labels: str) -> float:
    found = [s for s in families[family].samples  # type: ignore[attr-defined]
             if s.name == sample and s.labels == labels]
    return float(found[0].value) if found else 0.0


def _words(n: int, seed: int) -> list[types_pb2.SequenceInput]:
    rng = np.random.default_rng(seed)
    return [types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(
        ids=rng.integers(0, len(VOCAB), size=int(rng.integers(1, 9))).tolist())) for _ in range(n)]


def test_metrics_page_has_the_designed_families_and_counts_the_calls(server: ServerThread) -> None:
    before = _scrape(server)
    ok_calls, seqs_per_call = 7, 3
    with grpc.insecure_channel(server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        for i in range(ok_calls):
            stub.Predict(predict_pb2.PredictRequest(model_name="words", inputs=_words(seqs_per_call, i)), timeout=10)
        bad = predict_pb2.PredictRequest(model_name="words", inputs=[
            types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[len(VOCAB) + 5]))])
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(bad, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_pb2.PredictRequest(model_name="no-such-model", inputs=_words(1, 0)), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stub.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    after = _scrape(server)

    for name, (kind, labels) in DESIGNED.items():
        assert name in after, name
        assert after[name].type == kind, name  # type: ignore[attr-defined]
        for s in after[name].samples:  # type: ignore[attr-defined]
            assert set(s.labels) - {"le"} == labels, (name, s.labels)

    def delta(family: str, sample: str, **labels: str) -> float:
        return _value(after, family, sample, **labels) - _value(before, family, sample, **labels)

    assert delta("seqlens_requests", "seqlens_requests_total", rpc="Predict", model="words", code="OK") == ok_calls
    assert delta("seqlens_requests", "seqlens_requests_total", rpc="Predict", model="words",
                 code="INVALID_ARGUMENT") == 2
    # unknown model names never become label values
    assert delta("seqlens_requests", "seqlens_requests_total", rpc="Predict", model="unknown",
                 code="NOT_FOUND") == 1
    assert delta("seqlens_requests", "seqlens_requests_total", rpc="ListModels", model="", code="OK") == 1
    assert delta("seqlens_request_duration_seconds", "seqlens_request_duration_seconds_count", rpc="Predict",
                 model="words", code="OK") == ok_calls
    assert _value(after, "seqlens_inflight_requests", "seqlens_inflight_requests", rpc="Predict") == 0
    assert delta("seqlens_batch_size", "seqlens_batch_size_sum", model="words") == ok_calls * seqs_per_call
    assert 1 <= delta("seqlens_batch_size", "seqlens_batch_size_count", model="words") <= ok_calls * seqs_per_call
    for stage in ("tokenize", "queue", "onnx"):
        assert delta("seqlens_stage_duration_seconds", "seqlens_stage_duration_seconds_count",
                     model="words", stage=stage) >= ok_calls, stage
    assert _value(after, "seqlens_model_ready", "seqlens_model_ready", model="words", version="1") == 1
    assert _value(after, "seqlens_model_ready", "seqlens_model_ready", model="series", version="1") == 1
    assert _value(after, "seqlens_model_ready", "seqlens_model_ready", model="broken", version="1") == 0
    assert _value(after, "seqlens_model_load_seconds", "seqlens_model_load_seconds", model="words") > 0
    # process metrics
    assert _value(after, "process_cpu_seconds", "process_cpu_seconds_total") > 0
    assert _value(after, "process_resident_memory_bytes", "process_resident_memory_bytes") > 0
    assert "python_gc_objects_collected" in after


def test_request_id_is_echoed_and_tags_the_log_lines(server: ServerThread) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("seqlens")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
            ok = predict_pb2.PredictRequest(model_name="words", inputs=_words(1, 0))
            _, call = stub.Predict.with_call(ok, metadata=(("x-request-id", "req-ok-1"),), timeout=10)
            assert dict(call.trailing_metadata())["x-request-id"] == "req-ok-1"
            _, call = stub.Predict.with_call(ok, timeout=10)
            assert re.fullmatch(r"[0-9a-f]{32}", dict(call.trailing_metadata())["x-request-id"])
            bad = predict_pb2.PredictRequest(model_name="words", inputs=[])
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(bad, metadata=(("x-request-id", "req-bad-2"),), timeout=10)
            err: grpc.Call = info.value  # type: ignore[assignment]
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert dict(err.trailing_metadata())["x-request-id"] == "req-bad-2"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if line.get("request_id") == "req-bad-2"]
    assert failed and failed[0]["code"] == "INVALID_ARGUMENT" and failed[0]["rpc"] == "Predict"
    assert {"ts", "level", "logger", "msg"} <= set(failed[0])
    assert not [line for line in lines if line.get("request_id") == "req-ok-1"]  # OK calls log at DEBUG only

