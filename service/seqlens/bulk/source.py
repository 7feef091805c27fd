"""Input datasets (Parquet or JSONL) cut into fixed blocks of rows, each readable on its own.

The driver plans the blocks once (Parquet: from the footer's row counts; JSONL: one scan
that notes the byte offset of every block's first line); any worker then reads one block
by row range or offset. Fixed blocks are what makes a job resumable: block k always holds
the same rows, and its output file says it is done (docs/bulk.md).

A row that cannot be read (a JSONL line that is not a JSON object, a ragged feature
array) becomes a ``RowInput`` with ``error`` set: it is recorded as a failed row, and the
job goes on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInput
from ..inputs import SequenceInput
from .spec import INPUT_COLUMNS

Format = Literal["parquet", "jsonl"]
IdType = Literal["int64", "string"]


@dataclass(frozen=True)
class Block:
    index: int
    start: int  # first row (0-based, in input order)
    stop: int  # one past the last row
    offset: int = 0  # JSONL: byte offset of the block's first line


@dataclass(frozen=True)
class InputPlan:
    path: str
    format: Format
    num_rows: int
    input_column: str
    id_column: str | None  # None: the input has no id column; ids are row numbers
    id_type: IdType
    blocks: tuple[Block, ...]
    fingerprint: str  # size and mtime of the file: a changed input is a different job


@dataclass(frozen=True)
class RowInput:
    row: int
    id: Any
    input: SequenceInput
    error: str | None = None  # why the row could not be read (InvalidInput message)


def input_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise InvalidInput(f"{path}: unknown input format {suffix!r}; use .parquet or .jsonl (one JSON object a line)")


def _pick_input_column(columns: list[str], wanted: str, path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise InvalidInput(f"{path}: no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    found = [c for c in INPUT_COLUMNS if c in columns]
    if len(found) != 1:
        have = ", ".join(found) or "none of them"
        raise InvalidInput(f"{path}: the input needs exactly one of the columns {', '.join(INPUT_COLUMNS)} "
                           f"(found {have}); name the one to explain with input_column / --input-column")
    return found[0]


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _blocks(num_rows: int, block_rows: int, offsets: list[int] | None = None) -> tuple[Block, ...]:
    out = []
    for k, start in enumerate(range(0, num_rows, block_rows)):
        out.append(Block(k, start, min(num_rows, start + block_rows), offsets[k] if offsets else 0))
    return tuple(out)


def plan_input(path: Path, *, block_rows: int, input_column: str = "", id_column: str = "id") -> InputPlan:
    """Count the rows, choose the columns and cut the input into blocks of ``block_rows``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"input {path} is not a file")
    fmt = input_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        columns = list(schema.names)
        column = _pick_input_column(columns, input_column, path)
        has_id = id_column in columns
        id_type: IdType = "string"
        if has_id:
            import pyarrow as pa

            field_type = schema.field(id_column).type
            id_type = "int64" if pa.types.is_integer(field_type) else "string"
        num_rows = meta.metadata.num_rows
        return InputPlan(str(path), fmt, num_rows, column, id_column if has_id else None,
                         id_type if has_id else "int64", _blocks(num_rows, block_rows), _fingerprint(path))
    offsets: list[int] = []
    num_rows = 0
    first: dict[str, Any] | None = None
    with path.open("rb") as f:
        pos = 0
        for line in f:
            if line.strip():
                if num_rows % block_rows == 0:
                    offsets.append(pos)
                if first is None:
                    first = _parse_line(line, num_rows)[0]
                num_rows += 1
            pos += len(line)
    columns = sorted(first) if first else []
    column = _pick_input_column(columns, input_column, path) if num_rows else (input_column or "text")
    has_id = first is not None and id_column in first
    first_id = first.get(id_column) if first is not None else None
    id_type = "int64" if (not has_id) or (isinstance(first_id, int) and not isinstance(first_id, bool)) else "string"
    return InputPlan(str(path), fmt, num_rows, column, id_column if has_id else None, id_type,
                     _blocks(num_rows, block_rows, offsets), _fingerprint(path))


