"""Training contracts: calibration, thresholds, config validation, the parity
gate, and the end-to-end pipeline on a tiny model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HELD_OUT_SOURCE

from data.schema import LABELS
from training.calibrate import (
    PolicyFitter,
    TemperatureScaler,
    choose_threshold,
    prior_offset,
)
from training.config import ExportConfig, PolicyConfig, load_config
from training.export import ParityError, check_fp32_parity, check_int8_parity


def _synthetic(n=3000, seed=0, scale=4.0):
    """Overconfident logits: the true log-odds multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.0, 1.5, size=(n, len(LABELS)))
    y = (rng.random((n, len(LABELS))) < 1 / (1 + np.exp(-true_logit))).astype(float)
    return true_logit * scale, y


def test_temperature_scaling_lowers_brier_on_held_out_data():
    logits, y = _synthetic()
    fit, held = slice(0, 1500), slice(1500, None)
    scaler = TemperatureScaler().fit(logits[fit], y[fit])
    before = np.mean((1 / (1 + np.exp(-logits[held])) - y[held]) ** 2)
    after = np.mean((scaler.transform(logits[held]) - y[held]) ** 2)
    assert after < before
    # Overconfident by ×4, so the learned temperatures should be near 4.
    assert np.all((scaler.temperature_ > 2.5) & (scaler.temperature_ < 6))


def test_temperature_scaler_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal in shape"):
        TemperatureScaler().fit(np.zeros((4, 2)), np.zeros((4, 3)))


def _pr(proba, y, th):
    flags, pos = proba >= th, y > 0.5
    tp = np.sum(flags & pos)
    return tp / max(flags.sum(), 1), tp / pos.sum()


def test_thresholds_meet_their_objective_on_the_fitting_data():
    logits, y = _synthetic(scale=1.0, seed=1)
    proba = TemperatureScaler().fit_transform(logits + 2.5 * (y * 2 - 1), y)
    # Precision of the fitting data itself (no deployment prevalence).
    config = PolicyConfig(bootstrap_samples=100, prevalence={})
    fitted = PolicyFitter(config).fit(proba, y, list(LABELS))
    for j, lb in enumerate(LABELS):
        mod = fitted["moderation"][lb]
        p, r = _pr(proba[:, j], y[:, j], mod["threshold"])
        assert mod["achievable"] and p >= config.moderation_min_precision
        assert mod["precision"] == pytest.approx(p) and mod["recall"] == pytest.approx(r)
        lo, hi = mod["precision_ci"]
        assert lo <= p <= hi
        tri = fitted["triage"][lb]
        p, r = _pr(proba[:, j], y[:, j], tri["threshold"])
        if lb in config.triage_recall_labels:
            assert r >= config.triage_min_recall
            # The most precise threshold that meets the recall target: one step higher misses it.
            higher = np.unique(proba[:, j])[np.unique(proba[:, j]) > tri["threshold"]]
            if len(higher):
                assert _pr(proba[:, j], y[:, j], higher[0])[1] < config.triage_min_recall
        else:
            f1 = 2 * p * r / (p + r)
            best = max(2 * a * b / (a + b) if a + b else 0
                       for a, b in (_pr(proba[:, j], y[:, j], t) for t in np.unique(proba[:, j])))
            assert f1 == pytest.approx(best)


def test_unreachable_precision_is_recorded_not_hidden():
    rng = np.random.default_rng(0)
    proba, y = rng.random(500), (rng.random(500) < 0.3).astype(float)
    entry = choose_threshold(proba, y, "f1_at_precision", 0.99)
    assert entry["achievable"] is False
    assert 0 <= entry["threshold"] <= 1


