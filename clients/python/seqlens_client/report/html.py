"""One self-contained HTML page per explanation: the data as inline JSON, drawn by inline
JavaScript into inline SVG. Nothing is fetched: the page works offline and from a file."""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import TYPE_CHECKING

from .data import PANEL_TITLES, report_data

if TYPE_CHECKING:
    from ..results import Explanation

__all__ = ["render_html"]

_WIDE = {"attribution", "units"}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_json(data: object) -> str:
    """JSON safe inside <script>: no "</script>", no HTML comment openers, no U+2028/9 breaks."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def render_html(exp: Explanation, title: str | None = None) -> str:
    data = report_data(exp, title)
    p = exp.prediction
    if p.label:
        said = f"predicted <b>{html.escape(p.label)}</b>"
        if p.probabilities is not None and p.label_index is not None:
            said += f" (p = {float(p.probabilities[p.label_index]):.3f})"
    elif p.step_labels:
        said = f"tagged {len(p.step_labels)} steps"
    else:
        said = f"forecast of {p.scores.size} values"
    t = exp.target
    target = t.label or (f"horizon step {t.horizon_step}" if p.forecast is not None else f"class {t.class_index}")
    if p.step_labels:
        target += f" at step {t.timestep}"
    summary = (f"{html.escape(exp.model_name)} v{html.escape(exp.model_version)} · {said} · "
               f"explaining <b>{html.escape(target)}</b> ({t.output_space}) · {exp.length} steps")
    panels = "\n".join(
        f'<section class="panel{" wide" if pid in _WIDE else ""}" id="panel-{pid}" data-panel="{pid}">'
        f"<h2>{html.escape(title)}</h2>"
        + ('<div class="switcher" id="method-switcher" role="toolbar" aria-label="attribution method"></div>'
           if pid == "attribution" else "")
        + '<div class="body"></div></section>'
        for pid, title in PANEL_TITLES.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(data["title"])}</title>
<style>
{_asset("report.css")}
</style>
</head>
<body>
<header><h1>{html.escape(data["title"])}</h1><div class="summary">{summary}</div></header>
<main>
{panels}
</main>
<footer>seqlens explanation report · self-contained: no network access needed.</footer>
<script type="application/json" id="seqlens-data">{_script_json(data)}</script>
<script>
{_asset("report.js")}
</script>
</body>
</html>
"""
