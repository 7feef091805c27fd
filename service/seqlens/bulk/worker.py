"""One worker: loads the model version once, then explains whole blocks and writes their files.

``BlockExplainer`` runs inside a Ray actor (``BlockExplainerActor``) but is plain Python, so
a block can also be explained without Ray. Each row goes through ``seqlens.explain.explain``,
the function the server's gradient pool runs, with the server's settings (``SEQLENS_*``
variables and defaults): same limits, same numbers, no gRPC hop. A row that fails is recorded
with the status code name and the message the server would answer with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Settings
from ..errors import SeqlensError
from ..explain import explain
from ..repository import ModelRepository
from ..versions import load_version
from .columns import error_record, output_schema, records_table, result_record, state_columns
from .source import Block, InputPlan, atomic_write, part_name, read_block

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; the server log has the details"  # as StreamExplain answers


def status_name(exc: SeqlensError) -> str:
    """The gRPC status the server answers ``exc`` with, by name (e.g. INVALID_ARGUMENT)."""
    from ..grpc.interceptors import status_for  # the one table of domain error -> status

    return status_for(exc).name


@dataclass(frozen=True)
class BlockOutcome:
    block: int
    rows: int
    failed: int
    seconds: float


class BlockExplainer:
    def __init__(self, spec_json: str, plan: InputPlan, output: str) -> None:
        from .spec import BulkSpec

        self.spec = BulkSpec.from_json(spec_json)
        self.plan = plan
        self.output = Path(output)
        self.settings = Settings()
        torch.set_num_threads(self.settings.torch_threads)
        repo = ModelRepository(self.spec.repository_path)
        self.loaded = load_version(repo.version_dir(self.spec.model, self.spec.version), self.spec.model,
                                   self.spec.version, onnx_threads=self.settings.onnx_threads,
                                   tolerance=self.settings.parity_tolerance)
        self.schema = output_schema(self.spec, self.loaded.config, plan.id_type)
        self.states = state_columns(self.spec, self.loaded.config)

    def explain_block(self, block: Block) -> BlockOutcome:
        # Flush-to-zero as on the server's gradient threads (explainers.threads.init_gradient_thread),
        # for this block only: threads created later from this one would inherit the mode.
        torch.set_flush_denormal(True)
        try:
            return self._explain_block(block)
        finally:
            torch.set_flush_denormal(False)

    def _explain_block(self, block: Block) -> BlockOutcome:
        start = time.perf_counter()
        torch.backends.cudnn.enabled = False
        records: list[dict[str, Any]] = []
        failed = 0
        version = self.loaded.version
        for row in read_block(self.plan, block):
            if row.error is not None:
                records.append(error_record(row, version, "INVALID_ARGUMENT", row.error))
                failed += 1
                continue
            try:
                result = explain(self.loaded, self.spec.request_for(row.input, str(row.id)), self.settings)
            except SeqlensError as exc:
                records.append(error_record(row, version, status_name(exc), exc.message))
                failed += 1
                continue
            except Exception:  # one row fails, the job goes on
                log.exception("bulk row failed", extra={"row": row.row})
                records.append(error_record(row, version, "INTERNAL", INTERNAL_MESSAGE))
                failed += 1
                continue
            records.append(result_record(row, result, self.spec, self.states))
        table = records_table(records, self.schema)

        def write(tmp: Path) -> None:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)

        atomic_write(self.output / part_name(block), write)
        return BlockOutcome(block.index, len(records), failed, time.perf_counter() - start)


class BlockExplainerActor:
    """The Ray Data callable class: a batch of block descriptors in, one outcome per block out."""

    def __init__(self, spec_json: str, plan: InputPlan, output: str) -> None:
        self.worker = BlockExplainer(spec_json, plan, output)
        self.blocks = {b.index: b for b in plan.blocks}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [self.worker.explain_block(self.blocks[int(k)]) for k in batch["block"]]
        return {"block": np.array([o.block for o in outcomes], dtype=np.int64),
                "rows": np.array([o.rows for o in outcomes], dtype=np.int64),
                "failed": np.array([o.failed for o in outcomes], dtype=np.int64),
                "seconds": np.array([o.seconds for o in outcomes], dtype=np.float64)}
