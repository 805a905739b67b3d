"""``make harden``: the long hardening run against ``bentoml serve`` on 127.0.0.1.

1. **Fuzzing** (:mod:`benchmarks.hardening.fuzz`): every operation of the OpenAPI
   document, positive and negative cases; no 5xx, answers that conform to the
   document, no sent string repeated in a refusal or in the server log.
2. **Burst**: far more concurrent ``/score`` requests than the service can serve;
   only 2xx / 429 / 503 are acceptable, and ``/readyz`` and a ``/score`` must answer
   200 soon after (the recovery time is measured).
3. **Soak**: a long run of ``/score`` requests at moderate concurrency while the
   server's processes are sampled: RSS drift after warm-up and open file
   descriptors.
4. **Crash safety** (:mod:`benchmarks.hardening.crash`): ``qorgan score`` killed
   with SIGKILL at random moments and resumed, per output format: rows lost or
   duplicated, and whether the output equals an uninterrupted run's.
5. **Supply chain** (:mod:`benchmarks.hardening.audit`): ``pip-audit`` of the
   serving lock file; packages it could not check are counted, not passed.

Writes ``benchmarks/results/hardening.json`` and prints a summary; exits 1 when
an acceptance limit is missed. Bounded in requests and seconds throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from benchmarks.hardening.audit import audit
from benchmarks.hardening.crash import crash_resume
from benchmarks.hardening.fuzz import fuzz, leaked_into
from benchmarks.loadgen import load
from benchmarks.plans import HardenPlan
from benchmarks.service_load import free_port, running_service, score_bodies
from models.bundle import DEFAULT_BUNDLE_DIR

RESULTS = Path(__file__).resolve().parents[1] / "results" / "hardening.json"
#: A neutral marker sent in every burst and soak message; it must reach no log line.
MARKER = "heron-quartz-5521"


def _sample(pid: int) -> dict[str, float]:
    """RSS and open file descriptors of the server and all its child processes."""
    import psutil

    root = psutil.Process(pid)
    rss = fds = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            rss, fds = rss + proc.memory_info().rss, fds + proc.num_fds()
        except psutil.Error:  # a process that ended between listing and reading
            continue
    return {"rss_mb": rss / 2**20, "fds": float(fds)}


def _recovery_seconds(base: str, limit: float) -> float | None:
    """Seconds until ``/readyz`` and a ``/score`` both answer 200 (None: not within 4× limit)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 4 * limit:
        try:
            ready = httpx.get(base + "/readyz", timeout=2).status_code == 200
            scored = httpx.post(base + "/score", json={"messages": ["hello"]}, timeout=5).status_code == 200
            if ready and scored:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return None


def soak(base: str, pid: int, bodies: list[dict], plan: HardenPlan) -> dict:
    """The soak run, sampling the server's RSS and descriptors every second."""
    samples: list[tuple[float, dict[str, float]]] = []
    done = threading.Event()

    def sampler() -> None:
        t0 = time.perf_counter()
        while not done.is_set():
            samples.append((time.perf_counter() - t0, _sample(pid)))
            done.wait(1.0)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        result = load(base, "/score", bodies, concurrency=plan.soak_concurrency,
                      max_requests=plan.soak_requests, max_seconds=plan.soak_seconds)
    finally:
        done.set()
        thread.join()
    warm = [s for t, s in samples if t >= plan.soak_warmup_share * result["seconds"]] or [s for _, s in samples]
    first, last = warm[0], warm[-1]
    peak = max(s["rss_mb"] for s in warm)
    return {"requests": result["requests"], "ok": result["ok"], "status": result["status"],
            "seconds": result["seconds"], "rps": round(result["throughput_rps"], 1),
            "latency_ms": result["latency_ms"], "client_cpu_pct_of_one_core": result["client_cpu_pct_of_one_core"],
            "rss_mb_after_warmup": first["rss_mb"], "rss_mb_end": last["rss_mb"], "rss_mb_peak": peak,
            "rss_drift": (peak - first["rss_mb"]) / first["rss_mb"],
            "fds_after_warmup": first["fds"], "fds_end": last["fds"]}


