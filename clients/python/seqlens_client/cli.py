"""``seqlens-client models | predict | explain | stream``: the SDK from a shell.

Examples::

    seqlens-client models
    seqlens-client predict sentiment "a gorgeous, witty film" "a dull mess"
    seqlens-client predict sunspots --features series.csv --json
    seqlens-client explain sentiment "not bad at all" --method integrated_gradients --method occlusion \\
        --window 1 --steps 32 --target positive --html report.html
    seqlens-client explain airline --features airline.csv --columns passengers --horizon-step 11
    seqlens-client explain sentiment --input-file reviews.txt --output explanations.jsonl --concurrency 8
    seqlens-client stream sunspots series.csv --chunk 16          # a long series in chunks of 16 rows
    seqlens-client stream sentiment book.txt --chunk 200 --client-state

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

from . import vocabulary
from ._proto.seqlens.v1 import explain_pb2
from .channel import TLS
from .client import DEFAULT_TARGET, Client
from .errors import SeqlensError, Unauthenticated, Unavailable
from .inputs import SequenceLike
from .options import METHOD_OPTIONS, BaselineLike, Method, StateOptions, Target
from .progress import ProgressBar
from .report.glyphs import label_text
from .results import Prediction

__all__ = ["main"]

DEFAULT_METHOD = "integrated_gradients"
EXIT_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: printed without a traceback, exit status 2."""


