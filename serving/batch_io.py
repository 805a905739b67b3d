"""File I/O of the batch scorer: input files as Arrow chunks, part files, the output.

Every chunk of input rows is a ``pyarrow.Table``, whatever the file format:

* CSV: every column a string (a CSV holds text). Python's ``csv`` module reads
  it row by row, so that one bad row cannot stop the file: a row with another
  number of fields than the header, a value that is not UTF-8, a field over
  :data:`CSV_FIELD_LIMIT` or a quote left open at the end of the file becomes a
  row of nulls with a reading problem that names its row and line.
* Parquet: the file's own schema.
* JSONL: a schema found in the counting pass over the whole file, so that
  every chunk has the same one. A column whose values are all strings, all
  booleans, all integers or all numbers gets that Arrow type. A column of
  objects or arrays, or of values of mixed types, holds each value's JSON text
  and is marked so in its field metadata (:func:`is_json_text`): the text check
  still sees a value's real type (``5`` is not the text ``"5"``), and a JSONL
  output gives back each value as it was read. A line that is not a JSON
  object becomes a row of nulls with a reading problem (:attr:`Chunk.problems`).

Either way a row that cannot be read is kept and reported like any other row
that cannot be scored: every input row comes out.

Parts are written atomically, so a crash never leaves a half-written part
under its name. The output is put together in the run's work folder and then
renamed onto its name, so it is either complete or absent.

Errors and problems name files, rows, lines and columns, never values.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
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
    that is not a JSON object, a CSV row that is not well-formed) or None;
    Parquet rows have none.
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
            yield from _csv_chunks(self.path, self.schema, self.chunk_rows)
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


#: The longest CSV field read, in characters: the csv module's own limit (131,072 unless
#: the process changed it; far above any message). A longer one makes its row a reading problem.
CSV_FIELD_LIMIT = csv.field_size_limit()


def _csv_rows(path: Path) -> Iterator[tuple[list[str | None] | None, str | None]]:
    """The header and None, then per non-blank row its values (None for a value that is
    not UTF-8) and None, or the values it has and why the row cannot be scored."""
    # surrogateescape keeps a bad byte as a lone surrogate, found per value (_is_unicode).
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        header: list[str] | None = None
        row_number = 0
        while True:
            first_line = reader.line_num + 1
            try:
                values, problem = next(reader), None
            except StopIteration:
                return
            except csv.Error as exc:
                values, problem = None, _csv_problem(exc)
            if header is None:
                if not values or not all(map(_is_unicode, values)):
                    raise ValueError(f"{path}: the header line cannot be read "
                                     f"({problem or ('not UTF-8' if values else 'it is empty')})")
                header = values
                yield header, None
                continue
            if values == []:  # a blank line
                continue
            row_number += 1
            if values is not None and len(values) != len(header):
                values, problem = None, f"{len(values)} fields where the header has {len(header)}"
            elif values is not None and not all(map(_is_unicode, values)):
                bad = [name for name, v in zip(header, values, strict=True) if not _is_unicode(v)]
                values = [v if _is_unicode(v) else None for v in values]
                problem = f"{', '.join(bad)} not valid UTF-8"
            yield values, (f"row {row_number} (line {first_line}): {problem}" if problem else None)


def _is_unicode(value: Any) -> bool:
    """Whether a value (a string, or any JSON value) can be written as UTF-8: it holds no
    lone surrogate, which JSON can escape and ``surrogateescape`` makes of bytes that
    are not UTF-8."""
    try:
        (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _csv_problem(exc: csv.Error) -> str:
    """The csv module's reason without any of the row's text."""
    reason = str(exc)
    if "field larger than field limit" in reason:
        return f"a field is longer than {CSV_FIELD_LIMIT} characters"
    if "unexpected end of data" in reason or "EOF" in reason:
        return "a quoted field is not closed before the end of the file"
    return "the row is not well-formed CSV (quoting)"


def _scan_csv(path: Path) -> tuple[pa.Schema, int]:
    """Every column a string (see the module docstring) and the row count."""
    rows = _csv_rows(path)
    header = next(rows, (None,))[0]
    if header is None:
        raise ValueError(f"{path}: the file is empty (a CSV input needs a header line)")
    return pa.schema([pa.field(name, pa.string()) for name in header]), sum(1 for _ in rows)


def _csv_chunks(path: Path, schema: pa.Schema, chunk_rows: int) -> Iterator[Chunk]:
    rows = _csv_rows(path)
    next(rows)  # the header, already in the schema
    while batch := list(islice(rows, chunk_rows)):
        values = [row if row is not None else [None] * len(schema) for row, _ in batch]
        table = pa.table([pa.array([v[j] for v in values], pa.string()) for j in range(len(schema))],
                         schema=schema)
        yield Chunk(table, [problem for _, problem in batch])


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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
            except RecursionError:  # e.g. [[[[…]]]] nested a hundred thousand deep
                yield {}, f"line {lineno} is nested too deeply"
                continue
            # Only a \uD800–\uDFFF escape can make a lone surrogate; most lines have none.
            suspect = _SURROGATE_ESCAPE.search(line) is not None
            if not isinstance(obj, dict):
                yield {}, f"line {lineno} is not a JSON object"
            elif suspect and not all(map(_is_unicode, obj)):
                yield {}, f"line {lineno} has a key that is not valid Unicode (a lone surrogate)"
            elif suspect and (bad := [key for key, value in obj.items() if not _is_unicode(value)]):
                # JSON can escape a lone surrogate; no output format can hold one.
                yield ({k: None if k in bad else v for k, v in obj.items()},
                       f"line {lineno}: {', '.join(bad)} not valid Unicode (a lone surrogate)")
            else:
                yield obj, None


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


def write_output(parts: list[Path], output: Path, fmt: str, empty: pa.Table, scratch: Path) -> None:
    """Concatenate ``parts`` into ``output``, complete or not at all.

    ``empty`` has the output's columns and no rows: it gives a CSV its header
    and an input without rows an output without rows. The output is put together
    in ``scratch`` (the run's work folder, on the output's file system) and renamed
    onto ``output``: a run killed while merging leaves no partial copy of the
    messages beside the output, and ``--resume`` clears the work folder.
    """
    tmp = scratch / f"{output.name}.merge.tmp"
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