def harden(bundle: str, plan: HardenPlan) -> dict:
    texts = [f"{MARKER} message {i}: see you at practice" for i in range(64)]
    bodies = score_bodies(texts)
    out: dict = {"plan": asdict(plan), "bundle": str(bundle)}
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with running_service(bundle, free_port(), log_path=log_path) as facts:
            base, pid = facts["base_url"], facts["pid"]
            t0 = time.perf_counter()
            report = fuzz(base, {}, plan.fuzz_examples)
            out["fuzz"] = {**report.summary(), "seconds": time.perf_counter() - t0}
            burst = load(base, "/score", bodies, concurrency=plan.burst_concurrency,
                         max_requests=plan.burst_requests, max_seconds=plan.burst_seconds, timeout=60.0)
            out["burst"] = {k: burst[k] for k in ("requests", "ok", "status", "other_5xx", "errors", "seconds",
                                                  "throughput_rps", "latency_ms", "client_cpu_pct_of_one_core")}
            out["burst"]["recovery_s"] = _recovery_seconds(base, plan.recovery_limit_s)
            out["soak"] = soak(base, pid, bodies, plan)
        log = log_path.read_text(errors="replace")
    out["leaks"] = {"fuzz_strings_in_log": len(leaked_into(log, report.sent)),
                    "marker_in_log": log.count(MARKER), "tracebacks_in_log": log.count("Traceback")}
    out["server_exceptions"] = facts.get("server_exceptions", {})
    t0 = time.perf_counter()
    out["crash"] = {**crash_resume(str(bundle), plan.crash_rows, plan.crash_kills, plan.crash_chunk_rows),
                    "seconds": time.perf_counter() - t0}
    out["audit"] = audit()
    out["problems"] = problems(out, plan)
    return out


def problems(out: dict, plan: HardenPlan) -> list[str]:
    """Every acceptance limit the run missed."""
    found = []
    fz, burst, soak_ = out["fuzz"], out["burst"], out["soak"]
    if fz["cases"] < 2000 and plan.fuzz_examples >= HardenPlan.fuzz_examples:
        found.append(f"only {fz['cases']} fuzz cases")
    if fz["server_errors"] or fz["failures"]:
        found.append(f"fuzzing: {fz['server_errors']} 5xx, {len(fz['failures'])} failed checks")
    bad = {k: v for k, v in burst["status"].items() if not (k.startswith("2") or k in ("429", "503"))}
    if bad:
        found.append(f"burst answered {bad}")
    if burst["recovery_s"] is None or burst["recovery_s"] > plan.recovery_limit_s:
        found.append(f"recovery after the burst took {burst['recovery_s']} s")
    if soak_["rss_drift"] > plan.max_rss_drift:
        found.append(f"RSS drift {soak_['rss_drift']:.1%} over the soak")
    if soak_["fds_end"] > soak_["fds_after_warmup"] + 16:
        found.append(f"file descriptors grew from {soak_['fds_after_warmup']:.0f} to {soak_['fds_end']:.0f}")
    if any(out["leaks"].values()):
        found.append(f"leaks: {out['leaks']}")
    for fmt, c in out["crash"]["formats"].items():
        if c["rows_lost"] or c["rows_duplicated"] or c["outputs_unequal_to_uninterrupted"] or c["marker_in_output_logs"]:
            found.append(f"crash safety ({fmt}): {c}")
    if out["audit"].get("error") or out["audit"].get("vulnerabilities"):
        found.append(f"audit: {out['audit'].get('error') or out['audit']['vulnerabilities']}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hardening", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE_DIR)
    ap.add_argument("--output", type=Path, default=RESULTS)
    defaults = HardenPlan()
    for name, value in asdict(defaults).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    plan = HardenPlan(**{k: getattr(args, k) for k in asdict(defaults)})
    out = harden(args.bundle, plan)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    fz, burst, sk = out["fuzz"], out["burst"], out["soak"]
    print(f"fuzz: {fz['cases']} cases, {fz['server_errors']} 5xx, {len(fz['failures'])} failed checks, "
          f"{fz['echoes']} echoes ({fz['seconds']:.0f} s)")
    print(f"burst: {burst['requests']} requests at concurrency {plan.burst_concurrency}: {burst['status']}, "
          f"goodput {burst['throughput_rps']:.0f} req/s; recovered in {burst['recovery_s']} s")
    print(f"soak: {sk['requests']} requests, {sk['ok']} ok, {sk['rps']} req/s; RSS {sk['rss_mb_after_warmup']:.0f} → "
          f"peak {sk['rss_mb_peak']:.0f} MB (drift {sk['rss_drift']:.1%}); fds {sk['fds_after_warmup']:.0f} → "
          f"{sk['fds_end']:.0f}")
    print(f"leaks: {out['leaks']}")
    cr = out["crash"]
    print(f"crash safety: {cr['kills_per_format']} random SIGKILLs per format on {cr['rows']} rows, then --resume: "
          + "; ".join(f"{fmt}: {c['killed_mid_run']} killed mid-run, {c['rows_lost']} rows lost, "
                      f"{c['rows_duplicated']} duplicated, {c['outputs_unequal_to_uninterrupted']} outputs unequal"
                      for fmt, c in cr["formats"].items()) + f" ({cr['seconds']:.0f} s)")
    au = out["audit"]
    if "packages" in au:
        print(f"audit: {au['checked']} of {au['packages']} pinned packages checked, "
              f"{len(au['vulnerabilities'])} known vulnerabilities; {au['skipped']} skipped"
              + (f", e.g. {au['skip_reason_example']!r}" if au["skipped"] else ""))
    for p in out["problems"]:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"wrote {args.output}")
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
