"""``seqlens-client stream``: a long series or text fed in chunks, as a user runs it (a subprocess),
against a real server; the last chunk's answer equals one Predict of the whole input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from seqlens_client import Client
from seqlens_client.cli import text_chunks

from tests.conftest import ServerThread
from tests.factories import FEATURES, export_tiny

TEXT = "the film was not very good , but the plot was witty ! " * 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("stream-repo")
    export_tiny(root, "words", cell="lstm", layers=2)
    export_tiny(root, "series", seed=1, cell="gru", task="forecasting", tokens=False)
    with ServerThread(root, poll_interval_s=0) as srv:
        yield srv


def cli(server: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seqlens_client.cli", *args, "--target-address", server.target],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)


def test_text_chunks_cut_after_whitespace() -> None:
    pieces = list(text_chunks(TEXT, 20))
    assert "".join(pieces) == TEXT and all(len(p) <= 20 for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-1])


@pytest.mark.parametrize("mode", [[], ["--client-state"]])
def test_stream_a_series_and_a_text(server: ServerThread, tmp_path: Path, mode: list[str]) -> None:
    series = np.random.default_rng(0).normal(size=(50, len(FEATURES))).astype(np.float32)
    np.save(tmp_path / "s.npy", series)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    with Client(server.target) as c:
        whole_series = c.predict("series", series)[0].forecast
        whole_text = c.predict("words", TEXT)[0]
    run = cli(server, "stream", "series", str(tmp_path / "s.npy"), "--chunk", "7", "--json", *mode)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["offset"], r["steps"]) for r in rows] == [(a, min(a + 7, 50)) for a in range(0, 50, 7)]
    np.testing.assert_allclose(rows[-1]["forecast"], whole_series, atol=1e-5)
    run = cli(server, "stream", "words", str(tmp_path / "t.txt"), "--chunk", "30", *mode)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) > 1 and lines[-1].endswith(f"] {whole_text.label}")
    assert lines[-1].startswith("[") and f":{whole_text.length}]" in lines[-1]
