"""Batch scorer benchmark: ``qorgan score INPUT -o OUTPUT --policy triage`` on a generated CSV.

The CSV (``id,text``) is generated from the training run's messages (all
splits of ``--run-dir``; without it ``data/corpus``), shuffled with a fixed
seed and cycled to the requested row count, into a temporary folder that is
deleted afterwards. The command runs in a
subprocess; its peak RSS comes from ``wait4`` (the kernel's own maximum for
that process) and from polling the process tree with psutil every 50 ms.
A 100-row run first measures the fixed start-up cost (imports, bundle
verification, session creation), so that the steady rate can be stated too.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.corpus import cycle, load_splits


def write_csv(path: Path, texts: list[str], rows: int, seed: int = 0) -> None:
    """``rows`` rows of ``id,text`` cycled from ``texts`` (shuffled with ``seed``)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i, t in enumerate(cycle(texts, rows, seed)):
            w.writerow([f"r{i:07d}", t])


def _qorgan_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("qorgan")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qorgan"]


def run_measured(cmd: list[str], env: dict[str, str] | None = None, poll_s: float = 0.05,
                 timeout: float = 1800) -> dict:
    """Run ``cmd``; wall time, exit code and peak RSS (wait4 and psutil tree polling)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak_tree
        try:
            p = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    rss = sum(c.memory_info().rss for c in [p, *p.children(recursive=True)])
                    peak_tree = max(peak_tree, rss)
                except psutil.Error:
                    pass
                stop.wait(poll_s)
        except psutil.Error:
            pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    # Read stderr while waiting so a chatty command cannot block on a full pipe.
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    deadline = time.perf_counter() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    poller.join()
    reader.join(timeout=5)
    stderr = b"".join(err_chunks).decode(errors="replace")
    return {"seconds": wall, "returncode": proc.returncode, "timed_out": timed_out, "peak_rss_mb_wait4": usage.ru_maxrss / 1024,
            "peak_rss_mb_tree": peak_tree / 2**20, "stderr_tail": stderr[-1500:] if proc.returncode else ""}


def _count_rows(path: Path) -> int | None:
    if not path.is_file():
        return None
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    return None


def bench_batch_scorer(bundle: str, rows: int, policy: str = "triage", warm_rows: int = 100,
                       extra_args: tuple[str, ...] = (), timeout: float = 1800,
                       run_dir: Path | None = None) -> dict:
    """Score a generated ``rows``-row CSV with the ``qorgan score`` command; rows/s and peak RSS.

    The messages come from ``run_dir``'s splits, or ``data/corpus`` without one.
    """
    splits = load_splits(run_dir)
    texts = [r.text for part in (splits.train, splits.calib, splits.test) if part for r in part]
    tmp = Path(tempfile.mkdtemp(prefix="qorgan-bench-"))
    try:
        runs = {}
        for name, n in (("startup", warm_rows), ("main", rows)):
            src, dst = tmp / f"in-{n}.csv", tmp / f"out-{n}.csv"
            write_csv(src, texts, n)
            cmd = [*_qorgan_cmd(), "score", str(src), "-o", str(dst), "--policy", policy,
                   "--bundle", str(bundle), "--no-progress", *extra_args]
            r = run_measured(cmd, timeout=timeout)
            r.update(rows=n, input_mb=src.stat().st_size / 2**20, output_rows=_count_rows(dst))
            runs[name] = r
            if r["returncode"] != 0:
                break
        out: dict = {"command": "qorgan score INPUT.csv -o OUTPUT.csv --policy " + policy
                     + f" --bundle {bundle} --no-progress " + " ".join(extra_args), "runs": runs}
        main = runs.get("main")
        if main and main["returncode"] == 0:
            start = runs["startup"]
            out["rows"] = rows
            out["rows_s"] = rows / main["seconds"]
            steady = main["seconds"] - start["seconds"]
            out["rows_s_steady"] = (rows - warm_rows) / steady if steady > 0 else None
            out["peak_rss_mb"] = max(main["peak_rss_mb_wait4"], main["peak_rss_mb_tree"])
            out["all_rows_written"] = main["output_rows"] == rows
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
