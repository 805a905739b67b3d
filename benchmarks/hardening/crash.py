"""Crash safety of ``qorgan score`` on the real model: SIGKILL at random moments, then
``--resume``, in every output format.

Each kill lands wherever the run happens to be (reading, scoring, writing a part,
a checkpoint, the merge); the resumed output must hold every input row once, and
equal an uninterrupted run's output. ``tests/test_batch_faults.py`` kills at chosen
points on the tiny model; this is the same property under real timing.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

FORMATS = (".csv", ".jsonl", ".parquet")
#: A neutral marker in every row's text: it must reach no log line.
MARKER = "lark-basalt-7302"


def _qorgan(*args: str) -> list[str]:
    return [sys.executable, "-m", "qorgan", "score", *args]


def _write_input(path: Path, rows: int) -> None:
    table = pa.table({"id": [f"r{i:06d}" for i in range(rows)],
                      "text": [f"{MARKER} message {i}: see you at practice after school" for i in range(rows)]})
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()), encoding="utf-8")


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        return pcsv.read_csv(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def crash_resume(bundle: str, rows: int, kills: int, chunk_rows: int, seed: int = 0) -> dict:
    """Per format: ``kills`` runs killed at random moments and resumed; rows lost,
    duplicated, and whether every resumed output equals the uninterrupted one."""
    rng = random.Random(seed)
    out: dict = {"rows": rows, "kills_per_format": kills, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ext in FORMATS:
            src, ref = tmp / f"in{ext}", tmp / f"ref{ext}"
            _write_input(src, rows)
            common = ["--bundle", bundle, "--chunk-rows", str(chunk_rows), "--no-progress"]
            t0 = time.perf_counter()
            subprocess.run(_qorgan(str(src), "-o", str(ref), *common), check=True, capture_output=True)
            run_s = time.perf_counter() - t0
            expected = _read_rows(ref)
            lost = duplicated = mismatched = killed = 0
            logs = []
            for k in range(kills):
                dst = tmp / f"k{k}{ext}"
                proc = subprocess.Popen(_qorgan(str(src), "-o", str(dst), *common),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                time.sleep(rng.uniform(0.4, 0.95) * run_s)  # past start-up (~5 s), into scoring and writing
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed += 1
                _, err = proc.communicate()
                logs.append(err.decode(errors="replace"))
                done = subprocess.run(_qorgan(str(src), "-o", str(dst), "--resume", *common), capture_output=True)
                logs.append(done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace"))
                got = _read_rows(dst) if dst.exists() else []
                ids = [r["id"] for r in got]
                lost += len({r["id"] for r in expected} - set(ids))
                duplicated += len(ids) - len(set(ids))
                mismatched += got != expected
            out["formats"][ext.lstrip(".")] = {
                "uninterrupted_s": round(run_s, 1), "killed_mid_run": killed, "rows_lost": lost,
                "rows_duplicated": duplicated, "outputs_unequal_to_uninterrupted": mismatched,
                "marker_in_output_logs": sum(log.count(MARKER) for log in logs)}
    return out
