"""``seqlens-client models | predict | explain``: the SDK from a shell.

Examples::

    seqlens-client models
    seqlens-client predict sentiment "a gorgeous, witty film" "a dull mess"
    seqlens-client predict sunspots --features series.csv --json
    seqlens-client explain sentiment "not bad at all" --method integrated_gradients --method occlusion \\
        --target positive --html report.html
    seqlens-client explain sentiment --input-file reviews.txt --output explanations.jsonl --concurrency 8

Connection options (every command): ``--target-address`` (default localhost:50051, or
``dns:///host:port`` for round-robin over replicas), ``--token``/``--token-file`` (or env
``SEQLENS_TOKEN``), ``--tls``, ``--tls-ca``, ``--tls-cert``/``--tls-key`` (mutual TLS),
``--tls-server-name``, ``--timeout``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .channel import TLS
from .client import DEFAULT_TARGET, Client
from .errors import SeqlensError
from .inputs import SequenceLike
from .options import Method, StateOptions, Target
from .progress import ProgressBar

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: printed without a traceback, exit status 2."""


# --- inputs -------------------------------------------------------------------------
def read_features(path: Path) -> np.ndarray:
    """A ``[T,F]`` float32 array from ``.npy`` or CSV (a non-numeric first row is a header)."""
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if r]
        if rows and not _numeric(rows[0]):
            rows = rows[1:]
        if not rows:
            raise UsageError(f"{path}: no data rows")
        if len({len(r) for r in rows}) != 1:
            raise UsageError(f"{path}: rows have different numbers of columns")
        try:
            arr = np.asarray([[float(v) for v in r] for r in rows], dtype=np.float32)
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise UsageError(f"{path}: features must be a numeric [T, F] table, got shape {list(arr.shape)}")
    return arr.astype(np.float32)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def parse_ids(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--ids must be integers separated by spaces or commas, got {text!r}") from None


def _jsonl_item(value: Any, where: str) -> SequenceLike:
    """A JSONL line: a string (text), a list of ints (token ids), a list of lists (features), or an
    object with one of ``text``, ``token_ids``, ``features``."""
    if isinstance(value, dict):
        keys = [k for k in ("text", "token_ids", "features") if k in value]
        if len(keys) != 1:
            raise ValueError(f"{where}: give exactly one of text, token_ids, features")
        value = value[keys[0]]
        if keys[0] == "features":
            return np.asarray(value, dtype=np.float32)
        if keys[0] == "token_ids":
            return np.asarray(value, dtype=np.int64)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return np.asarray(value, dtype=np.float32)
    if isinstance(value, list):
        return np.asarray(value, dtype=np.int64)
    raise ValueError(f"{where}: expected text, token ids or features, got {type(value).__name__}")


def iter_input_file(path: Path) -> Iterator[SequenceLike]:
    """Lazily read one input per line: ``.jsonl``/``.json`` lines are JSON, anything else is text.
    Blank lines are skipped."""
    jsonl = path.suffix in (".jsonl", ".json", ".ndjson")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if not jsonl:
                yield line
                continue
            try:
                yield _jsonl_item(json.loads(line), f"{path}:{n}")
            except (ValueError, json.JSONDecodeError) as e:
                raise UsageError(str(e)) from None


def scan_input_file(path: Path) -> int:
    """Check every line before a bulk job starts (a bad line is a usage error, not a failed
    stream) and return the number of inputs."""
    return sum(1 for _ in iter_input_file(path))


def inline_inputs(args: argparse.Namespace) -> list[SequenceLike]:
    items: list[SequenceLike] = list(args.inputs)
    items += [parse_ids(s) for s in args.ids or []]
    items += [read_features(Path(p)) for p in args.features or []]
    return items


# --- client -------------------------------------------------------------------------
def make_client(args: argparse.Namespace) -> Client:
    token = args.token or os.environ.get("SEQLENS_TOKEN")
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    tls: TLS | None = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise UsageError("mutual TLS needs both --tls-cert and --tls-key")
        tls = TLS(root_ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, server_name=args.tls_server_name)
    return Client(args.target_address, token=token, tls=tls, timeout=args.timeout)


def _target(args: argparse.Namespace) -> Target | None:
    if args.target is None and args.timestep is None and args.horizon_step is None and not args.probability:
        return None
    index = label = None
    if args.target is not None:
        if args.target.lstrip("-").isdigit():
            index = int(args.target)
        else:
            label = args.target
    return Target(class_index=index, label=label, timestep=args.timestep, horizon_step=args.horizon_step,
                  output_space="probability" if args.probability else "logit")


def _methods(args: argparse.Namespace) -> list[Method] | None:
    if not args.method:
        return None
    return [Method(name, n_steps=args.steps or 0, adaptive=args.adaptive, n_samples=args.samples or 0,
                   window=args.window or 0, seed=args.seed or 0) for name in args.method]


def _state(args: argparse.Namespace) -> StateOptions | None:
    # A report shows the state panels, so --html/--png ask for them (with h_t for the heatmap).
    wants_pictures = bool(args.html or args.png)
    if args.no_state or not (args.state or args.hidden or wants_pictures):
        return None
    return StateOptions(include_hidden=args.hidden or wants_pictures)


def _write_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, allow_nan=False) + "\n")


