"""seqlens: serve recurrent sequence models over gRPC and explain every prediction."""

from __future__ import annotations

from pathlib import Path

from .build import build_version
from .export import export_model
from .repository import ModelRepository
from .versions import LoadedVersion, load_version

__version__ = "0.1.0"


def load_model(repository: str | Path, name: str, version: str | None = None) -> LoadedVersion:
    """Load one version (default: the latest) with ``.config``, ``.torch_module`` (eval mode)
    and ``.onnx_session``; raises ModelNotFound or ModelConfigError."""
    repo = ModelRepository(Path(repository))
    chosen = version or repo.latest_version(name)
    return load_version(repo.version_dir(name, chosen), name, chosen)


def demo_repository_path() -> Path:
    """The demo repository folder, built on first use into the cache folder."""
    from .demo import ensure_demo_repository

    return ensure_demo_repository()


__all__ = ["LoadedVersion", "__version__", "build_version", "demo_repository_path", "export_model", "load_model"]
