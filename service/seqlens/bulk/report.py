"""One self-contained HTML page for a ``DatasetSummary``: tables and inline SVG, no scripts,
no external resources, so it can be mailed or attached to a CI run."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .aggregate import DatasetSummary, MethodSummary, TokenStat

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 1.5em .5em 0;display:inline-table;vertical-align:top}
td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child{text-align:left}
.pos{color:#b2182b}.neg{color:#2166ac}.muted{color:#777}svg{margin:.5em 0}"""


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _token_table(title: str, stats: list[TokenStat]) -> str:
    rows = "".join(
        f"<tr><td>{escape(repr(s.token)[1:-1])}</td><td class={'pos' if s.mean > 0 else 'neg'}>{_num(s.mean)}</td>"
        f"<td>{_num(s.mean_abs)}</td><td>{s.count}</td></tr>" for s in stats)
    return (f"<table><caption>{escape(title)}</caption><tr><th>token</th><th>mean</th><th>mean |·|</th>"
            f"<th>n</th></tr>{rows}</table>")


def _bars(values: list[float], labels: list[str], title: str, width: int = 640, height: int = 140) -> str:
    """Signed bar chart (positive red, negative blue) as inline SVG."""
    if not values:
        return ""
    top = max(1e-12, max(abs(v) for v in values))
    n = len(values)
    bw = width / n
    mid = height / 2
    parts = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="{escape(title)}">',
             f'<line x1="0" y1="{mid}" x2="{width}" y2="{mid}" stroke="#999"/>']
    for i, v in enumerate(values):
        h = abs(v) / top * (mid - 2)
        y = mid - h if v > 0 else mid
        color = "#b2182b" if v > 0 else "#2166ac"
        parts.append(f'<rect x="{i * bw:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{escape(labels[i])}: {_num(v)}</title></rect>')
    parts.append(f'<text x="0" y="{height + 15}" font-size="11">{escape(title)} (max |·| {_num(top)})</text></svg>')
    return "".join(parts)