def _parse_line(line: bytes, row: int) -> tuple[dict[str, Any] | None, str | None]:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"row {row}: not valid JSON ({exc}); each line must be one JSON object"
    if not isinstance(value, dict):
        return None, f"row {row}: a JSON {type(value).__name__}, not an object; each line must be one JSON object"
    return value, None


def _as_input(column: str, value: Any) -> SequenceInput:
    """A row's value -> the SequenceInput the server would decode from the same request."""
    if value is None:
        return SequenceInput()
    if column == "text":
        if not isinstance(value, str):
            raise InvalidInput(f"input.text is a {type(value).__name__}; send a string")
        return SequenceInput(text=value)
    if isinstance(value, str):
        raise InvalidInput(f"input.{column} is a string; send a list of numbers")
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = np.asarray(value, dtype=object)
    if arr.dtype == object:
        raise InvalidInput(f"input.{column} is ragged or not numeric: send a list of numbers"
                           + (" per timestep, each of the same length" if column == "features" else ""))
    if column == "token_ids":
        if arr.dtype == np.bool_:
            raise InvalidInput("input.token_ids are bool; token ids must be integers")
        return SequenceInput(token_ids=arr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"input.features are {arr.dtype}; features must be numbers (float32)")
    return SequenceInput(features=arr)


def _row_input(plan: InputPlan, row: int, record: dict[str, Any] | None, error: str | None) -> RowInput:
    raw_id = record.get(plan.id_column) if (record is not None and plan.id_column) else None
    row_id: Any = row if plan.id_column is None else raw_id
    if plan.id_type == "string" and row_id is not None and not isinstance(row_id, str):
        row_id = json.dumps(row_id) if not isinstance(row_id, int | float) else str(row_id)
    if plan.id_type == "int64" and row_id is not None and (not isinstance(row_id, int) or isinstance(row_id, bool)):
        error = error or f"row {row}: {plan.id_column} = {row_id!r} is not an integer like the first row's"
        row_id = None
    if error is not None or record is None:
        return RowInput(row, row_id, SequenceInput(), error or f"row {row}: unreadable")
    column = plan.input_column
    if column not in record and plan.format == "jsonl":
        present = [c for c in INPUT_COLUMNS if c in record]
        if present:
            column = present[0]  # a JSONL row may carry another input kind than the first row
    try:
        item = _as_input(column, record.get(column))
    except InvalidInput as exc:
        return RowInput(row, row_id, SequenceInput(), exc.message)
    return RowInput(row, row_id, item)


def read_block(plan: InputPlan, block: Block) -> list[RowInput]:
    """The rows of one block, in input order."""
    if plan.format == "parquet":
        return _read_parquet_block(plan, block)
    out: list[RowInput] = []
    with open(plan.path, "rb") as f:
        f.seek(block.offset)
        row = block.start
        while row < block.stop:
            line = f.readline()
            if not line:
                raise InvalidInput(f"{plan.path} changed while the job ran (ended before row {row})")
            if not line.strip():
                continue
            record, error = _parse_line(line, row)
            out.append(_row_input(plan, row, record, error))
            row += 1
    return out


def _read_parquet_block(plan: InputPlan, block: Block) -> list[RowInput]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(plan.path)
    columns = [plan.input_column] + ([plan.id_column] if plan.id_column else [])
    groups: list[int] = []
    first_row = row = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row + n > block.start and row < block.stop:
            if not groups:
                first_row = row
            groups.append(g)
        row += n
    table = pf.read_row_groups(groups, columns=columns)
    table = table.slice(block.start - first_row, block.stop - block.start)
    return [_row_input(plan, block.start + i, rec, None) for i, rec in enumerate(table.to_pylist())]


def part_name(block: Block) -> str:
    return f"part-{block.index:06d}.parquet"


def atomic_write(path: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename: a block's file exists only once it is complete."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
