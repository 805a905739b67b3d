"""Markdown tables from a benchmark run, written between markers in ``benchmarks/README.md``."""

from __future__ import annotations

from pathlib import Path

MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

VARIANT_NAMES = {"torch": "PyTorch eager fp32", "onnx_fp32": "ONNX Runtime fp32",
                 "onnx_int8": "ONNX Runtime int8 (dynamic)",
                 "onnx_int8_weight_only": "ONNX Runtime int8 weight-only", "baseline": "TF-IDF + LR baseline"}


def fmt(x, digits: int = 1, suffix: str = "") -> str:
    """A number for a table; ``–`` for missing values."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}{suffix}"
    if abs(x) >= 1000:
        return f"{x:,.0f}{suffix}"
    return f"{x:.{digits}f}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _mb(nbytes: float | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 2**20:,.1f} MB"


def not_run_note(results: dict) -> str:
    """Which variants were not run and why (e.g. no ``--run-dir``), so that a missing row is explained."""
    missing = results.get("variants_not_run") or {}
    return ("Not run: " + "; ".join(f"{VARIANT_NAMES.get(v, v)} ({why})" for v, why in missing.items()) + "."
            if missing else "")


def _messages_phrase(inf: dict) -> str:
    """Where the benchmark messages came from: the run's test split, or the corpus without ``--run-dir``."""
    sources = {res.get("messages_source") for res in inf.values()} - {None}
    if any(src.startswith("data/corpus") for src in sources):
        return "all of `data/corpus`, as no `--run-dir` gave a test split"
    return "the test split"


