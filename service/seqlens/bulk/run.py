"""The driver: plan the blocks, skip the finished ones, run the rest on Ray Data actors.

Ray is imported here, lazily (``_ray``), never by the server's import path. With no Ray
session running, ``explain_dataset`` starts one: local (the machine's cores) by default, or
the cluster at ``RAY_ADDRESS``. Design and scaling notes: docs/bulk.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..repository import ModelRepository
from ..schema import ModelConfig, TokenInput, parse_config
from .source import InputPlan, part_name, plan_input
from .spec import MANIFEST, BulkSpec

Progress = Callable[["BulkProgress"], None]


@dataclass
class BulkProgress:
    blocks_done: int
    blocks_total: int
    rows_done: int
    rows_failed: int
    seconds: float


@dataclass(frozen=True)
class BulkReport:
    output: str
    model: str
    model_version: str
    num_rows: int
    blocks_total: int
    blocks_skipped: int  # finished by an earlier run (their files were kept as they are)
    blocks_run: int
    rows_run: int
    rows_failed: int  # among rows_run
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidInput('bulk explanation needs Ray Data: pip install "seqlens[ray]"') from None
    return ray


def ensure_ray(num_cpus: int | None = None) -> Any:
    """The running Ray session, or a new one: RAY_ADDRESS's cluster, else local on this machine."""
    import os

    ray = _ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)
        else:
            # A local bulk job is this machine's work: Ray's default worker niceness (15) would
            # let any other busy process starve it (docs/bulk.md).
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=num_cpus, include_dashboard=False)
    return ray


def _manifest(spec: BulkSpec, plan: InputPlan, config: ModelConfig) -> dict[str, Any]:
    feature_names = [] if isinstance(config.input, TokenInput) else list(config.input.feature_names)
    model = {"task": config.task, "input_kind": config.input.kind, "labels": list(config.labels or []),
             "feature_names": feature_names}
    return {"spec": json.loads(spec.to_json()), "model": model, "input": {"path": str(Path(plan.path).resolve()),
                                                        "fingerprint": plan.fingerprint,
                                                        "num_rows": plan.num_rows,
                                                        "input_column": plan.input_column,
                                                        "id_column": plan.id_column}}


