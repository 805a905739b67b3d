"""Load test of the BentoML service (``bentoml serve serving.service:Qorgan``) on loopback.

For each batching mode the service is started in its own process group on a
free 127.0.0.1 port with ``QORGAN_BUNDLE`` set, waited for on ``/readyz``,
warmed up, and then loaded with single-message ``POST /score`` requests at
each concurrency level (bounded in count and time). An overload burst
follows (far more concurrent requests than the service can serve, still
bounded), counting 429 and 503 answers and any other 5xx; then a few
sequential requests check that the service recovered. The server is stopped
by its own process-group id.

Batching on/off needs a switch in the service; :func:`batching_env` finds it
in ``serving.settings`` (an ``ENV_*`` constant whose name mentions
``BATCH``). Without one only the default mode is measured and the result
says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks.loadgen import check_loopback, load
from benchmarks.plans import LoadLevel, Overload

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def batching_env() -> str | None:
    """The service's batching switch (environment variable name), if it has one."""
    try:
        import serving.settings as settings
    except ImportError:
        return None
    names = [getattr(settings, n) for n in dir(settings)
             if n.startswith("ENV_") and "BATCH" in n and isinstance(getattr(settings, n), str)]
    return names[0] if names else None


def _bentoml_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("bentoml")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bentoml"]


@contextlib.contextmanager
def running_service(bundle: str, port: int, extra_env: dict[str, str] | None = None,
                    ready_timeout: float = 180.0, log_path: Path | None = None) -> Iterator[dict]:
    """Start the service, wait until ``/readyz`` answers 200, yield facts, stop it.

    The server's output goes to ``log_path`` when given (kept, e.g. to check it for
    leaks after the server stopped), else to a temporary file."""
    env = {**os.environ, "QORGAN_BUNDLE": str(bundle), **(extra_env or {})}
    # closed in the finally below
    log = tempfile.TemporaryFile() if log_path is None else open(log_path, "w+b")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen([*_bentoml_cmd(), "serve", "serving.service:Qorgan", "--host", HOST,
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://{HOST}:{port}"
    facts = {"base_url": base, "pid": proc.pid}
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read()[-3000:].decode(errors="replace")
                raise RuntimeError(f"the service exited with {proc.returncode} before it was ready:\n{tail}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > ready_timeout:
                raise RuntimeError(f"the service was not ready after {ready_timeout:.0f} s")
            time.sleep(0.5)
        facts["startup_seconds"] = time.perf_counter() - t0
        yield facts
        log.seek(0)
        facts["server_exceptions"] = exception_names(log.read().decode(errors="replace"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::|$)")


def exception_names(log_text: str) -> dict[str, int]:
    """Exception class names at the end of tracebacks in a server log, counted.

    Only the class name is kept: the message after it could quote a request.
    """
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        m = _EXC_LINE.match(line.strip())
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def _process_tree_rss_mb(pid: int) -> float | None:
    try:
        import psutil

        p = psutil.Process(pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 2**20
    except Exception:
        return None


def score_bodies(texts: list[str], policy: str = "moderation") -> list[dict]:
    """One single-message ``/score`` body per text."""
    return [{"messages": [{"id": f"m{i}", "text": t}], "policy": policy} for i, t in enumerate(texts)]


def bench_mode(bundle: str, texts: list[str], levels: dict[int, LoadLevel], overload: Overload,
               extra_env: dict[str, str] | None = None, recovery_requests: int = 5) -> dict:
    """Start the service once and run every level, the overload burst and the recovery check."""
    bodies = score_bodies(texts)
    port = free_port()
    with running_service(bundle, port, extra_env) as facts:
        base = facts["base_url"]
        check_loopback(base)
        out: dict = {"startup_seconds": facts["startup_seconds"], "env": extra_env or {}, "levels": []}
        load(base, "/score", bodies, concurrency=4, max_requests=40, max_seconds=20)  # warm-up
        for c, bounds in levels.items():
            r = load(base, "/score", bodies, concurrency=c, max_requests=bounds.requests,
                     max_seconds=float(bounds.seconds))
            r["server_rss_mb"] = _process_tree_rss_mb(facts["pid"])
            out["levels"].append(r)
        burst = load(base, "/score", bodies, concurrency=overload.concurrency,
                     max_requests=overload.requests, max_seconds=float(overload.seconds),
                     timeout=float(overload.timeout))
        out["overload"] = burst
        time.sleep(1.0)
        rec = load(base, "/score", bodies, concurrency=1, max_requests=recovery_requests, max_seconds=30)
        out["recovery"] = {"requests": rec["requests"], "ok": rec["ok"], "status": rec["status"],
                           "recovered": rec["ok"] == recovery_requests,
                           "latency_ms_p50": rec["latency_ms"].get("p50")}
        out["server_rss_mb_end"] = _process_tree_rss_mb(facts["pid"])
    out["server_exceptions"] = facts.get("server_exceptions", {})
    return out


def bench_service(bundle: str, texts: list[str], levels: dict[int, LoadLevel], overload: Overload) -> dict:
    """Both batching modes when the service has a switch, else its default mode only."""
    switch = batching_env()
    result: dict = {"batching_switch": switch, "modes": {}}
    if switch is None:
        result["note"] = ("the service has no adaptive-batching switch; measured its default "
                          "(batching on: /score → batchable /proba) only")
        result["modes"]["batching_on"] = bench_mode(bundle, texts, levels, overload)
    else:
        for mode, value in (("batching_on", "1"), ("batching_off", "0")):
            result["modes"][mode] = bench_mode(bundle, texts, levels, overload, {switch: value})
    return result