def inference_section(results: dict) -> str:
    inf = results.get("inference") or {}
    note = not_run_note(results)
    if not inf:
        return f"### Inference\n\n{note}\n" if note else ""
    plan = results["plan"]["inference"]
    batches = [int(b) for b in plan["batch_messages"]]
    header = ["variant", "threads"] + [f"batch {b}: msg/s (p50 ms/batch)" for b in batches]
    rows = []
    for v, res in inf.items():
        if "error" in res:
            rows.append([VARIANT_NAMES.get(v, v), "–", "failed: see inference.json"] + [""] * (len(batches) - 1))
            continue
        for t in plan["threads"]:
            cells = {c["batch"]: c for c in res["cells"] if c["threads"] == t}
            rows.append([VARIANT_NAMES.get(v, v), str(t)] + [
                f"{fmt(cells[b]['msg_s'])}{'*' if cells[b].get('truncated') else ''} "
                f"({fmt(cells[b]['batch_ms_p50'])})" if b in cells else "–"
                for b in batches])
    counts = []
    for v, res in inf.items():
        per = {c["batch"]: c["messages"] for c in res.get("cells", [])}
        if per:
            counts.append(f"{VARIANT_NAMES.get(v, v)}: " + ", ".join(f"batch {b} → {n}" for b, n in sorted(per.items())))
    roof = results.get("roofline") or {}
    pad = {}
    for r in roof.get("rows", []):
        pad.setdefault(r["batch"], (r.get("mean_len"), r["mean_padded_len"]))
    pad_txt = (" Tokens per message (measured prefix, real → padded to the batch's longest): "
               + ", ".join(f"batch {b}: {u:.1f} → {p:.1f}" for b, (u, p) in sorted(pad.items()) if u)
               + "; larger batches of unsorted messages carry more padding, so throughput can fall "
               "with batch size.") if pad else ""
    text = [
        "### Inference throughput and per-batch latency",
        "",
        table(header, rows),
        "",
        f"Each figure is the median of {plan['reps']} timed passes (after one warm-up batch) over a prefix "
        f"of the same {plan['messages']:,} messages ({_messages_phrase(inf)}, shuffled with seed {plan['seed']} "
        "and cycled); batches are cut in that fixed order without length sorting and padded to their longest "
        "message. Text in, scores out: tokenisation is included. Messages per pass — "
        + "; ".join(counts) + "." + pad_txt,
        "",
    ]
    if note:
        text += [note, ""]
    truncated = [(v, c) for v, res in inf.items() for c in res.get("cells", []) if c.get("truncated")]
    if truncated:
        text += [f"\\* Cut short by the variant's time budget ({len(truncated)} cell"
                 f"{'s' if len(truncated) > 1 else ''}): fewer than "
                 f"{plan['reps']} passes, or a pass over fewer messages; `inference.json` has each pass's "
                 "message count.", ""]
    loads = [f"{VARIANT_NAMES.get(v, v)} {res['other_load']['other_cpu_pct_of_machine']:.0f}%"
             for v, res in inf.items() if (res.get("other_load") or {}).get("other_cpu_pct_of_machine") is not None]
    if loads:
        text += ["Share of the machine's CPU used by other processes while each variant ran: "
                 + ", ".join(loads) + " (the machine is shared; a busy second core hurts 2-thread runs most).",
                 ""]
    q = results.get("quality") or {}
    vs = q.get("vs_torch") or {}
    rows = []
    for v, res in inf.items():
        if "error" in res:
            continue
        files = res.get("model_files") or {}
        size = sum(files.values()) if files else None
        size_txt = _mb(size) + (" (not persisted; in memory)" if v == "baseline" else "")
        agree = (vs.get(v) or {}).get("flag_agreement")
        source = res.get("model_source", "bundle")
        name = VARIANT_NAMES.get(v, v) + ("" if source == "bundle" else f" — graph from {source}")
        rows.append([name, size_txt,
                     fmt(res.get("peak_rss_load_mb"), 0, " MB"), fmt(res.get("peak_rss_mb"), 0, " MB"),
                     fmt((q.get("macro_pr_auc") or {}).get(v), 4),
                     ", ".join(f"{p} {a:.2%}" for p, a in agree.items()) if agree else "–",
                     fmt((vs.get(v) or {}).get("max_abs_proba_diff"), 4)])
    text += [
        "### Size, memory and quality",
        "",
        table(["variant", "model file", "peak RSS: loading", "peak RSS: scoring",
               f"test macro PR-AUC ({q.get('messages', '–')} msgs)", "flags identical to torch",
               "max |Δproba| vs torch"], rows),
        "",
        "Peak RSS is the process's `VmHWM`: once after imports and loading, then reset and read again "
        "after all scoring (each variant runs in its own process; the baseline's includes fitting it on "
        "the train split, as it is not persisted). Quality is computed in this run on the test split; "
        "PR-AUC of the baseline uses its raw decision values (monotone per label, so calibration would "
        "not change it).",
        "",
    ]
    ratios = []
    others = [v for v in inf if v != "torch" and "error" not in inf[v]]
    for t in plan["threads"]:
        cells = {v: {c["batch"]: c for c in r.get("cells", []) if c["threads"] == t} for v, r in inf.items()}
        base = cells.get("torch", {})
        for b in batches:
            if b not in base:
                continue
            ratios.append([str(t), str(b)] + [
                fmt(cells[v][b]["msg_s"] / base[b]["msg_s"], 2, "×") if b in cells.get(v, {}) else "–"
                for v in others])
    if ratios:
        text += ["Throughput relative to PyTorch eager fp32 (same run, same messages except the baseline's "
                 "larger set):", "", table(["threads", "batch", *(VARIANT_NAMES.get(v, v) for v in others)], ratios),
                 ""]
    return "\n".join(text)


