"""The output table: one row per input row, columns fixed by the job before any row runs.

Every block file has the same Arrow schema (a block whose rows all failed included), so the
output folder reads as one Parquet dataset. Columns (docs/bulk.md has the full list):
``row``, ``id``, ``model_version``, ``error_code`` / ``error`` (null when the row succeeded),
the prediction, the resolved target, then per method ``<method>.scores`` and its quality
fields, then ``state.layer<L>.<direction>.<summary>`` for the requested state summaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInput
from ..explain import ExplainResult
from ..schema import ModelConfig
from ..summaries import resolve_summaries
from .source import IdType, RowInput
from .spec import BulkSpec

if TYPE_CHECKING:
    import pyarrow as pa

# rank and element type of each state summary (DESIGN table); hidden/cell are not offered in bulk
SUMMARY_RANK: dict[str, tuple[int, str]] = {
    "state_norm": (1, "f"), "delta_norm": (1, "f"), "gate_mean": (2, "f"), "saturation": (3, "f"),
    "timescale": (1, "f"), "top_units": (2, "i"), "prefix_prediction": (2, "f"), "unit_contribution": (1, "f"),
    "active_count": (1, "i"), "projection": (2, "f"),
}
METHOD_SCALARS = ("convergence_delta", "relative_delta", "target_at_input", "target_at_baseline")
FAITH_SCALARS = ("aopc_comprehensiveness", "aopc_sufficiency", "random_aopc_comprehensiveness",
                 "random_aopc_sufficiency")


def _nested(pa: Any, leaf: Any, rank: int) -> Any:
    t = leaf
    for _ in range(rank):
        t = pa.list_(t)
    return t


def state_columns(spec: BulkSpec, config: ModelConfig) -> list[tuple[str, int, int, str]]:
    """(column, layer, direction index, summary) for the requested summaries."""
    if spec.state is None:
        return []
    from ..summaries import StateOptions

    names = resolve_summaries(config, StateOptions(summaries=spec.state))
    if config.is_graph:
        raise InvalidInput("state summaries in bulk jobs cover built-in family models; explain custom graphs' "
                           "states over the server's Explain")
    arch = config.family
    directions = ("forward", "backward") if arch.bidirectional else ("forward",)
    return [(f"state.layer{layer}.{d}.{name}", layer, k, name)
            for layer in range(arch.num_layers) for k, d in enumerate(directions) for name in names]


def output_schema(spec: BulkSpec, config: ModelConfig, id_type: IdType) -> pa.Schema:
    import pyarrow as pa

    f32, f64, i32, i64, s = pa.float32(), pa.float64(), pa.int32(), pa.int64(), pa.string()
    fields: list[Any] = [("row", i64), ("id", i64 if id_type == "int64" else s), ("model_version", s),
                         ("error_code", s), ("error", s), ("length", i32)]
    if config.is_tokens:
        fields += [("tokens", pa.list_(s)), ("token_ids", pa.list_(i64))]
    if config.task == "classification":
        fields += [("label", s), ("label_index", i32), ("scores", pa.list_(f32)), ("probabilities", pa.list_(f32))]
    elif config.task == "tagging":
        fields += [("step_labels", pa.list_(s)), ("scores", _nested(pa, f32, 2)),
                   ("probabilities", _nested(pa, f32, 2))]
    else:
        fields += [("scores", pa.list_(f32))]
    fields += [("target_class_index", i32), ("target_label", s), ("target_timestep", i32),
               ("target_horizon_step", i32)]
    for m in spec.method_names:
        fields += [(f"{m}.scores", pa.list_(f32))]
        fields += [(f"{m}.feature_scores", _nested(pa, f32, 2))] if not config.is_tokens else \
                  [(f"{m}.l2_norm", pa.list_(f32))]
        fields += [(f"{m}.{name}", f64) for name in METHOD_SCALARS]
        fields += [(f"{m}.n_steps", i32), (f"{m}.converged", pa.bool_())]
        if spec.faithfulness:
            fields += [(f"{m}.{name}", f64) for name in FAITH_SCALARS]
            fields += [(f"{m}.comprehensiveness", pa.list_(f64)), (f"{m}.sufficiency", pa.list_(f64))]
    for column, _, _, name in state_columns(spec, config):
        rank, kind = SUMMARY_RANK[name]
        fields.append((column, _nested(pa, f32 if kind == "f" else i64, rank)))
    return pa.schema(fields)


def _list(arr: np.ndarray | None) -> Any:
    return None if arr is None else np.asarray(arr).tolist()


def error_record(row: RowInput, version: str, code: str, message: str) -> dict[str, Any]:
    return {"row": row.row, "id": row.id, "model_version": version, "error_code": code, "error": message}


def result_record(row: RowInput, result: ExplainResult, spec: BulkSpec,
                  states: list[tuple[str, int, int, str]]) -> dict[str, Any]:
    p, t = result.prediction, result.target
    rec: dict[str, Any] = {"row": row.row, "id": row.id, "model_version": result.model_version,
                           "length": p.length}
    if result.tokens is not None:
        rec["tokens"] = [tok.text for tok in result.tokens]
        rec["token_ids"] = [tok.id for tok in result.tokens]
    rec["scores"] = _list(p.scores)
    rec["probabilities"] = _list(p.probabilities)
    rec["label"] = p.label or None
    rec["label_index"] = p.label_index if p.label_index >= 0 else None
    rec["step_labels"] = p.step_labels or None
    rec.update(target_class_index=t.class_index if t.class_index >= 0 else None, target_label=t.label or None,
               target_timestep=t.timestep if t.timestep >= 0 else None,
               target_horizon_step=t.horizon_step if t.horizon_step >= 0 else None)
    for a in result.attributions:
        m = a.method
        rec[f"{m}.scores"] = _list(a.scores)
        rec[f"{m}.feature_scores"] = _list(a.feature_scores)
        rec[f"{m}.l2_norm"] = _list(a.l2_norm)
        rec[f"{m}.convergence_delta"] = a.convergence_delta if a.has_delta else None
        rec[f"{m}.relative_delta"] = a.relative_delta
        rec[f"{m}.target_at_input"] = a.target_at_input
        rec[f"{m}.target_at_baseline"] = a.target_at_baseline
        rec[f"{m}.n_steps"] = a.n_steps
        rec[f"{m}.converged"] = a.converged
        f = a.faithfulness
        if f is not None:
            for name in FAITH_SCALARS:
                rec[f"{m}.{name}"] = getattr(f, name)
            rec[f"{m}.comprehensiveness"] = list(f.comprehensiveness)
            rec[f"{m}.sufficiency"] = list(f.sufficiency)
    if states:
        by_key = {(s.layer, 0 if s.direction == "forward" else 1): s for s in result.state}
        for column, layer, direction, name in states:
            layer_state = by_key.get((layer, direction))
            rec[column] = _list(getattr(layer_state, name)) if layer_state is not None else None
    return rec


def records_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist(records, schema=schema)