def _histogram(values: list[float], title: str, *, log10: bool = False, bins: int = 20,
               width: int = 640, height: int = 120) -> str:
    vals = np.asarray(values, dtype=np.float64)
    if log10:
        vals = np.log10(np.maximum(vals, 1e-12))
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return f"<p class=muted>{escape(title)}: no values</p>"
    counts, edges = np.histogram(vals, bins=bins)
    top = max(1, int(counts.max()))
    bw = width / bins
    parts = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="{escape(title)}">']
    for i, c in enumerate(counts):
        h = c / top * height
        lo, hi = edges[i], edges[i + 1]
        label = f"10^{lo:.2f}..10^{hi:.2f}" if log10 else f"{lo:.3g}..{hi:.3g}"
        parts.append(f'<rect x="{i * bw:.1f}" y="{height - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                     f'fill="#4d4d4d"><title>{label}: {int(c)}</title></rect>')
    axis = f"log10 from {edges[0]:.2f} to {edges[-1]:.2f}" if log10 else f"from {edges[0]:.3g} to {edges[-1]:.3g}"
    parts.append(f'<text x="0" y="{height + 15}" font-size="11">{escape(title)}: {vals.size} rows, {axis}'
                 "</text></svg>")
    return "".join(parts)


def _quantiles(values: list[float]) -> str:
    if not values:
        return "–"
    q = np.quantile(np.asarray(values), [0.5, 0.9, 0.99, 1.0])
    return " · ".join(f"{name} {_num(v)}" for name, v in zip(("p50", "p90", "p99", "max"), q, strict=True))


def _method_section(m: MethodSummary, s: DatasetSummary) -> str:
    out = [(f"<h2>{escape(m.method)}</h2><p>{m.rows} explained rows; mean steps/samples "
            f"{_num(m.mean_n_steps)}; converged {_num(m.converged_fraction)}</p>")]
    if s.input_kind == "tokens" and not m.top_tokens:
        out.append(f"<p class=muted>no token occurs {s.min_count} times or more: nothing to rank yet</p>")
    if m.top_tokens:
        out.append(f"<h3>Tokens by mean attribution, per explained class (tokens seen ≥ {s.min_count} times)</h3>")
        for cls in m.top_tokens:
            out.append(f"<div><b>{escape(cls)}</b><br>")
            out.append(_token_table("pushes towards it most", m.top_tokens[cls]))
            out.append(_token_table("pushes away most", m.bottom_tokens[cls]))
            out.append("</div>")
    for cls, means in m.position_mean.items():
        out.append(f"<h3>Mean attribution per position: {escape(cls)}</h3>")
        counts = m.position_count[cls]
        out.append(_bars(means, [f"t={t} (n={counts[t]})" for t in range(len(means))], "timestep index"))
    for cls, means in m.feature_mean.items():
        names = s.feature_names or [f"f{i}" for i in range(len(means))]
        rows = "".join(f"<tr><td>{escape(n)}</td><td class={'pos' if v > 0 else 'neg'}>{_num(v)}</td></tr>"
                       for n, v in sorted(zip(names, means, strict=True), key=lambda p: -abs(p[1])))
        out.append(f"<table><caption>per feature (summed over time): {escape(cls)}</caption>"
                   f"<tr><th>feature</th><th>mean</th></tr>{rows}</table>")
    out.append("<h3>Convergence</h3>")
    if m.relative_delta:
        out.append(f"<p>|delta| / |f(x) − f(baseline)|: {_quantiles(m.relative_delta)}</p>")
        out.append(_histogram(m.relative_delta, "relative convergence delta", log10=True))
    else:
        out.append("<p class=muted>this method has no completeness delta</p>")
    if m.aopc_comprehensiveness:
        out.append("<h3>Faithfulness</h3><table><tr><th></th><th>mean AOPC</th><th>random ranking</th></tr>"
                   f"<tr><td>comprehensiveness (higher is better)</td><td>{_num(float(np.mean(m.aopc_comprehensiveness)))}"
                   f"</td><td>{_num(float(np.mean(m.random_aopc_comprehensiveness)))}</td></tr>"
                   f"<tr><td>sufficiency (lower is better)</td><td>{_num(float(np.mean(m.aopc_sufficiency)))}</td>"
                   f"<td>{_num(float(np.mean(m.random_aopc_sufficiency)))}</td></tr></table>")
        out.append(_histogram(m.aopc_comprehensiveness, "AOPC comprehensiveness"))
        out.append(_histogram(m.aopc_sufficiency, "AOPC sufficiency"))
    return "".join(out)


def summary_html(s: DatasetSummary) -> str:
    classes = "".join(f"<tr><td>{escape(c)}</td><td>{n}</td></tr>" for c, n in s.class_counts.items())
    errors = "".join(f"<tr><td>{escape(msg)}</td><td>{n}</td></tr>" for msg, n in s.top_errors)
    body = [f"<h1>seqlens bulk explanation: {escape(s.model)} (version {escape(s.model_version)})</h1>",
            (f"<p>{s.rows} rows, {s.failed} failed; task {escape(s.task)}, {escape(s.input_kind)} input; "
             f"output <code>{escape(s.output)}</code></p>"),
            f"<table><caption>explained class</caption><tr><th>class</th><th>rows</th></tr>{classes}</table>"]
    if errors:
        body.append(f"<table><caption>most frequent errors</caption><tr><th>message</th><th>rows</th></tr>"
                    f"{errors}</table>")
    body += [_method_section(m, s) for m in s.methods]
    return ("<!doctype html><html lang=en><meta charset=utf-8>"
            f"<title>seqlens bulk: {escape(s.model)}</title><style>{_CSS}</style><body>"
            + "".join(body) + "</body></html>\n")
