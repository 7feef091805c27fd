"""What the pictures show, extracted once from an :class:`Explanation` as plain JSON-ready data.

Both the HTML page (drawn in the browser from this data) and the PNG figure read it, so
they show the same panels and the same notes when data is absent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..jsonable import jsonable
from .glyphs import inline_text, label_text

if TYPE_CHECKING:
    from ..results import Attribution, Explanation
    from ..state import LayerStateSummary

__all__ = ["MAX_HEATMAP_UNITS", "PANEL_TITLES", "report_data"]

#: Panel id -> title, in page order. A panel whose data is absent shows a note saying why.
PANEL_TITLES = {
    "attribution": "Attribution",
    "prediction": "Prediction",
    "prefix": "Prediction as the sequence unfolds",
    "norms": "Hidden-state norms over time",
    "gates": "Gate means over time",
    "saturation": "Gate saturation per unit",
    "faithfulness": "Faithfulness",
    "timings": "Timings",
    "units": "Hidden units over time",  # wide, last: the grid above stays filled
}
MAX_HEATMAP_UNITS = 32
_MAX_FEATURE_LINES = 12


def _finite(a: np.ndarray) -> list[Any]:
    return jsonable(np.asarray(a, dtype=np.float64))  # type: ignore[no-any-return]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _heatmap_units(hidden: np.ndarray, top_units: np.ndarray | None) -> list[int]:
    """The units worth a row: most often among the per-step top units (largest |dh_t|), then
    by variance over time; at most MAX_HEATMAP_UNITS, in unit order."""
    d = hidden.shape[1]
    score = np.var(hidden, axis=0) / (np.var(hidden, axis=0).max() + 1e-12)  # [D] in [0, 1]
    if top_units is not None and top_units.size:
        counts = np.bincount(top_units.reshape(-1).clip(0, d - 1), minlength=d)[:d]
        score = score + counts  # frequency first, variance breaks ties
    keep = np.argsort(-score, kind="stable")[:MAX_HEATMAP_UNITS]
    return sorted(int(u) for u in keep)


def _layer(ls: LayerStateSummary, classes: int) -> dict[str, Any]:
    """One layer/direction of the state summary -> what the charts draw (absent parts: None).
    ``classes`` > 0: the model outputs class logits, so prefix predictions are softmaxed."""
    out: dict[str, Any] = {
        "name": f"layer {ls.layer} {ls.direction}", "layer": ls.layer, "direction": ls.direction,
        "cell": ls.cell, "gate_names": list(ls.gate_names)}
    for name in ("state_norm", "delta_norm", "active_count", "timescale", "unit_contribution"):
        v = getattr(ls, name)
        out[name] = None if v is None else _finite(v)
    gated = bool(ls.gate_names)  # plain RNNs have no gates: their [0,T] arrays draw nothing
    out["gate_mean"] = _finite(ls.gate_mean) if gated and ls.gate_mean is not None else None
    out["saturation"] = _finite(ls.saturation) if gated and ls.saturation is not None else None  # [G,D,2]
    out["top_units"] = None if ls.top_units is None else ls.top_units.astype(np.int64).tolist()
    if ls.hidden is not None and ls.hidden.size:
        units = _heatmap_units(ls.hidden, ls.top_units)
        out["heatmap"] = {"units": units, "values": _finite(ls.hidden[:, units].T)}  # [U,T]
    else:
        out["heatmap"] = None
    prefix = ls.prefix_prediction
    if prefix is not None and prefix.size:
        probs = classes > 0 and prefix.ndim == 2 and prefix.shape[1] == classes
        out["prefix"] = {"values": _finite(_softmax(prefix) if probs else prefix),
                         "space": "probability" if probs else "raw"}
    else:
        out["prefix"] = None
    return out


def _method(name: str, a: Attribution) -> dict[str, Any]:
    rel = a.relative_delta
    return {
        "name": name, "scores": _finite(a.scores),
        "feature_scores": None if a.feature_scores is None else _finite(a.feature_scores),
        "l2_norm": None if a.l2_norm is None else _finite(a.l2_norm),
        "integral": a.has_delta,
        "convergence_delta": a.convergence_delta,
        "relative_delta": rel if rel is not None and math.isfinite(rel) else None,
        "tolerance": a.tolerance, "warning": a.warning,
        "n_steps": a.n_steps, "converged": a.converged, "target_at_input": a.target_at_input,
        "target_at_baseline": a.target_at_baseline, "seconds": a.seconds,
        "faithfulness": None if a.faithfulness is None else a.faithfulness.to_dict(),
    }


def _prediction(exp: Explanation) -> dict[str, Any]:
    p = exp.prediction
    labels = exp.labels
    probs = p.probabilities
    out: dict[str, Any] = {"label": p.label, "label_index": p.label_index, "step_labels": p.step_labels,
                           "forecast": None if p.forecast is None else _finite(p.forecast), "probabilities": None,
                           "labels": labels}
    if probs is not None and probs.ndim == 1:
        out["probabilities"] = _finite(probs)
        if not labels:
            out["labels"] = [f"class {i}" for i in range(probs.shape[0])]
    return out


def _token_data(exp: Explanation) -> list[dict[str, Any]]:
    """label: one line (charts, tooltips); inline: what the running text shows, namely the
    covered characters, the token itself when it covers none ([CLS]), or a dot when an earlier
    token already showed them (byte-level BPE splits one emoji into several tokens)."""
    text = exp.text or ""
    out = []
    shown = 0
    for tok in exp.tokens:
        if not text or tok.end <= tok.start:
            inline = inline_text(tok.text)
        elif tok.start < shown:
            inline = "\u00b7"
        else:
            inline = inline_text(text[tok.start:tok.end])
        shown = max(shown, tok.end)
        out.append({"text": tok.text, "start": tok.start, "end": tok.end, "special": tok.special,
                    "label": label_text(tok.text), "inline": inline})
    return out


def report_data(exp: Explanation, title: str | None = None) -> dict[str, Any]:
    """Everything the report draws, JSON-ready; keys of absent data are None."""
    t = exp.length
    features = None
    if exp.features is not None:
        f = exp.features.shape[1]
        names = exp.feature_names if len(exp.feature_names) == f else [f"feature {i}" for i in range(f)]
        shown = min(f, _MAX_FEATURE_LINES)
        features = {"names": names, "values": _finite(exp.features.T), "shown": shown}  # values [F,T]
    tokens = _token_data(exp)
    if not tokens and features is None:
        tokens = [{"text": f"t{i}", "start": -1, "end": -1} for i in range(t)]
    probs = exp.prediction.probabilities
    classes = 0 if probs is None else int(probs.shape[-1])
    layers = [] if exp.state is None else [_layer(ls, classes) for ls in exp.state.layers]
    target = exp.target
    return {
        "title": title or f"{exp.model_name} v{exp.model_version}: explanation",
        "model": exp.model_name, "version": exp.model_version, "length": t,
        "text": exp.text, "tokens": tokens or None, "features": features,
        "prediction": _prediction(exp),
        "target": {"class_index": target.class_index, "label": target.label, "timestep": target.timestep,
                   "horizon_step": target.horizon_step, "output_space": target.output_space},
        "methods": [_method(n, a) for n, a in exp.attributions.items()],
        "layers": layers,
        "timings": jsonable(exp.timings),
    }
