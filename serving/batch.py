"""Batch scoring of files: CSV, JSONL or Parquet in, the same rows scored out.

``qorgan score INPUT -o OUTPUT`` streams the input in fixed-size chunks, so
memory stays flat on millions of rows. Every input column is kept and
``score_<label>``, ``flag_<label>``, ``priority`` and ``error`` are added; a row
whose text is missing, not a string or blank is kept with an ``error`` and no
scores, never dropped.

Each scored chunk is written to a part file in a work folder beside the
output (``.<output name>.qorgan-parts/``) and recorded in its ``state.json``;
``--resume`` continues after the last recorded chunk, so an interrupted run
neither duplicates nor loses rows. When every chunk is done the parts are
concatenated into a temporary file that is renamed onto the output, so the
output is either complete or absent. ``--sort priority`` writes one part per
chunk and priority level and concatenates them level by level (most urgent
first, input order within a level, rows with errors last): one pass, one
chunk in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.bundle import DEFAULT_BUNDLE_DIR

#: File formats by extension.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PART_EXT = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
SORT_KEYS = ("priority",)
#: Bucket of rows with an error when sorting by priority (they come last).
ERROR_BUCKET = "error"
STATE_FILE = "state.json"
STATE_VERSION = 1

PRIORITY_COLUMN = "priority"
ERROR_COLUMN = "error"


def file_format(path: str | Path) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from a file name; ``ValueError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown file type {suffix or '(none)'!r}; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


@dataclass(frozen=True)
class BatchConfig:
    """One batch-scoring run.

    ``chunk_rows`` is both the unit of memory and of checkpointing: a resumed
    run must use the same value (it is part of the run's fingerprint).
    """

    input: Path
    output: Path
    bundle: Path = Path(DEFAULT_BUNDLE_DIR)
    #: ``None``: the bundle's default for batch scoring (``bundle.json → serving``).
    policy: str | None = None
    text_column: str = "text"
    sort: str | None = None
    resume: bool = False
    chunk_rows: int = 8192
    batch_size: int = 32
    intra_op_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "bundle", Path(self.bundle))
        file_format(self.input)
        file_format(self.output)
        if self.sort is not None and self.sort not in SORT_KEYS:
            raise ValueError(f"--sort must be one of {list(SORT_KEYS)}, got {self.sort!r}")
        if self.chunk_rows < 1 or self.batch_size < 1:
            raise ValueError("chunk_rows and batch_size must be >= 1")
        if not self.text_column:
            raise ValueError("the text column name is empty")
        if self.input.resolve() == self.output.resolve():
            raise ValueError("the output must not overwrite the input")

    @property
    def work_dir(self) -> Path:
        """Where parts and the checkpoint live until the output is complete."""
        return self.output.parent / f".{self.output.name}.qorgan-parts"


@dataclass
class BatchSummary:
    """What a run did: rows read, scored and in error, and the count per priority."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_error: int = 0
    per_priority: dict[str, int] = field(default_factory=dict)
    output: str = ""
    model: str = ""
    model_version: str = ""
    policy: str = ""
    resumed_rows: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        prio = ", ".join(f"{k} {v}" for k, v in self.per_priority.items())
        resumed = f" ({self.resumed_rows} from an earlier run)" if self.resumed_rows else ""
        return (f"rows in: {self.rows_in}{resumed}\nrows scored: {self.rows_scored}\n"
                f"rows with errors: {self.rows_error}\nper priority: {prio}\n"
                f"model: {self.model} {self.model_version}, policy {self.policy}\n"
                f"wrote {self.output} in {self.seconds:.1f} s")


# -- reading -----------------------------------------------------------------------


@dataclass
class Chunk:
    """A slice of input rows: a pyarrow table (CSV, Parquet) or JSON objects (JSONL).

    ``problems`` holds a per-row reading error (an unreadable JSONL line) or None.
    """

    table: Any = None
    records: list[dict[str, Any]] | None = None
    problems: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else self.table.num_rows

    def column(self, name: str) -> list[Any]:
        if self.records is not None:
            return [r.get(name) for r in self.records]
        if name not in self.table.column_names:
            return [None] * len(self)
        return self.table.column(name).to_pylist()


def _csv_reader(path: Path, column_types: dict | None = None):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pcsv.open_csv(
        pa.input_stream(str(path)),
        read_options=pcsv.ReadOptions(block_size=1 << 22),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=column_types or {}),
    )


def _csv_columns(path: Path) -> list[str]:
    reader = _csv_reader(path)
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


def _rechunk(batches, size: int) -> Iterator[Any]:
    """Tables of exactly ``size`` rows (the last may be shorter) from record batches."""
    import pyarrow as pa

    pending, count = [], 0
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