def roofline_section(results: dict) -> str:
    roof = results.get("roofline") or {}
    peak = results.get("peak") or {}
    if not roof:
        return ""
    enc = roof["encoder"]
    lines = [
        "### Roofline",
        "",
        f"Analytic count (matmuls only; see `benchmarks/flops.py`): {enc['layers']} layers, hidden "
        f"{enc['hidden']}, FFN {enc['intermediate']}; the benchmark messages average "
        f"{roof['mean_token_len']:.1f} tokens (median {roof['median_token_len']:.0f}, max {roof['max_len']}), "
        f"so one message costs **{roof['flops_per_msg_at_mean_len'] / 1e9:.3f} GFLOP** of useful work. "
        "Padding to the longest message in a batch adds executed-but-wasted work (last column).",
        "",
    ]
    kernels = peak.get("kernels") or []
    if kernels:
        rows = [[k["kernel"], k["shape"], str(k["threads"]),
                 fmt(k.get("gflops_median")) if "gflops_median" in k else k.get("error", "–")]
                for k in kernels]
        lines += ["Measured peak (matmul microbenchmarks, median GFLOP/s — or GOP/s for int8 — per call):", "",
                  table(["kernel", "shape", "threads", "GFLOP/s"], rows), ""]
        bw = roof.get("copy_bandwidth_gb_s")
        if bw:
            lines += [f"Memory copy bandwidth (1 thread): {bw:.1f} GB/s. With the weights "
                      f"({roof['encoder_params'] / 1e6:.1f} M matmul parameters) read once per batch, "
                      "every cell below has an arithmetic intensity far above the ridge point, so the "
                      "roofline ceiling is the compute peak.", ""]
    rows = []
    for r in roof.get("rows", []):
        u = r.get("useful") or {}
        rows.append([VARIANT_NAMES.get(r["variant"], r["variant"]), str(r["threads"]), str(r["batch"]),
                     fmt(r["msg_s"]), fmt(r["mean_padded_len"]), fmt(u.get("achieved_gflops")),
                     f"{fmt(u.get('peak_gflops'))} ({r['precision']})", fmt(u.get("pct_of_peak"), 1, "%"),
                     fmt(r.get("executed_pct_of_peak"), 1, "%")])
    lines += [table(["variant", "threads", "batch", "msg/s", "mean padded len", "achieved GFLOP/s (useful)",
                     "peak GFLOP/s", "% of peak (useful)", "% of peak (incl. padding)"], rows), ""]
    return "\n".join(lines)


def service_section(results: dict) -> str:
    svc = results.get("service") or {}
    if not svc:
        return ""
    if "error" in svc:
        return "### Service\n\nThe service benchmark failed: " + svc["error"].splitlines()[0] + "\n"
    rows = []
    for mode, res in svc.get("modes", {}).items():
        for lv in res.get("levels", []):
            lat = lv["latency_ms"]
            rows.append([mode.replace("_", " "), str(lv["concurrency"]), str(lv["requests"]),
                         fmt(lv["throughput_rps"]), fmt(lat.get("p50")), fmt(lat.get("p95")), fmt(lat.get("p99")),
                         ", ".join(f"{k}: {v}" for k, v in lv["status"].items()),
                         fmt(lv.get("client_cpu_pct_of_one_core"), 0, "%")])
    plan = results["plan"]["service"]
    bounds = ", ".join(f"{c}: {b['seconds']} s" for c, b in plan["levels"].items())
    lines = [
        f"### Service (`bentoml serve serving.service:Qorgan`, loopback, serving the bundle's "
        f"{svc.get('serving_variant', '?')} graph)",
        "",
        table(["batching", "concurrency", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "statuses",
               "load generator CPU (of one core)"], rows),
        "",
        "Single-message `POST /score` requests from an async httpx load generator on the same 2-core "
        "machine (it competes with the server for CPU). Each level stops at its request count or after "
        + bounds + " (concurrency: seconds), whichever comes first; latency percentiles are over 2xx "
        "responses.",
        "",
    ]
    for mode, res in svc.get("modes", {}).items():
        ov, rec = res.get("overload") or {}, res.get("recovery") or {}
        if ov:
            lines.append(
                f"- Overload ({mode.replace('_', ' ')}): {ov['requests']} requests at concurrency "
                f"{ov['concurrency']} in {ov['seconds']:.1f} s → 429: {ov['status_429']}, 503: {ov['status_503']}, "
                f"other 5xx: {ov['other_5xx']}, client errors/timeouts: {ov['errors']}, 2xx: {ov['ok']} "
                f"(p99 {fmt(ov['latency_ms'].get('p99'))} ms). Recovery: {rec.get('ok')}/{rec.get('requests')} "
                f"sequential requests succeeded afterwards. Server start-up {res.get('startup_seconds', 0):.0f} s.")
        if res.get("server_exceptions"):
            lines.append(f"- Exceptions in the server log ({mode.replace('_', ' ')}; class names only): "
                         + ", ".join(f"`{k}` × {v}" for k, v in res["server_exceptions"].items()) + ".")
    if svc.get("note"):
        lines += ["", f"Note: {svc['note']}."]
    return "\n".join(lines) + "\n"


