"""A fresh virtual environment with only ``pip install ./clients/python`` talks to a real server:
the SDK needs grpcio, protobuf and numpy and nothing else (no torch, no onnxruntime, no server
package), and its CLI entry point is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerThread
from tests.factories import export_tiny

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import numpy as np
from seqlens_client import Client, Method, StateOptions, NotFound

target = sys.argv[1]
with Client(target, timeout=30) as client:
    models = [m.name for m in client.list_models()]
    pred = client.predict("words", ["the film was good", [2, 3, 4]])
    exp = client.explain("words", "the film was not good", [Method("integrated_gradients", n_steps=16)],
                         state=StateOptions(include_hidden=True))
    exp.to_html(sys.argv[2])
    try:
        client.get_model("nope")
        missing = None
    except NotFound as e:
        missing = e.code.name
optional = []
for call in (lambda: exp.to_png("x.png"), exp.to_pandas):  # extras that are not installed: clear errors
    try:
        call()
    except ImportError as e:
        optional.append(str(e))
heavy = sorted(m for m in ("torch", "onnxruntime", "seqlens", "pandas", "matplotlib") if m in sys.modules)
print(json.dumps({"models": models, "labels": [p.label for p in pred], "tokens": len(exp.tokens),
                  "delta": exp.attributions["integrated_gradients"].convergence_delta,
                  "layers": len(exp.state.layers), "missing": missing, "heavy": heavy, "optional": optional,
                  "text": exp.to_text(color=False)}))
"""


def test_fresh_venv_with_only_the_client(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = tmp_path_factory.mktemp("venv-repo")
    export_tiny(repo, "words", cell="lstm", task="classification", tokens=True)
    src = tmp_path / "client-src"  # a clean copy: building must not write into the work tree
    shutil.copytree(ROOT / "clients" / "python", src,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                         timeout=300, env=env, check=False)
    assert pip.returncode == 0, pip.stderr[-3000:]
    frozen = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True, env=env)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(frozen.stdout)}
    direct = {"seqlens-client", "grpcio", "protobuf", "numpy"}
    assert direct <= installed
    assert installed - direct - {"pip", "setuptools", "wheel"} <= {"typing-extensions"}  # grpcio's own dependency

    with ServerThread(repo, poll_interval_s=0) as srv:
        html = tmp_path / "report.html"
        run = subprocess.run([str(py), "-c", SCRIPT, srv.target, str(html)], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout)
        cli = subprocess.run([str(venv / "bin" / "seqlens-client"), "models", "--target-address", srv.target,
                              "--json"], capture_output=True, text=True, timeout=60, env=env, check=False)
        assert cli.returncode == 0, cli.stderr
    assert out["models"] == ["words"] and len(out["labels"]) == 2 and out["labels"][0] in ("neg", "neu", "pos")
    assert out["tokens"] == 5 and out["layers"] == 1 and out["missing"] == "NOT_FOUND"
    assert out["heavy"] == []  # nothing heavy was imported
    assert out["optional"] == ["to_png() needs matplotlib: pip install 'seqlens-client[plot]'",
                               "to_pandas() needs pandas: pip install pandas"]
    assert "integrated_gradients" in out["text"]
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [m["name"] for m in json.loads(cli.stdout)] == ["words"]
