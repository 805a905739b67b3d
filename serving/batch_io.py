"""File I/O of the batch scorer: input files as Arrow chunks, part files, the output.

Every chunk of input rows is a ``pyarrow.Table``, whatever the file format:

* CSV: every column a string. A CSV holds text, and pyarrow's per-block type
  inference could otherwise change a column's type halfway through the file.
* Parquet: the file's own schema.
* JSONL: a schema found in the counting pass over the whole file, so that
  every chunk has the same one. A column whose values are all strings, all
  booleans, all integers or all numbers gets that Arrow type. A column of
  objects or arrays, or of values of mixed types, holds each value's JSON text
  and is marked so in its field metadata (:func:`is_json_text`): the text check
  still sees a value's real type (``5`` is not the text ``"5"``), and a JSONL
  output gives back each value as it was read. A line that is not a JSON
  object becomes a row of nulls with a reading problem (:attr:`Chunk.problems`),
  so it is kept and reported like any other row that cannot be scored.

Parts are written atomically, so a crash never leaves a half-written part
under its name. The output is put together in a temporary file beside it and
then renamed onto it, so it is either complete or absent.

Errors name files, lines and columns, never values. pyarrow's CSV parse
errors quote the offending row, so they are replaced by the problem alone.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

#: File formats by extension.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PART_EXT = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}


def file_format(path: str | Path) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from a file name; ``ValueError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown file type {suffix or '(none)'!r}; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


# -- JSON values in Arrow columns ----------------------------------------------------

_JSON_TEXT_KEY = b"qorgan.json_text"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: A JSONL column's Arrow type from the kinds of non-null value it holds. Any
#: other mix (objects, arrays, strings with numbers, ...) is held as JSON text.
_TYPE_OF_KINDS = {
    frozenset(): pa.string(),
    frozenset({"string"}): pa.string(),
    frozenset({"bool"}): pa.bool_(),
    frozenset({"int"}): pa.int64(),
    frozenset({"float"}): pa.float64(),
    frozenset({"int", "float"}): pa.float64(),  # one JSON number type, as pyarrow.json reads it
}


def is_json_text(field: pa.Field) -> bool:
    """Whether a column holds each value's JSON text (a JSONL column of mixed types)."""
    return bool(field.metadata) and field.metadata.get(_JSON_TEXT_KEY) == b"1"


def _json_kind(value: Any) -> str:
    """The kind of a non-null JSON value, for choosing its column's Arrow type."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "json"
    if isinstance(value, float):
        return "float"
    return "string" if isinstance(value, str) else "json"


def _jsonl_field(name: str, kinds: set[str]) -> pa.Field:
    arrow_type = _TYPE_OF_KINDS.get(frozenset(kinds))
    if arrow_type is None:
        return pa.field(name, pa.string(), metadata={_JSON_TEXT_KEY: b"1"})
    return pa.field(name, arrow_type)


def _as_text(value: Any) -> str | None:
    """A value for a column of text: a string as it is, anything else as its JSON text."""
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def column_values(table: pa.Table, name: str) -> list[Any]:
    """A column's Python values as the input file held them (JSON text decoded)."""
    values = table.column(name).to_pylist()
    if is_json_text(table.schema.field(name)):
        return [None if v is None else json.loads(v) for v in values]
    return values


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """A slice of input rows, with the problems met while reading them.

    ``problems`` holds, per row, why the row could not be read (a JSONL line
    that is not a JSON object) or None; CSV and Parquet rows have none.
    """

    table: pa.Table
    problems: list[str | None] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> list[Any]:
        """A column's values as the file held them; all None if the file has no such column."""
        if name not in self.table.column_names:
            return [None] * len(self)
        return column_values(self.table, name)


class Reader:
    """Streams an input file as :class:`Chunk` objects of ``chunk_rows`` rows.

    Opening it reads the file once for its schema and row count (the progress
    bar's total); iterating reads it again, one chunk in memory at a time.
    """

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path = path
        self.format = file_format(path)
        self.chunk_rows = chunk_rows
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        scan = {"csv": _scan_csv, "jsonl": _scan_jsonl, "parquet": _scan_parquet}[self.format]
        self.schema, self.rows = scan(path)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def __iter__(self) -> Iterator[Chunk]:
        if self.format == "jsonl":
            yield from _jsonl_chunks(self.path, self.schema, self.chunk_rows)
        elif self.format == "csv":
            with _csv_errors(self.path):
                for table in _rechunk(_csv_batches(self.path, self.schema), self.chunk_rows):
                    yield Chunk(table)
        else:
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=min(self.chunk_rows, 65536))
            for table in _rechunk(batches, self.chunk_rows):
                yield Chunk(table)


def _rechunk(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Tables of exactly ``size`` rows (the last may be shorter) from record batches."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def _scan_parquet(path: Path) -> tuple[pa.Schema, int]:
    pf = pq.ParquetFile(path)
    return pf.schema_arrow, pf.metadata.num_rows


def _csv_batches(path: Path, schema: pa.Schema | None = None) -> pcsv.CSVStreamingReader:
    """Record batches of a CSV file, with ``schema``'s column types if given."""
    return pcsv.open_csv(
        pa.input_stream(str(path)),
        read_options=pcsv.ReadOptions(block_size=1 << 22),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types={f.name: f.type for f in schema or []}),
    )


