"""``seqlens-client`` as a user runs it (a subprocess) against a real server: models, predict and
explain on texts, token ids and CSV/NPY features, JSON output, the HTML report, bulk explain of
a file with progress on stderr, tokens, and exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from seqlens_client import Client, Method

from tests.conftest import ServerThread
from tests.factories import FEATURES, export_tiny

TOKEN = "cli-token"
TEXT = "the film was not very good , but the plot was witty !"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("cli-repo")
    export_tiny(root, "words", cell="lstm", task="classification", tokens=True)
    export_tiny(root, "series", seed=1, cell="gru", task="forecasting", tokens=False)
    export_tiny(root, "tagger", seed=2, cell="lstm", task="tagging", tokens=True)
    with ServerThread(root, poll_interval_s=0, auth_token=TOKEN) as srv:
        yield srv


@pytest.fixture
def sdk(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, token=TOKEN) as c:
        yield c


def cli(server: ServerThread, *args: str, token: bool = True, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run the installed entry point's module; connection options after the command."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEQLENS_TOKEN", "SEQLENS_ADDRESS")}
    conn = ["--target-address", server.target] + (["--token", TOKEN] if token else [])
    return subprocess.run([sys.executable, "-m", "seqlens_client.cli", *args, *conn], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd, check=False)


def test_models(server: ServerThread) -> None:
    r = cli(server, "models")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["series", "tagger", "words"]
    assert "forecasting" in lines[0] and "ready" in lines[0]
    r = cli(server, "models", "series", "--json")
    info = json.loads(r.stdout)
    assert info["task"] == "forecasting" and info["input"]["feature_names"] == FEATURES and info["horizon"] == 3
    r = cli(server, "models", "words")
    assert "labels: neg, neu, pos" in r.stdout and "version 1: ready" in r.stdout
    assert "tokenizer: word (vocab.json, 17 tokens; special: <pad>, <unk>)" in r.stdout


def test_connection_options_before_the_command_and_token_from_env(server: ServerThread) -> None:
    env = {**os.environ, "SEQLENS_TOKEN": TOKEN}
    r = subprocess.run([sys.executable, "-m", "seqlens_client.cli", "--target-address", server.target, "models",
                        "--json"], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 3


def test_predict_every_input_form(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    r = cli(server, "predict", "words", "the film was good", "a dull plot", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    want = sdk.predict("words", ["the film was good", "a dull plot"])
    assert [row["label"] for row in rows] == [p.label for p in want]
    np.testing.assert_allclose(rows[1]["probabilities"], want[1].probabilities, rtol=1e-6)  # type: ignore[arg-type]
    r = cli(server, "predict", "words", "--ids", "2 3 4", "--ids", "5,6")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert r.stdout.split()[0] == sdk.predict("words", [2, 3, 4])[0].label

    x = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.csv").write_text("f0,f1,f2\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x))
    want_f = sdk.predict("series", x)[0].forecast
    for name in ("x.npy", "x.csv"):
        r = cli(server, "predict", "series", "--features", str(tmp_path / name), "--json")
        assert r.returncode == 0, r.stderr
        np.testing.assert_allclose(json.loads(r.stdout)["forecast"], want_f, rtol=1e-6)  # type: ignore[arg-type]
    r = cli(server, "predict", "tagger", "the plot was witty")
    assert r.stdout.strip().startswith("the/")


def test_explain_with_report(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    r = cli(server, "explain", "words", TEXT, "--method", "integrated_gradients", "--method", "saliency",
            "--steps", "16", "--target", "pos", "--faithfulness", "--html", str(html), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    want = sdk.explain("words", TEXT, [Method("integrated_gradients", n_steps=16), "saliency"], target="pos")
    assert out["target"]["label"] == "pos" and set(out["attributions"]) == {"integrated_gradients", "saliency"}
    np.testing.assert_allclose(out["attributions"]["integrated_gradients"]["scores"],
                               want.attributions["integrated_gradients"].scores, rtol=1e-5, atol=1e-7)
    # --html asks for the state (with hidden states), so every panel has data.
    assert out["state"]["layers"][0]["hidden"] is not None
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'class="note"' not in page and f"wrote {html}" in r.stderr
    text = cli(server, "explain", "words", TEXT)
    assert text.returncode == 0 and "integrated_gradients" in text.stdout and "top:" in text.stdout
    assert "\x1b[" not in text.stdout  # not a terminal: no colours


def test_explain_features_csv(server: ServerThread, tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(12, 3))
    (tmp_path / "s.csv").write_text("\n".join(",".join(f"{v:.5f}" for v in row) for row in x))  # no header
    r = cli(server, "explain", "series", "--features", str(tmp_path / "s.csv"), "--method", "feature_ablation",
            "--horizon-step", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["target"]["horizon_step"] == 1
    assert np.array(out["attributions"]["feature_ablation"]["scores"]).shape == (12,)


def test_bulk_explain_writes_json_lines_with_progress(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    texts = [f"the film was {w}" for w in ("good", "bad", "dull", "witty", "very good")] * 4
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    dst = tmp_path / "out.jsonl"
    r = cli(server, "explain", "words", "--input-file", str(src), "--method", "saliency", "--output", str(dst),
            "--concurrency", "3")
    assert r.returncode == 0, r.stderr
    rows = sorted((json.loads(ln) for ln in dst.read_text().splitlines()), key=lambda row: row["index"])
    assert [row["index"] for row in rows] == list(range(len(texts)))
    assert [row["text"] for row in rows] == texts
    single = sdk.explain("words", texts[3], "saliency").attributions["saliency"].scores
    np.testing.assert_allclose(rows[3]["attributions"]["saliency"]["scores"], single, rtol=1e-6)
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("explain ")]
    assert progress and progress[-1].startswith(f"explain {len(texts)}/{len(texts)} 100%")

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('"the film"\n{"token_ids": [2, 3, 4]}\n{"text": ""}\n[5, 6]\n')
    r = cli(server, "explain", "words", "--input-file", str(jsonl), "--method", "saliency", "--quiet")
    assert r.returncode == 1 and "1 of 4 inputs failed" in r.stderr and "explain " not in r.stderr
    rows = {json.loads(ln)["index"]: json.loads(ln) for ln in r.stdout.splitlines()}
    assert rows[2]["error"]["code"] == "INVALID_ARGUMENT" and "attributions" in rows[1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"txt": "typo"}\n')
    r = cli(server, "explain", "words", "--input-file", str(bad))
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr and r.stdout == ""


def test_errors_and_exit_statuses(server: ServerThread) -> None:
    r = cli(server, "predict", "nope", "x")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "nope" in r.stderr
    r = cli(server, "models", token=False)
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    r = cli(server, "explain", "words", "one", "two")
    assert r.returncode == 2 and "exactly one input" in r.stderr
    r = cli(server, "predict", "words", "--ids", "1 x")
    assert r.returncode == 2 and "--ids" in r.stderr
    r = cli(server, "explain", "words", "x", "--method", "occlusion", "--window", "0")
    assert r.returncode == 2 and "--window" in r.stderr and "at least 1" in r.stderr  # before any call
    r = cli(server, "explain", "words", "x", "--method", "occlusion", "--window", "5")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "window" in r.stderr  # the server's check