@pytest.mark.parametrize("overrides, message", [
    (["train.bogus=1"], "unknown config key"),
    (["train.learning_rate=3"], "learning_rate must be in"),
    (["train.batch_size=0"], "batch_size must be ≥ 1"),
    (["model.max_length=4"], "max_length must be in"),
    (["model.pooling=max"], "model.pooling must be one of"),
    (["train.oversample={xx: 2}"], "train.oversample needs languages"),
    (["train.oversample={kk: 0}"], "train.oversample needs languages"),
    (["train.oversample={kk: 1.5}"], "train.oversample needs languages"),
    (["policy.triage_recall_labels=[self_harm, nonsense]"], "unknown labels"),
    (["data.split.train=0.9"], "sum to 1"),
    (["data.source.adapter=nope"], "adapter"),
    (["train.epochs"], "must look like"),
    (["train.learning_rate=fast"], "train.learning_rate must be a number, got 'fast'"),
])
def test_config_errors_are_clear(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_float_settings_accept_exponent_notation():
    """YAML 1.1 reads `1e-4` (no dot) as a string; a float setting takes it as the number."""
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == pytest.approx(1e-4)


def test_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_default_config_loads_and_round_trips(tmp_path):
    config = load_config("training/configs/default.yaml")
    saved = config.save(tmp_path / "config.yaml")
    assert load_config(saved) == config


def test_default_config_holds_only_values_that_differ_from_the_defaults():
    import yaml

    from training.config import RunConfig

    defaults = RunConfig().to_dict()

    def leaves(tree, path=()):
        for key, value in tree.items():
            if isinstance(value, dict) and isinstance(_at(defaults, (*path, key)), dict) and value:
                yield from leaves(value, (*path, key))
            else:
                yield (*path, key), value

    def _at(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    tree = yaml.safe_load(Path("training/configs/default.yaml").read_text(encoding="utf-8"))
    same = [".".join(path) for path, value in leaves(tree) if _at(defaults, path) == value]
    assert not same, f"default.yaml repeats defaults: {same}"


def test_parity_gates_refuse_drifting_graphs():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (200, 4))
    calibrate = TemperatureScaler().fit(logits, (logits > 0).astype(float)).transform
    ths = {"moderation": np.full(4, 0.5)}
    assert check_fp32_parity(logits, logits + 1e-6, ExportConfig())["passed"]
    with pytest.raises(ParityError, match="fp32 logits differ"):
        check_fp32_parity(logits, logits + 1e-2, ExportConfig())
    assert check_int8_parity(logits, logits + 1e-3, calibrate, ths, ExportConfig())["passed"]
    drift = check_int8_parity(logits, logits + rng.normal(0, 1, logits.shape), calibrate, ths, ExportConfig())
    assert not drift["passed"]
    assert any("probabilities differ" in p for p in drift["problems"])
    assert any("moderation flags agree" in p for p in drift["problems"])


def test_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    from training.evaluate import average_precision

    rng = np.random.default_rng(3)
    for n in (5, 50, 500):
        y = rng.random(n) < 0.3
        y[0], y[1] = True, False
        for score in (rng.random(n), np.round(rng.random(n), 1), y * 0.5 + 0.25):  # distinct, tied, perfect
            assert average_precision(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)


def test_macro_pr_auc_gap_interval_separates_a_better_scorer_and_not_an_equal_one():
    from training.evaluate import macro_pr_auc_gap

    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random((n, 4)) < 0.25).astype(float)
    langs = ["kk"] * 300 + ["kk-ru"] * 100
    good = np.clip(y * 0.6 + rng.random((n, 4)) * 0.5, 0, 1)
    noise = rng.random((n, 4))
    gap = macro_pr_auc_gap(good, noise, y, langs, samples=200, confidence=0.9)
    assert set(gap) == {"all", "kk", "kk-ru"}
    for entry in gap.values():
        assert entry["gap"] > 0 and entry["ci"][0] > 0 and entry["p_gap_le_0"] == 0.0
    # the smaller slice is less certain
    width = {lang: g["ci"][1] - g["ci"][0] for lang, g in gap.items()}
    assert width["kk-ru"] > width["kk"]
    same = macro_pr_auc_gap(good, good, y, langs, samples=50, confidence=0.9)
    assert all(g["gap"] == 0 and g["ci"] == [0.0, 0.0] for g in same.values())


def test_oversample_repeats_only_the_named_languages():
    from data.schema import Record
    from training.train import oversample

    records = [Record(id=f"r{i}", text="t", lang=lang, labels=()) for i, lang in enumerate(["kk", "en", "kk-ru"])]
    out = oversample(records, {"kk": 3, "kk-ru": 2})
    assert [r.id for r in out] == ["r0", "r0", "r0", "r1", "r2", "r2"]
    assert oversample(records, {}) == records