def prepare_output(output: Path, spec: BulkSpec, plan: InputPlan, config: ModelConfig, *,
                   overwrite: bool) -> None:
    """Create the output folder, or check that it holds the same job (then it resumes)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / MANIFEST
    wanted = _manifest(spec, plan, config)
    if path.exists():
        have = json.loads(path.read_text())
        if have != wanted:
            if not overwrite:
                differs = sorted(k for k in ("spec", "input") if have.get(k) != wanted[k])
                raise InvalidInput(
                    f"{output} holds the results of another job (its {' and '.join(differs)} differ); "
                    "write to a new folder, or pass overwrite=True / --overwrite to start again")
            for old in output.glob("part-*.parquet"):
                old.unlink()
    elif any(output.glob("part-*.parquet")):
        raise InvalidInput(f"{output} has part files but no {MANIFEST}; write to a new or empty folder")
    path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")


def progress_bar(stream: Any = None) -> Progress:
    """A one-line progress bar on stderr: blocks, rows, failed rows, rows per second."""
    out = stream or sys.stderr

    def show(p: BulkProgress) -> None:
        width = 30
        filled = width * p.blocks_done // max(1, p.blocks_total)
        rate = p.rows_done / p.seconds if p.seconds > 0 else 0.0
        end = "\n" if p.blocks_done == p.blocks_total else ""
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {p.blocks_done}/{p.blocks_total} blocks, "
                  f"{p.rows_done} rows, {p.rows_failed} failed, {rate:.1f} rows/s{end}")
        out.flush()

    return show


def explain_dataset(input: str | Path, output: str | Path, spec: BulkSpec, *, num_actors: int | None = None,
                    progress: Progress | bool = True, overwrite: bool = False) -> BulkReport:
    """Explain every row of ``input`` (Parquet or JSONL) into Parquet files under ``output``.

    ``output`` gets one ``part-NNNNNN.parquet`` per block of ``spec.block_rows`` input rows (read
    the folder as one dataset: rows in input order) and a manifest. A rerun with the same input
    and spec skips the blocks whose files exist. ``num_actors``: Ray actors, each loading the
    model once and using one CPU (default: every CPU of the Ray cluster).
    """
    start = time.perf_counter()
    output = Path(output)
    repo = ModelRepository(spec.repository_path)
    spec = spec.with_version(spec.version or repo.latest_version(spec.model))
    repo.version_dir(spec.model, spec.version)  # a missing version fails here, not in every actor
    plan = plan_input(Path(input), block_rows=spec.block_rows, input_column=spec.input_column,
                      id_column=spec.id_column)
    config = _check_spec(spec, plan)
    prepare_output(output, spec, plan, config, overwrite=overwrite)
    pending = [b for b in plan.blocks if not (output / part_name(b)).exists()]
    show = progress_bar() if progress is True else (progress or None)
    done, rows, failed = len(plan.blocks) - len(pending), 0, 0
    if show is not None:
        show(BulkProgress(done, len(plan.blocks), 0, 0, 0.0))
    if pending:
        for outcome in _run_blocks(spec, plan, output, pending, num_actors):
            done += 1
            rows += int(outcome["rows"])
            failed += int(outcome["failed"])
            if show is not None:
                show(BulkProgress(done, len(plan.blocks), rows, failed, time.perf_counter() - start))
    return BulkReport(str(output), spec.model, spec.version, plan.num_rows, len(plan.blocks),
                      len(plan.blocks) - len(pending), len(pending), rows, failed, time.perf_counter() - start)


def _check_spec(spec: BulkSpec, plan: InputPlan) -> ModelConfig:
    """Options every row shares are checked once, on the driver, before any actor starts."""
    from ..explainers import available_methods
    from ..summaries import StateOptions, resolve_summaries
    from ..versions import CONFIG_FILE

    version_dir = ModelRepository(spec.repository_path).version_dir(spec.model, spec.version)
    config = parse_config((version_dir / CONFIG_FILE).read_text(encoding="utf-8"), source=CONFIG_FILE)
    if spec.state is not None:
        resolve_summaries(config, StateOptions(summaries=spec.state))
    known = available_methods()
    unknown = [n for n in spec.method_names if n not in known]
    if unknown:  # other options depend on each row's length: checked per row, as the server does
        raise InvalidInput(f"methods: {', '.join(map(repr, unknown))} not available for model {spec.model!r}; "
                           f"available: {', '.join(known)}")
    if plan.input_column == "features" and config.is_tokens or \
            plan.input_column in ("text", "token_ids") and not config.is_tokens:
        want = "text or token_ids" if config.is_tokens else "features"
        raise InvalidInput(f"model {spec.model!r} takes {want}; the input's column is {plan.input_column!r}")
    return config


def _run_blocks(spec: BulkSpec, plan: InputPlan, output: Path, pending: list[Any],
                num_actors: int | None) -> Any:
    ray = ensure_ray()
    from ray import data as ray_data

    from .worker import BlockExplainerActor

    ctx = ray_data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts blocks and rows
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(num_actors or cpus, len(pending)))
    items = [{"block": b.index} for b in pending]
    blocks = ray_data.from_items(items, override_num_blocks=len(items))
    explained = blocks.map_batches(BlockExplainerActor, fn_constructor_kwargs={
        "spec_json": spec.to_json(), "plan": plan, "output": str(output.resolve())},
        batch_size=1, batch_format="numpy", compute=ray_data.ActorPoolStrategy(size=actors), num_cpus=1)
    yield from explained.iter_rows()
