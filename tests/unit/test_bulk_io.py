"""Bulk explanation without Ray: input blocks, the job spec, the output folder, the import path.

Blocks are the unit of resumption, so reading any one block alone must give exactly the rows
a whole-file reader gives at those positions (JSONL through the standard json module,
Parquet through pyarrow's own reader), whatever the blank lines and row-group boundaries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from seqlens.bulk.source import plan_input, read_block
from seqlens.bulk.spec import BulkSpec
from seqlens.errors import InvalidInput
from seqlens.explainers.options import MethodOptions
from seqlens.explainers.targets import TargetSpec

ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("block_rows", [1, 2, 3, 7, 100])
def test_jsonl_blocks_read_alone_equal_the_whole_file(tmp_path, block_rows):
    records = [{"id": i * 10, "text": f"row {i} é\tñ"} for i in range(11)]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(4, "")  # blank lines are no rows
    lines.insert(8, "   ")
    src = _jsonl(tmp_path / "in.jsonl", lines)
    plan = plan_input(src, block_rows=block_rows)
    assert (plan.num_rows, plan.input_column, plan.id_column, plan.id_type) == (11, "text", "id", "int64")
    assert [b.stop - b.start for b in plan.blocks] == [min(block_rows, 11 - s) for s in range(0, 11, block_rows)]
    got = [row for b in reversed(plan.blocks) for row in reversed(read_block(plan, b))][::-1]
    assert [r.row for r in got] == list(range(11))
    assert [(r.id, r.input.text) for r in got] == [(r["id"], r["text"]) for r in records]


def test_jsonl_bad_rows_become_errors_not_failures(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [
        json.dumps({"id": "a", "token_ids": [1, 2]}),
        "[1, 2]",
        json.dumps({"id": "c", "token_ids": [[1, 2], [3]]}),
        json.dumps({"id": "d", "token_ids": "1 2"}),
        json.dumps({"id": 5, "token_ids": [True]}),
        json.dumps({"id": "f"}),
    ])
    plan = plan_input(src, block_rows=4)
    assert plan.id_type == "string"
    rows = [r for b in plan.blocks for r in read_block(plan, b)]
    assert rows[0].error is None and rows[0].input.token_ids.tolist() == [1, 2]
    assert "a JSON list, not an object" in rows[1].error and rows[1].id is None
    assert "ragged" in rows[2].error
    assert "is a string" in rows[3].error
    assert rows[4].id == "5" and "bool" in rows[4].error
    assert rows[5].error is None and rows[5].input.token_ids is None  # the explain core names what is missing


def test_parquet_blocks_straddle_row_groups(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(int(t), 2)).astype(np.float32) for t in rng.integers(1, 6, size=13)]
    table = pa.table({"features": pa.array([f.tolist() for f in feats], pa.list_(pa.list_(pa.float32()))),
                      "key": pa.array([f"k{i}" for i in range(13)])})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=4)
    plan = plan_input(src, block_rows=5, id_column="key")
    assert (plan.num_rows, plan.id_type, len(plan.blocks)) == (13, "string", 3)
    rows = [r for b in plan.blocks for r in read_block(plan, b)]
    assert [r.id for r in rows] == table.column("key").to_pylist()
    for r, f in zip(rows, feats, strict=True):
        np.testing.assert_array_equal(r.input.features, f)
    no_id = plan_input(src, block_rows=5)
    assert no_id.id_column is None and [r.id for b in no_id.blocks for r in read_block(no_id, b)] == list(range(13))


def test_input_column_must_be_unambiguous(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "a", "token_ids": [1]})])
    with pytest.raises(InvalidInput, match="exactly one of the columns"):
        plan_input(src, block_rows=2)
    assert plan_input(src, block_rows=2, input_column="token_ids").input_column == "token_ids"
    with pytest.raises(InvalidInput, match="unknown input format"):
        plan_input(_jsonl(tmp_path / "in.csv", ["a"]), block_rows=2)


def test_spec_round_trips_and_builds_the_server_request():
    spec = BulkSpec(repository="/r", model="m", version="2",
                    methods=(MethodOptions("integrated_gradients", n_steps=8), MethodOptions("occlusion", window=2)),
                    target=TargetSpec(label="pos"), baseline="zeros", state=("state_norm",), faithfulness=True)
    again = BulkSpec.from_json(spec.to_json())
    assert again == spec
    from seqlens.inputs import SequenceInput

    req = again.request_for(SequenceInput(text="x"), "7")
    assert (req.model_name, req.model_version, req.request_id, req.methods, req.target) == \
           ("m", "2", "7", spec.methods, spec.target)
    assert req.state is not None and req.state.summaries == ("state_norm",) and req.faithfulness
    assert BulkSpec(repository="/r", model="m").request_for(SequenceInput(text="x"), "").state is None
    with pytest.raises(InvalidInput, match="requested twice"):
        BulkSpec(repository="/r", model="m", methods=(MethodOptions("saliency"), MethodOptions("saliency")))


def test_output_folder_of_another_job_is_refused(tmp_path):
    from seqlens.bulk.run import prepare_output

    from tests.factories import tiny_config

    src = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "a"})])
    plan = plan_input(src, block_rows=2)
    out = tmp_path / "out"
    config = tiny_config()
    spec = BulkSpec(repository="/r", model="m", version="1")
    prepare_output(out, spec, plan, config, overwrite=False)
    prepare_output(out, spec, plan, config, overwrite=False)  # same job: resumes
    (out / "part-000000.parquet").write_bytes(b"x")
    other = BulkSpec(repository="/r", model="m", version="2")
    with pytest.raises(InvalidInput, match="another job .*spec differ"):
        prepare_output(out, other, plan, config, overwrite=False)
    prepare_output(out, other, plan, config, overwrite=True)
    assert not (out / "part-000000.parquet").exists(), "overwrite drops the other job's blocks"


def test_server_and_cli_never_import_ray():
    code = ("import sys, seqlens, seqlens.cli, seqlens.grpc.server, seqlens.bulk, seqlens.bulk.cli; "
            "from seqlens.bulk import BulkSpec, summarize; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    env = {"PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'clients' / 'python'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["tagging", "forecasting"])
def test_block_explainer_without_ray_fills_every_column(tmp_path, kind):
    """The worker alone (no Ray): every task's columns get the explain core's values, with the
    shapes the schema promises, for every layer and direction of a deep bidirectional model."""
    pq = pytest.importorskip("pyarrow.parquet")
    from seqlens.bulk.worker import BlockExplainer
    from seqlens.config import Settings
    from seqlens.explain import explain
    from seqlens.versions import load_version

    from tests.factories import export_tiny

    tokens = kind == "tagging"
    path = export_tiny(tmp_path / "repo", "m", task=kind, tokens=tokens, layers=2, bidirectional=True,
                       cell="gru" if tokens else "lstm")
    rng = np.random.default_rng(1)
    if tokens:
        rows = [{"id": i, "text": t} for i, t in enumerate(["the film was good", "dull", "a witty plot !"])]
    else:
        rows = [{"id": i, "features": rng.normal(size=(n, 3)).tolist()} for i, n in enumerate((4, 1, 6))]
    src = _jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    plan = plan_input(src, block_rows=3)
    spec = BulkSpec(repository=str(tmp_path / "repo"), model="m", version="1", state=(),
                    methods=(MethodOptions("integrated_gradients", n_steps=8), MethodOptions("saliency")))
    (tmp_path / "out").mkdir()
    worker = BlockExplainer(spec.to_json(), plan, str(tmp_path / "out"))
    outcome = worker.explain_block(plan.blocks[0])
    assert (outcome.rows, outcome.failed) == (3, 0)
    recs = pq.read_table(tmp_path / "out" / "part-000000.parquet").to_pylist()
    loaded = load_version(path, "m", "1")
    state_cols = [c for c in recs[0] if c.startswith("state.")]
    assert {c.split(".")[1] for c in state_cols} == {"layer0", "layer1"}
    assert {c.split(".")[2] for c in state_cols} == {"forward", "backward"}
    for rec, row in zip(recs, plan_rows(plan), strict=True):
        result = explain(loaded, spec.request_for(row.input, str(row.id)), Settings())
        np.testing.assert_allclose(np.asarray(rec["scores"]), result.prediction.scores, atol=1e-6)
        for att in result.attributions:
            np.testing.assert_allclose(np.asarray(rec[f"{att.method}.scores"]), att.scores, atol=1e-6)
            if att.feature_scores is not None:
                assert np.asarray(rec[f"{att.method}.feature_scores"]).shape == att.feature_scores.shape
        for s in result.state:
            prefix = f"state.layer{s.layer}.{s.direction}."
            assert np.asarray(rec[prefix + "state_norm"]).shape == (rec["length"],)
            assert np.asarray(rec[prefix + "gate_mean"]).shape == s.gate_mean.shape
        if tokens:
            assert np.asarray(rec["scores"]).shape == (rec["length"], 3) and len(rec["step_labels"]) == rec["length"]
            assert rec["target_timestep"] == rec["length"] - 1 and rec["target_label"] is not None
        else:
            assert rec["target_horizon_step"] == 0 and rec["target_label"] is None and "tokens" not in rec


def plan_rows(plan):
    return [r for b in plan.blocks for r in read_block(plan, b)]
