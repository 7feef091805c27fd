"""The two biology demos built with seqlens.build_version (kind: onnx): READY, better than their
baselines on held-out data, and explained over gRPC. Oracles: the build's held-out metrics
(metrics.json) and in-process ONNX Runtime on the served model.onnx (IG completeness)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from seqlens.demo import data as D
from seqlens.tokenizers import read_vocabulary
from seqlens_client import Client

BIO = ["splice", "peptides"]
MARGIN = 0.2  # accuracy above the majority class, on held-out rows


@pytest.mark.parametrize("name", BIO)
def test_bio_demo_is_ready_custom_graph_and_beats_its_baseline(demo_repository: Path, demo_server: Any,
                                                               name: str) -> None:
    with Client(demo_server.target, timeout=60) as client:
        info = client.get_model(name)
    assert [(v.version, v.state) for v in info.versions] == [("1", "ready")]
    assert info.architecture.kind == "onnx"
    metrics = json.loads((demo_repository / "metrics.json").read_text())[name]
    assert metrics["test_rows"] > 500
    assert metrics["accuracy"] >= metrics["majority_accuracy"] + MARGIN, metrics


def _ort_logits(repo: Path, name: str, ids: list[int]) -> np.ndarray:
    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"))
    out = session.run(["outputs"], {"inputs": np.array([ids], dtype=np.int64),
                                    "lengths": np.array([len(ids)], dtype=np.int64)})[0]
    return np.asarray(out[0])


@pytest.mark.parametrize(("name", "text"), [
    # A real EI (donor) window from the UCI data: GT at positions 31-32.
    ("splice", "CAGACTGGGTGGACAACAAAACCTTCAGCGGTAAGAGAGGGCCAAGCTCAGAGACCACAG"),
    ("peptides", "GLWSKIKEVGKEAAKAAAKAAGKAALGAVSEAV"),  # the file's first antimicrobial peptide
])
def test_bio_demo_explains_over_grpc(demo_repository: Path, demo_server: Any, name: str, text: str) -> None:
    vocab = read_vocabulary(demo_repository / name / "1" / "vocab.json")
    ids = [vocab.index(c) for c in text]
    with Client(demo_server.target, timeout=120) as client:
        [pred] = client.predict(name, text)
        exp = client.explain(name, text, "integrated_gradients", baseline="pad")
    logits = _ort_logits(demo_repository, name, ids)
    np.testing.assert_allclose(pred.scores, logits, atol=1e-4)
    c = int(np.argmax(logits))
    assert exp.target.class_index == c
    ig = exp.attributions["integrated_gradients"]
    assert ig.scores.shape == (len(text),) and np.isfinite(ig.scores).all()
    # Completeness against ORT: the scores add up to f(x) - f(all pad) for the explained logit.
    pad = _ort_logits(demo_repository, name, [0] * len(ids))
    assert ig.target_at_input == pytest.approx(logits[c], abs=1e-4)
    assert ig.target_at_baseline == pytest.approx(pad[c], abs=1e-4)
    assert float(ig.scores.sum()) == pytest.approx(logits[c] - pad[c], rel=0.02, abs=1e-3)


def test_splice_text_is_a_real_ei_row() -> None:
    seqs, labels = D.load_splice()
    row = seqs.index("CAGACTGGGTGGACAACAAAACCTTCAGCGGTAAGAGAGGGCCAAGCTCAGAGACCACAG")
    assert D.SPLICE_LABELS[labels[row]] == "EI" and seqs[row][30:32] == "GT"
