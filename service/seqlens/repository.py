"""Finds model versions on disk. Names from requests are validated and never escape the root."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .errors import InvalidInput, ModelNotFound

log = logging.getLogger(__name__)

# Matched with fullmatch: ``$`` would also accept a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _valid(value: str) -> bool:
    return _NAME.fullmatch(value) is not None and ".." not in value


def validate_name(kind: str, value: str) -> str:
    """Model and version names: letters, digits, ``_.-``; no separators, no ``..``."""
    if not _valid(value):
        raise InvalidInput(
            f"{kind} {value[:80]!r} is not a valid name: use 1-128 letters, digits, '_', '.', '-' "
            "starting with a letter or digit")
    return value


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Numeric versions sort numerically and after non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class ModelRepository:
    """``<root>/<model>/<version>/`` folders; hidden entries (``.x``) are ignored."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return False
        return True

    def _dirs(self, parent: Path) -> list[str]:
        try:
            entries = list(parent.iterdir()) if parent.is_dir() else []
        except OSError as exc:  # unreadable folder: skip it, keep serving the rest
            log.warning("cannot list repository folder", extra={"path": str(parent), "error": str(exc)})
            return []
        return sorted(p.name for p in entries if _valid(p.name) and p.is_dir() and self._inside(p))

    def scan(self) -> dict[str, list[str]]:
        """model -> versions (sorted oldest first). Symlinks out of the root are skipped."""
        return {m: sorted(self._dirs(self.root / m), key=version_sort_key) for m in self._dirs(self.root)}

    def version_dir(self, name: str, version: str) -> Path:
        validate_name("model name", name)
        validate_name("model version", version)
        path = self.root / name / version
        if not path.is_dir() or not self._inside(path):
            raise ModelNotFound(f"model {name!r} has no version {version!r} in the repository")
        return path

    def latest_version(self, name: str) -> str:
        validate_name("model name", name)
        versions = self.scan().get(name)
        if not versions:
            raise ModelNotFound(f"no model {name!r} in the repository")
        return versions[-1]

    def fingerprint(self, name: str, version: str) -> tuple[tuple[str, int, int], ...]:
        """(file, size, mtime_ns) of a version's files: a change triggers a reload."""
        path = self.root / name / version
        out = []
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                out.append((f.name, st.st_size, st.st_mtime_ns))
        return tuple(out)
