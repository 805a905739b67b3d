"""The benchmark harness on tiny inputs: FLOP counter, summary helpers, padding,
quality comparison, the load generator (against an in-process ASGI app), the
subprocess meter, the README writer, the typed plans, and — on the tiny bundle —
what ``--run-dir`` adds (torch, baseline, quality, graphs the bundle does not
ship) and what is refused without it. Offline."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks import flops as F
from benchmarks.loadgen import check_loopback, load
from benchmarks.quality import compare, flag_agreement, macro_pr_auc
from benchmarks.stats import median, percentile, ratio, summary

# -- FLOP counter ------------------------------------------------------------------------


def test_flops_per_message_matches_hand_count_for_e5_small():
    h, i, L, layers, labels = 384, 1536, 20, 12, 4
    per_layer_macs = L * (4 * h * h + 2 * h * i) + 2 * L * L * h
    expected = 2 * (layers * per_layer_macs + h * h + h * labels)
    assert F.flops_per_message(L) == pytest.approx(expected)
    # ≈ 0.86 GFLOP for 20 tokens: the order of magnitude the roofline relies on.
    assert 0.8e9 < F.flops_per_message(L) < 0.9e9


def test_flops_grow_linearly_plus_a_quadratic_attention_term():
    shape = F.EncoderShape(layers=1, hidden=8, intermediate=16, labels=1, pooler=False)
    f = [F.macs_per_message(L, shape) for L in (1, 2, 3)]
    # second difference = 2 · (2 · h) from the L² term
    assert f[2] - 2 * f[1] + f[0] == pytest.approx(2 * 2 * 8)
    assert F.flops_per_message(2, shape) == 2 * F.macs_per_message(2, shape)
    assert F.flops_for_lengths([1, 2, 3], shape) == pytest.approx(sum(2 * m for m in f))


def test_encoder_shape_reads_a_config_and_rejects_nonsense(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                               "id2label": {"0": "a", "1": "b"}}))
    shape = F.EncoderShape.from_config(cfg)
    assert (shape.layers, shape.hidden, shape.intermediate, shape.labels) == (2, 32, 64, 2)
    assert shape.encoder_params == 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 32 + 32 * 2
    with pytest.raises(ValueError):
        F.EncoderShape(layers=0)
    with pytest.raises(ValueError):
        F.macs_per_message(-1)


def test_roofline_percentages_and_memory_bound_ceiling():
    r = F.roofline(50e9, 100e9)
    assert r["pct_of_peak"] == pytest.approx(50.0) and r["ceiling_gflops"] == pytest.approx(100.0)
    # intensity 2 FLOP/byte × 10 GB/s = 20 GFLOP/s ceiling, below the compute peak
    r = F.roofline(10e9, 100e9, intensity=2.0, bandwidth_bytes_s=10e9)
    assert r["ceiling_gflops"] == pytest.approx(20.0) and r["pct_of_ceiling"] == pytest.approx(50.0)
    shape = F.EncoderShape()
    assert F.arithmetic_intensity(8, 20, 1.0, shape) == pytest.approx(
        4 * F.arithmetic_intensity(8, 20, 4.0, shape))


# -- summary helpers ----------------------------------------------------------------------


def test_percentile_matches_numpy_and_summary_has_the_reported_keys():
    rng = np.random.default_rng(0)
    xs = rng.exponential(10.0, size=101).tolist()
    for q in (0, 50, 95, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    s = summary(xs)
    assert s["n"] == 101 and s["min"] <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert summary([]) == {"n": 0}
    assert median([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert ratio(4.0, 2.0) == 2.0 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_padded_lengths_pad_each_batch_to_its_longest():
    from benchmarks.run import padded_lengths

    lengths = np.array([3, 5, 2, 7, 1])
    assert padded_lengths(lengths, 2).tolist() == [5, 5, 7, 7, 1]
    assert padded_lengths(lengths, 1).tolist() == lengths.tolist()


# -- quality ------------------------------------------------------------------------------


def test_quality_compare_counts_flag_agreement_and_pr_auc():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    perfect = y * 0.9 + 0.05
    flipped = perfect.copy()
    flipped[3, 0] = 0.95  # one message's flag changes at threshold 0.5
    th = {"moderation": np.array([0.5, 0.5])}
    assert macro_pr_auc(perfect, y) == pytest.approx(1.0)
    assert flag_agreement(flipped, perfect, th["moderation"]) == pytest.approx(0.75)
    out = compare({"torch": perfect, "onnx_int8": flipped, "baseline": 1 - perfect}, y, th)
    assert out["vs_torch"]["onnx_int8"]["flag_agreement"]["moderation"] == pytest.approx(0.75)
    assert "baseline" not in out["vs_torch"]
    assert out["macro_pr_auc"]["baseline"] < 1.0


# -- load generator -----------------------------------------------------------------------


def _tiny_app(statuses: list[int]):
    """An ASGI app answering the i-th request with ``statuses[i % len]``."""
    calls = {"n": 0}

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        code = statuses[calls["n"] % len(statuses)]
        calls["n"] += 1
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return app, calls


def test_load_generator_counts_statuses_and_respects_the_request_bound():
    app, calls = _tiny_app([200, 200, 429, 503, 500])
    r = load("http://testserver", "/score", [{"texts": ["x"]}], concurrency=4, max_requests=50,
             max_seconds=5, transport=httpx.ASGITransport(app=app))
    assert r["requests"] == calls["n"] == 50
    assert r["ok"] == 20 and r["status_429"] == 10 and r["status_503"] == 10 and r["other_5xx"] == 10
    assert r["latency_ms"]["n"] == 20 and r["throughput_rps"] > 0


def test_load_generator_stops_at_its_deadline():
    import asyncio

    async def slow(scope, receive, send):
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    r = load("http://testserver", "/", [{}], concurrency=2, max_requests=10_000, max_seconds=0.3,
             transport=httpx.ASGITransport(app=slow))
    assert r["requests"] < 100 and r["seconds"] < 1.5


def test_load_generator_refuses_non_loopback_targets():
    check_loopback("http://127.0.0.1:3000")
    with pytest.raises(ValueError):
        check_loopback("http://example.com")
    with pytest.raises(ValueError):
        load("http://10.0.0.1:3000", "/", [{}], concurrency=1, max_requests=1, max_seconds=1)


# -- subprocess meter and README ------------------------------------------------------------


def test_run_measured_reports_peak_rss_of_the_child(tmp_path):
    from benchmarks.batch_scorer import _count_rows, run_measured, write_csv

    # The child holds ~80 MB; the meter must see at least that, and its exit code.
    r = run_measured([sys.executable, "-c", "b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert r["returncode"] == 0 and r["peak_rss_mb_wait4"] >= 80
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"])["returncode"] == 3
    path = tmp_path / "in.csv"
    write_csv(path, ["a, with comma", 'b "quoted"\nnewline'], 5)
    assert _count_rows(path) == 5


def test_readme_results_section_is_replaced_not_appended(tmp_path):
    from benchmarks.report import MARK_END, MARK_START, update_readme

    results = {
        "environment": {"date_utc": "2025-01-01T00:00:00+00:00", "cpu_model": "cpu", "cpu_count": 2,
                        "cpu_affinity": 2, "memory_gb": 1.0, "os": "os", "python": "3",
                        "versions": {"numpy": "2"}, "git_commit": "abc",
                        "bundle": {"name": "b", "version": "0", "max_length": 8, "labels": ["a"]},
                        "command": "python -m benchmarks.run"},
        "profile": "quick", "plan": {}, "timings_s": {"total": 60.0},
        "targets": [{"target": "t", "value": {"x": 1.0}, "met": False}],
    }
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\nintro\n\n{MARK_START}\nold\n{MARK_END}\n\nfooter\n")
    update_readme(readme, results)
    update_readme(readme, results)
    text = readme.read_text()
    assert text.count(MARK_START) == 1 and "old" not in text
    assert text.startswith("# Bench\n\nintro") and text.rstrip().endswith("footer")
    assert "**missed**" in text


def test_time_cell_repeats_and_respects_its_time_cap():
    import time

    from benchmarks.inference import time_cell

    calls = []

    def fn(texts):
        calls.append(len(texts))
        time.sleep(0.01)
        return np.zeros((len(texts), 1))

    texts = [f"t{i}" for i in range(10)]
    full = time_cell(fn, texts, batch=4, reps=3)
    assert full["reps"] == 3 and not full["truncated"] and calls[0] == 4  # warm-up batch first
    assert [r["messages"] for r in full["runs"]] == [10, 10, 10]
    assert sum(calls) == 4 + 30 and full["msg_s"] > 0
    capped = time_cell(fn, texts * 10, batch=1, reps=3, cap_s=0.05)
    assert capped["truncated"] and capped["reps"] == 1
    assert 1 <= capped["runs"][0]["messages"] < 100


def test_time_cells_runs_rounds_per_thread_count_and_drops_late_rounds():
    import time

    from benchmarks.inference import time_cells

    class Fake:
        def __init__(self):
            self.threads = []

        def set_threads(self, n):
            self.threads.append(n)

        def __call__(self, texts):
            time.sleep(0.002 * len(texts))
            return np.zeros((len(texts), 1))

    fake = Fake()
    texts = [f"t{i}" for i in range(16)]
    cells = time_cells(fake, texts, [(1, 4), (8, 16)], [1, 2], reps=3, deadline=time.perf_counter() + 60)
    assert fake.threads == [1, 2]
    assert [(c["threads"], c["batch"], c["reps"], c["truncated"]) for c in cells] == [
        (1, 1, 3, False), (1, 8, 3, False), (2, 1, 3, False), (2, 8, 3, False)]
    # No time left: every cell still gets one (short) pass, and says it was cut.
    tight = time_cells(Fake(), texts * 20, [(1, 320), (8, 320)], [1, 2], reps=3, deadline=time.perf_counter())
    assert all(c["reps"] == 1 and c["truncated"] and c["runs"][0]["messages"] >= 1 for c in tight)


def test_results_written_per_section_read_back_for_rendering(tmp_path):
    from benchmarks.run import read_results, write_results

    results = {
        "environment": {"date_utc": "x"}, "profile": "quick",
        "plan": {"inference": {"reps": 1}, "service": {"levels": {}}, "scorer": {"rows": 1}},
        "inference": {"torch": {"cells": [{"threads": 1, "batch": 1, "msg_s": 2.0}]}},
        "variants_not_run": {}, "peak": {"peak": {}}, "roofline": {"rows": []}, "quality": {"messages": 3},
        "service": {"modes": {}, "note": "n"}, "batch_scorer": {"rows": 1, "rows_s": 5.0},
        "targets": [], "timings_s": {"total": 1.0},
    }
    write_results(results, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"summary.json", "inference.json", "quality.json"}
    back = read_results(tmp_path)
    for key in ("inference", "quality", "batch_scorer", "service", "targets", "plan", "roofline"):
        assert back[key] == results[key], key
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "nothing")


# -- int8 sensitivity ------------------------------------------------------------------


def test_int8_sensitivity_reports_every_group_on_the_tiny_bundle(tiny_bundle, tiny_run_config, tmp_path, capsys,
                                                                mini_records):
    from benchmarks.int8_sensitivity import KINDS, _gap, run

    ref = np.random.default_rng(0).normal(0, 2, (50, 4))
    same = _gap(ref, ref, lambda z: 1 / (1 + np.exp(-z)), {"moderation": np.full(4, 0.5)})
    assert same["max_abs_proba_diff"] == 0 and same["flag_agreement"] == {"moderation": 1.0}

    report = run(str(tiny_bundle), Path(tiny_run_config.run_dir), per_layer=True, simulate=True,
                 out=tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == report
    groups = report["dynamic_int8"]
    layers = 2  # the tiny BERT of conftest
    assert set(groups) == {f"all {k}" for k in KINDS} | {"everything"} | {
        f"layer {i} {k}" for i in range(layers) for k in ("fc1", "fc2")}
    for entry in [*groups.values(), *report["simulated"].values()]:
        assert 0 <= entry["mean_abs_proba_diff"] <= entry["p99_abs_proba_diff"] <= entry["max_abs_proba_diff"] <= 1
        assert set(entry["flag_agreement"]) == {"moderation", "triage"}
    # quantising something must move some score (the harness really swaps graphs)
    assert groups["everything"]["max_abs_logit_diff"] > 0
    out = capsys.readouterr().out
    assert not any(r["text"] in out for r in mini_records)


def test_int8_sensitivity_refuses_to_run_without_the_run_folder(tiny_bundle, tmp_path, capsys):
    from benchmarks.int8_sensitivity import main, run

    with pytest.raises(SystemExit):
        main(["--bundle", str(tiny_bundle), "--out", str(tmp_path / "s.json")])
    assert "--run-dir" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--run-dir"):
        run(str(tiny_bundle), None, out=tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


# -- typed plans ---------------------------------------------------------------------------


def _tiny_plan():
    """The quick profile, cut to one thread, one batch size and one pass per variant."""
    from benchmarks.plans import InferencePlan, Timeouts
    from benchmarks.run import PLANS

    inference = InferencePlan(messages=8, seed=0, threads=(1,), reps=1, batch_messages={4: 8},
                              variant_messages={"baseline": {4: 6}}, quality_batch=8, quality_threads=1,
                              budget_s={"torch": 30, "baseline": 30, "onnx_fp32": 30})
    return dataclasses.replace(PLANS["quick"], inference=inference,
                               timeouts_s=Timeouts(peak=60, variant=180, scorer=60))


@pytest.mark.parametrize("profile", ["full", "quick"])
def test_plans_round_trip_through_json_with_the_results_shape(profile):
    from benchmarks.plans import InferencePlan, Plan, as_json
    from benchmarks.run import PLANS

    plan = PLANS[profile]
    written = json.loads(json.dumps(dataclasses.asdict(plan)))
    assert Plan.from_dict(written) == plan and as_json(plan) == written
    # The part that crosses into each benchmarks.inference process comes back equal.
    assert InferencePlan.from_json(json.dumps(dataclasses.asdict(plan.inference))) == plan.inference
    # Results keep their shape: the same sections and keys as the dicts the plans replaced.
    assert set(written) == {"inference", "service", "scorer", "timeouts_s", "deadline_s"}
    assert set(written["inference"]) == {"messages", "seed", "threads", "reps", "batch_messages",
                                         "variant_messages", "quality_batch", "quality_threads", "budget_s"}
    assert set(written["inference"]["batch_messages"]) == {"1", "8", "32", "128"}
    assert set(written["service"]) == {"messages", "levels", "overload"}
    assert all(set(b) == {"requests", "seconds"} for b in written["service"]["levels"].values())
    assert set(written["service"]["overload"]) == {"concurrency", "requests", "seconds", "timeout"}
    assert set(written["scorer"]) == {"rows", "min_rows", "budget_s", "policy"}
    assert set(written["timeouts_s"]) == {"peak", "variant", "scorer"}


def test_plans_are_frozen_and_refuse_unknown_keys():
    from benchmarks.plans import InferencePlan, Plan
    from benchmarks.run import PLANS

    plan = PLANS["full"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.inference.reps = 1
    typo = {**dataclasses.asdict(plan.inference), "repeats": 3}
    with pytest.raises(TypeError):
        InferencePlan.from_dict(typo)
    with pytest.raises(TypeError):
        Plan.from_dict({**dataclasses.asdict(plan), "deadline": 1})
    # The baseline's own message counts override the plan's per batch size; others use the plan's.
    assert plan.inference.messages_for("baseline") == [(1, 1000), (8, 2000), (32, 2000), (128, 2000)]
    assert plan.inference.messages_for("torch") == [(1, 48), (8, 128), (32, 256), (128, 256)]
    assert plan.inference.budget_for("onnx_int8") == 100.0 and plan.inference.budget_for("x") == float("inf")


def test_inference_command_line_carries_the_plan_and_the_run_folder_only_when_given(tmp_path):
    from benchmarks.plans import InferencePlan
    from benchmarks.run import inference_args

    plan = _tiny_plan().inference
    without = inference_args("B", "torch", plan, None, tmp_path)
    assert "--run-dir" not in without
    assert InferencePlan.from_json(without[without.index("--plan") + 1]) == plan
    with_run = inference_args("B", "torch", plan, tmp_path / "run", tmp_path)
    assert with_run[with_run.index("--run-dir") + 1] == str(tmp_path / "run")


# -- what the run folder adds ------------------------------------------------------------


def test_splits_come_from_the_run_folder_only_when_it_is_given(tiny_bundle, tiny_run_config, tmp_path):
    """(``tiny_bundle``: building it writes the run folder.)"""
    from benchmarks.corpus import benchmark_texts, load_splits
    from data.split import read_split

    run_dir = Path(tiny_run_config.run_dir)
    splits = load_splits(run_dir)
    assert [r.id for r in splits.test] == [r.id for r in read_split(run_dir / "data", "test")]
    assert splits.train and splits.calib
    # Without --run-dir: the corpus stands in for the test split; no train split, so no baseline.
    corpus = load_splits(None)
    assert corpus.train is None and corpus.calib is None and corpus.test
    assert "--run-dir" in corpus.source
    assert len(benchmark_texts(None, 5)) == 5 and benchmark_texts(run_dir, 7, 1) == benchmark_texts(run_dir, 7, 1)
    # A given folder without prepared splits is an error, not a silent fallback.
    with pytest.raises(FileNotFoundError, match="--run-dir"):
        load_splits(tmp_path)


def test_torch_and_baseline_are_refused_without_the_run_folder(tiny_bundle, tiny_run_config, tmp_path):
    from benchmarks.inference import load_runner
    from benchmarks.run import available_variants, stage_quality

    variants = ("torch", "onnx_fp32", "baseline")
    ok, missing = available_variants(str(tiny_bundle), variants)
    assert ok == ("onnx_fp32",) and set(missing) == {"torch", "baseline"}
    assert all("--run-dir" in why for why in missing.values())
    for variant in ("torch", "baseline"):
        with pytest.raises(FileNotFoundError, match="--run-dir"):
            load_runner(str(tiny_bundle), variant, 8)
    assert "--run-dir" in stage_quality(str(tiny_bundle), tmp_path, ok)["error"]
    # With it, both can run; so can every int8 graph the bundle or the run folder has.
    run_dir = Path(tiny_run_config.run_dir)
    ok, missing = available_variants(str(tiny_bundle), variants, run_dir)
    assert ok == variants and missing == {}
    empty = tmp_path / "empty-run"
    empty.mkdir()
    ok, missing = available_variants(str(tiny_bundle), variants, empty)
    assert ok == ("onnx_fp32",) and all(str(empty) in why for why in missing.values())


def test_run_reports_torch_and_baseline_rows_only_with_the_run_folder(
        tiny_bundle, tiny_run_config, tmp_path, monkeypatch, mini_records):
    from benchmarks import run as bench
    from benchmarks.plans import as_json
    from benchmarks.report import VARIANT_NAMES

    plan = _tiny_plan()
    monkeypatch.setitem(bench.PLANS, "tiny", plan)
    skip = ("peak", "service", "scorer")
    variants = ("torch", "baseline")

    out = tmp_path / "with"
    results = bench.run(str(tiny_bundle), run_dir=Path(tiny_run_config.run_dir), profile="tiny", skip=skip,
                        out_dir=out, readme=tmp_path / "with.md", variants=variants)
    assert results["variants_not_run"] == {}
    for v in variants:
        res = results["inference"][v]
        assert "error" not in res, res.get("error")
        assert [(c["threads"], c["batch"]) for c in res["cells"]] == [(1, 4)]
        assert res["test_pass"]["messages"] > 0 and res["cells"][0]["msg_s"] > 0
    assert results["inference"]["baseline"]["cells"][0]["messages"] == 6  # its own count
    assert set(results["quality"]["macro_pr_auc"]) == set(variants)
    written = json.loads((out / "inference.json").read_text(encoding="utf-8"))["inference"]
    assert written["plan"] == as_json(plan.inference) and set(written["variants"]) == set(variants)
    table = (tmp_path / "with.md").read_text(encoding="utf-8")
    assert all(f"| {VARIANT_NAMES[v]} | 1 |" in table for v in variants)
    assert "Not run" not in table and "messages (the test split, shuffled" in table
    # Numbers only: no message of the run's splits (or the corpus) is in any results file.
    dumped = "".join(p.read_text(encoding="utf-8") for p in out.iterdir())
    assert not any(r["text"] in dumped for r in mini_records if len(r["text"]) > 12)

    # Without it: both are listed as not run, saying what would add them, and nothing is measured.
    out = tmp_path / "without"
    results = bench.run(str(tiny_bundle), profile="tiny", skip=skip, out_dir=out, readme=tmp_path / "without.md",
                        variants=variants)
    assert results["inference"] == {} and set(results["variants_not_run"]) == set(variants)
    assert all("--run-dir" in why for why in results["variants_not_run"].values())
    assert "--run-dir" in results["quality"]["error"]
    back = bench.read_results(out)
    assert back["variants_not_run"] == results["variants_not_run"] and back["plan"] == as_json(plan)
    table = (tmp_path / "without.md").read_text(encoding="utf-8")
    assert not any(f"| {VARIANT_NAMES[v]} |" in table for v in variants)
    assert f"Not run: {VARIANT_NAMES['torch']} (" in table and "pass --run-dir" in table


# -- graphs the bundle does not ship ------------------------------------------------------


def test_a_scorer_given_a_model_path_runs_that_graph_with_the_bundle(tiny_bundle, mini_records):
    from models.bundle import load_bundle
    from serving.scorer import Scorer, ScorerConfig

    bundle = load_bundle(tiny_bundle)
    config = ScorerConfig(variant="fp32", intra_op_threads=1, batch_size=8)
    plain = Scorer(bundle, config)
    ours = Scorer(bundle, dataclasses.replace(config, variant=None), model_path=bundle.model_path("fp32"))
    texts = [r["text"] for r in mini_records[:40]]
    np.testing.assert_array_equal(ours.proba(texts), plain.proba(texts))
    assert ours.score(texts, "triage") == plain.score(texts, "triage")


def _unshipped_int8(bundle) -> tuple[str, str]:
    """An int8 variant the bundle does not ship (it ships at most one) and its run-folder file."""
    from benchmarks.inference import RUN_DIR_GRAPHS, resolve_graph

    for variant, names in RUN_DIR_GRAPHS.items():
        try:
            resolve_graph(bundle, variant, None)
        except FileNotFoundError:
            return variant, names[0]
    raise AssertionError("the bundle ships every int8 variant")


def test_a_graph_the_bundle_does_not_ship_runs_from_the_run_folder_without_touching_the_manifest(
        tiny_bundle, tmp_path, mini_records):
    from benchmarks.inference import OnnxRunner, resolve_graph
    from models.bundle import MANIFEST_FILE, load_bundle
    from serving.scorer import Scorer, ScorerConfig

    bundle = load_bundle(tiny_bundle)
    manifest_bytes = (tiny_bundle / MANIFEST_FILE).read_bytes()
    variant, name = _unshipped_int8(bundle)
    with pytest.raises(FileNotFoundError, match="--run-dir"):
        resolve_graph(bundle, variant, None)
    # A run folder whose "int8" graph is the fp32 one: any graph with the bundle's inputs will do,
    # and this one has known scores.
    run_dir = tmp_path / "run"
    (run_dir / "onnx").mkdir(parents=True)
    shutil.copyfile(bundle.model_path("fp32"), run_dir / "onnx" / name)
    graph = resolve_graph(bundle, variant, run_dir)
    assert graph.bundle_variant is None and graph.path == (run_dir / "onnx" / name).resolve()
    assert graph.source.endswith("not shipped in the bundle")

    runner = OnnxRunner(str(tiny_bundle), variant, 8, run_dir)
    assert runner.source == graph.source and runner.scorer.model_path == graph.path
    assert runner.model_files == {name: graph.path.stat().st_size}
    runner.set_threads(2)
    assert runner.scorer.config.threads == 2 and runner.scorer.model_path == graph.path
    texts = [r["text"] for r in mini_records[:20]]
    fp32 = Scorer(bundle, ScorerConfig(variant="fp32", intra_op_threads=1)).proba(texts)
    np.testing.assert_allclose(runner(texts), fp32, atol=1e-6)
    # The bundle is read as it is: its manifest still names only what it ships.
    assert runner.bundle.manifest == bundle.manifest
    assert graph.path not in {bundle.model_path(v).resolve() for v in runner.bundle.variants}
    assert (tiny_bundle / MANIFEST_FILE).read_bytes() == manifest_bytes
    # A graph the bundle ships goes through the plain Scorer.
    shipped = OnnxRunner(str(tiny_bundle), "fp32", 8, None)
    assert type(shipped.scorer) is Scorer and shipped.source == "bundle"


# -- flag rates on real text -------------------------------------------------------------


def _zip(path, members: dict[str, str]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def _yaml_doc(conversations: list[list]) -> str:
    import yaml

    return yaml.safe_dump({"categories": ["test"], "conversations": conversations}, allow_unicode=True)


def test_real_text_rates_every_set_bundle_and_policy_without_printing_text(
        tiny_bundle, tiny_run_config, tmp_path, capsys):
    from benchmarks.real_text import COLUMNS, main
    from data.split import read_split

    en = ["Which planet is closest to the sun?", "Mercury is the closest planet.", "Do you like jazz music?"]
    ru = ["Какой твой любимый суп на обед?", "Мне нравится борщ со сметаной."]
    wheel = _zip(tmp_path / "chatterbot_corpus-0.0.0-py3-none-any.whl", {
        "chatterbot_corpus/data/english/a.yml": _yaml_doc([en[:2], [en[2], en[0], "  ", 42]]),
        "chatterbot_corpus/data/russian/b.yml": _yaml_doc([ru, [ru[0]]]),
        "chatterbot_corpus/data/german/c.yml": _yaml_doc([["Guten Morgen, wie geht es dir heute?"]]),
    })
    kk = ["Қосымша өте ыңғайлы, рахмет.", "Жеткізу тым ұзақ болды, ұнамады.", "Кітап қызықты екен, ұсынамын."]
    kaz = tmp_path / "kazsandra"
    kaz.mkdir()
    header = "custom_id,text,text_cleaned,label,domain\n"
    _zip(kaz / "04_pc_valid.zip", {"04_pc_valid.csv": header + f'1,"{kk[0]}",x,1,appstore\n2,"{kk[1]}",x,0,market\n'})
    _zip(kaz / "05_pc_test.zip", {"05_pc_test.csv": header + f'3,"{kk[2]}",x,1,bookstore\n4,"{kk[0]}",x,1,appstore\n'
                                                              '5,"",x,1,appstore\n'})
    alla = tmp_path / "alla" / "toxicity_corpus"
    alla.mkdir(parents=True)
    toxic = "Ты полный идиот и тупица, уходи отсюда."
    clean_ru = ["Интересно, когда начнётся матч?", "Хорошая новость, спасибо редакции."]
    (alla / "russian_distorted_toxicity.tsv").write_text(
        "comment_id\tsource\tcomments\tdistortion\ttoxicity\tcorrected\n"
        f"1\tx\t{clean_ru[0]}\t0\t0\t\n2\tx\t{toxic}\t0\t1\t\n3\tx\t{clean_ru[1]}\t0\t0\t\n4\tx\t{clean_ru[0]}\t0\t0\t\n",
        encoding="utf-8")
    other = tmp_path / "other-bundle"
    shutil.copytree(tiny_bundle, other)
    data = Path(tiny_run_config.run_dir) / "data"
    background = read_split(data, "background_eval")
    out = tmp_path / "real_text.json"
    bundles = [str(tiny_bundle), str(other)]
    assert main(["--bundle", bundles[0], "--bundle", bundles[1], "--data", str(data), "--chatterbot", str(wheel),
                 "--kazsandra", str(kaz), "--alla-g", str(alla.parent), "--out", str(out)]) == 0

    results = json.loads(out.read_text(encoding="utf-8"))
    expected = {"background": len({r.text.strip() for r in background}), "chatterbot_en": 3, "chatterbot_ru": 2,
                "kazsandra_eval": 3, "alla_g_nontoxic": 2}
    assert expected["background"] > 0
    assert {name: s["n"] for name, s in results["sets"].items()} == expected
    labels = ["bullying", "threat", "self_harm", "bullying_disclosure", "any_of_3"]
    for name, s in results["sets"].items():
        assert set(s["bundles"]) == set(bundles), name
        for per in s["bundles"].values():
            assert set(per) == {"moderation", "triage"}
            for rates in per.values():
                assert rates["n"] == expected[name]
                assert all(0.0 <= rates[lb] <= 1.0 for lb in labels)
                assert rates["any_of_3"] >= max(rates[lb] for lb in ("threat", "self_harm", "bullying_disclosure"))
    assert set(results["bundles"]) == set(bundles)
    printed = capsys.readouterr()
    table = printed.out
    assert table.splitlines()[0].count("|") == len(COLUMNS) + 4  # set, bundle, n + the columns
    assert table.count("| chatterbot_en |") == 2
    assert "Test macro PR-AUC" in table
    fixture_texts = [*en, *ru, *kk, *clean_ru, toxic, "Guten Morgen", *(r.text for r in background)]
    for text in fixture_texts:
        assert text not in printed.out and text not in printed.err
    # Test quality on the same messages for every bundle; --unseen-by drops what a run trained on.
    test = read_split(data, "test")
    assert all(b["test_split"]["messages"] == len(test) for b in results["bundles"].values())
    from benchmarks.real_text import trained_ids

    own = trained_ids([data])
    assert own and not own & {r.id for r in test}  # a run's own test split is unseen by it
    assert own >= {r.id for r in read_split(data, "train")}
