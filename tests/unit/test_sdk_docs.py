"""The SDK's docstring examples run (those that need a live server are marked to skip)."""

from __future__ import annotations

import doctest
import importlib

import pytest

# Modules with examples (results has none); each must run at least one, or the test proves nothing.
MODULES = ["channel", "client", "aio", "errors", "inputs", "options", "progress", "tensors", "__init__"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module("seqlens_client" if name == "__init__" else f"seqlens_client.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no docstring example left to run"
    assert result.failed == 0
