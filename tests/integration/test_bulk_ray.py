"""Bulk explanation on local Ray Data (2 CPUs) against the real server's Explain.

The oracle is a real in-process gRPC server over the same repository, called through the SDK:
every explained row must equal its Explain answer (<= 1e-6), failed rows must carry the
status and message the server answers the same input with, rows keep input order and ids,
and a rerun resumes: it runs only the blocks whose files are missing (counted by the job's
report and by the untouched files, never by time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.factories import export_tiny

ray = pytest.importorskip("ray", reason="bulk explanation needs the seqlens[ray] extra")
pq = pytest.importorskip("pyarrow.parquet")

from seqlens.bulk import BulkProgress, BulkSpec, explain_dataset, summarize
from seqlens.explainers.options import MethodOptions
from seqlens_client import Client, Method, SeqlensError, StateOptions

TOL = 1e-6
TEXTS = ["the film was good", "a very dull plot .", "not bad !", "witty , witty movie", "the plot was bad",
         "good good film", "a dull film"]
SUMMARIES = ("state_norm", "delta_norm", "gate_mean")


@pytest.fixture(scope="module")
def ray_session():
    # Ray gives its raylet a fixed 30 s to register at startup; on a saturated CI machine that can
    # pass, so a failed start is retried (startup only: nothing here is judged by time).
    # Workers at the default priority, as ensure_ray starts them: at Ray's niceness 15 a busy
    # machine starves them.
    os.environ.setdefault("RAY_worker_niceness", "0")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bulk-repo")
    export_tiny(root, "tok", seed=3)
    export_tiny(root, "feat", seed=4, cell="gru", tokens=False)
    return root


def _close(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.allclose(got, want, atol=TOL, rtol=0), f"{what}: max diff {np.max(np.abs(got - want))}"


def _check_against_server(rec: dict, exp, methods: list[str], *, faithfulness: bool, states: tuple[str, ...]):
    assert rec["error_code"] is None, rec["error"]
    assert rec["model_version"] == exp.model_version
    assert rec["length"] == exp.prediction.length
    _close(rec["scores"], exp.prediction.scores, "prediction.scores")
    if exp.prediction.probabilities is not None:
        _close(rec["probabilities"], exp.prediction.probabilities, "probabilities")
        assert rec["label"] == exp.prediction.label
    if exp.tokens:
        assert rec["tokens"] == [t.text for t in exp.tokens]
        assert rec["token_ids"] == [t.id for t in exp.tokens]
    assert rec["target_label"] == (exp.target.label or None)
    for m in methods:
        a = exp.attributions[m]
        _close(rec[f"{m}.scores"], a.scores, f"{m}.scores")
        if a.feature_scores is not None:
            _close(rec[f"{m}.feature_scores"], a.feature_scores, f"{m}.feature_scores")
        if a.l2_norm is not None:
            _close(rec[f"{m}.l2_norm"], a.l2_norm, f"{m}.l2_norm")
        assert rec[f"{m}.n_steps"] == a.n_steps and rec[f"{m}.converged"] == a.converged
        for name in ("target_at_input", "target_at_baseline"):
            _close(rec[f"{m}.{name}"], getattr(a, name), f"{m}.{name}")
        if rec[f"{m}.convergence_delta"] is not None:
            _close(rec[f"{m}.convergence_delta"], a.convergence_delta, f"{m}.convergence_delta")
        if faithfulness:
            f = a.faithfulness
            _close(rec[f"{m}.comprehensiveness"], f.comprehensiveness, f"{m}.comprehensiveness")
            _close(rec[f"{m}.aopc_sufficiency"], f.aopc_sufficiency, f"{m}.aopc_sufficiency")
    for name in states:
        _close(rec[f"state.layer0.forward.{name}"], getattr(exp.state.layer(0), name), name)


def _server_error(client: Client, model: str, value, **kw) -> tuple[str, str]:
    with pytest.raises(SeqlensError) as info:
        client.explain(model, value, **kw)
    return info.value.code.name, info.value.message


def test_token_dataset_equals_server_explain_and_resumes(ray_session, repo, start_server, tmp_path, capsys):
    rows: list[dict] = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)]
    rows.insert(2, {"id": "oov", "token_ids": [2, 4, 99]})  # poisoned: outside the vocabulary
    rows.insert(5, {"id": "empty", "text": ""})  # poisoned: no tokens
    lines = [json.dumps(r) for r in rows]
    lines.insert(7, "{not json")  # poisoned: unreadable line (row 7)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is no row
    out = tmp_path / "out"
    spec = BulkSpec(repository=str(repo), model="tok",
                    methods=(MethodOptions("integrated_gradients"), MethodOptions("occlusion", window=1)),
                    state=SUMMARIES, faithfulness=True, block_rows=3)
    report = explain_dataset(src, out, spec, num_actors=2, progress=False)
    n = len(lines)
    assert (report.num_rows, report.blocks_total, report.blocks_run, report.blocks_skipped) == (n, 4, 4, 0)
    assert (report.rows_run, report.rows_failed) == (n, 3)

    table = pq.read_table(out)
    recs = table.to_pylist()
    assert [r["row"] for r in recs] == list(range(n))
    want_ids = [r["id"] for r in rows[:7]] + [None] + [r["id"] for r in rows[7:]]
    assert [r["id"] for r in recs] == want_ids, "input order and ids"

    srv = start_server(repo)
    methods = ["integrated_gradients", "occlusion"]
    with Client(srv.target, timeout=120) as client:
        good = [(r, rec) for r, rec in zip([*rows[:7], None, *rows[7:]], recs, strict=True)
                if r is not None and r["id"] not in ("oov", "empty")]
        exps = client.explain_many("tok", [r["text"] for r, _ in good],
                                   [Method("integrated_gradients"), Method("occlusion", window=1)],
                                   state=StateOptions(list(SUMMARIES)), faithfulness=True, concurrency=2)
        for (_, rec), exp in zip(good, exps, strict=True):
            _check_against_server(rec, exp, methods, faithfulness=True, states=SUMMARIES)
        by_id = {rec["id"]: rec for rec in recs}
        for rid, value in (("oov", np.array([2, 4, 99])), ("empty", "")):
            code, message = _server_error(client, "tok", value, methods=[Method("occlusion", window=1)])
            assert (by_id[rid]["error_code"], by_id[rid]["error"]) == (code, message)
    bad_line = recs[7]
    assert bad_line["error_code"] == "INVALID_ARGUMENT" and "row 7: not valid JSON" in bad_line["error"]

    # Resume: remove one finished block; the rerun explains that block only.
    parts = sorted(out.glob("part-*.parquet"))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts}
    parts[1].unlink()
    again = explain_dataset(src, out, spec, num_actors=2, progress=False)
    assert (again.blocks_run, again.blocks_skipped, again.rows_run) == (1, 3, 3)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("part-*.parquet"))}
    assert {k: v for k, v in after.items() if k != parts[1].name} == \
           {k: v for k, v in before.items() if k != parts[1].name}, "finished blocks are not rewritten"
    assert pq.read_table(out).to_pylist() == recs

    # A finished job reruns as a no-op, here through the CLI, which also writes the summary page.
    from seqlens.cli import main

    html = tmp_path / "summary.html"
    code = main(["explain-dataset", str(src), "--model", "tok", "--model-repository", str(repo), "--output",
                 str(out), "--method", "integrated_gradients", "--method", "occlusion:window=1",
                 "--state", ",".join(SUMMARIES), "--faithfulness", "--block-rows", "3", "--html", str(html),
                 "--no-progress"])
    assert code == 0
    cli_report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (cli_report["blocks_run"], cli_report["blocks_skipped"]) == (0, 4)

    # Dataset view vs an independent aggregation of the same output with pandas.
    import pandas as pd

    summary = summarize(out, min_count=1, top=100)
    ok = table.to_pandas()
    ok = ok[ok["error_code"].isna()]
    assert summary.rows == n and summary.failed == 3 and summary.errors == {"INVALID_ARGUMENT": 3}
    long = pd.DataFrame({"cls": ok["target_label"].repeat(ok["tokens"].map(len)).to_numpy(),
                         "tok": np.concatenate(ok["tokens"].to_numpy()),
                         "v": np.concatenate(ok["integrated_gradients.scores"].to_numpy())})
    means = long.groupby(["cls", "tok"])["v"].mean()
    ig = next(m for m in summary.methods if m.method == "integrated_gradients")
    for cls, stats in ig.top_tokens.items():
        assert len(stats) == len(means[cls])
        for st in stats:
            assert st.mean == pytest.approx(means[(cls, st.token)], abs=1e-9)
        assert stats[0].mean == pytest.approx(means[cls].max(), abs=1e-9)
    assert len(ig.relative_delta) == len(ok)
    assert ig.relative_delta == pytest.approx(ok["integrated_gradients.relative_delta"].tolist())
    assert len(ig.aopc_comprehensiveness) == len(ok)
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    shown = next(m for m in summarize(out).methods if m.method == "integrated_gradients")  # the CLI's defaults
    assert shown.top_tokens, "tokens seen >= 3 times are ranked"
    for stats in shown.top_tokens.values():
        assert all(st.count >= 3 for st in stats)
        assert f"<td>{stats[0].token}</td>" in page
    assert "relative convergence delta" in page and "AOPC comprehensiveness" in page


def test_feature_parquet_equals_server_explain(ray_session, repo, start_server, tmp_path):
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(7)
    feats = [rng.normal(size=(t, 3)).astype(np.float32) for t in (5, 9, 1, 12, 7)]
    ids = [101, 102, 103, 104, 105]
    column = [f.tolist() for f in feats]
    column[3] = [[1.0, 2.0], [3.0]]  # poisoned: ragged rows
    src = tmp_path / "in.parquet"
    table = pa.table({"id": pa.array(ids, pa.int64()),
                      "features": pa.array(column, pa.list_(pa.list_(pa.float32())))})
    pq.write_table(table, src, row_group_size=2)  # blocks of 3 rows straddle row groups
    out = tmp_path / "out"
    spec = BulkSpec(repository=str(repo), model="feat",
                    methods=(MethodOptions("integrated_gradients", n_steps=16),
                             MethodOptions("feature_ablation", ablation="per_feature")), block_rows=3)
    seen: list[BulkProgress] = []
    report = explain_dataset(src, out, spec, num_actors=2, progress=seen.append)
    assert (report.blocks_run, report.rows_failed) == (2, 1)
    assert [(p.blocks_done, p.blocks_total) for p in seen] == [(0, 2), (1, 2), (2, 2)]
    assert (seen[-1].rows_done, seen[-1].rows_failed) == (5, 1)
    assert seen[1].rows_done in (2, 3), "the first block done, either one (blocks of 3 and 2 rows)"
    recs = pq.read_table(out).to_pylist()
    assert [r["id"] for r in recs] == ids and pq.read_schema(out / "part-000000.parquet").field("id").type == pa.int64()
    assert recs[3]["error_code"] == "INVALID_ARGUMENT" and "ragged" in recs[3]["error"]
    srv = start_server(repo)
    with Client(srv.target, timeout=120) as client:
        methods = [Method("integrated_gradients", n_steps=16), Method("feature_ablation", ablation="per_feature")]
        exps = client.explain_many("feat", [feats[i] for i in (0, 1, 2, 4)], methods, concurrency=2)
    for i, exp in zip((0, 1, 2, 4), exps, strict=True):
        _check_against_server(recs[i], exp, ["integrated_gradients", "feature_ablation"], faithfulness=False,
                              states=())

    summary = summarize(out)
    ig = next(m for m in summary.methods if m.method == "integrated_gradients")
    ok = [r for r in recs if r["error_code"] is None]
    for cls, means in ig.position_mean.items():
        rows_cls = [np.asarray(r["integrated_gradients.scores"]) for r in ok if r["target_label"] == cls]
        for t, mean in enumerate(means):
            at_t = [s[t] for s in rows_cls if s.shape[0] > t]
            assert mean == pytest.approx(np.mean(at_t), abs=1e-9)
        feature_means = np.mean([np.asarray(r["integrated_gradients.feature_scores"]).sum(axis=0)
                                 for r in ok if r["target_label"] == cls], axis=0)
        assert ig.feature_mean[cls] == pytest.approx(feature_means.tolist(), abs=1e-9)
    assert summary.feature_names == ["f0", "f1", "f2"]
