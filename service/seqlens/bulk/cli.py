"""``seqlens explain-dataset``: the bulk explanation command (registered by ``seqlens.cli``).

Parsing needs nothing beyond the standard library; Ray is imported only when a job runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import SeqlensError

DESCRIPTION = """Explain every row of a Parquet or JSONL dataset (columns: id, and one of text, token_ids,
features) on Ray Data actors that load the model once and run the server's explain core. Writes
OUTPUT/part-NNNNNN.parquet (rows in input order, failed rows with their error) and resumes: a rerun
skips finished blocks. Local Ray by default; a cluster through RAY_ADDRESS."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain-dataset", help="explain a whole dataset on Ray Data (needs seqlens[ray])",
                       description=DESCRIPTION)
    p.add_argument("input", type=Path, help="input dataset: .parquet or .jsonl")
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--output", type=Path, required=True, help="output folder (Parquet files, resumable)")
    p.add_argument("--model-repository", type=Path, default=None,
                   help="model repository (default: SEQLENS_MODEL_REPOSITORY, else the demo repository)")
    p.add_argument("--version", default="", help="model version (default: the latest)")
    p.add_argument("--method", action="append", default=None, metavar="NAME[:OPTION=VALUE,...]",
                   help="attribution method, repeatable, e.g. integrated_gradients:n_steps=64 or "
                        "occlusion:window=1 (default: integrated_gradients, adaptive to 1%%)")
    p.add_argument("--target", default=None, help="class label or index to explain (default: the predicted one)")
    p.add_argument("--timestep", type=int, default=None, help="tagging: the timestep to explain (default: the last)")
    p.add_argument("--horizon-step", type=int, default=None, help="forecasts: the horizon step (default: 0)")
    p.add_argument("--output-space", default="logit", choices=["logit", "probability"],
                   help="explain the logit (default) or the softmax probability")
    p.add_argument("--baseline", default="default", choices=["default", "pad", "zeros", "training_mean"])
    p.add_argument("--state", default=None, metavar="NAMES",
                   help="state summaries to keep, comma-separated, or 'all' (default: none)")
    p.add_argument("--faithfulness", action="store_true", help="also compute comprehensiveness/sufficiency")
    p.add_argument("--input-column", default="", help="the input column (default: text, token_ids or features)")
    p.add_argument("--id-column", default="id", help="the id column (default: id; absent = row numbers)")
    p.add_argument("--block-rows", type=int, default=256, help="rows per block (unit of resumption; default 256)")
    p.add_argument("--actors", type=int, default=None, help="Ray actors, one CPU each (default: all CPUs)")
    p.add_argument("--html", type=Path, default=None, help="also write a dataset summary page (HTML)")
    p.add_argument("--overwrite", action="store_true", help="discard an output folder of a different job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_method(text: str) -> dict[str, object]:
    """``name:key=value,...`` -> MethodOptions fields (numbers and booleans parsed as JSON)."""
    name, _, rest = text.partition(":")
    fields: dict[str, object] = {"name": name.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"seqlens: --method {text!r}: option {item!r} needs KEY=VALUE")
        try:
            fields[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[key.strip()] = value.strip()
    return fields


def run(args: argparse.Namespace) -> int:
    from ..config import Settings
    from ..explainers.options import MethodOptions
    from ..explainers.targets import TargetSpec
    from . import BulkSpec, explain_dataset, summarize

    repository = args.model_repository or Settings().model_repository
    if repository is None:
        from ..demo import ensure_demo_repository

        repository = ensure_demo_repository()
    target = TargetSpec(
        class_index=int(args.target) if args.target is not None and args.target.isdigit() else None,
        label=args.target if args.target is not None and not args.target.isdigit() else None,
        timestep=args.timestep, horizon_step=args.horizon_step, output_space=args.output_space)
    state = None
    if args.state is not None:
        state = () if args.state == "all" else tuple(s.strip() for s in args.state.split(",") if s.strip())
    try:
        methods = tuple(MethodOptions(**parse_method(m)) for m in args.method or ())  # type: ignore[arg-type]
    except TypeError as exc:
        print(f"seqlens: --method: {exc}", file=sys.stderr)
        return 2
    try:
        spec = BulkSpec(repository=str(repository), model=args.model, version=args.version, methods=methods,
                        target=target, baseline=args.baseline, state=state, faithfulness=args.faithfulness,
                        input_column=args.input_column, id_column=args.id_column, block_rows=args.block_rows)
        report = explain_dataset(args.input, args.output, spec, num_actors=args.actors,
                                 progress=not args.no_progress, overwrite=args.overwrite)
        print(json.dumps(report.to_dict()))
        if args.html is not None:
            summarize(args.output).write_html(args.html)
            print(f"summary: {args.html}", file=sys.stderr)
    except SeqlensError as exc:
        print(f"seqlens: {exc.message}", file=sys.stderr)
        return 2
    return 0  # failed rows are results (error columns), not a failed job