# ---------------------------------------------------------------- heads

@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_both_heads_round_trip_through_save_and_load_trained(pooling, tiny_base_model, tmp_path):
    from transformers import AutoTokenizer

    from training.train import load_classifier, load_trained, predict_logits

    model = load_classifier(str(tiny_base_model), pooling=pooling).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base_model))
    texts = ["a short one", "and a somewhat longer message than that", "x"]
    before = predict_logits(model, tokenizer, texts, 32)
    assert before.shape == (3, len(LABELS))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_trained(tmp_path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(predict_logits(loaded, tokenizer, texts, 32), before, atol=1e-6)


def test_mean_pooling_ignores_padding(tiny_base_model):
    import torch
    from transformers import AutoTokenizer

    from training.train import load_classifier

    model = load_classifier(str(tiny_base_model), pooling="mean").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base_model))
    alone = tokenizer(["a short one"], return_tensors="pt")
    padded = tokenizer(["a short one", "and a much longer message to force padding"], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        a = model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"]).logits[0]
        b = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- end to end

def test_end_to_end_bundle_is_complete_and_onnx_matches_torch(tiny_bundle, tiny_run_config, mini_records):
    from models.bundle import load_bundle
    from training.export import onnx_logits
    from training.train import LOG_FILE, MODEL_SUBDIR, load_trained, predict_logits

    bundle = load_bundle(tiny_bundle)
    assert bundle.labels == LABELS
    assert set(bundle.policies) == {"moderation", "triage"}
    assert bundle.priority["levels"] == ["urgent", "high", "normal", "low"]
    parity = bundle.metrics["parity"]
    # Production parity gates: the int8 graph is served only if an attempt passed them.
    served = parity["serving_variant"]
    assert parity["fp32"]["passed"] and [a["recipe"] for a in parity["int8_attempts"]][:1] == ["dynamic"]
    if served == "int8":
        assert parity["int8_attempts"][-1]["passed"] and bundle.model_path().name == "model.onnx"
    else:
        assert not any(a["passed"] for a in parity["int8_attempts"]) and "model.onnx" not in bundle.variants.values()
    assert bundle.model_path().name == bundle.variants[served]
    assert set(bundle.metrics["macro_pr_auc"]) == {"torch", f"onnx_{served}", "baseline"}
    for name in ("model.fp32.onnx", "tokenizer.json", "calibration.json", "metrics.json",
                 "README.md", "reliability.png", "pr_curves.png"):
        assert (tiny_bundle / name).is_file(), name
    run_dir = tiny_bundle.parent / "run"
    assert (run_dir / "config.yaml").is_file() and (run_dir / LOG_FILE).is_file()
    card = (tiny_bundle / "README.md").read_text(encoding="utf-8")
    assert "## Intended use" in card and "TF-IDF baseline" in card
    gaps = bundle.metrics["gap_vs_baseline"]
    assert "all" in gaps and set(gaps) <= set(bundle.metrics["macro_pr_auc"]["torch"])
    assert "model − baseline (bootstrap interval)" in card and "[CLS] classification head" in card
    # Held-out real text: measured per policy × language, only on the held-out source.
    background = bundle.metrics["background"]
    assert background["sources"] == [HELD_OUT_SOURCE] and background["training_pool"] > 0
    assert set(background["flag_rate"]) == set(bundle.policies)
    assert set(background["flag_rate"]["triage"]) == {"all", *background["messages"]}
    assert "## Ordinary real text (held out from training)" in card
    # The pinned earlier version's test messages, judged on their own: kept whole in test.
    pinned, test_size = bundle.metrics["test_pinned"], bundle.metrics["data"]["counts"]["test"]["records"]
    assert 0 < pinned["messages"] < test_size and pinned["macro_pr_auc"]["all"] is not None
    assert f"On the {pinned['messages']} test messages of the pinned earlier corpus version" in card
    # Scores are shifted to the configured prevalence.
    for lb in LABELS:
        entry = bundle.calibration["labels"][lb]
        assert entry["prevalence"] == tiny_run_config.policy.prevalence[lb]
        assert entry["logit_offset"] < 0 < entry["calib_base_rate"]

    texts = [r["text"] for r in mini_records[:64]]
    model, tokenizer = load_trained(run_dir / MODEL_SUBDIR)
    torch_logits = predict_logits(model, tokenizer, texts, bundle.max_length)
    fp32 = onnx_logits(bundle.model_path("fp32"), tokenizer, texts, bundle.max_length)
    np.testing.assert_allclose(fp32, torch_logits, atol=1e-4)
    if served == "int8":
        int8 = onnx_logits(bundle.model_path("int8"), tokenizer, texts, bundle.max_length)
        diff = np.abs(bundle.calibrate(int8) - bundle.calibrate(torch_logits))
        assert diff.max() <= tiny_run_config.export.int8_max_proba_diff


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    from models.bundle import BundleError, load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    cal = json.loads((copy / "calibration.json").read_text())
    cal["policies"]["triage"]["self_harm"]["threshold"] = 0.99
    (copy / "calibration.json").write_text(json.dumps(cal))
    with pytest.raises(BundleError, match="calibration.json does not match its sha256"):
        load_bundle(copy)

    shutil.rmtree(copy)
    shutil.copytree(tiny_bundle, copy)
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx does not match"):
        load_bundle(copy)


def test_the_digest_pins_a_bundle_even_when_its_manifest_is_re_hashed(tiny_bundle, tmp_path):
    """An edited threshold with its sha256 updated in bundle.json loads, under the same name
    and version, but with another digest: the value a client pins (GET /model, responses)."""
    from models.bundle import CALIBRATION_FILE, MANIFEST_FILE, load_bundle, sha256_file

    original = load_bundle(tiny_bundle)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", original.digest)
    assert load_bundle(tiny_bundle).digest == original.digest  # stable across loads
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    cal = json.loads((copy / CALIBRATION_FILE).read_text())
    cal["policies"]["triage"]["self_harm"]["threshold"] = 0.99
    (copy / CALIBRATION_FILE).write_text(json.dumps(cal))
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"][CALIBRATION_FILE] = sha256_file(copy / CALIBRATION_FILE)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    edited = load_bundle(copy)
    assert (edited.name, edited.version) == (original.name, original.version)
    assert edited.digest != original.digest


def test_unknown_schema_and_missing_files_are_refused(tiny_bundle, tmp_path):
    from models.bundle import BundleError, load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["schema_version"] = 99
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version 99 is not supported"):
        load_bundle(copy)
    manifest["schema_version"] = 1
    (copy / "bundle.json").write_text(json.dumps(manifest))
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_serving_section_limits_and_policies_come_from_the_bundle(tiny_bundle, tmp_path):
    from conftest import TINY_LIMITS

    from models.bundle import SCHEMA_1_SERVING, BundleError, UnknownPolicyError, load_bundle

    bundle = load_bundle(tiny_bundle)
    assert bundle.manifest["schema_version"] == 2
    assert bundle.limits == TINY_LIMITS  # the run's serving.* settings, not the defaults
    assert (bundle.default_policy("api"), bundle.default_policy("batch")) == ("moderation", "triage")
    assert bundle.check_policy(None, "batch") == "triage" and bundle.check_policy("moderation") == "moderation"
    with pytest.raises(UnknownPolicyError, match="unknown policy 'lenient'"):
        bundle.check_policy("lenient")
    with pytest.raises(UnknownPolicyError):
        bundle.thresholds("lenient")

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    # A bundle of schema 1 (0.1.0) has no serving section: it loads with what 0.1.0 served.
    old = {k: v for k, v in manifest.items() if k != "serving"} | {"schema_version": 1}
    (copy / "bundle.json").write_text(json.dumps(old))
    assert load_bundle(copy).serving == SCHEMA_1_SERVING
    # Schema 2 without it, or naming a policy the bundle lacks, is refused.
    (copy / "bundle.json").write_text(json.dumps(old | {"schema_version": 2}))
    with pytest.raises(BundleError, match="has no 'serving' section"):
        load_bundle(copy)
    bad = manifest | {"serving": {**manifest["serving"], "default_policy": {"api": "lenient", "batch": "triage"}}}
    (copy / "bundle.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match=r"names policies \['lenient'\]"):
        load_bundle(copy)


def test_serving_config_validation():
    from training.config import ServingConfig

    with pytest.raises(ValueError, match="default_policy"):
        ServingConfig(default_policy={"api": "moderation"})
    with pytest.raises(ValueError, match="default_policy"):
        ServingConfig(default_policy={"api": "lenient", "batch": "triage"})
    with pytest.raises(ValueError, match="max_messages"):
        ServingConfig(max_messages=0)
    with pytest.raises(ValueError, match="corpus bound"):
        ServingConfig(max_text_chars=10**6)


def test_baseline_learns_a_separable_signal():
    from training.baseline import TfidfBaseline

    texts = [f"alpha{i % 7} common words here" for i in range(60)] + [f"omega{i % 7} other words" for i in range(60)]
    y = np.zeros((120, 4))
    y[:60, 0] = 1
    y[60:, 2] = 1
    logits = TfidfBaseline().fit(texts, y).decision_function(texts)
    assert logits.shape == (120, 4)
    assert (logits[:60, 0] > logits[60:, 0]).mean() > 0.95


def test_without_a_passing_int8_recipe_the_fp32_graph_is_served_or_the_bundle_refused(
        tiny_bundle, tiny_run_config, tmp_path):
    from dataclasses import replace

    from models.bundle import load_bundle
    from training.pipeline import run_pipeline

    strict = replace(tiny_run_config.export, int8_max_proba_diff=1e-12, require_int8=True)
    config = replace(tiny_run_config, bundle_dir=str(tmp_path / "refused"), export=strict,
                     train=replace(tiny_run_config.train, reuse_model=True))
    with pytest.raises(ParityError, match="no int8 recipe passed"):
        run_pipeline(config)
    assert not (tmp_path / "refused").exists()

    config = replace(config, bundle_dir=str(tmp_path / "fp32"), export=replace(strict, require_int8=False))
    bundle = load_bundle(run_pipeline(config))
    assert bundle.serving_variant == "fp32" and bundle.model_path().name == "model.fp32.onnx"
    assert not (bundle.path / "model.onnx").exists()
    assert [a["recipe"] for a in bundle.metrics["parity"]["int8_attempts"]] == ["dynamic", "weight_only"]
    assert "fp32 graph is served" in (bundle.path / "README.md").read_text(encoding="utf-8")


# -- partial labels, prior shift, background mix, real-text gate ------------------------------


def test_unknown_labels_change_neither_the_loss_nor_the_metrics():
    import torch

    from training.evaluate import calibration_summary, label_table, macro_pr_auc
    from training.train import masked_bce

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (300, 4))
    y = (rng.random((300, 4)) < 0.3).astype(float)
    partial = y.copy()
    partial[:100, 0] = np.nan  # the first 100 messages: bullying unknown
    weight = torch.tensor([2.0, 3.0, 1.0, 4.0])

    loss = masked_bce(torch.tensor(logits), torch.tensor(partial), weight)
    # Whatever the model says about an unknown target, the loss is the same ...
    moved = logits.copy()
    moved[:100, 0] += 50
    assert masked_bce(torch.tensor(moved), torch.tensor(partial), weight) == pytest.approx(float(loss))
    # ... and it is the plain weighted BCE over the known targets alone.
    known = ~np.isnan(partial)
    per_target = torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none")(
        torch.tensor(logits), torch.tensor(np.nan_to_num(partial)))
    assert float(loss) == pytest.approx(float(per_target.numpy()[known].mean()))
    # With every target known it is BCEWithLogitsLoss itself.
    full = torch.nn.BCEWithLogitsLoss(pos_weight=weight)(torch.tensor(logits), torch.tensor(y))
    assert float(masked_bce(torch.tensor(logits), torch.tensor(y), weight)) == pytest.approx(float(full))

    # Metrics: an unknown target is skipped, so its score does not matter, and the bullying
    # column equals that of the known rows alone.
    proba = 1 / (1 + np.exp(-logits))
    proba_moved = 1 / (1 + np.exp(-moved))
    langs = ["en"] * 300
    ths = {"moderation": np.full(4, 0.5)}
    assert macro_pr_auc(proba, partial) == macro_pr_auc(proba_moved, partial)
    a, b = (label_table(p, partial, langs, list(LABELS), ths) for p in (proba, proba_moved))
    assert a == b
    alone = label_table(proba[100:], y[100:], langs[100:], list(LABELS), ths)
    assert a["all"]["labels"]["bullying"] == alone["all"]["labels"]["bullying"]
    assert a["all"]["labels"]["threat"] != alone["all"]["labels"]["threat"]  # other labels keep every row
    assert calibration_summary(logits, proba, partial, list(LABELS)) == \
        calibration_summary(moved, proba_moved, partial, list(LABELS))
    # Temperatures and thresholds are fitted on the known targets only.
    scaler = TemperatureScaler().fit(logits, partial)
    assert scaler.temperature_[0] == pytest.approx(TemperatureScaler().fit(logits[100:], y[100:]).temperature_[0])
    fitted = PolicyFitter(PolicyConfig(bootstrap_samples=0)).fit(proba, partial, list(LABELS))
    alone_fit = PolicyFitter(PolicyConfig(bootstrap_samples=0)).fit(proba[100:], y[100:], list(LABELS))
    assert fitted["moderation"]["bullying"] == alone_fit["moderation"]["bullying"]


