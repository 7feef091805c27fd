"""The wire API follows the protobuf style guide and does not break by accident.

`buf lint` (STANDARD, buf.yaml) must report nothing on protos/, and `buf breaking` compares
protos/ with the committed baseline protos/api-baseline.json (`make api-baseline`), so a
breaking change needs a regenerated baseline in the same commit: a deliberate act, visible in
review (README, "API compatibility").

buf comes from npm into .tools/ (`make buf`, part of `make test`'s install). A missing buf
fails these tests rather than skipping them: a skipped guard looks green, and CI would lose the
check without anyone noticing. On a machine without npm, deselect them explicitly
(`-k "not test_buf"`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(os.environ.get("SEQLENS_BUF", ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"))
BASELINE = ROOT / "protos" / "api-baseline.json"


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        pytest.fail(f"buf is not installed at {BUF}: run `make buf` (needs npm; `make test` does it), "
                    "or set SEQLENS_BUF to a buf binary")
    return BUF


def _run(buf: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(buf), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _copy_api(tmp: Path) -> Path:
    """A workspace of its own: buf.yaml and protos/ (to break on purpose)."""
    shutil.copy(ROOT / "buf.yaml", tmp / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp / "protos")
    return tmp


def test_buf_lint_reports_nothing(buf: Path) -> None:
    proc = _run(buf, "lint")
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_buf_lint_sees_a_style_slip(buf: Path, tmp_path: Path) -> None:
    """The lint run is not blind: an enum value without its enum's prefix is reported."""
    ws = _copy_api(tmp_path)
    proto = ws / "protos" / "seqlens" / "v1" / "types.proto"
    proto.write_text(proto.read_text().replace("DATA_TYPE_INT64 = 2;", "INT64 = 2;"))
    proc = _run(buf, "lint", cwd=ws)
    assert proc.returncode != 0 and 'should be prefixed with "DATA_TYPE_"' in proc.stdout, proc.stdout + proc.stderr


def test_lint_exceptions_are_the_documented_ones() -> None:
    """Comment ignores are narrow by design; a new one must be added here, with its reason in buf.yaml."""
    found = sorted(re.findall(r"buf:lint:ignore (\w+)", "".join(
        p.read_text() for p in sorted((ROOT / "protos" / "seqlens").rglob("*.proto")))))
    assert found == sorted(["RPC_RESPONSE_STANDARD_NAME", "RPC_REQUEST_RESPONSE_UNIQUE",
                            "RPC_REQUEST_RESPONSE_UNIQUE", "RPC_REQUEST_STANDARD_NAME",
                            "RPC_RESPONSE_STANDARD_NAME"])
    config = (ROOT / "buf.yaml").read_text()
    assert "GetModel returns ModelInfo" in config and "Explain and StreamExplain share" in config


def test_buf_breaking_against_the_committed_baseline(buf: Path) -> None:
    assert BASELINE.exists(), "protos/api-baseline.json is missing: `make api-baseline` writes it"
    proc = _run(buf, "breaking", "--against", str(BASELINE))
    assert proc.returncode == 0, (
        "the wire API changed incompatibly with protos/api-baseline.json:\n" + proc.stdout + proc.stderr
        + "\nIf the break is deliberate (before 1.0 only), run `make api-baseline` and commit the new baseline.")


@pytest.mark.parametrize(("old", "new", "says"), [
    ("int64 steps = 3;", "int64 steps = 7;", "deleted"),  # a field number moved
    ("OUTPUT_SPACE_LOGIT = 2;", "OUTPUT_SPACE_LOGITS = 2;", "changed name"),
    ("rpc Predict(PredictRequest)", "rpc Predicts(PredictRequest)", "deleted"),
])
def test_buf_breaking_sees_a_break(buf: Path, tmp_path: Path, old: str, new: str, says: str) -> None:
    """The breaking run is not blind: a moved field, a renamed enum value or RPC is reported."""
    ws = _copy_api(tmp_path)
    hits = 0
    for proto in (ws / "protos" / "seqlens").rglob("*.proto"):
        text = proto.read_text()
        hits += text.count(old)
        proto.write_text(text.replace(old, new))
    assert hits == 1, f"{old!r} should occur once in protos/seqlens"
    proc = _run(buf, "breaking", "--against", str(BASELINE), cwd=ws)
    assert proc.returncode != 0 and says in proc.stdout, proc.stdout + proc.stderr
