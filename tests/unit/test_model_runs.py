"""The run counters behind seqlens_model_runs_total: one per ONNX Runtime run and per call into torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from seqlens.versions import load_version

from tests.factories import export_tiny, random_inputs


@pytest.mark.parametrize("kw", [{}, {"tokens": False, "cell": "gru", "bidirectional": True, "layers": 2}],
                         ids=["tokens", "features-bidirectional"])
def test_every_run_is_counted_once(tmp_path: Path, kw: dict[str, object]) -> None:
    loaded = load_version(export_tiny(tmp_path, "m", **kw), "m", "1")  # type: ignore[arg-type]
    runs = loaded.runs
    assert runs.get("onnxruntime") >= 2 and runs.get("torch") >= 1  # the load's parity check ran both
    x, lengths = random_inputs(loaded.torch_module, 2, 5, np.random.default_rng(0))
    before = runs.snapshot()

    def delta() -> tuple[int, int]:
        now = runs.snapshot()
        return now["onnxruntime"] - before["onnxruntime"], now["torch"] - before["torch"]

    loaded.onnx.run(x, lengths)
    assert delta() == (1, 0)
    module = loaded.torch_module
    tx, tl = torch.from_numpy(x), torch.from_numpy(lengths)
    with torch.no_grad():
        module(tx, tl)  # the whole module: one run, not one per piece
        assert delta() == (1, 1)
        emb = module.embed(tx)
        assert delta() == (1, 2)
        module.forward_from_embedding(emb, tl)
        assert delta() == (1, 3)
        module.run_layers(emb, tl)
        assert delta() == (1, 4)