def shift_prior(proba, base_rate, prevalence):
    """Probabilities calibrated at ``base_rate`` re-expressed at ``prevalence`` with the
    production offset (TemperatureScaler adds it to the tempered logits)."""
    from scipy.special import expit, logit

    return expit(logit(np.clip(proba, 1e-12, 1 - 1e-12)) + prior_offset(base_rate, prevalence))


def test_prior_shift_moves_scores_towards_the_prevalence_and_is_neutral_at_the_base_rate():
    proba = np.array([[0.1, 0.5, 0.9]])
    lower = shift_prior(proba, 0.2, 0.02)
    assert np.all(lower < proba) and np.all(np.diff(lower) > 0)  # down, order kept
    assert np.all(shift_prior(proba, 0.2, 0.6) > proba)
    np.testing.assert_allclose(shift_prior(proba, 0.5, 0.5), proba)
    np.testing.assert_allclose(shift_prior(proba, 0.17, 0.17), proba)
    # Bayes: at a 50% base rate, a score of 0.5 means "as likely as the prior" → the prior itself.
    assert float(shift_prior(np.array(0.5), 0.5, 0.02)) == pytest.approx(0.02)
    assert prior_offset(np.array([0.2]), np.array([np.nan]))[0] == 0.0

    logits, y = _synthetic(seed=5)
    base = y.mean(0)
    same = TemperatureScaler(prevalence=base).fit(logits, y)
    np.testing.assert_allclose(same.offset_, 0.0, atol=1e-12)
    np.testing.assert_allclose(same.transform(logits), same.transform(logits, shift=False))
    shifted = TemperatureScaler(prevalence=np.full(4, 0.02)).fit(logits, y)
    np.testing.assert_allclose(shifted.base_rate_, base)
    # After the shift the mean score is close to the new prevalence (it was the base rate).
    assert np.all(np.abs(shifted.transform(logits).mean(0) - 0.02) < np.abs(base - 0.02) / 3)