def scorer_section(results: dict) -> str:
    bs = results.get("batch_scorer") or {}
    if not bs:
        return ""
    if "rows_s" not in bs:
        err = bs.get("error") or next((r.get("stderr_tail") for r in (bs.get("runs") or {}).values()
                                       if r.get("returncode")), "unknown error")
        return "### Batch scorer\n\nThe batch scorer run failed: `" + (err or "").strip().splitlines()[-1][:300] + "`\n"
    main = bs["runs"]["main"]
    start = bs["runs"]["startup"]
    serving = bs.get("serving_variant")
    steady = bs.get("rows_s_steady")
    extrapolation = (f"At the steady rate 200,000 rows would take about {200_000 / steady / 60:.0f} min "
                     "(extrapolated, not measured). ") if steady and bs["rows"] < 200_000 else ""
    return "\n".join([
        "### Batch scorer (`qorgan score`" + (f", {serving} graph" if serving else "") + ")",
        "",
        table(["rows", "input", "wall s", "rows/s (wall)", "rows/s (steady)", "peak RSS", "all rows written"],
              [[fmt(bs["rows"]), fmt(main["input_mb"], 1, " MB"), fmt(main["seconds"]), fmt(bs["rows_s"]),
                fmt(steady), fmt(bs["peak_rss_mb"], 0, " MB"), fmt(bs.get("all_rows_written"))]]),
        "",
        f"Command: `{bs['command'].strip()}` on a generated CSV (`id,text`, corpus messages cycled), "
        f"{bs['rows']:,} rows" + (" — not 200,000, to fit the 15-minute budget" if bs["rows"] < 200_000 else "")
        + (f" (row count chosen because {bs['rows_chosen_because']})" if bs.get("rows_chosen_because") else "")
        + f". A {start['rows']}-row run took {start['seconds']:.1f} s (start-up: imports, bundle check, "
        "session); the steady rate excludes it. " + extrapolation
        + "Peak RSS: the larger of `wait4`'s maximum and a 50 ms psutil poll of the process tree.",
        "",
    ])


def targets_section(results: dict) -> str:
    rows = []
    for t in results.get("targets", []):
        val = ", ".join(f"{k} {fmt(v, 3) if isinstance(v, float) and v < 10 else fmt(v)}"
                        for k, v in t["value"].items())
        rows.append([t["target"], val, {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]])
    return "### Targets\n\n" + table(["target", "measured", "result"], rows) + "\n"


def environment_section(results: dict) -> str:
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    t = results.get("timings_s", {})
    return "\n".join([
        f"Measured {env['date_utc']} on {env['cpu_model']} ({env['cpu_affinity'] or env['cpu_count']} cores), "
        f"{env['memory_gb']} GB RAM, {env['os']}; Python {env['python']}; {versions}. "
        f"Bundle `{env['bundle']['name']}` {env['bundle']['version']} (max length {env['bundle']['max_length']} "
        f"tokens), git commit {env['git_commit']}{' (with uncommitted changes)' if env.get('git_dirty') else ''}. Command: `{env['command']}` (profile `{results['profile']}`); "
        f"total run time {t.get('total', 0) / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in t.items() if k != 'total')}). " + _other_load(env),
        "",
    ])


def _other_load(env: dict) -> str:
    ol = env.get("other_load") or {}
    if ol.get("other_cpu_pct_of_machine") is None:
        return ""
    return (f"Processes outside the benchmark's own accounting — other users', and the service's worker "
            f"processes — used {ol['other_cpu_pct_of_machine']:.0f}% of the machine's CPU during the run "
            f"(1-min load average {ol['loadavg_1min_start']:.1f} at the start).")


def render(results: dict) -> str:
    parts = [environment_section(results), targets_section(results), inference_section(results),
             roofline_section(results), service_section(results), scorer_section(results)]
    return "\n".join(p for p in parts if p)


def update_readme(path: Path, results: dict) -> None:
    """Replace the text between the result markers (appending them if missing)."""
    body = f"{MARK_START}\n<!-- generated by `python -m benchmarks.run`; do not edit by hand -->\n\n" \
           f"{render(results)}\n{MARK_END}"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")