class Reader:
    """Streams an input file as :class:`Chunk` objects of ``chunk_rows`` rows."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path = path
        self.format = file_format(path)
        self.chunk_rows = chunk_rows
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        self.columns, self.rows = self._scan()

    def _scan(self) -> tuple[list[str], int]:
        """Column names and row count, in one cheap pass (gives the progress bar its total)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(self.path)
            return list(pf.schema_arrow.names), pf.metadata.num_rows
        if self.format == "csv":
            columns = _csv_columns(self.path)
            rows = sum(b.num_rows for b in _csv_reader(self.path, {c: _string() for c in columns}))
            return columns, rows
        keys: dict[str, None] = {}
        rows = 0
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rows += 1
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    keys.update(dict.fromkeys(obj))
        return list(keys), rows

    def __iter__(self) -> Iterator[Chunk]:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(self.path)
            for table in _rechunk(pf.iter_batches(batch_size=min(self.chunk_rows, 65536)), self.chunk_rows):
                yield Chunk(table=table)
        elif self.format == "csv":
            # Every column as a string: a CSV holds text, and per-block type inference
            # could otherwise change a column's type halfway through the file.
            reader = _csv_reader(self.path, {c: _string() for c in self.columns})
            for table in _rechunk(reader, self.chunk_rows):
                yield Chunk(table=table)
        else:
            yield from self._jsonl_chunks()

    def _jsonl_chunks(self) -> Iterator[Chunk]:
        records: list[dict[str, Any]] = []
        problems: list[str | None] = []
        with self.path.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    problem = None if isinstance(obj, dict) else f"line {lineno} is not a JSON object"
                except ValueError:
                    obj, problem = {}, f"line {lineno} is not valid JSON"
                records.append(obj if problem is None else {})
                problems.append(problem)
                if len(records) == self.chunk_rows:
                    yield Chunk(records=records, problems=problems)
                    records, problems = [], []
        if records:
            yield Chunk(records=records, problems=problems)


def _string():
    import pyarrow as pa

    return pa.string()


# -- scoring a chunk -------------------------------------------------------------------


def text_problem(value: Any) -> str | None:
    """Why a text cannot be scored (no message text in the reason), or None."""
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is a {type(value).__name__}, not a string"
    if not value.strip():
        return "empty text"
    return None


def score_columns(chunk: Chunk, scorer, policy: str, text_column: str) -> dict[str, list[Any]]:
    """The columns added to a chunk: ``score_*``, ``flag_*``, ``priority``, ``error``."""
    texts = chunk.column(text_column)
    errors = [text_problem(t) for t in texts]
    if chunk.problems is not None:
        errors = [p or e for p, e in zip(chunk.problems, errors, strict=True)]
    ok = [i for i, e in enumerate(errors) if e is None]
    n, labels = len(texts), scorer.labels
    cols: dict[str, list[Any]] = {f"score_{lb}": [None] * n for lb in labels}
    cols.update({f"flag_{lb}": [None] * n for lb in labels})
    cols[PRIORITY_COLUMN] = [None] * n
    cols[ERROR_COLUMN] = errors
    if ok:
        proba = scorer.proba([texts[i] for i in ok])
        flags = scorer.flags(proba, policy)
        priorities = scorer.priorities(flags)
        for j, lb in enumerate(labels):
            score_col, flag_col = cols[f"score_{lb}"], cols[f"flag_{lb}"]
            for k, i in enumerate(ok):
                score_col[i] = round(float(proba[k, j]), 6)
                flag_col[i] = bool(flags[k, j])
        for k, i in enumerate(ok):
            cols[PRIORITY_COLUMN][i] = priorities[k]
    return cols


# -- writing ----------------------------------------------------------------------------------


def _added_types(labels: tuple[str, ...]) -> dict[str, Any]:
    import pyarrow as pa

    types = {f"score_{lb}": pa.float64() for lb in labels}
    types.update({f"flag_{lb}": pa.bool_() for lb in labels})
    types[PRIORITY_COLUMN] = pa.string()
    types[ERROR_COLUMN] = pa.string()
    return types


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _to_table(chunk: Chunk, columns: list[str], added: dict[str, list[Any]], types: dict[str, Any], fmt: str):
    """The chunk with the added columns as a pyarrow table for a CSV or Parquet part."""
    import pyarrow as pa

    if chunk.records is not None:
        # JSON values of any type: kept as their JSON text in a string column.
        keep = [c for c in columns if c not in added]
        table = pa.table({c: pa.array([_jsonable(r.get(c)) for r in chunk.records], pa.string()) for c in keep})
    else:
        table = chunk.table.drop_columns([c for c in chunk.table.column_names if c in added])
    if fmt == "csv":  # CSV cannot hold nested values: write them as JSON text
        for i, f in enumerate(table.schema):
            if pa.types.is_nested(f.type):
                values = [_jsonable(v) for v in table.column(i).to_pylist()]
                table = table.set_column(i, f.name, pa.array(values, pa.string()))
    for name, values in added.items():
        table = table.append_column(name, pa.array(values, types[name]))
    return table