def test_moderation_precision_is_met_at_the_deployment_prevalence():
    logits, y = _synthetic(scale=1.0, seed=2)
    proba = TemperatureScaler().fit_transform(logits + 2.5 * (y * 2 - 1), y)
    plain = PolicyFitter(PolicyConfig(bootstrap_samples=0, prevalence={})).fit(proba, y, list(LABELS))
    rare = PolicyFitter(PolicyConfig(bootstrap_samples=0, prevalence=dict.fromkeys(LABELS, 0.02))).fit(
        proba, y, list(LABELS))
    for lb in LABELS:
        p, r = rare["moderation"][lb], plain["moderation"][lb]
        assert p["prevalence"] == 0.02 and r["prevalence"] is None
        if p["achievable"]:
            assert p["precision_at_prevalence"] >= 0.90
        # Rarer positives need a stricter threshold for the same precision.
        assert p["threshold"] >= r["threshold"]
        assert p["precision_at_prevalence"] <= p["precision"]  # the calib split is far richer in positives
        # Recall targets do not depend on how rare positives are.
        assert rare["triage"][lb]["recall"] == plain["triage"][lb]["recall"] or lb == "bullying"


def test_background_mix_draws_new_messages_every_epoch_and_keeps_the_corpus():
    from training.train import BackgroundMix, background_per_epoch

    corpus = [{"input_ids": [1, i], "labels": [1.0, 0, 0, 0]} for i in range(30)]
    pool = [{"input_ids": [2, i], "labels": [np.nan, 0, 0, 0]} for i in range(100)]
    per_epoch = background_per_epoch(len(corpus), 0.25)
    assert per_epoch == 10  # 10 / (30 + 10) = 25%
    mix = BackgroundMix(corpus, pool, per_epoch, seed=1)
    assert len(mix) == 40 and [mix[i] for i in range(30)] == corpus
    epoch0 = [mix[i]["input_ids"][1] for i in range(30, 40)]
    assert len(set(epoch0)) == 10  # no repeats within an epoch
    mix.set_epoch(1)
    epoch1 = [mix[i]["input_ids"][1] for i in range(30, 40)]
    assert epoch1 != epoch0 and len(mix) == 40
    mix.set_epoch(0)
    assert [mix[i]["input_ids"][1] for i in range(30, 40)] == epoch0  # seeded: reproducible
    with pytest.raises(IndexError):
        mix[40]
    with pytest.raises(ValueError, match="pool holds only 100"):
        BackgroundMix(corpus, pool, 101, seed=1)
    # Spread over groups: a small group gives what it has, the others their even share.
    groups = ["kk"] * 90 + ["ru"] * 4 + ["en"] * 6
    spread = BackgroundMix(corpus, pool, 12, seed=1, groups=groups)
    drawn = [groups[pool.index(spread[i])] for i in range(30, len(spread))]
    assert sorted(drawn) == sorted(["en"] * 4 + ["kk"] * 4 + ["ru"] * 4)
    small = BackgroundMix(corpus, pool, 30, seed=1, groups=groups)
    assert len(small) == 30 + 10 + 4 + 6  # ru and en give all they have
    # With lengths, every redraw keeps each slot's length: the sampler's grouping stays true.
    lengths = [i % 3 for i in range(100)]
    by_len = BackgroundMix(corpus, pool, 20, seed=1, lengths=lengths)
    first = [lengths[pool.index(by_len[i])] for i in range(30, 50)]
    by_len.set_epoch(1)
    assert [lengths[pool.index(by_len[i])] for i in range(30, 50)] == first
    assert [by_len[i] for i in range(30, 50)] != [pool[0]] * 20 and len({str(by_len[i]) for i in range(30, 50)}) == 20