def _scan_csv(path: Path) -> tuple[pa.Schema, int]:
    """Every column a string (see the module docstring) and the row count."""
    with _csv_errors(path):
        reader = _csv_batches(path)
        try:
            schema = pa.schema([pa.field(name, pa.string()) for name in reader.schema.names])
        finally:
            reader.close()
        return schema, sum(batch.num_rows for batch in _csv_batches(path, schema))


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """Turn pyarrow's CSV errors, which quote the offending row, into ones that do not."""
    try:
        yield
    except pa.ArrowInvalid as exc:
        known = re.search(r"Expected \d+ columns, got \d+|invalid UTF8 data", str(exc))
        problem = known.group(0) if known else "a row cannot be parsed"
        raise ValueError(f"{path} is not a well-formed CSV file: {problem} (the row is not shown)") from None


def _jsonl_lines(path: Path) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Each non-blank line's JSON object and None, or ``{}`` and why the line is not one."""
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                yield {}, f"line {lineno} is not valid JSON"
                continue
            if isinstance(obj, dict):
                yield obj, None
            else:
                yield {}, f"line {lineno} is not a JSON object"


def _scan_jsonl(path: Path) -> tuple[pa.Schema, int]:
    """The file's schema (keys in order of first appearance, typed as the module docstring says) and row count."""
    kinds: dict[str, set[str]] = {}
    rows = 0
    for record, _ in _jsonl_lines(path):
        rows += 1
        for key, value in record.items():
            seen = kinds.setdefault(key, set())
            if value is not None:
                seen.add(_json_kind(value))
    return pa.schema([_jsonl_field(name, seen) for name, seen in kinds.items()]), rows


def _jsonl_chunks(path: Path, schema: pa.Schema, chunk_rows: int) -> Iterator[Chunk]:
    lines = _jsonl_lines(path)
    while batch := list(islice(lines, chunk_rows)):
        records, problems = zip(*batch, strict=True)
        yield Chunk(_records_table(path, records, schema), list(problems))


def _records_table(path: Path, records: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """JSON objects as a table of ``schema``: a missing key is a null, and the row
    count holds even when there are no columns (a file of lines that are not objects)."""
    json_text = [f.name for f in schema if is_json_text(f)]
    if json_text:
        records = [{**r, **{k: None if r.get(k) is None else json.dumps(r[k], ensure_ascii=False)
                            for k in json_text}} for r in records]
    try:
        return pa.Table.from_struct_array(pa.array(list(records), pa.struct(schema)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # pyarrow's message would quote the value; the scan saw other types.
        raise ValueError(f"{path} changed while it was being scored; start the run again") from None


# -- writing -----------------------------------------------------------------------------


def output_table(table: pa.Table, fmt: str) -> pa.Table:
    """The table as a CSV or Parquet file can hold it.

    Neither knows the JSON-text marking and CSV has no nested values, so those
    columns become text: strings as they are, other values as JSON text.
    """
    for i, field in enumerate(table.schema):
        if is_json_text(field) or (fmt == "csv" and pa.types.is_nested(field.type)):
            values = [_as_text(v) for v in column_values(table, field.name)]
            table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(values, pa.string()))
    return table


def _write_jsonl(table: pa.Table, path: Path) -> None:
    names = table.column_names
    columns = [column_values(table, name) for name in names]
    with path.open("w", encoding="utf-8") as fh:
        for values in zip(*columns, strict=True):
            fh.write(json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False, default=str))
            fh.write("\n")


def write_part(path: Path, fmt: str, table: pa.Table) -> None:
    """Write one part file atomically; a CSV part has no header (the output gets one)."""
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "jsonl":
        _write_jsonl(table, tmp)
    elif fmt == "csv":
        pcsv.write_csv(output_table(table, fmt), str(tmp), pcsv.WriteOptions(include_header=False))
    else:
        pq.write_table(output_table(table, fmt), str(tmp))
    os.replace(tmp, path)


def write_output(parts: list[Path], output: Path, fmt: str, empty: pa.Table) -> None:
    """Concatenate ``parts`` into ``output``, complete or not at all.

    ``empty`` has the output's columns and no rows: it gives a CSV its header
    and an input without rows an output without rows.
    """
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            _concat_parquet(parts, tmp, empty)
        else:
            _concat_text(parts, tmp, fmt, empty)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _concat_parquet(parts: list[Path], out: Path, empty: pa.Table) -> None:
    """One part in memory at a time, each cast to the first one's schema."""
    schema = pq.read_schema(parts[0]) if parts else output_table(empty, "parquet").schema
    with pq.ParquetWriter(str(out), schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part).cast(schema))


def _concat_text(parts: list[Path], out: Path, fmt: str, empty: pa.Table) -> None:
    """Parts copied byte for byte after the header (CSV); JSONL has none."""
    with out.open("wb") as dst:
        if fmt == "csv":
            header = io.BytesIO()
            pcsv.write_csv(output_table(empty, fmt), header)
            dst.write(header.getvalue())
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
