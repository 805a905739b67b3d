"""Batch scoring of files: CSV, JSONL or Parquet in, the same rows scored out.

``qorgan score INPUT -o OUTPUT`` streams the input in fixed-size chunks, so
memory stays flat on millions of rows. Every input column is kept and
``score_<label>``, ``flag_<label>``, ``priority`` and ``error`` are added; a row
whose text is missing, not a string or blank is kept with an ``error`` and no
scores, never dropped.

Each scored chunk is written to a part file in a work folder beside the
output (``.<output name>.qorgan-parts/``) and recorded, with its chunk and
priority bucket, in the folder's ``state.json``; ``--resume`` continues after
the last recorded chunk, so an interrupted run neither duplicates nor loses
rows. When every chunk is done the recorded parts are concatenated in the
order the state gives into the output, which is therefore complete or absent.
``--sort priority`` writes one part per chunk and priority level and
concatenates them level by level (most urgent first, input order within a
level, rows with errors last): one pass, one chunk in memory.

This module is the run: its configuration, checkpoint and the scoring of a
chunk. Reading and writing files (every chunk is a ``pyarrow.Table``) is
:mod:`serving.batch_io`. pyarrow and that module are imported where they are
used: ``qorgan`` imports this module for ``BatchConfig``'s defaults, and
``qorgan --help`` should not load pyarrow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.bundle import DEFAULT_BUNDLE_DIR
from serving.scorer import is_blank

if TYPE_CHECKING:
    import pyarrow as pa

    from serving.batch_io import Chunk

SORT_KEYS = ("priority",)
#: Bucket of rows with an error when sorting by priority (they come last).
ERROR_BUCKET = "error"
STATE_FILE = "state.json"
#: 2: each part in ``parts`` is ``{"file", "chunk", "bucket"}`` (1: file names only).
STATE_VERSION = 2

PRIORITY_COLUMN = "priority"
ERROR_COLUMN = "error"


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
        from serving.batch_io import file_format

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
    #: ``sha256:…`` of the bundle's manifest (``Bundle.digest``): exactly which bundle scored.
    model_digest: str = ""
    policy: str = ""
    resumed_rows: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        prio = ", ".join(f"{k} {v}" for k, v in self.per_priority.items())
        resumed = f" ({self.resumed_rows} from an earlier run)" if self.resumed_rows else ""
        return (f"rows in: {self.rows_in}{resumed}\nrows scored: {self.rows_scored}\n"
                f"rows with errors: {self.rows_error}\nper priority: {prio}\n"
                f"model: {self.model} {self.model_version} ({self.model_digest}), policy {self.policy}\n"
                f"wrote {self.output} in {self.seconds:.1f} s")


# -- scoring a chunk -------------------------------------------------------------------


def text_problem(value: Any) -> str | None:
    """Why a text cannot be scored (no message text in the reason), or None."""
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is a {type(value).__name__}, not a string"
    if is_blank(value):
        return "empty text"  # nothing but whitespace, control or invisible characters
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


def added_types(labels: tuple[str, ...]) -> dict[str, pa.DataType]:
    """The Arrow type of each added column, in output order."""
    import pyarrow as pa

    types = {f"score_{lb}": pa.float64() for lb in labels}
    types.update({f"flag_{lb}": pa.bool_() for lb in labels})
    types[PRIORITY_COLUMN] = pa.string()
    types[ERROR_COLUMN] = pa.string()
    return types


def scored_table(table: pa.Table, added: dict[str, list[Any]], types: dict[str, pa.DataType]) -> pa.Table:
    """The input columns, less any the run replaces, then the added columns."""
    import pyarrow as pa

    table = table.drop_columns([c for c in table.column_names if c in types])
    for name, arrow_type in types.items():
        table = table.append_column(pa.field(name, arrow_type), pa.array(added[name], arrow_type))
    return table


def bucket_rows(added: dict[str, list[Any]], buckets: list[str]) -> dict[str, list[int]]:
    """Row numbers per priority bucket, in input order; rows with an error go to :data:`ERROR_BUCKET`."""
    rows: dict[str, list[int]] = {bucket: [] for bucket in buckets}
    for i, (priority, error) in enumerate(zip(added[PRIORITY_COLUMN], added[ERROR_COLUMN], strict=True)):
        rows[ERROR_BUCKET if error is not None else priority].append(i)
    return rows


# -- the checkpoint --------------------------------------------------------------------


def _fingerprint(config: BatchConfig, scorer) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    from serving.batch_io import file_format

    stat = config.input.stat()
    return {
        "input": str(config.input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "output_format": file_format(config.output), "text_column": config.text_column,
        "policy": config.policy, "sort": config.sort, "chunk_rows": config.chunk_rows,
        "model": scorer.name, "model_version": scorer.version, "model_digest": scorer.bundle.digest,
        "model_sha256": scorer.bundle.manifest["files"].get(scorer.model_path.name),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _start_state(config: BatchConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A fresh state, or with ``--resume`` the saved one if it was made by the same run."""
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


def _remove_unrecorded_parts(work: Path, state: dict[str, Any]) -> None:
    """Parts written after the last checkpoint belong to no recorded chunk."""
    recorded = {part["file"] for part in state["parts"]}
    for stale in work.iterdir():
        if stale.name != STATE_FILE and stale.name not in recorded:
            stale.unlink()


