"""``seqlens serve | export | build | build-demo | check``."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from .config import Settings

_SERVE_FLAGS = [
    ("--model-repository", Path, "model repository folder (default: the demo repository, built on first use)"),
    ("--host", str, "interface to bind (default 127.0.0.1; 0.0.0.0 in containers)"),
    ("--port", int, "gRPC port (default 50051)"),
    ("--metrics-port", int, "Prometheus /metrics port (default 9090, -1 = off)"),
    ("--tls-cert", Path, "PEM server certificate"),
    ("--tls-key", Path, "PEM server key"),
    ("--tls-client-ca", Path, "PEM CA for client certificates (mutual TLS)"),
    ("--auth-token-file", Path, "file of accepted bearer tokens, one a line"),
]


def _cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .grpc.server import run
    from .logs import setup_logging

    overrides = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
                 for flag, _, _ in _SERVE_FLAGS}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"seqlens: invalid settings: {problems}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    repository = settings.model_repository
    if repository is None:
        from .demo import ensure_demo_repository

        repository = ensure_demo_repository(settings.cache_dir,
                                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    if not repository.is_dir():
        print(f"seqlens: model repository {repository} is not a folder", file=sys.stderr)
        return 2
    from .workers import WorkerLink, default_workers, serve_workers

    link = WorkerLink.from_env()
    count = settings.workers or default_workers()
    if link is None and count > 1:
        return serve_workers(settings, repository, count)
    try:
        asyncio.run(run(settings, repository, link))
    except ValueError as exc:  # TLS files that do not form a usable configuration
        print(f"seqlens: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_build_demo(args: argparse.Namespace) -> int:
    from .demo import build_demo, ensure_demo_repository

    if args.output is None:
        print(ensure_demo_repository())
        return 0
    if args.output.exists():
        if not args.force:
            print(f"seqlens: {args.output} exists (use --force to replace it)", file=sys.stderr)
            return 2
        shutil.rmtree(args.output)
    metrics = build_demo(args.output)
    for name, m in metrics.items():
        print(name, " ".join(f"{k}={v:.4g}" for k, v in m.items()))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from .export import export_model
    from .families import build_model
    from .schema import TokenInput, load_config
    from .tokenizers import read_vocabulary

    config = load_config(args.config)
    spec = config.input if isinstance(config.input, TokenInput) else None
    hf = spec is not None and spec.tokenizer == "huggingface"
    if spec is not None and args.vocab is None:
        print("seqlens: token models need --vocab (vocab.json, or the tokenizer.json of a huggingface tokenizer)",
              file=sys.stderr)
        return 2
    vocab = read_vocabulary(args.vocab) if args.vocab and not hf else None
    size = len(vocab) if vocab else None
    if spec is not None and hf and args.vocab:
        from .hf_tokenizer import HuggingFaceTokenizer

        size = HuggingFaceTokenizer.from_json(spec, args.vocab.read_text(encoding="utf-8")).vocab_size
    module = build_model(config, size)
    module.load_state_dict(load_file(str(args.weights)))
    try:
        loaded = export_model(module, args.output, vocabulary=vocab, tokenizer_json=args.vocab if hf else None,
                              overwrite=args.force)
    except FileExistsError as exc:
        print(f"seqlens: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.output}: parity max |onnx - torch| = {loaded.parity_max_abs_diff:.2e}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from .build.cli import run_build

    return run_build(args)


def _cmd_check(args: argparse.Namespace) -> int:
    from .registry import ModelRegistry, VersionState
    from .repository import ModelRepository
    from .summaries import state_projection

    registry = ModelRegistry(ModelRepository(args.repository), load_hooks=[state_projection])
    registry.refresh()
    bad = 0
    records = registry.records()
    for rec in sorted(records, key=lambda r: (r.name, r.version)):
        extra = f"parity {rec.loaded.parity_max_abs_diff:.1e}" if rec.loaded else rec.reason
        print(f"{rec.name}/{rec.version}: {rec.state.value} {extra}")
        bad += rec.state != VersionState.READY
    if not records:
        print(f"no model versions found under {args.repository}")
        return 1
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model repository over gRPC (flags also read SEQLENS_<NAME>)")
    for flag, typ, help_text in _SERVE_FLAGS:
        serve.add_argument(flag, type=typ, default=None, help=help_text)
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("build-demo", help="train the demo models on the bundled real data")
    demo.add_argument("--output", type=Path, default=None, help="folder to write (default: the cache)")
    demo.add_argument("--force", action="store_true", help="replace --output if it exists")
    demo.set_defaults(func=_cmd_build_demo)

    export = sub.add_parser("export", help="write a repository version from model.yaml + trained weights")
    export.add_argument("--config", type=Path, required=True, help="model.yaml of a built-in family")
    export.add_argument("--weights", type=Path, required=True, help="state_dict as safetensors")
    export.add_argument("--vocab", type=Path, default=None, help="token models: vocabulary file (vocab.json or one token a line), "
                        "or the tokenizer.json of a huggingface tokenizer")
    export.add_argument("--output", type=Path, required=True, help="<repository>/<model>/<version>")
    export.add_argument("--overwrite", "--force", dest="force", action="store_true",
                        help="replace the version folder if it exists (it may be serving)")
    export.set_defaults(func=_cmd_export)

    build = sub.add_parser("build", help="write a kind: onnx version from your own torch module (runs your code: "
                                          "use it in your environment, never on the server)")
    from .build.cli import add_build_arguments

    add_build_arguments(build)
    build.set_defaults(func=_cmd_build)

    check = sub.add_parser("check", help="load every version of a repository and report READY or why not")
    check.add_argument("repository", type=Path)
    check.set_defaults(func=_cmd_check)

    from .bulk.cli import add_parser as add_explain_dataset  # no Ray import until the command runs

    add_explain_dataset(sub)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
