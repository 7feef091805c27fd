"""Dataset-level views of a bulk output: what the model attends to across all rows.

``summarize(output)`` streams the block files once and keeps, per method and per explained
class (the resolved target's label; ``horizon <h>`` for forecasts):

* token models: per token, the count and mean (signed) and mean |attribution|;
* feature models: the mean attribution per position (timestep index) and per feature;
* the distribution of the convergence delta relative to |f(x) - f(baseline)| and the
  fraction of rows that converged; faithfulness AOPCs next to their random-ranking baseline.

Numbers only here; ``report.summary_html`` draws them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .spec import MANIFEST


@dataclass(frozen=True)
class TokenStat:
    token: str
    count: int
    mean: float  # mean signed attribution over the token's occurrences
    mean_abs: float


@dataclass
class MethodSummary:
    method: str
    rows: int
    top_tokens: dict[str, list[TokenStat]] = field(default_factory=dict)  # class -> highest mean first
    bottom_tokens: dict[str, list[TokenStat]] = field(default_factory=dict)  # class -> lowest mean first
    position_mean: dict[str, list[float]] = field(default_factory=dict)  # class -> mean per timestep index
    position_count: dict[str, list[int]] = field(default_factory=dict)
    feature_mean: dict[str, list[float]] = field(default_factory=dict)  # class -> mean per feature (summed over t)
    relative_delta: list[float] = field(default_factory=list)  # rows with a delta
    converged_fraction: float | None = None
    mean_n_steps: float | None = None
    aopc_comprehensiveness: list[float] = field(default_factory=list)
    aopc_sufficiency: list[float] = field(default_factory=list)
    random_aopc_comprehensiveness: list[float] = field(default_factory=list)
    random_aopc_sufficiency: list[float] = field(default_factory=list)


@dataclass
class DatasetSummary:
    output: str
    model: str
    model_version: str
    task: str
    input_kind: str
    feature_names: list[str]
    rows: int
    failed: int
    errors: dict[str, int]  # status code name -> rows
    top_errors: list[tuple[str, int]]  # most frequent messages
    class_counts: dict[str, int]  # explained class -> rows
    methods: list[MethodSummary]
    min_count: int = 3  # occurrences a token needed to be ranked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_html(self) -> str:
        from .report import summary_html

        return summary_html(self)

    def write_html(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path


def _class_of(rec: dict[str, Any]) -> str:
    if rec.get("target_label"):
        return str(rec["target_label"])
    if rec.get("target_horizon_step") is not None:
        return f"horizon {rec['target_horizon_step']}"
    return "all"


class _MethodAccumulator:
    def __init__(self, method: str) -> None:
        self.method = method
        self.rows = 0
        self.tokens: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        self.pos_sum: dict[str, np.ndarray] = {}
        self.pos_count: dict[str, np.ndarray] = {}
        self.feat_sum: dict[str, np.ndarray] = {}
        self.feat_rows: Counter[str] = Counter()
        self.rel: list[float] = []
        self.converged = 0
        self.n_steps = 0
        self.faith: dict[str, list[float]] = defaultdict(list)

    def add(self, rec: dict[str, Any], cls: str) -> None:
        m = self.method
        scores = rec.get(f"{m}.scores")
        if scores is None:
            return
        self.rows += 1
        s = np.asarray(scores, dtype=np.float64)
        tokens = rec.get("tokens")
        if tokens is not None:
            for tok, v in zip(tokens, s, strict=True):
                acc = self.tokens[(cls, tok)]
                acc[0] += 1
                acc[1] += v
                acc[2] += abs(v)
        else:
            _grow_add(self.pos_sum, self.pos_count, cls, s)
            fs = rec.get(f"{m}.feature_scores")
            if fs is not None:
                f = np.asarray(fs, dtype=np.float64).sum(axis=0)
                self.feat_sum[cls] = self.feat_sum.get(cls, np.zeros_like(f)) + f
                self.feat_rows[cls] += 1
        rel = rec.get(f"{m}.relative_delta")
        if rel is not None:
            self.rel.append(float(rel))
        self.converged += bool(rec.get(f"{m}.converged"))
        self.n_steps += int(rec.get(f"{m}.n_steps") or 0)
        for name in ("aopc_comprehensiveness", "aopc_sufficiency", "random_aopc_comprehensiveness",
                     "random_aopc_sufficiency"):
            value = rec.get(f"{m}.{name}")
            if value is not None:
                self.faith[name].append(float(value))

    def finish(self, top: int, min_count: int) -> MethodSummary:
        out = MethodSummary(self.method, self.rows, relative_delta=self.rel,
                            converged_fraction=self.converged / self.rows if self.rows else None,
                            mean_n_steps=self.n_steps / self.rows if self.rows else None,
                            aopc_comprehensiveness=self.faith["aopc_comprehensiveness"],
                            aopc_sufficiency=self.faith["aopc_sufficiency"],
                            random_aopc_comprehensiveness=self.faith["random_aopc_comprehensiveness"],
                            random_aopc_sufficiency=self.faith["random_aopc_sufficiency"])
        by_class: dict[str, list[TokenStat]] = defaultdict(list)
        for (cls, tok), (n, total, total_abs) in self.tokens.items():
            if n >= min_count:
                by_class[cls].append(TokenStat(tok, int(n), total / n, total_abs / n))
        for cls, stats in sorted(by_class.items()):
            ranked = sorted(stats, key=lambda st: (-st.mean, st.token))
            out.top_tokens[cls] = ranked[:top]
            out.bottom_tokens[cls] = ranked[::-1][:top]
        for cls in sorted(self.pos_sum):
            count = self.pos_count[cls]
            out.position_mean[cls] = (self.pos_sum[cls] / np.maximum(count, 1)).tolist()
            out.position_count[cls] = count.astype(int).tolist()
        for cls in sorted(self.feat_sum):
            out.feature_mean[cls] = (self.feat_sum[cls] / self.feat_rows[cls]).tolist()
        return out


def _grow_add(sums: dict[str, np.ndarray], counts: dict[str, np.ndarray], key: str, values: np.ndarray) -> None:
    n = values.shape[0]
    s, c = sums.get(key, np.zeros(0)), counts.get(key, np.zeros(0))
    if s.shape[0] < n:
        s, c = np.pad(s, (0, n - s.shape[0])), np.pad(c, (0, n - c.shape[0]))
    s[:n] += values
    c[:n] += 1
    sums[key], counts[key] = s, c


def summarize(output: str | Path, *, top: int = 15, min_count: int = 3) -> DatasetSummary:
    """Aggregate a finished (or partly finished) bulk output folder.

    ``top``: tokens listed per class and direction; ``min_count``: occurrences a token needs
    to be ranked (rare tokens have noisy means).
    """
    import pyarrow.parquet as pq

    output = Path(output)
    manifest_path = output / MANIFEST
    if not manifest_path.is_file():
        raise InvalidInput(f"{output} is not a bulk explanation output (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    spec, model = manifest["spec"], manifest["model"]
    methods = [m["name"] for m in spec["methods"]] or ["integrated_gradients"]
    accs = [_MethodAccumulator(m) for m in methods]
    rows = failed = 0
    errors: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    for part in sorted(output.glob("part-*.parquet")):
        pf = pq.ParquetFile(part)
        wanted = [c for c in pf.schema_arrow.names if not c.startswith("state.")]
        for batch in pf.iter_batches(columns=wanted, batch_size=1024):
            for rec in batch.to_pylist():
                rows += 1
                if rec["error_code"] is not None:
                    failed += 1
                    errors[rec["error_code"]] += 1
                    messages[rec["error"]] += 1
                    continue
                cls = _class_of(rec)
                classes[cls] += 1
                for acc in accs:
                    acc.add(rec, cls)
    return DatasetSummary(
        output=str(output), model=spec["model"], model_version=spec["version"], task=model["task"],
        input_kind=model["input_kind"], feature_names=model["feature_names"], rows=rows, failed=failed,
        errors=dict(errors), top_errors=messages.most_common(5), class_counts=dict(sorted(classes.items())),
        methods=[a.finish(top, min_count) for a in accs], min_count=min_count)
