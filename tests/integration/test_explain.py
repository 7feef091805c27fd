"""Explain and StreamExplain over a real in-process server on loopback: the same numbers as the
in-process explainer, request ids echoed, per-item errors, statuses, limits, deadlines,
cancellation and metrics."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from seqlens import load_model
from seqlens.config import Settings
from seqlens.explain import ExplainRequest, explain
from seqlens.explainers.options import MethodOptions
from seqlens.explainers.targets import TargetSpec
from seqlens.inputs import SequenceInput
from seqlens_client._proto.seqlens.v1 import explain_pb2, models_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import export_tiny

Stub = service_pb2_grpc.SequenceExplainerServiceStub
MODELS = {
    "words": {"cell": "lstm", "task": "classification", "tokens": True},
    "tagger": {"cell": "gru", "task": "tagging", "tokens": True, "bidirectional": True},
    "series": {"cell": "gru", "task": "forecasting", "tokens": False, "layers": 2},
}
SERVER_SETTINGS = {"max_steps": 100_000, "max_explain_work": 1_000_000, "explain_workers": 1,
                   "explain_max_queue": 1}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-repo")
    for i, (name, spec) in enumerate(MODELS.items()):
        export_tiny(root, name, seed=20 + i, **spec)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, poll_interval_s=0, **SERVER_SETTINGS) as srv:
        yield srv


@pytest.fixture
def stub(server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.SequenceExplainerServiceStub(channel)


def _decode(t: types_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype="<f4").reshape(list(t.shape))


def _features(x: np.ndarray) -> types_pb2.SequenceInput:
    x = np.ascontiguousarray(x, dtype="<f4")
    return types_pb2.SequenceInput(features=types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=list(x.shape),
                                                             data=x.tobytes()))


SERIES = np.random.default_rng(3).normal(size=(11, 3)).astype(np.float32)
METHODS = [
    explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=32),
    explain_pb2.AttributionMethod(name="integrated_gradients", adaptive=True, tolerance=0.01),
    explain_pb2.AttributionMethod(name="saliency", abs_saliency=False),
    explain_pb2.AttributionMethod(name="input_x_gradient"),
    explain_pb2.AttributionMethod(name="gradient_shap", n_samples=6, noise_stdev=0.1, seed=3),
    explain_pb2.AttributionMethod(name="smoothgrad", n_samples=4, seed=4),
    explain_pb2.AttributionMethod(name="occlusion", window=2),
    explain_pb2.AttributionMethod(name="feature_ablation"),
    explain_pb2.AttributionMethod(name="shapley_sampling", n_samples=5, seed=5),
]
DOMAIN_METHODS = (
    MethodOptions("integrated_gradients", n_steps=32),
    MethodOptions("integrated_gradients", adaptive=True, tolerance=0.01),
    MethodOptions("saliency", abs_saliency=False),
    MethodOptions("input_x_gradient"),
    MethodOptions("gradient_shap", n_samples=6, noise_stdev=0.1, seed=3),
    MethodOptions("smoothgrad", n_samples=4, seed=4),
    MethodOptions("occlusion", window=2),
    MethodOptions("feature_ablation"),
    MethodOptions("shapley_sampling", n_samples=5, seed=5),
)


def _stage_sums(server: ServerThread, model: str) -> dict[str, float]:
    """seqlens_stage_duration_seconds_sum{model,stage} per stage, as the server exports it."""
    return {stage: server.server.metrics.registry.get_sample_value(
        "seqlens_stage_duration_seconds_sum", {"model": model, "stage": stage}) or 0.0
        for stage in ("queue", "tokenize", "onnx", "gradient", "summary", "faithfulness", "serialize")}


@pytest.mark.parametrize("name", list(MODELS))
def test_explain_over_grpc_equals_the_in_process_explainer(repo: Path, server: ServerThread, stub: Stub,
                                                           name: str) -> None:
    text = "the film was not very good , but witty"
    if MODELS[name]["tokens"]:
        wire, item = types_pb2.SequenceInput(text=text), SequenceInput(text=text)
    else:
        wire, item = _features(SERIES), SequenceInput(features=SERIES)
    observed = _stage_sums(server, name)
    called = time.perf_counter()
    resp = stub.Explain(explain_pb2.ExplainRequest(
        request_id="r1", model_name=name, input=wire, methods=METHODS, faithfulness=True,
        target=explain_pb2.Target(output_space=explain_pb2.OUTPUT_SPACE_LOGIT)))
    answered = time.perf_counter() - called
    request = ExplainRequest(name, item, methods=DOMAIN_METHODS, target=TargetSpec(), faithfulness=True)
    local = explain(load_model(repo, name), request, Settings(**SERVER_SETTINGS))
    assert resp.request_id == "r1" and resp.model_version == "1"
    assert [a.method for a in resp.attributions] == [a.method for a in local.attributions]
    for got, want in zip(resp.attributions, local.attributions, strict=True):
        scale = float(np.abs(want.scores).max())
        np.testing.assert_allclose(_decode(got.scores), want.scores, rtol=1e-5, atol=1e-6 * scale)
        if want.l2_norm is not None:
            np.testing.assert_allclose(_decode(got.l2_norm), want.l2_norm, rtol=1e-5, atol=1e-7)
        if want.feature_scores is not None:
            np.testing.assert_allclose(_decode(got.feature_scores), want.feature_scores, rtol=1e-5, atol=1e-7)
        assert got.n_steps == want.n_steps
        assert got.HasField("converged") == (want.converged is not None)  # absent for methods without a delta
        if want.convergence_delta is not None:
            assert got.converged == want.converged and got.tolerance == want.tolerance
            assert got.convergence_delta == pytest.approx(want.convergence_delta, abs=1e-6)
        assert got.target_at_input == pytest.approx(want.target_at_input, abs=1e-6)
        assert got.target_at_baseline == pytest.approx(want.target_at_baseline, abs=1e-6)
        assert want.faithfulness is not None
        np.testing.assert_allclose(got.faithfulness.comprehensiveness, want.faithfulness.comprehensiveness,
                                   atol=1e-6)
    t = resp.target
    assert (t.class_index, t.timestep, t.horizon_step) == (
        local.target.class_index, local.target.timestep, local.target.horizon_step)
    if MODELS[name]["tokens"]:
        assert [(k.text, k.start, k.end) for k in resp.tokens] == [
            (k.text, k.start, k.end) for k in local.tokens or []]
        assert all(text[k.start:k.end] == k.text for k in resp.tokens)
    stages = [s.stage for s in resp.timings]
    assert stages == ["queue", "tokenize", "onnx", "gradient", "faithfulness", "serialize"]
    # every stage did work, and the reported seconds are what the server's histogram observed
    # (serialize is observed after the answer is built) and lie within the call's duration
    assert all(s.seconds > 0 for s in resp.timings)
    now = _stage_sums(server, name)
    for s in resp.timings[:-1]:
        assert now[s.stage] - observed.get(s.stage, 0.0) == pytest.approx(s.seconds, rel=1e-9, abs=1e-12)
    assert sum(s.seconds for s in resp.timings) <= answered


def test_get_model_lists_the_methods(stub: Stub) -> None:
    info = stub.GetModel(models_pb2.GetModelRequest(name="series"))
    assert list(info.attribution_methods) == [
        "integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "smoothgrad", "occlusion",
        "feature_ablation", "shapley_sampling"]


# 3 tokens x ~400k rows: over max_explain_work=1000000 (each method alone fits).
HEAVY = [explain_pb2.AttributionMethod(name=m, n_samples=99_999)
         for m in ("gradient_shap", "smoothgrad", "shapley_sampling")]


def _words(request_id: str, *methods: explain_pb2.AttributionMethod,
           **kw: object) -> explain_pb2.ExplainRequest:
    return explain_pb2.ExplainRequest(request_id=request_id, model_name="words", methods=methods,
                                      input=types_pb2.SequenceInput(text="a good film"), **kw)


def test_stream_explain_echoes_ids_and_one_bad_item_fails_only_itself(stub: Stub) -> None:
    ig = explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=8)
    items = [
        _words("ok-1", ig),
        _words("bad-method", explain_pb2.AttributionMethod(name="nope")),
        explain_pb2.ExplainRequest(request_id="bad-model", model_name="missing", methods=[ig],
                                   input=types_pb2.SequenceInput(text="x")),
        explain_pb2.ExplainRequest(request_id="bad-tensor", model_name="series",
                                   input=types_pb2.SequenceInput(features=types_pb2.Tensor(shape=[2, 3],
                                                                                           data=b"123"))),
        _words("too-much", *HEAVY),
        _words("ok-2", ig, explain_pb2.AttributionMethod(name="occlusion", window=1)),
    ]
    answers = {r.request_id: r for r in stub.StreamExplain(iter(items))}
    assert set(answers) == {i.request_id for i in items}
    assert answers["ok-1"].error.code == 0 and len(answers["ok-1"].attributions) == 1
    assert answers["ok-2"].error.code == 0 and len(answers["ok-2"].attributions) == 2
    codes = {k: grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == v.error.code))
             for k, v in answers.items() if v.error.code}
    assert codes == {"bad-method": grpc.StatusCode.INVALID_ARGUMENT, "bad-model": grpc.StatusCode.NOT_FOUND,
                     "bad-tensor": grpc.StatusCode.INVALID_ARGUMENT,
                     "too-much": grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "unknown attribution method 'nope'" in answers["bad-method"].error.message
    assert "max_explain_work=1000000" in answers["too-much"].error.message
    np.testing.assert_array_equal(answers["ok-1"].attributions[0].scores.data,
                                  answers["ok-2"].attributions[0].scores.data)


@pytest.mark.parametrize(("request_", "code", "message"), [
    (_words("a", explain_pb2.AttributionMethod(name="nope")), grpc.StatusCode.INVALID_ARGUMENT, "unknown"),
    (_words("b", explain_pb2.AttributionMethod(name="occlusion")), grpc.StatusCode.INVALID_ARGUMENT,
     "occlusion.window is 0"),
    (_words("c", explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=100_001)),
     grpc.StatusCode.INVALID_ARGUMENT, "max_steps=100000"),
    (_words("d", explain_pb2.AttributionMethod(name="integrated_gradients", adaptive=True, tolerance=-1)),
     grpc.StatusCode.INVALID_ARGUMENT, "tolerance"),
    (_words("e", explain_pb2.AttributionMethod(name="integrated_gradients", quadrature=17)),
     grpc.StatusCode.INVALID_ARGUMENT, "methods[0].quadrature has unknown value 17"),
    (_words("f", explain_pb2.AttributionMethod(name="occlusion", window=1),
            baseline=explain_pb2.Baseline(kind=explain_pb2.BASELINE_KIND_ZEROS)),
     grpc.StatusCode.INVALID_ARGUMENT, "ZEROS"),
    (_words("g", target=explain_pb2.Target(label="nope")), grpc.StatusCode.INVALID_ARGUMENT, "target.label"),
    (_words("h", *HEAVY), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_explain_work"),
    (_words("i", explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=2000)),
     grpc.StatusCode.INVALID_ARGUMENT, "Gauss-Legendre takes at most 1024 steps"),
    (explain_pb2.ExplainRequest(model_name="nope", input=types_pb2.SequenceInput(text="x")),
     grpc.StatusCode.NOT_FOUND, "nope"),
    (explain_pb2.ExplainRequest(model_name="words"), grpc.StatusCode.INVALID_ARGUMENT, "input"),
])
def test_bad_requests_get_the_right_status(stub: Stub, request_: explain_pb2.ExplainRequest,
                                           code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Explain(request_)
    assert err.value.code() == code
    assert message in err.value.details()


def _slow(request_id: str) -> explain_pb2.ExplainRequest:
    """Many one-row chunks of tiny work: long in total, and checked between every chunk."""
    return _words(request_id, explain_pb2.AttributionMethod(name="smoothgrad", n_samples=60_000))


def _quick(stub: Stub) -> None:
    stub.Explain(_words("quick", explain_pb2.AttributionMethod(name="saliency")), timeout=60)


def _torch_runs(server: ServerThread) -> float:
    return server.server.metrics.registry.get_sample_value(
        "seqlens_model_runs_total", {"model": "words", "version": "1", "runtime": "torch"}) or 0.0


def _until(condition: Callable[[], bool]) -> None:
    """Waits for a state of the server; the timeout only turns a hang into a failure."""
    end = time.monotonic() + 300  # a hang guard only, as the other polling helpers
    while not condition():
        assert time.monotonic() < end, "condition never reached (a hang)"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def one_row_server(repo: Path) -> Iterator[ServerThread]:
    """One gradient worker, one row per chunk: a slow explanation holds the only worker."""
    with ServerThread(repo, poll_interval_s=0, gradient_chunk_elements=1, **SERVER_SETTINGS) as srv:
        yield srv


def test_deadline_cancels_work_between_chunks(one_row_server: ServerThread) -> None:
    with grpc.insecure_channel(one_row_server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        before = _torch_runs(one_row_server)
        _quick(stub)
        quick_runs = _torch_runs(one_row_server) - before
        with pytest.raises(grpc.RpcError) as err:
            stub.Explain(_slow("slow"), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        at_deadline = _torch_runs(one_row_server)
        # The only worker is free again: the slow job (60,000 one-row passes) ran at most the
        # chunk it was in (or two: client and server deadlines differ by the transit).
        _quick(stub)
        assert quick_runs <= _torch_runs(one_row_server) - at_deadline <= quick_runs + 2


def test_cancelled_call_stops_its_work_and_a_full_queue_sheds_load(one_row_server: ServerThread) -> None:
    registry = one_row_server.server.metrics.registry
    with grpc.insecure_channel(one_row_server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        before = _torch_runs(one_row_server)
        _quick(stub)
        quick_runs = _torch_runs(one_row_server) - before
        started = _torch_runs(one_row_server)
        running = stub.Explain.future(_slow("running"))
        _until(lambda: _torch_runs(one_row_server) > started)  # it holds the only worker
        waiting = stub.Explain.future(_slow("waiting"))  # explain_max_queue=1: waits for the worker
        _until(lambda: registry.get_sample_value("seqlens_inflight_requests", {"rpc": "Explain"}) == 2)
        with pytest.raises(grpc.RpcError) as err:
            stub.Explain(_slow("shed"), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "explain_max_queue=1" in err.value.details()
        waiting.cancel()
        running.cancel()
        _until(lambda: registry.get_sample_value("seqlens_inflight_requests", {"rpc": "Explain"}) == 0)
        at_cancel = _torch_runs(one_row_server)
        _quick(stub)  # the waiting job never starts, the running one stopped at its chunk
        assert quick_runs <= _torch_runs(one_row_server) - at_cancel <= quick_runs + 1


def test_stage_and_quality_metrics_are_exported(server: ServerThread, stub: Stub) -> None:
    stub.Explain(_words("m", explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=16)))
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    delta = [s for s in samples if s.name == "seqlens_attribution_relative_delta_count"
             and s.labels == {"model": "words", "method": "integrated_gradients"}]
    assert delta and delta[0].value >= 1
    stages = {s.labels["stage"] for s in samples if s.name == "seqlens_stage_duration_seconds_count"
              and s.labels.get("model") == "words"}
    assert {"queue", "tokenize", "onnx", "gradient", "serialize"} <= stages


def _counter(server: ServerThread, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and s.labels == labels)


def test_unconverged_answers_are_counted_and_said(server: ServerThread, stub: Stub) -> None:
    name, labels = "seqlens_unconverged_attributions_total", {"model": "words", "method": "integrated_gradients"}
    before = _counter(server, name, **labels)
    tight = explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=1, tolerance=1e-9)
    (att,) = stub.Explain(_words("tight", tight)).attributions
    assert att.HasField("converged") and not att.converged  # one step cannot meet 1e-9
    gap = abs(att.target_at_input - att.target_at_baseline)
    assert abs(att.convergence_delta) > 1e-9 * gap + 1e-6 and att.tolerance == 1e-9
    assert _counter(server, name, **labels) == before + 1
    (sal,) = stub.Explain(_words("sal", explain_pb2.AttributionMethod(name="saliency"))).attributions
    assert not sal.HasField("converged") and not sal.HasField("convergence_delta")
    assert _counter(server, name, **labels) == before + 1


@pytest.mark.slow
def test_ig_faithfulness_beats_a_random_ranking_on_the_trained_sentiment_model(demo_repository: Path) -> None:
    """Needs the trained demo repository (session fixture ``demo_repository`` in tests/conftest.py)."""
    loaded = load_model(demo_repository, "sentiment")
    texts = [
        "a thoroughly enjoyable film with a witty script and wonderful performances",
        "dull , lifeless and far too long ; the plot never comes together",
        "the acting is superb but the story is a tedious mess",
        "one of the most charming and heartfelt movies of the year",
        "an ugly , boring and pointless exercise in style over substance",
        "funny , smart and surprisingly moving from start to finish",
    ]
    ours, chance = [], []
    for text in texts:
        result = explain(loaded, ExplainRequest("sentiment", SequenceInput(text=text), faithfulness=True,
                                                methods=(MethodOptions("integrated_gradients", n_steps=32),)),
                         Settings())
        quality = result.attributions[0].faithfulness
        assert quality is not None
        ours.append(quality.aopc_comprehensiveness)
        chance.append(quality.random_aopc_comprehensiveness)
    assert np.mean(ours) > np.mean(chance)
