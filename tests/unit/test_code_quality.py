"""The code stays lint-clean (ruff) and type-clean (mypy), as the Makefile's lint/typecheck say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=False, capture_output=True, text=True,
                          timeout=600)


def test_ruff() -> None:
    proc = _run("ruff", "check", "service", "clients", "tests", "bench", "scripts")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy() -> None:
    proc = _run("mypy", "service/seqlens", "clients/python/seqlens_client")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