@contextlib.contextmanager
def _kept_on_write_failure(work: Path, rows_done: int):
    """A failed write (full disk, quota, file-size limit, I/O error) ends the run with one
    clear error. Nothing partial is left: a part or the output is renamed into place
    only when whole, and what the checkpoint records stays for ``--resume``."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)  # pyarrow's I/O errors carry no errno
        raise ValueError(f"writing failed ({reason}); the {rows_done} rows scored before it are "
                         f"kept in {work}: free space, then rerun the same command with --resume") from None


def _with_chunk(state: dict[str, Any], k: int, added: dict[str, list[Any]],
                parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A new state that counts chunk ``k`` as done, with the parts it was written to."""
    n_rows, n_err = len(added[ERROR_COLUMN]), sum(e is not None for e in added[ERROR_COLUMN])
    per = dict(state["per_priority"])
    for p in added[PRIORITY_COLUMN]:
        if p is not None:
            per[p] = per.get(p, 0) + 1
    return {**state, "chunks_done": k + 1, "rows_done": state["rows_done"] + n_rows,
            "rows_scored": state["rows_scored"] + n_rows - n_err, "rows_error": state["rows_error"] + n_err,
            "parts": state["parts"] + parts, "per_priority": per}


def output_order(parts: list[dict[str, Any]], buckets: list[str]) -> list[str]:
    """The recorded part files in output order: by chunk, or when sorting by
    bucket (in ``buckets``' order) and then chunk."""
    rank = {bucket: i for i, bucket in enumerate(buckets)}

    def key(part: dict[str, Any]) -> tuple[int, int]:
        return (0 if part["bucket"] is None else rank[part["bucket"]], part["chunk"])

    return [part["file"] for part in sorted(parts, key=key)]


# -- the run ---------------------------------------------------------------------------


def score_file(config: BatchConfig, scorer=None) -> BatchSummary:
    """Score ``config.input`` into ``config.output``; see the module docstring."""
    from tqdm import tqdm

    from serving import batch_io

    started = time.monotonic()
    if scorer is None:
        from serving.scorer import Scorer

        scorer = Scorer.from_bundle(config.bundle, batch_size=config.batch_size,
                                    intra_op_threads=config.intra_op_threads)
    config = dataclasses.replace(config, policy=scorer.bundle.check_policy(config.policy, "batch"))
    reader = batch_io.Reader(config.input, config.chunk_rows)
    if config.text_column not in reader.columns:
        raise ValueError(f"{config.input} has no column {config.text_column!r} (columns: {reader.columns}); "
                         "name the text column with --text-column")
    out_fmt = batch_io.file_format(config.output)
    types = added_types(scorer.labels)
    if clashes := [c for c in reader.columns if c in types]:
        print(f"note: replacing input column(s) {clashes} with this run's", file=sys.stderr)

    config.output.parent.mkdir(parents=True, exist_ok=True)
    work = config.work_dir
    with _kept_on_write_failure(work, 0):
        state = _start_state(config, _fingerprint(config, scorer))
    _remove_unrecorded_parts(work, state)

    resumed = state["rows_done"]
    ext = batch_io.PART_EXT[out_fmt]
    buckets = [*scorer.priority_levels, ERROR_BUCKET]
    with tqdm(total=reader.rows, initial=resumed, unit="msg", unit_scale=True, desc="scoring",
              file=sys.stderr, disable=not config.progress, smoothing=0.1) as bar:
        for k, chunk in enumerate(reader):
            if k < state["chunks_done"]:
                continue
            added = score_columns(chunk, scorer, config.policy, config.text_column)
            scored = scored_table(chunk.table, added, types)
            new_parts = []
            with _kept_on_write_failure(work, state["rows_done"]):
                if config.sort is None:
                    new_parts.append({"file": f"part-{k:07d}{ext}", "chunk": k, "bucket": None})
                    batch_io.write_part(work / new_parts[-1]["file"], out_fmt, scored)
                else:
                    for b, (bucket, rows) in enumerate(bucket_rows(added, buckets).items()):
                        if rows:
                            new_parts.append({"file": f"part-{k:07d}-{b}{ext}", "chunk": k, "bucket": bucket})
                            batch_io.write_part(work / new_parts[-1]["file"], out_fmt, scored.take(rows))
                done = _with_chunk(state, k, added, new_parts)
                _write_json(work / STATE_FILE, done)  # the checkpoint: this chunk is done
            state = done
            bar.update(len(chunk))

    empty = scored_table(reader.schema.empty_table(), {name: [] for name in types}, types)
    parts = [work / name for name in output_order(state["parts"], buckets)]
    with _kept_on_write_failure(work, state["rows_done"]):
        batch_io.write_output(parts, config.output, out_fmt, empty, scratch=work)
    shutil.rmtree(work)
    levels = {lvl: state["per_priority"].get(lvl, 0) for lvl in scorer.priority_levels}
    return BatchSummary(rows_in=state["rows_done"], rows_scored=state["rows_scored"],
                        rows_error=state["rows_error"], per_priority=levels, output=str(config.output),
                        model=scorer.name, model_version=scorer.version, model_digest=scorer.bundle.digest,
                        policy=config.policy,
                        resumed_rows=resumed, seconds=time.monotonic() - started)


def config_from_args(**kwargs: Any) -> BatchConfig:
    """A :class:`BatchConfig` from keyword arguments, ignoring unknown ones (argparse extras)."""
    names = {f.name for f in dataclasses.fields(BatchConfig)}
    return BatchConfig(**{k: v for k, v in kwargs.items() if k in names})
