"""Issue #19 (item 5): export_model refuses to replace a version unless told to, and says what
kind of module it takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from seqlens.cli import main as seqlens_main
from seqlens.export import export_model
from seqlens.schema import dump_config
from seqlens.versions import load_version

from tests.factories import VOCAB, tiny_model


def test_a_plain_torch_module_is_refused_with_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as err:
        export_model(torch.nn.GRU(3, 4, batch_first=True), tmp_path / "m" / "1")  # type: ignore[arg-type]
    text = str(err.value)
    assert "torch.nn.modules.rnn.GRU" in text and "SequenceModel" in text and "build_model" in text
    assert not (tmp_path / "m").exists()


def test_an_existing_version_is_kept_unless_overwrite(tmp_path: Path) -> None:
    first = tiny_model(seed=1)
    export_model(first, tmp_path / "m" / "1", vocabulary=VOCAB)
    before = (tmp_path / "m" / "1" / "weights.safetensors").read_bytes()
    second = tiny_model(seed=2)
    with pytest.raises(FileExistsError) as err:
        export_model(second, tmp_path / "m" / "1", vocabulary=VOCAB)
    assert "overwrite=True" in str(err.value) and str(tmp_path / "m" / "2") in str(err.value)
    assert (tmp_path / "m" / "1" / "weights.safetensors").read_bytes() == before
    export_model(second, tmp_path / "m" / "1", vocabulary=VOCAB, overwrite=True)
    assert (tmp_path / "m" / "1" / "weights.safetensors").read_bytes() != before
    assert load_version(tmp_path / "m" / "1", "m", "1").parity_max_abs_diff <= 1e-4


def test_seqlens_export_needs_overwrite_for_an_existing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    module = tiny_model(seed=3, tokens=False, task="forecasting")
    (tmp_path / "model.yaml").write_text(dump_config(module.config))
    save_file(module.state_dict(), str(tmp_path / "w.safetensors"))
    args = ["export", "--config", str(tmp_path / "model.yaml"), "--weights", str(tmp_path / "w.safetensors"),
            "--output", str(tmp_path / "repo" / "s" / "1")]
    assert seqlens_main(args) == 0
    assert seqlens_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert seqlens_main([*args, "--overwrite"]) == 0
