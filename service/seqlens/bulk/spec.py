"""What a bulk job explains: the model, the methods and options, and where the input lives.

A ``BulkSpec`` is plain data (JSON in the output's manifest, and how the driver hands the job
to Ray actors): the same options an ``ExplainRequest`` carries, minus the input, which comes
from each row. ``request_for`` builds the request the server would build for that row.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..explain import ExplainRequest
from ..explainers import DEFAULT_METHOD
from ..explainers.baselines import BaselineKind
from ..explainers.options import MethodOptions
from ..explainers.targets import TargetSpec
from ..inputs import SequenceInput
from ..summaries import StateOptions

INPUT_COLUMNS = ("text", "token_ids", "features")
DEFAULT_BLOCK_ROWS = 256
MANIFEST = "_seqlens_bulk.json"  # in the output folder; leading "_": Parquet dataset readers skip it


@dataclass(frozen=True)
class BulkSpec:
    """One bulk explanation job (everything except the input and output paths)."""

    repository: str
    model: str
    version: str = ""  # empty: the latest version, resolved once by the driver
    methods: tuple[MethodOptions, ...] = ()  # empty: integrated_gradients with its defaults
    target: TargetSpec = field(default_factory=TargetSpec)
    baseline: BaselineKind = "default"
    state: tuple[str, ...] | None = None  # None: no state summaries; (): every one that applies
    faithfulness: bool = False
    input_column: str = ""  # empty: the one of text / token_ids / features the input has
    id_column: str = "id"  # missing from the input: the row number is the id
    block_rows: int = DEFAULT_BLOCK_ROWS

    def __post_init__(self) -> None:
        if self.block_rows < 1:
            raise InvalidInput(f"block_rows is {self.block_rows}; it must be at least 1")
        names = [m.name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"methods: {', '.join(dupes)} requested twice; each method gives one set of columns")

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods) or (DEFAULT_METHOD,)

    def request_for(self, item: SequenceInput, request_id: str) -> ExplainRequest:
        state = StateOptions(summaries=self.state) if self.state is not None else None
        return ExplainRequest(model_name=self.model, model_version=self.version, input=item, target=self.target,
                              methods=self.methods, baseline_kind=self.baseline, state=state,
                              faithfulness=self.faithfulness, request_id=request_id)

    # --- JSON (manifest, and the driver -> actor hand-over) ---------------------------
    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["state"] = list(self.state) if self.state is not None else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BulkSpec:
        data: dict[str, Any] = json.loads(text)
        data["methods"] = tuple(MethodOptions(**m) for m in data["methods"])
        data["target"] = TargetSpec(**data["target"])
        data["state"] = tuple(data["state"]) if data["state"] is not None else None
        return cls(**data)

    def with_version(self, version: str) -> BulkSpec:
        return dataclasses.replace(self, version=version)

    @property
    def repository_path(self) -> Path:
        return Path(self.repository)