def _to_records(chunk: Chunk, added: dict[str, list[Any]]) -> list[dict[str, Any]]:
    records = chunk.records if chunk.records is not None else chunk.table.to_pylist()
    out = []
    for i, rec in enumerate(records):
        row = {k: v for k, v in rec.items() if k not in added}
        row.update({name: values[i] for name, values in added.items()})
        out.append(row)
    return out


def _write_part(path: Path, fmt: str, chunk: Chunk, columns: list[str], added: dict[str, list[Any]],
                types: dict[str, Any]) -> None:
    """Write one part file atomically (a crash leaves no half-written part under its name)."""
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as fh:
            for row in _to_records(chunk, added):
                fh.write(json.dumps(row, ensure_ascii=False, default=str))
                fh.write("\n")
    else:
        table = _to_table(chunk, columns, added, types, fmt)
        if fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, str(tmp), pcsv.WriteOptions(include_header=False))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, str(tmp))
    os.replace(tmp, path)


def _select(chunk: Chunk, added: dict[str, list[Any]], rows: list[int]) -> tuple[Chunk, dict[str, list[Any]]]:
    if chunk.records is not None:
        sub = Chunk(records=[chunk.records[i] for i in rows])
    else:
        sub = Chunk(table=chunk.table.take(rows))
    return sub, {k: [v[i] for i in rows] for k, v in added.items()}