# --- inputs -------------------------------------------------------------------------
def read_features(path: Path, columns: Sequence[str] | None = None,
                  model_features: Sequence[str] = ()) -> np.ndarray:
    """A ``[T,F]`` float32 array from ``.npy`` or CSV (a non-numeric first row is a header).

    CSV columns: ``columns`` (header names or 0-based indices) when given; else, when the
    header names every one of ``model_features``, those columns in the model's order; else all.
    """
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if r]
        header = rows[0] if rows and not _numeric(rows[0]) else None
        if header is not None:
            rows = rows[1:]
        if not rows:
            raise UsageError(f"{path}: no data rows")
        if len({len(r) for r in rows}) != 1:
            raise UsageError(f"{path}: rows have different numbers of columns")
        names = [h.strip() for h in header] if header else [str(j) for j in range(len(rows[0]))]
        picked = _pick_columns(path, names, header is not None, columns, model_features)
        for n, r in enumerate(rows, 2 if header else 1):
            for j in picked:
                if not _numeric([r[j]]):
                    numeric = [names[k] for k in range(len(names)) if all(_numeric([row[k]]) for row in rows)]
                    raise UsageError(
                        f"{path}:{n}: column {names[j]!r} holds {r[j]!r}, not a number; only numeric feature "
                        f"columns are read: pick them with --columns NAME[,NAME...]"
                        + (f" (numeric here: {', '.join(numeric)})" if numeric else ""))
        arr = np.asarray([[float(r[j]) for j in picked] for r in rows], dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise UsageError(f"{path}: features must be a numeric [T, F] table, got shape {list(arr.shape)}")
    return arr.astype(np.float32)


def _pick_columns(path: Path, names: list[str], has_header: bool, columns: Sequence[str] | None,
                  model_features: Sequence[str]) -> list[int]:
    if columns:
        picked = []
        for c in columns:
            if c in names and has_header:
                picked.append(names.index(c))
            elif c.isdigit() and int(c) < len(names):
                picked.append(int(c))
            else:
                raise UsageError(f"{path}: no column {c!r}; columns: {', '.join(names)} (names or 0-based indices)")
        return picked
    if has_header and model_features and all(f in names for f in model_features):
        return [names.index(f) for f in model_features]
    return list(range(len(names)))


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

    Every line is one input, so input ``i`` is line ``i + 1``: a blank line is an empty text
    (the server answers it with INVALID_ARGUMENT, an error row in bulk output)."""
    jsonl = path.suffix in (".jsonl", ".json", ".ndjson")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not jsonl or not line.strip():
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


def _columns(args: argparse.Namespace) -> list[str] | None:
    return [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None


def _model_features(args: argparse.Namespace, client: Client, paths: Sequence[str]) -> list[str]:
    """The model's feature names, asked for only when a CSV is read without --columns."""
    if args.columns or not any(Path(p).suffix != ".npy" for p in paths):
        return []
    try:
        return list(client.get_model(args.model).input.feature_names)
    except SeqlensError:
        return []  # the real call reports the problem


def inline_inputs(args: argparse.Namespace, client: Client) -> list[SequenceLike]:
    items: list[SequenceLike] = list(args.inputs)
    items += [parse_ids(s) for s in args.ids or []]
    features = args.features or []
    names = _model_features(args, client, features)
    items += [read_features(Path(p), _columns(args), names) for p in features]
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


#: explain flags -> the Method option each sets (applied to every chosen method that takes it).
_METHOD_FLAGS = {"steps": "n_steps", "quadrature": "quadrature", "adaptive": "adaptive", "tolerance": "tolerance",
                 "max_steps": "max_steps", "samples": "n_samples", "noise_stdev": "noise_stdev", "seed": "seed",
                 "window": "window", "stride": "stride", "ablation": "ablation", "signed": "abs_saliency"}


def _methods(args: argparse.Namespace) -> list[Method] | None:
    """--method NAME (repeatable; default integrated_gradients) with the option flags given.

    A flag goes to every chosen method that takes it; one that no chosen method takes is a usage
    error, as the server would refuse it, so nothing is dropped silently."""
    given: dict[str, Any] = {}
    for flag, option in _METHOD_FLAGS.items():
        value = getattr(args, flag)
        if value is None or value is False:
            continue
        given[option] = False if flag == "signed" else value
    names = args.method or []
    if not names and not given:
        return None  # the server's default method with its defaults
    names = names or [DEFAULT_METHOD]
    for flag, option in _METHOD_FLAGS.items():
        if option in given and not any(option in METHOD_OPTIONS.get(n, (option,)) for n in names):
            takers = [n for n, opts in METHOD_OPTIONS.items() if option in opts]
            chosen = ", ".join(names) + (" (the default)" if not args.method else "")
            raise UsageError(f"--{flag.replace('_', '-')} applies to {', '.join(takers)}, not {chosen}; "
                             f"add --method {takers[0]}")
    if "occlusion" in names and not given.get("window"):
        raise UsageError("occlusion needs --window N: the timesteps each occluded window covers (e.g. --window 1)")
    return [Method(name, **{o: v for o, v in given.items() if o in METHOD_OPTIONS.get(name, ())})
            for name in names]


def _baseline(args: argparse.Namespace) -> BaselineLike:
    custom = [args.baseline_ids is not None, args.baseline_features is not None]
    if sum(custom) + (args.baseline is not None) > 1:
        raise UsageError("give one of --baseline, --baseline-ids, --baseline-features")
    if args.baseline_ids is not None:
        return parse_ids(args.baseline_ids)
    if args.baseline_features is not None:
        return read_features(Path(args.baseline_features), _columns(args))
    return args.baseline  # type: ignore[no-any-return]


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
        if info.tokenizer:
            special = ", ".join(label_text(t) for t in info.input.special_tokens)
            out.write(f"  tokenizer: {info.tokenizer} ({info.input.vocabulary}, {info.input.vocab_size} tokens"
                      f"{'; special: ' + special if special else ''})\n")
        out.write(f"  input length: {info.limits.min_length} to {info.limits.max_length} timesteps\n")
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
    if args.input_file:
        items = list(iter_input_file(Path(args.input_file)))
        blank = next((i for i, item in enumerate(items) if isinstance(item, str) and not item.strip()), None)
        if blank is not None:  # outputs are one line per input line: a skipped line would shift them
            raise UsageError(f"{args.input_file}:{blank + 1}: blank line; every line is one input (remove it)")
    else:
        items = inline_inputs(args, client)
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
                names = [label_text(t.text) for t in p.tokens] or [str(i) for i in range(len(p.step_labels))]
                out.write(" ".join(f"{n}/{s}" for n, s in zip(names, p.step_labels, strict=False)) + "\n")
            else:
                out.write(" ".join(f"{v:.6g}" for v in p.scores.reshape(-1)) + "\n")
    return 0


def text_chunks(text: str, size: int) -> Iterator[str]:
    """Pieces of at most ``size`` characters, cut after whitespace where there is some, so that
    word tokenizers see whole words (for character tokenizers any cut is exact)."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind(c, start, end) for c in " \n\t")
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def _describe(p: Prediction) -> str:
    if p.label:
        return p.label
    if p.step_labels:
        return " ".join(p.step_labels)
    return " ".join(f"{v:.6g}" for v in p.scores.reshape(-1))


def cmd_stream(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Feed one long sequence (a features file, or a text file) in chunks; print each answer."""
    if args.chunk < 1:
        raise UsageError("--chunk must be >= 1")
    path = Path(args.file)
    chunks: list[SequenceLike]
    if path.suffix in (".csv", ".npy"):
        series = read_features(path, _columns(args), _model_features(args, client, [args.file]))
        chunks = [series[i:i + args.chunk] for i in range(0, len(series), args.chunk)]
    else:
        chunks = [c for c in text_chunks(path.read_text(encoding="utf-8"), args.chunk) if c.strip()]
    if not chunks:
        raise UsageError(f"{path}: nothing to stream")

    def emit(offset: int, steps: int, version: str, p: Prediction) -> None:
        if args.json:
            _write_json({"offset": offset, "steps": steps, "model_version": version, **p.to_dict()}, out)
        else:
            out.write(f"[{offset}:{steps}] {_describe(p)}\n")

    if args.client_state:
        state = None
        for chunk in chunks:
            result = client.predict(args.model, chunk, version=args.version, state=state, return_state=True)
            offset = state.steps if state is not None else 0
            state = result.state
            assert state is not None
            emit(offset, state.steps, result.model_version, result[0])
        return 0
    with client.sequence(args.model, version=args.version, sequence_id=args.sequence_id) as seq:
        for chunk in chunks:
            pred = seq.feed(chunk)
            emit(seq.offset, seq.steps, seq.model_version, pred)
    return 0


def _explain_bulk(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    path = Path(args.input_file)
    total = scan_input_file(path)
    bar = ProgressBar("explain", stream=sys.stderr) if not args.quiet else None
    failed = 0
    sink = open(args.output, "w", encoding="utf-8") if args.output else out  # noqa: SIM115 - closed below
    try:
        stream = client.explain_iter(args.model, iter_input_file(path), _methods(args), target=_target(args),
                                     baseline=_baseline(args), state=_state(args), faithfulness=args.faithfulness,
                                     version=args.version, concurrency=args.concurrency,
                                     progress=(lambda done, _t: bar(done, total)) if bar else None)
        for index, result in stream:
            if isinstance(result, SeqlensError):
                failed += 1
                _write_json({"index": index, "line": index + 1,
                             "error": {"code": result.code.name, "message": result.message}}, sink)
            else:
                _write_json({"index": index, "line": index + 1, **result.to_dict()}, sink)
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
    items = inline_inputs(args, client)
    if len(items) != 1:
        raise UsageError(f"explain takes exactly one input (got {len(items)}); use --input-file for many")
    exp = client.explain(args.model, items[0], _methods(args), target=_target(args), baseline=_baseline(args),
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
    g.add_argument("--token", default=d(None), help="bearer token, without 'Bearer ' (or env SEQLENS_TOKEN)")
    g.add_argument("--token-file", default=d(None), help="file holding the bearer token")
    g.add_argument("--tls", action="store_true", default=d(False), help="use TLS with the system CA roots")
    g.add_argument("--tls-ca", default=d(None), help="PEM CA bundle that signed the server certificate")
    g.add_argument("--tls-cert", default=d(None), help="PEM client certificate (mutual TLS)")
    g.add_argument("--tls-key", default=d(None), help="PEM client key (mutual TLS)")
    g.add_argument("--tls-server-name", default=d(None), help="name to verify in the server certificate")
    g.add_argument("--timeout", type=float, default=d(60.0), help="deadline per call in seconds (default 60)")


def _choices(enum: vocabulary.EnumType, *leave_out: str) -> list[str]:
    """An enum's names in the wire vocabulary (the server's spelling too)."""
    return [n for n in vocabulary.names(enum) if n not in leave_out]


def _wire_name(enum: vocabulary.EnumType) -> Any:
    """argparse ``type``: any spelling the vocabulary reads (``PER_FEATURE``, ``ABLATION_MODE_PER_FEATURE``)
    -> its short name; unknown names are left for ``choices`` to refuse with the list."""
    def convert(text: str) -> str:
        try:
            return vocabulary.name(enum, vocabulary.number(enum, text)) or text
        except ValueError:
            return text
    return convert


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
        sp.add_argument("--features", action="append", help="CSV or .npy file of a [T, F] series (repeatable); "
                        "CSV: numeric columns, a header row optional")
        sp.add_argument("--columns", help="CSV feature columns to read, by header name or 0-based index, "
                        "comma-separated (default: the model's feature names when the header has them, else all)")
        sp.add_argument("--input-file", help="many inputs: one text per line, or JSONL (.jsonl) of texts, token-id "
                        "lists, feature tables or objects with text/token_ids/features")
        sp.add_argument("--version", help="model version (default: the latest ready)")
        sp.add_argument("--json", action="store_true", help="print JSON (one object per line)")

    p = sub.add_parser("predict", parents=[conn], help="predict labels, tags or forecasts")
    inputs(p)
    p.add_argument("--batch-size", type=int, default=64, help="inputs per request with --input-file")

    p = sub.add_parser("explain", parents=[conn], help="explain a prediction")
    inputs(p)
    m = p.add_argument_group("methods and their options (each option goes to the chosen methods that take it)")
    m.add_argument("--method", action="append", help="attribution method (repeatable; default integrated_gradients)")
    m.add_argument("--steps", type=_positive, help="integrated_gradients: integration steps (n_steps)")
    m.add_argument("--quadrature", type=_wire_name(explain_pb2.Quadrature), choices=_choices(explain_pb2.Quadrature),
                   help="integrated_gradients: quadrature rule")
    m.add_argument("--adaptive", action="store_true", default=None, help="integrated_gradients: refine adaptively")
    m.add_argument("--tolerance", type=float, help="integrated_gradients with --adaptive: tolerance in (0, 1)")
    m.add_argument("--max-steps", type=_positive, help="integrated_gradients with --adaptive: step cap")
    m.add_argument("--samples", type=_positive, help="gradient_shap, smoothgrad, shapley_sampling: samples")
    m.add_argument("--noise-stdev", type=float, help="gradient_shap, smoothgrad: noise level (stdev)")
    m.add_argument("--seed", type=int, help="gradient_shap, smoothgrad, shapley_sampling: random seed")
    m.add_argument("--window", type=_positive, help="occlusion (required): timesteps per occluded window")
    m.add_argument("--stride", type=_positive, help="occlusion: timesteps between windows (default 1)")
    m.add_argument("--ablation", type=_wire_name(explain_pb2.AblationMode), choices=_choices(explain_pb2.AblationMode),
                   help="feature_ablation, shapley_sampling: what one perturbation removes")
    m.add_argument("--signed", action="store_true", default=None,
                   help="saliency, smoothgrad: signed gradients instead of absolute")
    p.add_argument("--target", help="class index or label to explain (default: the predicted class)")
    p.add_argument("--timestep", type=int, help="timestep to explain (tagging)")
    p.add_argument("--horizon-step", type=int, help="horizon step to explain (forecasting)")
    p.add_argument("--probability", action="store_true", help="explain the probability instead of the logit")
    p.add_argument("--baseline", type=_wire_name(explain_pb2.BaselineKind),
                   choices=[vocabulary.DEFAULT, *_choices(explain_pb2.BaselineKind, "custom")],
                   help="attribution baseline")
    p.add_argument("--baseline-ids", help="custom baseline: token ids, one per input token, e.g. '0 0 0'")
    p.add_argument("--baseline-features", help="custom baseline: CSV or .npy [T, F], the input's shape")
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

    p = sub.add_parser("stream", parents=[conn], help="feed one long sequence in chunks (stateful)")
    p.add_argument("model", help="model name")
    p.add_argument("file", help="CSV or .npy [T, F] series, or a text file")
    p.add_argument("--chunk", type=int, default=64, help="rows (features) or characters (text) per chunk")
    p.add_argument("--columns", help="CSV feature columns to read, by header name or 0-based index, "
                   "comma-separated (default: the model's feature names when the header has them, else all)")
    p.add_argument("--client-state", action="store_true",
                   help="carry the state in this client (Predict with state) instead of a server-held sequence")
    p.add_argument("--sequence-id", help="server-held sequence id (default: a random one)")
    p.add_argument("--version", help="model version (default: the latest ready)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per chunk)")
    return parser


def hint(error: SeqlensError, args: argparse.Namespace) -> str:
    """What a CLI user should do about an error, in the CLI's own flags ("" when nothing to add)."""
    text = error.message.lower()
    if isinstance(error, Unauthenticated):
        if "missing" in text:
            return "this server needs a token: pass --token TOKEN or --token-file FILE, or set SEQLENS_TOKEN"
        return "the server refused the token from --token, --token-file or SEQLENS_TOKEN; check it is current"
    if isinstance(error, Unavailable) and any(s in text for s in _UNREACHABLE):
        return (f"no seqlens server answered at {args.target_address}: start one (seqlens serve, or make serve) "
                "or point --target-address (env SEQLENS_ADDRESS) at it")
    return ""


_UNREACHABLE = ("failed to connect", "connection refused", "dns resolution failed", "name resolution",
                "connections to all backends failing", "not reachable")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"models": cmd_models, "predict": cmd_predict, "explain": cmd_explain, "stream": cmd_stream}
    try:
        with make_client(args) as client:
            return commands[args.command](args, client, sys.stdout)
    except SeqlensError as e:
        print(f"seqlens-client: {e.code.name}: {e.message}", file=sys.stderr)
        if extra := hint(e, args):
            print(f"seqlens-client: hint: {extra}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, OSError, ImportError, ValueError) as e:  # ValueError: SDK argument checks
        print(f"seqlens-client: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
