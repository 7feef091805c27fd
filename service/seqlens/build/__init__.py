"""``seqlens.build_version``: turn a user's torch module (a cell or a sequence module) into a
verified ``kind: onnx`` model version. Runs in the user's environment; see docs/build.md."""

from __future__ import annotations

from .graph import BuildError
from .version import BuildReport, build_version

__all__ = ["BuildError", "BuildReport", "build_version"]
