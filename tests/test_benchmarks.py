"""The benchmark harness on tiny inputs: FLOP counter, summary helpers, padding,
quality comparison, the load generator (against an in-process ASGI app), the
subprocess meter and the README writer. Fast and offline; no model needed."""

from __future__ import annotations

import json
import sys

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


def test_int8_sensitivity_reports_every_group_on_the_tiny_bundle(tiny_bundle, tmp_path, capsys, mini_records):
    from benchmarks.int8_sensitivity import KINDS, _gap, run

    ref = np.random.default_rng(0).normal(0, 2, (50, 4))
    same = _gap(ref, ref, lambda z: 1 / (1 + np.exp(-z)), {"moderation": np.full(4, 0.5)})
    assert same["max_abs_proba_diff"] == 0 and same["flag_agreement"] == {"moderation": 1.0}

    report = run(str(tiny_bundle), per_layer=True, simulate=True, out=tmp_path / "s.json")
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
    import shutil
    from pathlib import Path

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
