"""A terminal picture of an explanation: tokens (or timesteps) on a red/blue background by
attribution (24-bit ANSI colours), then the strongest steps and the quality figures."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .glyphs import label_text

if TYPE_CHECKING:
    from ..results import Attribution, Explanation

__all__ = ["render_text"]

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"


def _bg(score: float, max_abs: float) -> str:
    """Background from white (0) to red (+max) or blue (-max), with black text."""
    s = max(-1.0, min(1.0, score / max_abs)) if max_abs > 0 else 0.0
    end = (202, 0, 32) if s >= 0 else (33, 102, 172)
    r, g, b = (round(255 + (c - 255) * abs(s)) for c in end)
    fg = "97" if abs(s) > 0.6 else "30"  # white text on strong colours
    return f"\x1b[48;2;{r};{g};{b}m\x1b[{fg}m"


def _steps(exp: Explanation) -> list[str]:
    if exp.tokens:
        return [label_text(t.text) for t in exp.tokens]
    return [f"t{i}" for i in range(exp.length)]


def _quality(a: Attribution) -> str:
    parts = [a.method]
    if a.n_steps:
        parts.append(f"{a.n_steps} steps" if a.method == "integrated_gradients" else f"{a.n_steps} samples")
    if a.convergence_delta is not None:
        rel = a.relative_delta
        parts.append(("converged" if a.converged else "NOT converged")
                     + f", delta {a.convergence_delta:+.2e}" + (f" ({100 * rel:.2f}%)" if rel is not None else ""))
    parts.append(f"f(x) {a.target_at_input:.4g}, f(baseline) {a.target_at_baseline:.4g}")
    if a.faithfulness is not None:
        f = a.faithfulness
        parts.append(f"AOPC comp {f.aopc_comprehensiveness:.3f} (random {f.random_aopc_comprehensiveness:.3f}), "
                     f"suff {f.aopc_sufficiency:.3f} (random {f.random_aopc_sufficiency:.3f})")
    return " · ".join(parts)


def render_text(exp: Explanation, method: str | None = None, color: bool = True, width: int = 100) -> str:
    p = exp.prediction
    head = f"{exp.model_name} v{exp.model_version}: "
    if p.label:
        head += f"{p.label}"
        if p.probabilities is not None and p.label_index is not None:
            head += f" (p={float(p.probabilities[p.label_index]):.3f})"
    elif p.step_labels:
        head += " ".join(p.step_labels)
    else:
        head += "forecast " + " ".join(f"{v:.4g}" for v in p.scores.reshape(-1)[:8])
    t = exp.target
    if p.forecast is not None:  # forecasts and regressions: no class, one output step
        head += f"  | target: horizon step {t.horizon_step}"
    else:
        head += f"  | target: {t.label or t.class_index}"
    if p.step_labels:
        head += f" at step {t.timestep}"
    lines = [f"{_BOLD}{head}{_RESET}" if color else head]
    if not exp.attributions:
        lines.append("(no attributions)")
        return "\n".join(lines)
    if method is not None and method not in exp.attributions:
        raise ValueError(f"no attributions for method {method!r}; have {sorted(exp.attributions)}")
    names = [method] if method else list(exp.attributions)
    steps = _steps(exp)
    # A newline token ends its row, so that source code keeps its lines.
    breaks = {i for i, t in enumerate(exp.tokens) if "\n" in t.text}
    for name in names:
        a = exp.attributions[name]
        scores = a.scores.astype(np.float64)
        max_abs = float(np.abs(scores).max()) if scores.size else 0.0
        warning = a.warning
        if warning:
            lines.append(f"{_BOLD}\x1b[33m{warning}{_RESET}" if color else warning)
        lines.append((f"{_DIM}{_quality(a)}{_RESET}") if color else _quality(a))
        if color:
            cells = [f"{_bg(float(s), max_abs)}{tok}{_RESET}" for tok, s in zip(steps, scores, strict=False)]
            # Wrap on the visible text, then colour: ANSI codes must not count towards the width.
            row: list[str] = []
            rows: list[str] = []
            used = 0
            for i, (tok, cell) in enumerate(zip(steps, cells, strict=False)):
                if used and used + len(tok) + 1 > width:
                    rows.append(" ".join(row))
                    row, used = [], 0
                row.append(cell)
                used += len(tok) + 1
                if i in breaks:
                    rows.append(" ".join(row))
                    row, used = [], 0
            if row or not rows:
                rows.append(" ".join(row))
            lines.extend(rows)
        else:
            plain = " ".join(f"{tok}[{s:+.3f}]" for tok, s in zip(steps, scores, strict=False))
            lines.extend(textwrap.wrap(plain, width) or [""])
        order = np.argsort(-np.abs(scores))[:5]
        lines.append("  top: " + ", ".join(f"{steps[i]} {scores[i]:+.3g}" for i in order))
    return "\n".join(lines)
