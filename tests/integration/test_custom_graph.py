"""Custom ONNX graphs (``architecture.kind: onnx``) served for real: GetModel reports the kind and
exactly the state summaries that apply; Predict equals the eager user module; IG and saliency
through gRPC equal Captum run on the EAGER user module; every other method, baseline and
faithfulness run unchanged; state summaries match states recomputed from the eager module."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients, Saliency
from seqlens_client import Client
from seqlens_client.options import Method, Target

from tests.conftest import ServerThread
from tests.custom_models import (
    VOCAB,
    Custom,
    make_attention,
    make_bigru,
    make_myrnn,
    make_peephole,
    make_tagger,
)

SEQ = "ACGTTGCANAC"
FEATURES = np.random.default_rng(5).normal(size=(9, 3)).astype(np.float32)
GATED = ["state_norm", "delta_norm", "gate_mean", "saturation", "timescale", "top_units", "active_count",
         "projection"]
PLAIN = ["state_norm", "delta_norm", "top_units", "active_count", "projection"]
EXPECTED_SUMMARIES = {
    "myrnn": PLAIN, "peephole": PLAIN, "attention": GATED, "bigru": GATED,
    "tagger": [*GATED[:6], "prefix_prediction", *GATED[6:]],
}


@pytest.fixture(scope="module")
def customs() -> dict[str, Custom]:
    return {c.name: c for c in (make_myrnn(11), make_peephole(12), make_attention(13), make_tagger(14),
                                make_bigru(15))}


@pytest.fixture(scope="module")
def server(customs: dict[str, Custom], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("custom-repo")
    for name, c in customs.items():
        c.write_version(root / name / "1")
    with ServerThread(root, poll_interval_s=0, max_steps=10_000, max_explain_work=2_000_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target) as c:
        yield c


def _input(c: Custom) -> tuple[object, torch.Tensor, torch.Tensor]:
    """(what the SDK sends, eager inputs [1,T(,F)], lengths [1])."""
    if c.tokens:
        ids = torch.tensor([[VOCAB.index(ch) for ch in SEQ]])
        return SEQ, ids, torch.tensor([ids.shape[1]])
    x = torch.from_numpy(FEATURES)[None]
    return FEATURES, x, torch.tensor([x.shape[1]])


def _target(c: Custom, steps: int) -> tuple[Target, Callable[[torch.Tensor], torch.Tensor]]:
    """The SDK target and the same selection on eager outputs."""
    if c.task == "tagging":
        return Target(class_index=2, timestep=steps - 2), lambda out: out[:, steps - 2, 2]
    if c.task == "forecasting":
        return Target(horizon_step=1), lambda out: out[:, 1]
    return Target(class_index=1), lambda out: out[:, 1]


def test_get_model_reports_kind_and_exact_summaries(client: Client, customs: dict[str, Custom]) -> None:
    for name in customs:
        info = client.get_model(name)
        assert [v.state for v in info.versions] == ["ready"], info.versions
        assert info.architecture.kind == "onnx"
        assert info.state_summaries == EXPECTED_SUMMARIES[name], name
    assert client.get_model("attention").architecture.recurrent_ops == ("LSTM",)
    assert client.get_model("bigru").architecture.recurrent_ops == ("GRU",)
    assert client.get_model("myrnn").architecture.embedding_dim == len(VOCAB)  # one-hot width


def test_predict_equals_the_eager_module(client: Client, customs: dict[str, Custom]) -> None:
    for c in customs.values():
        sent, x, lengths = _input(c)
        got = client.predict(c.name, [sent]).predictions[0]
        with torch.no_grad():
            ref = c.eager(x, lengths)[0].numpy()
        np.testing.assert_allclose(got.scores, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["myrnn", "peephole", "attention", "tagger", "bigru"])
def test_ig_and_saliency_equal_captum_on_the_eager_module(client: Client, customs: dict[str, Custom],
                                                          name: str) -> None:
    c = customs[name]
    sent, x, lengths = _input(c)
    steps = x.shape[1]
    target, pick = _target(c, steps)
    exp = client.explain(name, sent, [Method("integrated_gradients", n_steps=50),
                                      Method("saliency", abs_saliency=False)], target=target)
    ig_got = exp.attributions["integrated_gradients"]
    sal_got = exp.attributions["saliency"]
    module = c.module
    if c.tokens and hasattr(module, "embedding"):  # as users run it: LayerIG at the embedding module
        fwd = lambda ids, lens: pick(c.eager(ids, lens))
        lig = LayerIntegratedGradients(fwd, module.embedding)
        ig_ref = lig.attribute(x, torch.zeros_like(x), additional_forward_args=(lengths,), n_steps=50)[0].sum(-1)
    else:  # features, or MyRNN's functional one-hot Gather: IG on the attribution tensor
        at = (lambda e, lens: pick(c.eager_from_attribution(e, lens))) if c.tokens else \
            (lambda v, lens: pick(c.eager(v, lens)))
        inp = torch.nn.functional.one_hot(x, len(VOCAB)).float() if c.tokens else x
        base = torch.nn.functional.one_hot(torch.zeros_like(x), len(VOCAB)).float() if c.tokens \
            else torch.zeros_like(x)
        ig_ref = IntegratedGradients(at).attribute(inp, base, additional_forward_args=(lengths,), n_steps=50)[0]
        ig_ref = ig_ref.sum(-1) if c.tokens else ig_ref
    emb = (module.embedding(x) if hasattr(module, "embedding") else
           torch.nn.functional.one_hot(x, len(VOCAB)).float()) if c.tokens else x
    sal_ref = Saliency(lambda e, lens: pick(c.eager_from_attribution(e, lens))).attribute(
        emb.detach(), additional_forward_args=(lengths,), abs=False)[0]
    if c.tokens:
        np.testing.assert_allclose(ig_got.scores, ig_ref.detach().numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(sal_got.scores, sal_ref.sum(-1).numpy(), atol=1e-4, rtol=1e-4)
    else:
        np.testing.assert_allclose(ig_got.feature_scores, ig_ref.detach().numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(sal_got.feature_scores, sal_ref.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["myrnn", "peephole", "tagger", "bigru"])
def test_every_method_baseline_and_faithfulness_run(client: Client, customs: dict[str, Custom], name: str) -> None:
    c = customs[name]
    sent, x, _ = _input(c)
    target, _ = _target(c, x.shape[1])
    methods = [Method("integrated_gradients", adaptive=True, tolerance=0.01), "input_x_gradient",
               Method("gradient_shap", n_samples=4, seed=1), Method("smoothgrad", n_samples=3, seed=2),
               Method("occlusion", window=2), "feature_ablation", Method("shapley_sampling", n_samples=3, seed=3)]
    for baseline in ("pad",) if c.tokens else ("zeros",):
        exp = client.explain(name, sent, methods, target=target, baseline=baseline, faithfulness=True)
        ig = exp.attributions["integrated_gradients"]
        assert ig.relative_delta <= 0.011
        for att in exp.attributions.values():
            assert np.isfinite(att.scores).all() and att.scores.shape == (x.shape[1],)
            assert att.faithfulness is not None
    occ = client.explain(name, sent, [Method("occlusion", window=1)], target=target,
                         baseline="pad" if c.tokens else "zeros")
    assert np.abs(occ.attributions["occlusion"].scores).sum() > 0


def test_state_summaries_follow_the_eager_states(client: Client, customs: dict[str, Custom]) -> None:
    # Named state slices (MyRNN's hidden states) and the recorded LSTM op of the attention model.
    c = customs["myrnn"]
    sent, x, lengths = _input(c)
    exp = client.explain("myrnn", sent, "saliency", state=True)
    (layer,) = exp.state
    assert layer.source == "states[hidden]"
    with torch.no_grad():
        _, states = c.module(x, lengths)
    np.testing.assert_allclose(layer.state_norm, states[0].norm(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert layer.cell == "state"
    a = customs["attention"]
    sent, x, lengths = _input(a)
    exp = client.explain("attention", sent, "saliency", state=True)
    (layer,) = exp.state
    with torch.no_grad():
        y, _ = a.module.lstm(a.module.embedding(x))  # type: ignore[operator, union-attr]
    np.testing.assert_allclose(layer.state_norm, y[0].norm(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert layer.gate_names == ["i", "f", "g", "o"] and layer.gate_mean.shape == (4, x.shape[1])
    t = customs["tagger"]
    sent, x, lengths = _input(t)
    exp = client.explain("tagger", sent, "saliency", state=["prefix_prediction"])
    with torch.no_grad():
        np.testing.assert_allclose(exp.state.layers[-1].prefix_prediction, t.eager(x, lengths)[0].numpy(), atol=1e-5)
    b = customs["bigru"]
    exp = client.explain("bigru", FEATURES, "saliency", state=["state_norm"])
    fwd, bwd = exp.state.layers
    assert (fwd.direction, bwd.direction) == ("forward", "backward")
    x = torch.from_numpy(FEATURES)[None]
    with torch.no_grad():
        yf, _ = b.module.fwd(x)  # type: ignore[operator, union-attr]
        yb, _ = b.module.bwd(x.flip(1))  # type: ignore[operator, union-attr]
    np.testing.assert_allclose(fwd.state_norm, yf[0].norm(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bwd.state_norm, yb[0].norm(dim=1).flip(0).numpy(), rtol=1e-5, atol=1e-6)


def test_inapplicable_summary_is_refused_with_the_reason(client: Client) -> None:
    from seqlens_client import SeqlensError

    with pytest.raises(SeqlensError, match="gate_mean.*does not apply.*no ONNX LSTM or GRU op"):
        client.explain("myrnn", SEQ, "saliency", state=["gate_mean"])

