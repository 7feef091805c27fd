"""Generate the SDK's protobuf/gRPC stubs (with .pyi) from protos/.

protoc writes absolute imports such as ``from seqlens.v1 import types_pb2``; the
stubs live inside the SDK package, so those imports are rewritten to
``seqlens_client._proto.seqlens.v1`` (the server package is also called
``seqlens`` and must not shadow them).

Usage: python scripts/gen_protos.py [--check]
  --check  regenerate into a temporary folder and fail if the committed stubs differ.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
TARGET = ROOT / "clients" / "python" / "seqlens_client" / "_proto"
PREFIX = "seqlens_client._proto"
_IMPORT = re.compile(r"^(from|import) (seqlens\.v1|inference)(\b)", re.MULTILINE)


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*_pb2_grpc.py"):
        if "class " not in path.read_text():
            path.unlink()  # protoc writes a gRPC module even for files without services
    for path in out.rglob("*.py*"):
        text = _IMPORT.sub(lambda m: f"{m.group(1)} {PREFIX}.{m.group(2)}{m.group(3)}", path.read_text())
        path.write_text(text)
    for pkg in [out, *[d for d in out.rglob("*") if d.is_dir()]]:
        (pkg / "__init__.py").write_text("")


def _differs(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    diffs = [*cmp.left_only, *cmp.right_only, *cmp.diff_files]
    for name in cmp.subdirs:
        diffs += [f"{name}/{d}" for d in _differs(a / name, b / name)]
    return diffs


def main() -> int:
    check = "--check" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "_proto"
        out.mkdir()
        generate(out)
        if check:
            diffs = _differs(out, TARGET) if TARGET.exists() else ["(missing)"]
            if diffs:
                print("stale generated stubs, run `make protos`:", ", ".join(diffs))
                return 1
            print("generated stubs are up to date")
            return 0
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(out, TARGET)
    print(f"wrote stubs to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
