"""No import circle in the server or the SDK: every module's imports (lazy ones included, type-only
ones excluded) form a DAG, so "no import runs back up" holds by construction (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"seqlens": ROOT / "service" / "seqlens", "seqlens_client": ROOT / "clients/python/seqlens_client"}


def _modules(package: str, folder: Path) -> dict[str, Path]:
    out = {}
    for path in folder.rglob("*.py"):
        rel = path.relative_to(folder).with_suffix("")
        if "_proto" in rel.parts:
            continue
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package: str) -> None:
    modules = _modules(package, PACKAGES[package])
    known = set(modules)
    # A package's __init__ re-exporting its submodules is the package's face, not a layer above them.
    graph = {m: {d for d in _imports(m, p, known) if not m.startswith(d + ".")} for m, p in modules.items()}
    assert not _cycles(graph), f"import cycles in {package}: {_cycles(graph)}"


def test_sdk_never_imports_the_server() -> None:
    modules = _modules("seqlens_client", PACKAGES["seqlens_client"])
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "seqlens", f"{name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "seqlens" for a in node.names), name


def test_server_uses_only_the_public_stubs_module() -> None:
    """The server reads wire types from ``seqlens_client.stubs``, never the SDK's private ``_proto``."""
    for name, path in _modules("seqlens", PACKAGES["seqlens"]).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(m.startswith("seqlens_client._proto") for m in mods), f"{name} imports {mods}"
