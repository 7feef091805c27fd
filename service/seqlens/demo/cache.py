"""The cached demo repository: built once per set of build inputs, atomically, under a lock.

The folder name carries a hash of everything the build reads (this package's source, the data
files, the family/export/tokenizer code and the torch version), so a change to any of them
builds a fresh repository instead of serving stale models.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .data import data_files

_PACKAGE = Path(__file__).resolve().parent
# Server modules whose code decides what a build writes (weights layout, ONNX graph, vocab).
_SERVER_INPUTS = ("families.py", "schema.py", "export.py", "publish.py", "tokenizers.py", "runtimes/onnx_state.py")
COMPLETE_MARKER = ".complete"


def build_inputs() -> list[Path]:
    """Every file whose content determines the demo build, in a stable order."""
    sources = sorted(_PACKAGE.glob("*.py"))
    build = sorted((_PACKAGE.parent / "build").glob("*.py"))  # writes the kind: onnx demos
    return sources + data_files() + [_PACKAGE.parent / name for name in _SERVER_INPUTS] + build


def build_hash() -> str:
    """Short content hash of the build inputs (paths relative to the package, then bytes)."""
    h = hashlib.sha256(f"torch={torch.__version__}\n".encode())
    for path in build_inputs():
        h.update(path.relative_to(_PACKAGE.parent).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SEQLENS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "seqlens"


def ensure_demo_repository(cache_dir: Path | None = None, progress: Callable[[str], None] = print) -> Path:
    """The demo repository folder, building it on first use.

    Concurrent callers (several test workers, replicas sharing a volume) build once: the first
    takes an exclusive ``fcntl`` lock, builds into a temporary sibling folder and renames it
    into place; the others wait on the lock and then find the finished folder.
    """
    root = cache_root(cache_dir)
    target = root / f"demo-{build_hash()}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / COMPLETE_MARKER).is_file():
                return target  # another process built it while we waited
            from . import build_demo  # late: the package imports this module

            progress(f"building the demo repository into {target} (one time, a few minutes)")
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the repository is meant to be read
            try:
                build_demo(tmp, progress=progress)
                (tmp / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
                if target.exists():  # a half-built leftover without the marker
                    shutil.rmtree(target)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