def _tiny_override(config, bundle_dir, overrides):
    """The tiny run's config with another bundle folder and ``--set`` overrides."""
    path = config.save(bundle_dir.parent / f"{bundle_dir.name}.yaml")
    return load_config(path, [f"bundle_dir={bundle_dir}", *overrides])


def test_real_text_gate_refuses_a_bundle_over_its_limit_or_warns(tiny_bundle, tiny_run_config, tmp_path, capsys):
    from models.bundle import load_bundle
    from training.pipeline import BackgroundGateError, run_pipeline

    rates = load_bundle(tiny_bundle).metrics["background"]["flag_rate"]
    # The cell the tiny model flags most: a limit of half its rate must trip the gate.
    policy, lang, label, worst = max(((p, lg, lb, r[lb]) for p, per in rates.items() for lg, r in per.items()
                                      for lb in LABELS), key=lambda t: t[3])
    assert worst > 0, "the tiny model flags nothing; the gate cannot be exercised"
    limits = f"eval.max_flag_rate={{{policy}: {{{label}: {worst / 2}}}}}"
    common = ["train.reuse_model=true", limits]

    fail_cfg = _tiny_override(tiny_run_config, tmp_path / "refused", [*common, "eval.background_gate=fail"])
    with pytest.raises(BackgroundGateError, match=f"{policy} / {lang} / {label}"):
        run_pipeline(fail_cfg)
    assert not (tmp_path / "refused").exists()
    assert "GATE (real-text flag-rate limits)" in capsys.readouterr().err

    warn_cfg = _tiny_override(tiny_run_config, tmp_path / "warned", [*common, "eval.background_gate=warn"])
    bundle = load_bundle(run_pipeline(warn_cfg))
    gate = bundle.metrics["background"]["gate"]
    assert not gate["passed"] and any(f"{policy} / {lang} / {label}" in b for b in gate["breaches"])
    assert "**FAILED**" in (bundle.path / "README.md").read_text(encoding="utf-8")
    assert "WARNING" in capsys.readouterr().err