def _concat(parts: list[Path], out: Path, fmt: str, header_columns: list[str]) -> None:
    """Concatenate part files into ``out``, one part in memory at a time."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(str(out), table.schema)
                writer.write_table(table.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
        return
    with out.open("wb") as dst:
        if fmt == "csv":
            import io

            import pyarrow as pa
            import pyarrow.csv as pcsv

            buf = io.BytesIO()
            pcsv.write_csv(pa.table({c: pa.array([], pa.string()) for c in header_columns}), buf)
            dst.write(buf.getvalue())
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)


# -- the run ---------------------------------------------------------------------------------


def _fingerprint(config: BatchConfig, scorer) -> dict[str, Any]:
    stat = config.input.stat()
    return {
        "input": str(config.input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "output_format": file_format(config.output), "text_column": config.text_column,
        "policy": config.policy, "sort": config.sort, "chunk_rows": config.chunk_rows,
        "model": scorer.name, "model_version": scorer.version,
        "model_sha256": scorer.bundle.manifest["files"].get(scorer.bundle.model_path(scorer.config.variant).name),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _start_state(config: BatchConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    work = config.work_dir
    state_path = work / STATE_FILE
    if work.exists() and not config.resume:
        raise ValueError(f"an unfinished run left {work}; pass --resume to continue it, "
                         "or delete that folder to start over")
    if config.resume and state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != fingerprint:
            old = state.get("fingerprint", {})
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise ValueError(f"cannot resume: the unfinished run in {work} was made with a different "
                             f"{', '.join(changed) or 'state version'}; delete that folder to start over")
        return state
    if work.exists():  # --resume, but the run died before its first checkpoint
        shutil.rmtree(work)
    work.mkdir(parents=True)
    state = {"version": STATE_VERSION, "fingerprint": fingerprint, "chunks_done": 0, "rows_done": 0,
             "rows_scored": 0, "rows_error": 0, "per_priority": {}, "parts": []}
    _write_json(state_path, state)
    return state


def score_file(config: BatchConfig, scorer=None) -> BatchSummary:
    """Score ``config.input`` into ``config.output``; see the module docstring."""
    from tqdm import tqdm

    started = time.monotonic()
    if scorer is None:
        from serving.scorer import Scorer

        scorer = Scorer.from_bundle(config.bundle, batch_size=config.batch_size,
                                    intra_op_threads=config.intra_op_threads)
    config = dataclasses.replace(config, policy=scorer.bundle.check_policy(config.policy, "batch"))
    reader = Reader(config.input, config.chunk_rows)
    if config.text_column not in reader.columns:
        raise ValueError(f"{config.input} has no column {config.text_column!r} (columns: {reader.columns}); "
                         "name the text column with --text-column")
    out_fmt = file_format(config.output)
    types = _added_types(scorer.labels)
    added_names = list(types)
    columns = reader.columns
    header = [c for c in columns if c not in types] + added_names
    if clashes := [c for c in columns if c in types]:
        print(f"note: replacing input column(s) {clashes} with this run's", file=sys.stderr)

    config.output.parent.mkdir(parents=True, exist_ok=True)
    state = _start_state(config, _fingerprint(config, scorer))
    work = config.work_dir
    # Parts written after the last checkpoint belong to no recorded chunk: remove them.
    recorded = set(state["parts"])
    for stale in work.iterdir():
        if stale.name != STATE_FILE and stale.name not in recorded:
            stale.unlink()

    resumed = state["rows_done"]
    ext = PART_EXT[out_fmt]
    buckets = [*scorer.priority_levels, ERROR_BUCKET]
    with tqdm(total=reader.rows, initial=resumed, unit="msg", unit_scale=True, desc="scoring",
              file=sys.stderr, disable=not config.progress, smoothing=0.1) as bar:
        for k, chunk in enumerate(reader):
            if k < state["chunks_done"]:
                continue
            added = score_columns(chunk, scorer, config.policy, config.text_column)
            new_parts = []
            if config.sort is None:
                name = f"part-{k:07d}{ext}"
                _write_part(work / name, out_fmt, chunk, columns, added, types)
                new_parts.append(name)
            else:
                prio, err = added[PRIORITY_COLUMN], added[ERROR_COLUMN]
                for b, bucket in enumerate(buckets):
                    rows = [i for i in range(len(chunk))
                            if (err[i] is not None if bucket == ERROR_BUCKET else err[i] is None and prio[i] == bucket)]
                    if rows:
                        name = f"part-{k:07d}-{b}{ext}"
                        sub, sub_added = _select(chunk, added, rows)
                        _write_part(work / name, out_fmt, sub, columns, sub_added, types)
                        new_parts.append(name)
            n_err = sum(e is not None for e in added[ERROR_COLUMN])
            per = state["per_priority"]
            for p in added[PRIORITY_COLUMN]:
                if p is not None:
                    per[p] = per.get(p, 0) + 1
            state.update(chunks_done=k + 1, rows_done=state["rows_done"] + len(chunk),
                         rows_scored=state["rows_scored"] + len(chunk) - n_err,
                         rows_error=state["rows_error"] + n_err, parts=state["parts"] + new_parts)
            _write_json(work / STATE_FILE, state)  # the checkpoint: this chunk is done
            bar.update(len(chunk))

    parts = sorted(state["parts"], key=lambda name: _part_order(name, config.sort is not None))
    tmp = config.output.with_name(f".{config.output.name}.{os.getpid()}.tmp")
    try:
        _concat([work / p for p in parts], tmp, out_fmt, header)
        if not parts:
            _write_empty(tmp, out_fmt, reader, header, types)
        os.replace(tmp, config.output)
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(work)
    levels = {lvl: state["per_priority"].get(lvl, 0) for lvl in scorer.priority_levels}
    return BatchSummary(rows_in=state["rows_done"], rows_scored=state["rows_scored"],
                        rows_error=state["rows_error"], per_priority=levels, output=str(config.output),
                        model=scorer.name, model_version=scorer.version, policy=config.policy,
                        resumed_rows=resumed, seconds=time.monotonic() - started)


def _part_order(name: str, by_bucket: bool) -> tuple[int, int]:
    stem = name.split(".", 1)[0]  # part-0000012[-3]
    bits = stem.split("-")
    chunk = int(bits[1])
    bucket = int(bits[2]) if len(bits) > 2 else 0
    return (bucket, chunk) if by_bucket else (chunk, bucket)


def _write_empty(path: Path, fmt: str, reader: Reader, header: list[str], types: dict[str, Any]) -> None:
    """An input with no rows gives an output with no rows (and, where possible, the columns)."""
    if fmt == "jsonl":
        path.write_bytes(b"")
        return
    import pyarrow as pa

    fields = [pa.field(c, pa.string()) for c in header if c not in types]
    fields += [pa.field(c, t) for c, t in types.items()]
    table = pa.schema(fields).empty_table()
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, str(path))
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, str(path))


def config_from_args(**kwargs: Any) -> BatchConfig:
    """A :class:`BatchConfig` from keyword arguments, ignoring unknown ones (argparse extras)."""
    names = {f.name for f in dataclasses.fields(BatchConfig)}
    return BatchConfig(**{k: v for k, v in kwargs.items() if k in names})
