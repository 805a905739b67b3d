"""Readers for labelled data: JSONL, CSV, Parquet and Hugging Face ``datasets``.

Every reader yields :class:`RawRow` objects that carry a location
(``file:line`` or ``dataset[index]``) so that validation errors can point at the
offending row without quoting its text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File extensions understood by :func:`iter_rows`, by format.
EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class RawRow:
    """One input row before validation. ``error`` is set when it could not be decoded."""

    where: str
    data: dict[str, Any] | None
    error: str | None = None


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                # utf-8-sig on the first line: editors on Windows write a BOM.
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(where, None, f"invalid_utf8: invalid UTF-8 byte at column {exc.start + 1}")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RawRow(where, None, f"bad_json: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            except RecursionError:  # e.g. [[[[…]]]] nested a hundred thousand deep
                yield RawRow(where, None, "bad_json: nested too deeply")
                continue
            if not isinstance(obj, dict):
                yield RawRow(where, None, "bad_json: each line must be a JSON object")
                continue
            yield RawRow(where, obj)


def _csv_rows(path: Path) -> Iterator[RawRow]:
    # Decode line by line so an invalid byte is reported at its line and the
    # rest of the file is still read.
    raw_lines = path.read_bytes().splitlines(keepends=True)
    bad_lines: dict[int, int] = {}
    text_lines = []
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            text_lines.append(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            bad_lines[lineno] = exc.start + 1
            text_lines.append(raw.decode("utf-8", errors="replace"))
    reader = csv.DictReader(io.StringIO("".join(text_lines), newline=""))
    # Read the header first: DictReader reads it lazily, and the first row must
    # not be counted from line 1.
    if reader.fieldnames is not None and 1 in bad_lines:
        yield RawRow(f"{path}:1", None, f"invalid_utf8: invalid UTF-8 byte in the header, column {bad_lines[1]}")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # E.g. a field over csv.field_size_limit(). Where the parser resumes is
            # unreliable (possibly inside a quoted text), so stop reading this file.
            yield RawRow(f"{path}:{start}", None, f"bad_csv: {exc}; the rest of the file was not read")
            break
        end = reader.line_num
        # DictReader skips blank lines: point at the row's own first line.
        while start < end and not text_lines[start - 1].strip("\r\n"):
            start += 1
        where = f"{path}:{start}"
        bad = [ln for ln in range(start, end + 1) if ln in bad_lines]
        if bad:
            yield RawRow(where, None, f"invalid_utf8: invalid UTF-8 byte at line {bad[0]}, column {bad_lines[bad[0]]}")
        elif None in row:
            yield RawRow(where, None, "bad_csv: row has more fields than the header")
        else:
            yield RawRow(where, dict(row))
        start = end + 1


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    index = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            index += 1
            yield RawRow(f"{path}#row{index}", row)


def _hf_rows(name: str, split: str) -> Iterator[RawRow]:
    import datasets

    local = Path(name)
    if (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{name}: dataset has no split {split!r}; it has {sorted(ds)}")
            ds = ds[split]
    else:
        # A hub name (or a local script/data folder): the normal datasets path.
        ds = datasets.load_dataset(name, split=split)
    for index, row in enumerate(ds):
        yield RawRow(f"{name}[{split}][{index}]", dict(row))


def detect_format(path: Path) -> str:
    """Return the reader name for a file path, from its extension."""
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; expected one of {sorted(EXTENSIONS)}"
        )
    return fmt


def input_files(path: str | Path) -> list[Path]:
    """The data files behind ``path``: the file itself, or every data file in a folder."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in EXTENSIONS)
        if not files:
            raise ValueError(f"{p}: folder holds no {sorted(EXTENSIONS)} files")
        return files
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return [p]


def iter_rows(source: str | Path, *, hf_split: str = "train") -> Iterator[RawRow]:
    """Yield raw rows from a file, a folder of files, a saved HF dataset or a hub name.

    A string with the ``hf:`` prefix (``hf:org/name``) or a folder saved with
    ``Dataset.save_to_disk`` is read through Hugging Face ``datasets``.
    """
    text = str(source)
    if text.startswith("hf:"):
        yield from _hf_rows(text[3:], hf_split)
        return
    p = Path(source)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        yield from _hf_rows(str(p), hf_split)
        return
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    for f in input_files(p):
        yield from readers[detect_format(f)](f)


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write dictionaries as UTF-8 JSON lines, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
