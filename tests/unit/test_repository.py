"""Repository scanning and name validation: nothing outside the root is ever reachable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from seqlens.errors import InvalidInput, ModelNotFound
from seqlens.repository import ModelRepository, validate_name


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "", "a" * 200, "x\x00", "a\\b", "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_name("model name", name)


def test_scan_sorts_versions_and_skips_escapes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for v in ("1", "2", "10"):
        (root / "m" / v).mkdir(parents=True)
    (root / "m" / ".10.tmp").mkdir()
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    os.symlink(outside, root / "escape")
    os.symlink(outside / "1", root / "m" / "11")
    repo = ModelRepository(root)
    assert repo.scan() == {"m": ["1", "2", "10"]}
    assert repo.latest_version("m") == "10"
    with pytest.raises(ModelNotFound):
        repo.version_dir("escape", "1")
    with pytest.raises(ModelNotFound):
        repo.version_dir("m", "11")
    with pytest.raises(InvalidInput):
        repo.version_dir("m", "..")
