"""Turn a CustomResourceDefinition YAML into the JSON schema the offline deploy tests validate against.

    python scripts/bundle_crd_schema.py CRD.yaml VERSION OUT.json --source "owner/repo@commit:path"

Keeps one served version's ``openAPIV3Schema``, drops ``description`` texts and the ``status``
subtree (manifests never set it) so that the file stays small, and records where it came from.
The tests (tests/e2e/test_deploy_bulk_kserve.py) add strictness at load time: unknown fields
are errors, as with ``kubectl apply --validate=strict``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path)
    parser.add_argument("version")
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", required=True, help="where the CRD came from (repo@commit:path)")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    spec = crd["spec"]
    (version,) = [v for v in spec["versions"] if v["name"] == args.version]
    schema = strip(version["schema"]["openAPIV3Schema"])
    schema.get("properties", {}).pop("status", None)
    schema["x-seqlens-crd"] = {"group": spec["group"], "version": args.version, "kind": spec["names"]["kind"],
                               "source": args.source}
    args.out.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
