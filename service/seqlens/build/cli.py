"""``seqlens build``: the module comes from the user's own Python file, which this command imports
and runs. It is a tool for the user's environment, like ``torch.onnx.export``; the server never
imports user code (it serves the written ONNX file)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from torch import nn


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--module", required=True, metavar="FILE.py:NAME",
                   help="a Python file and the class or factory in it that makes the (untrained) module")
    p.add_argument("--module-args", default="{}", metavar="JSON", help="keyword arguments for NAME, as JSON")
    p.add_argument("--weights", type=Path, required=True, help="the trained state_dict as safetensors")
    p.add_argument("--protocol", choices=["cell", "sequence"], default="cell",
                   help="cell: forward(x_t, state) -> (out_t, state); sequence: forward(inputs, lengths)")
    p.add_argument("--task", choices=["classification", "tagging", "forecasting", "regression"], required=True)
    p.add_argument("--labels", help="comma-separated labels (classification, tagging)")
    p.add_argument("--horizon", type=int, help="number of outputs (forecasting, regression)")
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--vocab", type=Path, help="token models: vocabulary file, line i = token id i")
    p.add_argument("--tokenizer", choices=["word", "char"], default="word")
    p.add_argument("--lowercase", action="store_true", help="token models: lowercase the text")
    p.add_argument("--pad-id", type=int, default=0)
    p.add_argument("--unk-id", type=int, default=1)
    p.add_argument("--features", help="feature models: comma-separated feature names")
    p.add_argument("--embedding", metavar="ATTR",
                   help="attribute of the module holding the nn.Embedding (default: cell: one-hot "
                        "inputs; sequence: the module's only nn.Embedding)")
    p.add_argument("--description", default="")
    p.add_argument("--output", type=Path, required=True, help="<repository>/<model>/<version>")
    p.add_argument("--force", action="store_true", help="replace the version if it exists")


def load_user_module(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    """Import ``FILE.py`` (the user's own code, in the user's environment) and call ``NAME(**kwargs)``."""
    file_name, sep, attr = spec.rpartition(":")
    if not sep or not file_name or not attr:
        raise ValueError(f"--module must be FILE.py:NAME, got {spec!r}")
    path = Path(file_name).resolve()
    loader_spec = importlib.util.spec_from_file_location(f"seqlens_user_{path.stem}", path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(loader_spec)
    sys.modules[loader_spec.name] = mod
    loader_spec.loader.exec_module(mod)
    factory = getattr(mod, attr, None)
    if factory is None:
        raise ValueError(f"{path.name} has no {attr!r}")
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{attr}(...) returned {type(module).__name__}, not a torch.nn.Module")
    return module


def run_build(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from ..schema import FeatureInput, TokenInput
    from ..tokenizers import Vocabulary
    from .graph import BuildError
    from .version import build_version

    try:
        module = load_user_module(args.module, json.loads(args.module_args))
        module.load_state_dict(load_file(str(args.weights)))
        if (args.vocab is None) == (args.features is None):
            raise ValueError("give exactly one of --vocab (token models) or --features (feature models)")
        spec: TokenInput | FeatureInput
        vocab = None
        if args.vocab is not None:
            spec = TokenInput(tokenizer=args.tokenizer, lowercase=args.lowercase, pad_id=args.pad_id,
                              unk_id=args.unk_id)
            vocab = Vocabulary.load(args.vocab).tokens
        else:
            spec = FeatureInput(feature_names=[f.strip() for f in args.features.split(",")])
        embedding = getattr(module, args.embedding) if args.embedding else None
        out: Path = args.output
        report = build_version(
            module, out.parent.parent, out.parent.name, out.name, protocol=args.protocol, task=args.task,
            input=spec, max_length=args.max_length,
            labels=[x.strip() for x in args.labels.split(",")] if args.labels else None,
            horizon=args.horizon, vocabulary=vocab, embedding=embedding, description=args.description,
            overwrite=args.force)
    except (BuildError, FileExistsError, ValueError, TypeError) as exc:
        print(f"seqlens build: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
