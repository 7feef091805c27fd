"""The report panels as one matplotlib figure (optional extra ``seqlens-client[plot]``).

matplotlib is imported here only, and without pyplot, so that importing the SDK never needs
it and rendering never touches global backend state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import PANEL_TITLES, report_data

if TYPE_CHECKING:
    from ..results import Explanation

__all__ = ["render_png"]

_CMAP = "RdBu_r"


def _import_matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("to_png() needs matplotlib: pip install 'seqlens-client[plot]'") from e
    return Figure, FigureCanvasAgg


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, color="#666",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _step_ticks(ax: Any, labels: list[str]) -> None:
    every = max(1, int(np.ceil(len(labels) / 16)))
    idx = list(range(0, len(labels), every))
    ax.set_xticks(idx)
    ax.set_xticklabels([labels[i][:8] for i in idx], rotation=45, ha="right", fontsize=7)


def _nan(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))],
                    dtype=np.float64).reshape(np.shape(values))


def render_png(exp: Explanation, path: Path, dpi: int = 120) -> Path:
    figure_cls, canvas_cls = _import_matplotlib()
    d = report_data(exp)
    steps = [t["text"] for t in d["tokens"]] if d["tokens"] else [str(i) for i in range(d["length"])]
    layers = d["layers"]
    fig = figure_cls(figsize=(14, 15), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(4, 2).ravel()
    fig.suptitle(d["title"], fontsize=13)

    ax = axes[0]
    ax.set_title(PANEL_TITLES["attribution"], fontsize=10)
    if d["methods"]:
        for m in d["methods"]:
            ax.plot(_nan(m["scores"]), marker="o", ms=3, label=m["name"])
        ax.axhline(0, color="#999", lw=0.8)
        _step_ticks(ax, steps)
        ax.legend(fontsize=7)
    else:
        _note(ax, "no attributions")

    ax, p = axes[1], d["prediction"]
    ax.set_title(PANEL_TITLES["prediction"], fontsize=10)
    if p["probabilities"]:
        ax.barh(p["labels"], p["probabilities"],
                color=["#3b5bdb" if i == p["label_index"] else "#adb5bd" for i in range(len(p["labels"]))])
        ax.set_xlim(0, 1)
    elif p["forecast"]:
        ax.plot(_nan(p["forecast"]), marker="o")
        ax.set_xlabel("horizon step")
    elif p["step_labels"]:
        _note(ax, " ".join(f"{s}/{lab}" for s, lab in zip(steps, p["step_labels"], strict=False))[:400])
    else:
        _note(ax, "no scores")

    def with_key(key: str) -> list[dict[str, Any]]:
        return [layer for layer in layers if layer.get(key)]

    ax, ls = axes[2], with_key("prefix")
    ax.set_title(PANEL_TITLES["prefix"], fontsize=10)
    if ls:
        vals = _nan(ls[-1]["prefix"]["values"])
        names = p["labels"] if len(p["labels"]) == vals.shape[1] else [f"output {c}" for c in range(vals.shape[1])]
        for c in range(min(vals.shape[1], 12)):
            ax.plot(vals[:, c], lw=3 if c == d["target"]["class_index"] else 1.2, label=names[c])
        _step_ticks(ax, steps)
        ax.legend(fontsize=7)
    else:
        _note(ax, "no prefix predictions (explain with state=True, CLI --state; unidirectional models)")

    ax, ls = axes[3], with_key("state_norm")
    ax.set_title(PANEL_TITLES["norms"], fontsize=10)
    if ls:
        for i, layer in enumerate(ls):
            line = ax.plot(_nan(layer["state_norm"]), label=f"|h| {layer['name']}")[0]
            if layer["delta_norm"]:
                ax.plot(_nan(layer["delta_norm"]), ls="--", color=line.get_color(), label=f"|dh| {layer['name']}")
        _step_ticks(ax, steps)
        ax.legend(fontsize=7)
    else:
        _note(ax, "no state norms (explain with state=True, CLI --state)")

    ax, ls = axes[4], with_key("gate_mean")
    ax.set_title(PANEL_TITLES["gates"], fontsize=10)
    if ls:
        for layer in ls[:2]:
            for g, vals in enumerate(layer["gate_mean"]):
                ax.plot(_nan(vals), label=f"{layer['name']} {layer['gate_names'][g]}")
        _step_ticks(ax, steps)
        ax.legend(fontsize=7, ncol=2)
    else:
        _note(ax, "no gate means (explain with state=True, CLI --state; LSTM and GRU)")

    ax, ls = axes[5], with_key("heatmap")
    ax.set_title(PANEL_TITLES["units"], fontsize=10)
    if ls:
        hm = ls[0]["heatmap"]
        vals = _nan(hm["values"])
        lim = float(np.nanmax(np.abs(vals))) or 1.0
        im = ax.imshow(vals, aspect="auto", cmap=_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_yticks(range(len(hm["units"])))
        ax.set_yticklabels([f"unit {u}" for u in hm["units"]], fontsize=6)
        _step_ticks(ax, steps)
        fig.colorbar(im, ax=ax, shrink=0.8)
    else:
        _note(ax, "no hidden states (explain with StateOptions(include_hidden=True), CLI --hidden)")

    ax, ls = axes[6], with_key("saturation")
    ax.set_title(PANEL_TITLES["saturation"], fontsize=10)
    if ls:
        layer = ls[0]
        for g, units in enumerate(layer["saturation"]):
            pts = _nan(units)
            ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.6, label=layer["gate_names"][g])
        ax.plot([0, 1], [1, 0], ls=":", color="#aaa")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.set_ylabel("fraction right-saturated (> 0.9)")
        ax.legend(fontsize=7)
    else:
        _note(ax, "no gate saturation (explain with state=True, CLI --state; LSTM and GRU)")

    ax = axes[7]
    ax.set_title(PANEL_TITLES["faithfulness"], fontsize=10)
    faithful = [m for m in d["methods"] if m["faithfulness"]]
    if faithful:
        for m in faithful:
            f = m["faithfulness"]
            line = ax.plot(f["top_k_percent"], _nan(f["comprehensiveness"]), marker="o", label=f"{m['name']} comp.")[0]
            ax.plot(f["top_k_percent"], _nan(f["sufficiency"]), marker="s", color=line.get_color(), alpha=0.6,
                    label=f"{m['name']} suff.")
        f0 = faithful[0]["faithfulness"]
        if f0["random_comprehensiveness"]:
            ax.plot(f0["top_k_percent"], _nan(f0["random_comprehensiveness"]), ls="--", color="#888",
                    label="random comp.")
        ax.set_xlabel("top-k %")
        ax.legend(fontsize=7)
    else:
        _note(ax, "no faithfulness scores (explain with faithfulness=True, CLI --faithfulness)")

    fig.savefig(path, dpi=dpi)
    return path