# --- commands -----------------------------------------------------------------------
def cmd_models(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.name:
        info = client.get_model(args.name)
        if args.json:
            _write_json(info.to_dict(), out)
            return 0
        a = info.architecture
        out.write(f"{info.name}: {info.task}, {info.input.kind} input, default version {info.default_version or '-'}\n")
        if info.description:
            out.write(f"  {info.description}\n")
        if a.kind == "onnx":
            ops = ", ".join(a.recurrent_ops) or "no recurrent ops"
            out.write(f"  custom ONNX graph ({ops}) -> {a.head} output; {a.num_parameters} parameters\n")
        else:
            out.write(f"  {a.input_layer} -> {a.num_layers}x {a.cell} ({a.hidden_size}"
                      f"{', bidirectional' if a.bidirectional else ''}) -> {a.head} head; "
                      f"{a.num_parameters} parameters\n")
        if info.labels:
            out.write(f"  labels: {', '.join(info.labels)}\n")
        if info.input.feature_names:
            out.write(f"  features: {', '.join(info.input.feature_names)}\n")
        out.writelines(f"  version {v.version}: {v.state}{' - ' + v.reason if v.reason else ''}\n" for v in info.versions)
        out.write(f"  methods: {', '.join(info.attribution_methods)}\n")
        if info.state_summaries:
            out.write(f"  state summaries: {', '.join(info.state_summaries)}\n")
        return 0
    models = client.list_models()
    if args.json:
        _write_json([m.to_dict() for m in models], out)
        return 0
    for m in models:
        status = "ready" if m.ready else "not ready"
        out.write(f"{m.name:24} {m.task:15} {m.input_kind:9} v{m.default_version or '-':6} {status}"
                  f"  (versions: {', '.join(m.versions)})\n")
    return 0


def cmd_predict(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    items = list(iter_input_file(Path(args.input_file))) if args.input_file else inline_inputs(args)
    if not items:
        raise UsageError("give inputs: texts, --ids, --features FILE or --input-file FILE")
    results = []
    for start in range(0, len(items), args.batch_size):
        results.append(client.predict(args.model, items[start:start + args.batch_size], version=args.version))
    if args.json:
        for r in results:
            for p in r:
                _write_json({"model_version": r.model_version, **p.to_dict()}, out)
        return 0
    for r in results:
        for p in r:
            if p.label:
                conf = f" {float(p.probabilities[p.label_index]):.3f}" if p.probabilities is not None and \
                    p.label_index is not None else ""
                out.write(f"{p.label}{conf}\n")
            elif p.step_labels:
                names = [t.text for t in p.tokens] or [str(i) for i in range(len(p.step_labels))]
                out.write(" ".join(f"{n}/{s}" for n, s in zip(names, p.step_labels, strict=False)) + "\n")
            else:
                out.write(" ".join(f"{v:.6g}" for v in p.scores.reshape(-1)) + "\n")
    return 0


def _explain_bulk(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    path = Path(args.input_file)
    total = scan_input_file(path)
    bar = ProgressBar("explain", stream=sys.stderr) if not args.quiet else None
    failed = 0
    sink = open(args.output, "w", encoding="utf-8") if args.output else out  # noqa: SIM115 - closed below
    try:
        stream = client.explain_iter(args.model, iter_input_file(path), _methods(args), target=_target(args),
                                     baseline=args.baseline, state=_state(args), faithfulness=args.faithfulness,
                                     version=args.version, concurrency=args.concurrency,
                                     progress=(lambda done, _t: bar(done, total)) if bar else None)
        for index, result in stream:
            if isinstance(result, SeqlensError):
                failed += 1
                _write_json({"index": index, "error": {"code": result.code.name, "message": result.message}}, sink)
            else:
                _write_json({"index": index, **result.to_dict()}, sink)
    finally:
        if bar:
            bar.close()
        if sink is not out:
            sink.close()
    if failed:
        print(f"seqlens-client: {failed} of {total} inputs failed (see their 'error' lines)", file=sys.stderr)
    return EXIT_ERROR if failed else 0


def cmd_explain(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.input_file:
        if args.html or args.png:
            raise UsageError("--html/--png draw one explanation; drop them with --input-file")
        return _explain_bulk(args, client, out)
    items = inline_inputs(args)
    if len(items) != 1:
        raise UsageError(f"explain takes exactly one input (got {len(items)}); use --input-file for many")
    exp = client.explain(args.model, items[0], _methods(args), target=_target(args), baseline=args.baseline,
                         state=_state(args), faithfulness=args.faithfulness, version=args.version)
    if args.html:
        exp.to_html(args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    if args.png:
        exp.to_png(args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    if args.json:
        _write_json(exp.to_dict(), out)
    else:
        color = not args.no_color and out.isatty() and "NO_COLOR" not in os.environ
        out.write(exp.to_text(color=color) + "\n")
    return 0


# --- parser -------------------------------------------------------------------------
def _connection_args(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Connection options, accepted before and after the command. After it they default to
    SUPPRESS, so that a subcommand never resets a value given before the command."""

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    g = parser.add_argument_group("connection")
    g.add_argument("--target-address", default=d(os.environ.get("SEQLENS_ADDRESS", DEFAULT_TARGET)),
                   help=f"server address (default {DEFAULT_TARGET}; env SEQLENS_ADDRESS); "
                        "dns:///host:port balances over every replica")
    g.add_argument("--token", default=d(None), help="bearer token (or env SEQLENS_TOKEN)")
    g.add_argument("--token-file", default=d(None), help="file holding the bearer token")
    g.add_argument("--tls", action="store_true", default=d(False), help="use TLS with the system CA roots")
    g.add_argument("--tls-ca", default=d(None), help="PEM CA bundle that signed the server certificate")
    g.add_argument("--tls-cert", default=d(None), help="PEM client certificate (mutual TLS)")
    g.add_argument("--tls-key", default=d(None), help="PEM client key (mutual TLS)")
    g.add_argument("--tls-server-name", default=d(None), help="name to verify in the server certificate")
    g.add_argument("--timeout", type=float, default=d(60.0), help="deadline per call in seconds (default 60)")


def build_parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    _connection_args(conn, defaults=False)

    parser = argparse.ArgumentParser(prog="seqlens-client", description="Predict with and explain recurrent "
                                     "sequence models served by seqlens.")
    _connection_args(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", parents=[conn], help="list models, or describe one")
    p.add_argument("name", nargs="?", help="describe this model")
    p.add_argument("--json", action="store_true", help="print JSON")

    def inputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="model name")
        sp.add_argument("inputs", nargs="*", help="input texts")
        sp.add_argument("--ids", action="append", help="token ids, e.g. '4 8 15' (repeatable)")
        sp.add_argument("--features", action="append", help="CSV or .npy file of a [T, F] series (repeatable)")
        sp.add_argument("--input-file", help="many inputs: one text per line, or JSONL (.jsonl) of texts, token-id "
                        "lists, feature tables or objects with text/token_ids/features")
        sp.add_argument("--version", help="model version (default: the latest ready)")
        sp.add_argument("--json", action="store_true", help="print JSON (one object per line)")

    p = sub.add_parser("predict", parents=[conn], help="predict labels, tags or forecasts")
    inputs(p)
    p.add_argument("--batch-size", type=int, default=64, help="inputs per request with --input-file")

    p = sub.add_parser("explain", parents=[conn], help="explain a prediction")
    inputs(p)
    p.add_argument("--method", action="append", help="attribution method (repeatable; default integrated_gradients)")
    p.add_argument("--steps", type=int, help="integration steps for integral methods")
    p.add_argument("--adaptive", action="store_true", help="adaptive integrated gradients")
    p.add_argument("--samples", type=int, help="samples for gradient_shap, smoothgrad, shapley_sampling")
    p.add_argument("--window", type=int, help="occlusion window")
    p.add_argument("--seed", type=int, help="seed for sampling methods")
    p.add_argument("--target", help="class index or label to explain (default: the predicted class)")
    p.add_argument("--timestep", type=int, help="timestep to explain (tagging)")
    p.add_argument("--horizon-step", type=int, help="horizon step to explain (forecasting)")
    p.add_argument("--probability", action="store_true", help="explain the probability instead of the logit")
    p.add_argument("--baseline", choices=["default", "pad", "zeros", "training_mean"], help="attribution baseline")
    p.add_argument("--state", action="store_true", help="compute hidden-state summaries")
    p.add_argument("--hidden", action="store_true", help="also return hidden states h_t")
    p.add_argument("--no-state", action="store_true", help="no state summaries, even with --html")
    p.add_argument("--faithfulness", action="store_true", help="compute faithfulness curves")
    p.add_argument("--html", help="write a self-contained HTML report here")
    p.add_argument("--png", help="write a PNG of the report here (needs seqlens-client[plot])")
    p.add_argument("--no-color", action="store_true", help="plain text output")
    p.add_argument("--output", help="with --input-file: write JSON lines here instead of stdout")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight with --input-file (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"models": cmd_models, "predict": cmd_predict, "explain": cmd_explain}
    try:
        with make_client(args) as client:
            return commands[args.command](args, client, sys.stdout)
    except SeqlensError as e:
        print(f"seqlens-client: {e.code.name}: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, OSError, ImportError) as e:
        print(f"seqlens-client: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
