"""The README's "Bring your own model" example runs as written (in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Bring your own model"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


def test_readme_myrnn_example_builds_a_loadable_version(tmp_path: Path) -> None:
    code = _example()
    assert "class MyRNN(nn.Module):" in code and "seqlens.build_version(" in code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "clients" / "python")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("built models/splice/1 (cell protocol")
    assert sorted(p.name for p in (tmp_path / "models" / "splice" / "1").iterdir()) == [
        "model.onnx", "model.yaml", "vocab.json"]
