"""Explanations decoded from ExplainResponse messages built here, and their pictures: the HTML
page (self-contained, every panel or its note), ANSI text and matplotlib PNGs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from seqlens_client import Explanation
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, state_pb2, types_pb2
from seqlens_client.report.data import PANEL_TITLES, report_data
from seqlens_client.tensors import from_numpy

TEXT = "the film was not very good, but the plot was <witty> & fun!"
LABELS = ["neg", "neu", "pos"]


def _tokens(text: str) -> list[types_pb2.Token]:
    return [types_pb2.Token(text=m.group().lower(), id=i + 2, start=m.start(), end=m.end())
            for i, m in enumerate(re.finditer(r"\w+|[^\w\s]+", text))]


def _faithfulness(rng: np.random.Generator) -> explain_pb2.Faithfulness:
    k = [1.0, 5.0, 10.0, 20.0, 50.0]
    comp = np.sort(rng.uniform(0, 1, 5))
    return explain_pb2.Faithfulness(
        top_k_percent=k, comprehensiveness=comp, sufficiency=comp[::-1] * 0.5, aopc_comprehensiveness=comp.mean(),
        aopc_sufficiency=comp.mean() / 2, random_comprehensiveness=comp * 0.3, random_sufficiency=comp[::-1] * 0.8,
        random_aopc_comprehensiveness=comp.mean() * 0.3, random_aopc_sufficiency=comp.mean() * 0.8)


def _layer(rng: np.random.Generator, t: int, d: int, layer: int, direction: str, cell: str = "lstm",
           classes: int = 3, hidden: bool = True) -> state_pb2.LayerState:
    gates = {"lstm": ["i", "f", "g", "o"], "gru": ["r", "z", "n"], "rnn_tanh": []}[cell]
    g = len(gates)
    h = np.tanh(rng.normal(size=(t, d))).astype(np.float32)
    msg = state_pb2.LayerState(
        layer=layer, direction=direction, cell=cell, gate_names=gates,
        state_norm=from_numpy(np.linalg.norm(h, axis=1)),
        delta_norm=from_numpy(np.linalg.norm(np.diff(h, axis=0, prepend=0), axis=1)),
        top_units=from_numpy(np.argsort(-np.abs(np.diff(h, axis=0, prepend=0)), axis=1)[:, :3].astype(np.int64)),
        timescale=from_numpy(rng.uniform(1, 10, d).astype(np.float32)),
        unit_contribution=from_numpy(rng.normal(size=d).astype(np.float32)),
        active_count=from_numpy((np.abs(h) >= 0.3).sum(axis=1).astype(np.float32)),
        projection=from_numpy(rng.normal(size=(t, 2)).astype(np.float32)))
    if g:
        left = rng.uniform(0, 0.6, size=(g, d))
        sat = np.stack([left, rng.uniform(0, 1, size=(g, d)) * (1 - left)], axis=-1).astype(np.float32)
        msg.gate_mean.CopyFrom(from_numpy(rng.uniform(0, 1, size=(g, t)).astype(np.float32)))
        msg.saturation.CopyFrom(from_numpy(sat))
        msg.saturation_summary.extend(state_pb2.GateSaturation(gate=n, left_fraction=float(sat[i, :, 0].mean()),
                                                               right_fraction=float(sat[i, :, 1].mean()))
                                      for i, n in enumerate(gates))
    if direction == "forward":
        msg.prefix_prediction.CopyFrom(from_numpy(rng.normal(size=(t, classes)).astype(np.float32)))
    if hidden:
        msg.hidden.CopyFrom(from_numpy(h))
    return msg


def token_response(seed: int = 0, *, state: bool = True, faithfulness: bool = True,
                   methods: tuple[str, ...] = ("integrated_gradients", "occlusion", "saliency")
                   ) -> explain_pb2.ExplainResponse:
    """A classification explanation of TEXT with every optional part present (by default)."""
    rng = np.random.default_rng(seed)
    toks = _tokens(TEXT)
    t = len(toks)
    logits = np.array([-0.3, 0.1, 1.2], dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum()
    resp = explain_pb2.ExplainResponse(
        request_id="r1", model_name="sentiment", model_version="2", tokens=toks,
        prediction=predict_pb2.Prediction(length=t, tokens=toks, scores=from_numpy(logits),
                                          probabilities=from_numpy(probs.astype(np.float32)), label_index=2,
                                          label="pos"),
        target=explain_pb2.ResolvedTarget(class_index=2, label="pos"),
        timings=[explain_pb2.StageTiming(stage=s, seconds=v) for s, v in
                 (("tokenize", 0.0001), ("gradient", 0.012), ("summary", 0.003), ("serialize", 0.0002))])
    for j, name in enumerate(methods):
        scores = rng.normal(size=t).astype(np.float32)
        a = explain_pb2.Attribution(method=name, scores=from_numpy(scores),
                                    l2_norm=from_numpy(np.abs(scores) * 1.3), target_at_input=1.2,
                                    target_at_baseline=0.2, seconds=0.01 * (j + 1))
        if name == "integrated_gradients":
            a.convergence_delta, a.n_steps, a.converged = 2e-4, 32, True
            a.tolerance, a.relative_delta = 0.01, 2e-4
        if faithfulness and j == 0:
            a.faithfulness.CopyFrom(_faithfulness(rng))
        resp.attributions.append(a)
    if state:
        resp.state.extend([_layer(rng, t, 16, 0, "forward"), _layer(rng, t, 16, 1, "forward", hidden=False)])
    return resp


def feature_response(seed: int = 1) -> tuple[explain_pb2.ExplainResponse, np.ndarray]:
    """A forecasting explanation of a [T,3] series with per-feature scores and a GRU state."""
    rng = np.random.default_rng(seed)
    t, f = 24, 3
    x = np.cumsum(rng.normal(size=(t, f)), axis=0).astype(np.float32)
    fs = rng.normal(size=(t, f)).astype(np.float32)
    resp = explain_pb2.ExplainResponse(
        model_name="sunspots", model_version="1",
        prediction=predict_pb2.Prediction(scores=from_numpy(np.array([3.0, 2.5, 2.0], dtype=np.float32))),
        target=explain_pb2.ResolvedTarget(horizon_step=1),
        attributions=[explain_pb2.Attribution(method="feature_ablation", scores=from_numpy(fs.sum(axis=1)),
                                              feature_scores=from_numpy(fs), target_at_input=2.5)],
        state=[_layer(rng, t, 8, 0, "forward", cell="gru", classes=3)])
    return resp, x


def token_explanation(**kw: object) -> Explanation:
    exp = Explanation.from_proto(token_response(**kw))  # type: ignore[arg-type]
    exp.text, exp.labels = TEXT, LABELS
    return exp


def feature_explanation() -> Explanation:
    resp, x = feature_response()
    exp = Explanation.from_proto(resp)
    exp.features, exp.feature_names = x, ["spots", "flux", "<b>area</b>"]
    return exp


# --- decoding -----------------------------------------------------------------------
def test_explanation_decodes_every_field() -> None:
    resp = token_response()
    exp = Explanation.from_proto(resp)
    t = len(resp.tokens)
    assert exp.length == t and exp.model_version == "2" and exp.request_id == "r1"
    assert exp.prediction.label == "pos" and exp.target.class_index == 2 and exp.target.output_space == "logit"
    assert list(exp.attributions) == ["integrated_gradients", "occlusion", "saliency"]
    ig = exp.attributions["integrated_gradients"]
    assert ig.scores.shape == (t,) and ig.scores.dtype == np.float32 and ig.l2_norm is not None
    assert ig.feature_scores is None and ig.n_steps == 32 and ig.converged
    assert ig.relative_delta == pytest.approx(2e-4 / 1.0)
    assert ig.faithfulness is not None and ig.faithfulness.top_k_percent.tolist() == [1, 5, 10, 20, 50]
    assert exp.attributions["occlusion"].faithfulness is None
    assert exp.timings["gradient"] == pytest.approx(0.012)
    assert exp.state is not None and len(exp.state.layers) == 2
    assert exp.tokens[3].text == "not" and TEXT[exp.tokens[3].start:exp.tokens[3].end] == "not"
    d = exp.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["attributions"]["integrated_gradients"]["n_steps"] == 32


def test_feature_explanation_keeps_feature_scores() -> None:
    exp = feature_explanation()
    a = exp.attributions["feature_ablation"]
    assert a.feature_scores is not None and a.feature_scores.shape == (24, 3)
    np.testing.assert_allclose(a.feature_scores.sum(axis=1), a.scores, rtol=1e-5)
    assert exp.prediction.forecast is not None and exp.length == 24


def test_to_pandas_one_row_per_token() -> None:
    pytest.importorskip("pandas")
    exp = token_explanation()
    df = exp.to_pandas()
    assert len(df) == exp.length and list(df.columns[:4]) == ["t", "token", "start", "end"]
    np.testing.assert_allclose(df["occlusion"], exp.attributions["occlusion"].scores)


# --- the report data ----------------------------------------------------------------
def test_report_data_picks_heatmap_units_and_softmaxes_prefix() -> None:
    exp = token_explanation()
    d = report_data(exp)
    first = d["layers"][0]
    hm = first["heatmap"]
    assert hm is not None and len(hm["units"]) == 16 and len(hm["values"]) == 16  # D=16 < the cap: all units
    h = exp.state.layers[0].hidden  # type: ignore[union-attr]
    np.testing.assert_allclose(np.array(hm["values"]), h[:, hm["units"]].T, rtol=1e-6)
    prefix = np.array(first["prefix"]["values"])
    assert first["prefix"]["space"] == "probability"
    np.testing.assert_allclose(prefix.sum(axis=1), 1.0, rtol=1e-6)
    assert d["layers"][1]["heatmap"] is None  # no hidden states returned for layer 1
    assert set(PANEL_TITLES) == {"attribution", "prediction", "prefix", "norms", "gates", "units", "saturation",
                                 "faithfulness", "timings"}


# --- HTML ---------------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects what a self-contained page must not have: external references."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.panels: list[str] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key)
            if v is not None and not v.startswith(("data:", "#")):
                self.external.append(f"{tag} {key}={v}")
        if tag == "section" and a.get("data-panel"):
            self.panels.append(str(a["data-panel"]))
        if tag == "script":
            self.scripts.append(a)


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    exp = token_explanation()
    path = tmp_path / "r.html"
    page = exp.to_html(path)
    assert path.read_text(encoding="utf-8") == page
    parser = _Page()
    parser.feed(page)
    assert parser.external == []
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # only the SVG namespace URI
    assert "@import" not in page and "url(" not in page
    assert parser.panels == list(PANEL_TITLES)
    assert all(s.get("src") is None for s in parser.scripts)


def test_html_escapes_text_from_the_model_and_embeds_parseable_data() -> None:
    exp = feature_explanation()
    exp.model_name = "<script>alert(1)</script>"
    page = exp.to_html()
    assert "<script>alert(1)</script>" not in page and "<b>area</b>" not in page
    raw = re.search(r'<script type="application/json" id="seqlens-data">(.*?)</script>', page, re.DOTALL)
    assert raw is not None and "<" not in raw.group(1)
    data = json.loads(raw.group(1))
    assert data["features"]["names"][2] == "<b>area</b>" and len(data["features"]["values"]) == 3
    assert data["methods"][0]["feature_scores"] is not None


def test_html_data_says_what_is_absent() -> None:
    exp = token_explanation(state=False, faithfulness=False)
    d = report_data(exp)
    assert d["layers"] == [] and all(m["faithfulness"] is None for m in d["methods"])


# --- text and PNG -------------------------------------------------------------------
def test_to_text_colours_tokens_and_lists_the_strongest() -> None:
    exp = token_explanation()
    colored = exp.to_text("integrated_gradients")
    assert "\x1b[48;2;" in colored and "pos (p=" in colored and "32 steps · converged" in colored
    plain = exp.to_text("occlusion", color=False)
    assert "\x1b[" not in plain
    scores = exp.attributions["occlusion"].scores
    top = int(np.argmax(np.abs(scores)))
    assert f"top: {exp.tokens[top].text} {scores[top]:+.3g}" in plain
    assert f"not[{scores[3]:+.3f}]" in plain
    assert plain.count("\n") >= 2 and all(len(line) <= 100 for line in plain.splitlines()[2:-1])
    with pytest.raises(ValueError, match="no attributions for method 'shap'"):
        exp.to_text("shap")
    assert exp.to_text(color=False).count("top:") == 3  # every method when none is named


def test_to_png_draws_every_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for exp, name in ((token_explanation(), "tokens.png"), (feature_explanation(), "features.png"),
                      (token_explanation(state=False, faithfulness=False), "bare.png")):
        out = exp.to_png(tmp_path / name)
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_an_unconverged_attribution_is_said_first_in_every_report() -> None:
    resp = token_response()
    ig = next(a for a in resp.attributions if a.method == "integrated_gradients")
    ig.convergence_delta, ig.converged, ig.tolerance, ig.relative_delta = 0.05, False, 0.01, 0.05
    exp = Explanation.from_proto(resp)
    exp.text, exp.labels = TEXT, LABELS
    a = exp.attributions["integrated_gradients"]
    assert a.converged is False and a.warning is not None and "5.0% of" in a.warning
    lines = exp.to_text("integrated_gradients", color=False).splitlines()
    assert lines[1].startswith("NOT CONVERGED: integrated_gradients")  # right under the headline
    data = report_data(exp)
    (m,) = [m for m in data["methods"] if m["name"] == "integrated_gradients"]
    assert m["warning"] == a.warning and m["converged"] is False and m["tolerance"] == 0.01
    assert a.warning in exp.to_html()
    # methods without a delta carry none, and no warning
    occ = exp.attributions["occlusion"]
    assert occ.convergence_delta is None and occ.converged is None and occ.warning is None
    assert "NOT CONVERGED" not in exp.to_text("occlusion", color=False)