def test_model_card_says_when_no_int8_recipe_was_tried():
    from training.report import parity_text

    fp32 = {"max_abs_logit_diff": 1e-5, "atol": 1e-4}
    assert "no int8 recipe was tried" in parity_text({"fp32": fp32, "int8_attempts": [], "serving_variant": "fp32"})
    failed = {"recipe": "dynamic", "max_abs_proba_diff": 0.5, "mean_abs_proba_diff": 0.1,
              "flag_agreement": {"triage": 0.9}, "passed": False}
    text = parity_text({"fp32": fp32, "int8_attempts": [failed], "serving_variant": "fp32"})
    assert "no int8 recipe met the parity gate" in text and "`dynamic`" in text


def test_pinned_test_quality_judges_only_the_pinned_test_groups(tmp_path):
    from data.schema import Record
    from data.split import write_pins
    from training.evaluate import label_table, pinned_test_quality

    rng = np.random.default_rng(5)
    test = [Record(f"r{i}", f"text {i}", "en" if i % 2 else "kk", (), group=f"g{i}") for i in range(200)]
    y = (rng.random((200, 4)) < 0.3).astype(float)
    proba = np.clip(y * 0.3 + rng.random((200, 4)) * 0.7, 0, 1)
    ths = {"triage": np.full(4, 0.4)}
    # Groups 0–119 were in the pinned version's test split, 120–159 in its train split;
    # 160–199 are new. Only the first 120 are judged.
    pins = write_pins(test[:160], {r.id: ("test" if i < 120 else "train") for i, r in enumerate(test[:160])},
                      tmp_path / "pins.json")
    out = pinned_test_quality(test, proba, y, list(LABELS), ths, pins)
    expected = label_table(proba[:120], y[:120], [r.lang for r in test[:120]], list(LABELS), ths)
    assert out["messages"] == 120
    assert out["macro_pr_auc"] == {lang: block["macro_pr_auc"] for lang, block in expected.items()}
    assert out["recall"]["triage"]["all"]["self_harm"] == expected["all"]["labels"]["self_harm"]["triage"]["recall"]
    assert out["macro_pr_auc"]["all"] != label_table(proba, y, [r.lang for r in test], list(LABELS),
                                                      ths)["all"]["macro_pr_auc"]


def test_the_functional_suite_runs_after_export_and_can_refuse_the_bundle(tiny_bundle, tiny_run_config, tmp_path):
    from benchmarks.functional.suite import load_suite
    from models.bundle import load_bundle
    from training.pipeline import FunctionalGateError, run_pipeline

    bundle = load_bundle(tiny_bundle)
    functional = bundle.metrics["functional"]
    assert functional["cases"] == sum(len(f.cases) for f in load_suite())
    assert set(functional["functionalities"]["fp_tired"]["pass_rate"]) == set(bundle.policies)
    assert "## Functional suite" in (tiny_bundle / "README.md").read_text(encoding="utf-8")
    # No model passes every must case of every language: a floor of 100% must refuse it.
    config = _tiny_override(tiny_run_config, tmp_path / "refused", [
        "train.reuse_model=true", "eval.functional_gate=fail", "eval.functional_must_pass_rate=1.0"])
    with pytest.raises(FunctionalGateError, match="functional-suite floors missed"):
        run_pipeline(config)
    assert not (tmp_path / "refused").exists()
