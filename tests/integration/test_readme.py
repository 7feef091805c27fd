"""README.md examples run as written, so they cannot drift from the code.

Every fenced ``python`` or ``bash`` block right after a ``<!-- runnable -->`` line runs, in
README order, in one scratch folder against a real server over the demo repository: Python
blocks as scripts (``localhost:50051`` pointed at the test server), bash blocks line by line,
each line a ``seqlens-client`` or ``seqlens`` command (``SEQLENS_ADDRESS`` names the server, as
the README tells users to set it). The scratch folder holds the files the examples read:
``reviews.txt``, ``sunspots.csv`` (real data, with its year column) and ``token.txt``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerThread

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- runnable -->"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE)
COMMANDS = {"seqlens-client": "seqlens_client.cli", "seqlens": "seqlens.cli"}


def runnable_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number) of each marked block; a mark without a block is an error."""
    found = []
    for m in re.finditer(re.escape(MARK) + r"\n", text):
        block = BLOCK.match(text, m.end())
        if block is None:
            line = text.count("\n", 0, m.start()) + 1
            raise AssertionError(f"README.md:{line}: {MARK} is not followed by a python or bash block")
        found.append((block.group(1), block.group(2), text.count("\n", 0, block.start()) + 2))
    return found


def shell_commands(code: str) -> list[list[str]]:
    joined = code.replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines()]
    return [shlex.split(ln, comments=True) for ln in lines if ln and not ln.startswith("#")]


def test_runnable_marks_cover_the_examples_of_each_user_path() -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    python = [code for lang, code, _ in blocks if lang == "python"]
    assert len(blocks) >= 8
    assert any("export_model" in c and "vocabulary=" in c for c in python)  # token export
    assert any("kind: features" in c and "output_scale" in c for c in python)  # feature export
    assert any("tritonclient" in c and "headers=" in c for c in python)  # OIP with a token
    for lang, code, line in blocks:
        if lang == "bash":
            for argv in shell_commands(code):
                assert argv[0] in COMMANDS, f"README.md:{line}: runnable bash runs only {sorted(COMMANDS)}"


def _fixtures(folder: Path) -> None:
    from seqlens.demo.data import load_sunspots

    (folder / "reviews.txt").write_text("a gorgeous, witty, moving film\nnot bad at all\na dull, boring mess\n",
                                        encoding="utf-8")
    spots = load_sunspots()[-48:]
    rows = "\n".join(f"{1961 + i},{v:g}" for i, v in enumerate(spots))
    (folder / "sunspots.csv").write_text("year,sunspot_number\n" + rows + "\n", encoding="utf-8")
    (folder / "token.txt").write_text("any-token\n", encoding="utf-8")  # the demo server has no tokens


def test_readme_examples_run(demo_server: ServerThread, tmp_path: Path) -> None:
    _fixtures(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SEQLENS_TOKEN",)}
    env["SEQLENS_ADDRESS"] = demo_server.target
    env["MPLBACKEND"] = "Agg"
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    for lang, code, line in blocks:
        if lang == "python":
            script = tmp_path / f"readme_{line}.py"
            script.write_text(code.replace("localhost:50051", demo_server.target), encoding="utf-8")
            runs = [[sys.executable, str(script)]]
        else:
            runs = [[sys.executable, "-m", COMMANDS[argv[0]], *argv[1:]] for argv in shell_commands(code)]
        for argv in runs:
            r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                               check=False)
            assert r.returncode == 0, f"README.md:{line}: {' '.join(argv[2:] or argv)}\n{r.stdout[-2000:]}" \
                                      f"\n{r.stderr[-3000:]}"
    # What the examples wrote is there and loads.
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    for version in ("toy_sentiment/1", "toy_sentiment/2", "toy_forecast/1"):
        assert (tmp_path / "models" / version / "model.onnx").is_file()


@pytest.mark.parametrize("text, want", [
    ("seqlens-client explain sentiment \\\n    --json  # note\n", [["seqlens-client", "explain", "sentiment",
                                                                    "--json"]]),
    ("# comment\n\nseqlens check models\n", [["seqlens", "check", "models"]]),
])
def test_shell_lines_are_split_as_a_shell_would(text: str, want: list[list[str]]) -> None:
    assert shell_commands(text) == want
