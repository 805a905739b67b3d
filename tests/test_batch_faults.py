"""Crash safety of ``qorgan score`` by fault injection: the process is killed with
SIGKILL at several points (checkpoint and part renames, mid-run, during the final
merge, after the output is in place), then ``--resume`` finishes the run.

Every time: the output is absent or complete (never partial), nothing but the
work folder is left beside it, and the resumed output equals an uninterrupted
run's, byte for byte (CSV, JSONL) or value for value (Parquet): no row lost or
duplicated, same scores."""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch import BatchConfig, score_file

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("batch_kill_driver.py")
ROWS, CHUNK = 57, 10  # 6 chunks: 14 renames (first checkpoint, a part and a checkpoint per chunk, the output)


def write_input(path: Path) -> None:
    rows = [{"id": f"r{i:03d}", "text": f"message {i} about school and games" if i % 13 else ""}
            for i in range(ROWS)]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows), encoding="utf-8")


def content(path: Path):
    return pq.read_table(path).to_pylist() if path.suffix == ".parquet" else path.read_bytes()


def uninterrupted_run(bundle: Path, tmp_path: Path, ext: str) -> tuple[Path, Path, dict]:
    """The input, the output of an uninterrupted run, and the settings both runs share."""
    src = tmp_path / f"in{ext}"
    write_input(src)
    reference = tmp_path / "reference" / f"out{ext}"
    common = {"bundle": bundle, "chunk_rows": CHUNK, "progress": False, "intra_op_threads": 1}
    score_file(BatchConfig(input=src, output=reference, **common))
    return src, reference, common


def kill_points(ext: str) -> list[tuple[str, int]]:
    """Five fixed points and one drawn at random (seeded per format)."""
    return [("rename", 1), ("rename", 2), ("rename", 7), ("merge", 2), ("cleanup", 1),
            ("rename", random.Random(ext).randint(3, 13))]


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_sigkill_at_any_point_then_resume_loses_and_duplicates_nothing(tiny_bundle, tmp_path, ext):
    src, reference, common = uninterrupted_run(tiny_bundle, tmp_path, ext)
    expected = content(reference)

    for point, n in kill_points(ext):
        run_dir = tmp_path / f"{point}-{n}"
        run_dir.mkdir()
        out = run_dir / f"out{ext}"
        args = [str(src), "-o", str(out), "--bundle", str(tiny_bundle), "--chunk-rows", str(CHUNK),
                "--threads", "1", "--no-progress"]
        proc = subprocess.run([sys.executable, str(DRIVER), point, str(n), "--", *args], cwd=ROOT,
                              capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, (point, n, proc.stderr.decode(errors="replace")[-1500:])
        work = run_dir / f".out{ext}.qorgan-parts"
        assert {p.name for p in run_dir.iterdir()} <= {out.name, work.name}, (point, n)
        if out.exists():  # killed after the output's rename: it must be whole
            assert content(out) == expected, (point, n)

        summary = score_file(BatchConfig(input=src, output=out, resume=True, **common))
        assert summary.rows_in == ROWS, (point, n)
        assert content(out) == expected, (point, n)
        assert [p.name for p in run_dir.iterdir()] == [out.name], (point, n)


def _file_size_limit(limit: int):
    """For the child: writes past ``limit`` bytes in any one file fail (EFBIG), as a full
    disk's do (ENOSPC), instead of the SIGXFSZ that would otherwise kill the process."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_a_write_that_fails_ends_with_a_clear_error_and_resume_completes(tiny_bundle, tmp_path, ext):
    """The disk fills up at the first write (the checkpoint) or at the final merge (the
    output is the largest file): one error line, no traceback and no text, no partial
    output, and `--resume` finishes once space is back."""
    src, reference, common = uninterrupted_run(tiny_bundle, tmp_path, ext)
    expected = content(reference)

    for limit, rows_kept in [(1, 0), (reference.stat().st_size // 2, ROWS)]:
        run_dir = tmp_path / f"limit-{limit}"
        run_dir.mkdir()
        out = run_dir / f"out{ext}"
        proc = subprocess.run([sys.executable, "-m", "qorgan", "score", str(src), "-o", str(out),
                               "--bundle", str(tiny_bundle), "--chunk-rows", str(CHUNK), "--threads", "1",
                               "--no-progress"], cwd=ROOT, capture_output=True, timeout=120,
                              preexec_fn=_file_size_limit(limit))
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode == 2, err[-1500:]
        assert "writing failed (" in err and f"the {rows_kept} rows scored before it are kept" in err, err[-1500:]
        assert "--resume" in err and "Traceback" not in err and "message 1 about" not in err
        assert not out.exists()

        summary = score_file(BatchConfig(input=src, output=out, resume=True, **common))
        assert summary.rows_in == ROWS and summary.resumed_rows == rows_kept
        assert content(out) == expected
        assert [p.name for p in run_dir.iterdir()] == [out.name]
