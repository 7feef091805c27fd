"""The SDK against a real server over loopback: models, predictions that equal in-process ONNX
Runtime for every input form, typed errors with status and message, deadlines, tokens, and the
asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from seqlens import load_model
from seqlens_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    Explanation,
    InvalidArgument,
    Method,
    NotFound,
    SeqlensError,
    StateOptions,
    Target,
    Unauthenticated,
)

from tests.conftest import ServerThread
from tests.factories import FEATURES, VOCAB, export_tiny

MODELS: dict[str, dict[str, object]] = {
    "words": {"cell": "lstm", "task": "classification", "tokens": True},
    "series": {"cell": "gru", "task": "classification", "tokens": False, "layers": 2},
    "forecast": {"cell": "lstm", "task": "forecasting", "tokens": False},
    "tagger": {"cell": "gru", "task": "tagging", "tokens": True, "bidirectional": True},
}
TOKEN = "sdk-test-token"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sdk-repo")
    for i, (name, spec) in enumerate(MODELS.items()):
        export_tiny(root, name, seed=i, **spec)  # type: ignore[arg-type]
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, poll_interval_s=0) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, timeout=30) as c:
        yield c


def _onnx(repo: Path, name: str, seq: np.ndarray) -> np.ndarray:
    return load_model(repo, name).onnx.run(seq[None], np.array([len(seq)]))[0]


def test_list_and_get_model(client: Client) -> None:
    models = {m.name: m for m in client.list_models()}
    assert set(models) == set(MODELS)
    assert models["tagger"].task == "tagging" and models["tagger"].input_kind == "tokens"
    assert models["forecast"].default_version == "1" and models["forecast"].ready
    info = client.get_model("series")
    assert info.task == "classification" and info.labels == ["neg", "neu", "pos"]
    assert info.input.kind == "features" and info.input.feature_names == FEATURES
    assert info.architecture.cell == "gru" and info.architecture.num_layers == 2
    assert [(v.version, v.state) for v in info.versions] == [("1", "ready")] and info.ready
    assert info.limits.max_length == 64
    words = client.get_model("words")
    assert words.input.vocab_size == len(VOCAB) and words.input.tokenizer == "word"


def test_predict_features_equal_in_process_onnx(client: Client, repo: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (1, 5, 9)]
    result = client.predict("series", seqs)
    assert len(result) == 3 and result.model_name == "series" and result.model_version == "1"
    for seq, p in zip(seqs, result, strict=True):
        want = _onnx(repo, "series", seq)
        np.testing.assert_allclose(p.scores, want, rtol=1e-5, atol=1e-6)
        assert p.label_index == int(np.argmax(want)) and p.label == ["neg", "neu", "pos"][p.label_index]
        np.testing.assert_allclose(p.probabilities, np.exp(want) / np.exp(want).sum(), rtol=1e-5)  # type: ignore[arg-type]
        assert p.forecast is None
    # One [T,F] array is one sequence; a [B,T,F] array is a batch; float64 is sent as float32.
    one = client.predict("series", seqs[1].astype(np.float64))
    assert len(one) == 1
    np.testing.assert_allclose(one[0].scores, result[1].scores, rtol=1e-6)
    batch = client.predict("series", np.stack([seqs[1], seqs[1]]))
    assert len(batch) == 2


def test_predict_forecast_values(client: Client, repo: Path) -> None:
    seq = np.random.default_rng(1).normal(size=(12, 3)).astype(np.float32)
    [p] = client.predict("forecast", seq)
    assert p.forecast is not None and p.forecast.shape == (3,) and p.label is None and p.probabilities is None
    np.testing.assert_allclose(p.forecast, _onnx(repo, "forecast", seq), rtol=1e-5, atol=1e-5)


def test_predict_text_and_token_ids_agree(client: Client, repo: Path) -> None:
    text = "The film was GOOD , not dull !"
    [by_text] = client.predict("words", text)
    ids = [t.id for t in by_text.tokens]
    assert [VOCAB[i] for i in ids] == ["the", "film", "was", "good", ",", "not", "dull", "!"]  # lowercased
    assert all(text[t.start:t.end] == t.text for t in by_text.tokens)  # spans into the request text
    for form in (ids, np.array(ids), [ids]):
        [by_ids] = client.predict("words", form)  # type: ignore[arg-type]
        np.testing.assert_allclose(by_ids.scores, by_text.scores, rtol=1e-6)
    np.testing.assert_allclose(by_text.scores, _onnx(repo, "words", np.array(ids)), rtol=1e-5, atol=1e-6)


def test_predict_tagging_gives_step_labels(client: Client, repo: Path) -> None:
    [p] = client.predict("tagger", ["the plot was witty"])
    assert len(p.step_labels) == 4 and p.probabilities is not None and p.probabilities.shape == (4, 3)
    want = _onnx(repo, "tagger", np.array([t.id for t in p.tokens]))
    assert p.step_label_indices == [int(i) for i in np.argmax(want, axis=-1)]


def test_errors_are_typed_with_code_and_message(client: Client) -> None:
    with pytest.raises(NotFound) as nf:
        client.predict("nope", "text")
    assert nf.value.code == grpc.StatusCode.NOT_FOUND and "nope" in nf.value.message
    with pytest.raises(NotFound):
        client.get_model("nope")
    with pytest.raises(InvalidArgument) as bad:
        client.predict("series", np.zeros((4, 5), dtype=np.float32))  # F = 5, the model has 3
    assert "3" in bad.value.message and bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument) as long:
        client.predict("words", [2] * 65)  # max_length 64
    assert "64" in long.value.message
    with pytest.raises(InvalidArgument, match="inputs is empty"):  # caught locally, same exception type
        client.predict("words", [])
    with pytest.raises(NotFound):
        client.predict("words", "the film", version="9")
    assert client.predict("words", "the film", version="1").model_version == "1"


def test_deadline_exceeded(client: Client, server: ServerThread) -> None:
    big = np.random.default_rng(0).integers(2, len(VOCAB), size=(256, 64))  # ~0.1-0.7 s of work here
    with pytest.raises(DeadlineExceeded) as e:
        client.predict("words", big, timeout=0.005)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with Client(server.target, timeout=0.005) as hurried:  # the client default applies too
        with pytest.raises(DeadlineExceeded):
            hurried.predict("words", big)
        assert len(hurried.predict("words", big, timeout=60)) == 256  # and a per-call timeout overrides it


def test_bearer_token(repo: Path) -> None:
    with ServerThread(repo, poll_interval_s=0, auth_token=TOKEN) as srv:
        with Client(srv.target) as anonymous:
            with pytest.raises(Unauthenticated) as e:
                anonymous.list_models()
            assert "bearer" in e.value.message.lower()
        with Client(srv.target, token="wrong") as wrong, pytest.raises(Unauthenticated):
            wrong.predict("words", "the film")
        with Client(srv.target, token=TOKEN) as ok:
            assert len(ok.predict("words", ["the film", "a plot"])) == 2

        async def use_async() -> int:
            async with AsyncClient(srv.target, token=TOKEN) as c:
                return len(await c.list_models())

        assert asyncio.run(use_async()) == len(MODELS)


def test_async_client_matches_the_blocking_one(client: Client, server: ServerThread) -> None:
    seqs = [np.random.default_rng(i).normal(size=(6, 3)).astype(np.float32) for i in range(4)]
    want = client.predict("series", seqs)

    async def run() -> list[np.ndarray]:
        async with AsyncClient(server.target, timeout=30) as c:
            await c.wait_ready(10)
            assert {m.name for m in await c.list_models()} == set(MODELS)
            assert (await c.get_model("forecast")).horizon == 3
            # concurrent calls on one channel
            results = await asyncio.gather(*(c.predict("series", s) for s in seqs))
            with pytest.raises(NotFound):
                await c.predict("nope", "x")
            with pytest.raises(DeadlineExceeded):
                await c.predict("words", np.full((256, 64), 3), timeout=0.005)
            return [r[0].scores for r in results]

    for got, p in zip(asyncio.run(run()), want, strict=True):
        np.testing.assert_allclose(got, p.scores, rtol=1e-6)


def test_unreachable_server_is_unavailable_after_retries() -> None:
    with Client("127.0.0.1:1", timeout=5) as c:
        with pytest.raises(SeqlensError) as e:
            c.list_models()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


# --- explanations -------------------------------------------------------------------
TEXT = "the film was not very good , but the plot was witty !"


def test_explain_decodes_exactly_what_the_server_sent(client: Client, server: ServerThread) -> None:
    from seqlens_client._proto.seqlens.v1 import explain_pb2, service_pb2_grpc, state_pb2, types_pb2

    exp = client.explain("words", TEXT, Method("integrated_gradients", n_steps=32), target="pos",
                         state=StateOptions(include_hidden=True))
    with grpc.insecure_channel(server.target) as ch:  # the raw answer, decoded here with np.frombuffer
        raw = service_pb2_grpc.SequenceExplainerServiceStub(ch).Explain(explain_pb2.ExplainRequest(
            model_name="words", input=types_pb2.SequenceInput(text=TEXT),
            methods=[explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=32)],
            target=explain_pb2.Target(label="pos"),
            state=state_pb2.StateOptions(enabled=True, include_hidden=True)))
    [attr] = raw.attributions
    np.testing.assert_array_equal(exp.attributions["integrated_gradients"].scores,
                                  np.frombuffer(attr.scores.data, dtype="<f4"))
    assert [t.text for t in exp.tokens] == [t.text for t in raw.tokens]
    h = raw.state[0].hidden
    np.testing.assert_array_equal(exp.state.layers[0].hidden,  # type: ignore[union-attr]
                                  np.frombuffer(h.data, dtype="<f4").reshape(list(h.shape)))
    assert exp.text == TEXT and exp.labels == ["neg", "neu", "pos"]  # echoed input, labels from GetModel


def test_explain_targets_and_completeness(client: Client) -> None:
    [pred] = client.predict("words", TEXT)
    exp = client.explain("words", TEXT, [Method("integrated_gradients", n_steps=64), "saliency"], target="pos")
    assert (exp.target.label, exp.target.class_index) == ("pos", 2)
    ig = exp.attributions["integrated_gradients"]
    assert ig.scores.shape == (len(pred.tokens),) and ig.n_steps == 64 and ig.l2_norm is not None
    assert ig.target_at_input == pytest.approx(float(pred.scores[2]), abs=1e-5)  # the ONNX logit of "pos"
    # Completeness as the SDK reports it: sum(attributions) - (f(x) - f(baseline)) = delta.
    assert float(ig.scores.sum()) - (ig.target_at_input - ig.target_at_baseline) == pytest.approx(
        ig.convergence_delta, abs=1e-5)
    assert abs(ig.convergence_delta) < 1e-3 * max(1e-6, abs(ig.target_at_input - ig.target_at_baseline)) + 1e-5
    by_index = client.explain("words", TEXT, Method("integrated_gradients", n_steps=64), target=2)
    np.testing.assert_allclose(by_index.attributions["integrated_gradients"].scores, ig.scores, rtol=1e-5,
                               atol=1e-7)
    default = client.explain("words", TEXT)  # integrated gradients of the predicted class
    assert list(default.attributions) == ["integrated_gradients"]
    assert default.target.class_index == pred.label_index


def test_explain_features_with_state_and_faithfulness(client: Client, tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(20, 3)).astype(np.float32)
    exp = client.explain("forecast", x, [Method("feature_ablation", ablation="per_feature"), "integrated_gradients"],
                         target=Target(horizon_step=2), state=StateOptions(include_hidden=True), faithfulness=True)
    assert exp.target.horizon_step == 2 and exp.prediction.forecast is not None
    fa = exp.attributions["feature_ablation"]
    assert fa.feature_scores is not None and fa.feature_scores.shape == (20, 3)
    np.testing.assert_allclose(fa.feature_scores.sum(axis=1), fa.scores, rtol=1e-4, atol=1e-6)
    assert fa.target_at_input == pytest.approx(float(exp.prediction.forecast[2]), rel=1e-4, abs=1e-4)
    assert fa.faithfulness is not None and len(fa.faithfulness.comprehensiveness) == len(fa.faithfulness.top_k_percent)
    np.testing.assert_array_equal(exp.features, x)
    assert exp.feature_names == FEATURES
    [layer] = exp.state.layers  # type: ignore[union-attr]
    assert layer.hidden is not None and layer.hidden.shape == (20, 6) and layer.gate_names == ["i", "f", "g", "o"]
    assert layer.state_norm is not None
    np.testing.assert_allclose(layer.state_norm, np.linalg.norm(layer.hidden, axis=1), rtol=1e-4, atol=1e-6)
    assert {"gradient", "serialize"} <= set(exp.timings)
    page = exp.to_html(tmp_path / "f.html")
    assert page.count('class="note"') == 0 and "forecast" in exp.to_text(color=False)


def test_explain_many_equals_single_explains(client: Client) -> None:
    texts = ["the film was good", "a dull plot", "not very witty !", "the movie"]
    single = [client.explain("words", t, "saliency").attributions["saliency"].scores for t in texts]
    many = client.explain_many("words", [*texts, ""], "saliency", concurrency=2, return_errors=True)
    for got, want in zip(many[:4], single, strict=True):
        assert isinstance(got, Explanation)
        np.testing.assert_allclose(got.attributions["saliency"].scores, want, rtol=1e-6)
    assert isinstance(many[4], InvalidArgument) and "text" in many[4].message

    async def run() -> list[Explanation]:
        async with AsyncClient(client.target) as ac:
            return await ac.explain_many("words", texts, "saliency")

    for got, want in zip(asyncio.run(run()), single, strict=True):
        np.testing.assert_allclose(got.attributions["saliency"].scores, want, rtol=1e-6)


def test_explain_errors_name_the_problem(client: Client) -> None:
    with pytest.raises(InvalidArgument) as e:
        client.explain("words", TEXT, "shap")
    assert "shap" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        client.explain("words", TEXT, target="excellent")
    assert "excellent" in e.value.message
    with pytest.raises(NotFound):
        client.explain("nope", TEXT)
