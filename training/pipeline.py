"""The whole training run as one function from files to files:

    labelled data → prepared splits → fine-tuned model → calibration and
    policy thresholds → evaluation (with the TF-IDF baseline) → ONNX fp32 +
    int8, parity-checked → model bundle.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.functional.evaluate import Floors, evaluate_suite
from benchmarks.functional.suite import load_suite
from data.prepare import prepare_dataset
from data.schema import LABELS, LANGS, priority_spec
from data.split import MANIFEST_FILE, read_split
from models.bundle import MODEL_FILE, MODEL_FP32_FILE, TOKENIZER_FILE, Bundle, write_bundle
from training.baseline import TfidfBaseline
from training.calibrate import PolicyFitter, TemperatureScaler
from training.config import RunConfig
from training.evaluate import (
    calibration_summary,
    flag_rates,
    gate_breaches,
    label_table,
    macro_pr_auc_gap,
    pinned_test_quality,
    plot_pr_curves,
    plot_reliability,
)
from training.export import (
    ONNX_INPUTS,
    ONNX_OUTPUT,
    ParityError,
    check_fp32_parity,
    check_int8_parity,
    export_onnx,
    int8_file,
    onnx_logits,
    quantize_int8,
)
from training.report import model_card
from training.train import (
    MODEL_SUBDIR,
    load_trained,
    predict_logits,
    resolve_base_model,
    train_model,
)

CONFIG_FILE = "config.yaml"
PLOTS = ("reliability.png", "pr_curves.png")


class BackgroundGateError(RuntimeError):
    """Held-out ordinary text is flagged more often than ``eval.max_flag_rate`` allows."""


class FunctionalGateError(RuntimeError):
    """The model misses a floor of the functional suite (``eval.functional_*``)."""


def apply_gate(what: str, misses: list[str], mode: str, setting: str, error: type[Exception], where: str) -> None:
    """Print every missed limit; refuse the bundle (``fail``) or write it with a warning (``warn``)."""
    for line in misses:
        print(f"[qorgan]   GATE ({what}): {line}", file=sys.stderr)
    if misses and mode == "fail":
        raise error(f"bundle not written: {len(misses)} {what} missed ({'; '.join(misses[:5])}"
                    f"{' …' if len(misses) > 5 else ''}). Fix the model or data, or rerun with "
                    f"--set train.reuse_model=true --set eval.{setting}=warn to write it anyway.")
    if misses:
        print(f"[qorgan] WARNING: {len(misses)} {what} missed; the bundle is written because "
              f"eval.{setting} is 'warn' (see {where})", file=sys.stderr)


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]):
    """Print a stage's start and duration (to stderr, never any message text)."""
    print(f"[qorgan] {name} …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 1)
    print(f"[qorgan] {name} done in {timings[name]:.1f} s", file=sys.stderr, flush=True)


def _labels(records) -> np.ndarray:
    return np.array([r.label_vector() for r in records], dtype=np.float32)


def _thresholds(calibration_policies: dict) -> dict[str, np.ndarray]:
    return {p: np.array([per[lb]["threshold"] for lb in LABELS]) for p, per in calibration_policies.items()}


def run_pipeline(config: RunConfig) -> Path | None:
    """Run every stage and write the bundle to ``config.bundle_dir``.

    Returns the bundle path (``None`` on non-main processes of a distributed run).
    """
    timings: dict[str, float] = {}
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / CONFIG_FILE)
    data_dir = run_dir / "data"

    with stage("prepare data (validate, normalise, deduplicate, split)", timings):
        # A reused model keeps the splits it was trained on: re-splitting could
        # move its training messages into calib or test.
        if not (config.train.reuse_model and (data_dir / MANIFEST_FILE).is_file()):
            prepare_dataset(config.data, data_dir)
        train, calib, test, bg_train, bg_eval = (read_split(data_dir, s) for s in (
            "train", "calib", "test", "background_train", "background_eval"))
        print(f"[qorgan]   train {len(train)}, calib {len(calib)}, test {len(test)}; background: "
              f"training pool {len(bg_train)}, held-out evaluation {len(bg_eval)}", file=sys.stderr)
    with stage("base model", timings):
        base = resolve_base_model(config.model)
    if config.train.reuse_model:
        with stage(f"reuse the fine-tuned model in {run_dir / MODEL_SUBDIR}", timings):
            model, tokenizer = load_trained(run_dir / MODEL_SUBDIR)
    else:
        with stage("fine-tune", timings):
            model, tokenizer, trainer = train_model(config, train, calib, run_dir, background=bg_train)
        if not trainer.is_world_process_zero():
            return None

    y_calib, y_test = _labels(calib), _labels(test)
    test_texts = [r.text for r in test]
    test_langs = [r.lang for r in test]
    max_len, bs = config.model.max_length, config.train.eval_batch_size
    with stage("score calib and test splits", timings):
        calib_logits = predict_logits(model, tokenizer, [r.text for r in calib], max_len, bs)
        test_logits = predict_logits(model, tokenizer, test_texts, max_len, bs)
    with stage("calibrate and fit policy thresholds", timings):
        prevalence = np.array([config.policy.prevalence.get(lb, np.nan) for lb in LABELS])
        scaler = TemperatureScaler(prevalence=prevalence).fit(calib_logits, y_calib)
        policies = PolicyFitter(config.policy).fit(scaler.transform(calib_logits), y_calib, list(LABELS))
        thresholds = _thresholds(policies)
        calibration = {
            "method": "temperature+prior_shift",
            "fitted_on": "calib",
            # proba = sigmoid(logit / temperature + logit_offset); the offset moves the calib
            # split's base rate to the deployment prevalence (training.calibrate.prior_offset).
            "labels": {lb: {"temperature": float(t), "logit_offset": float(o), "calib_base_rate": float(b),
                            "prevalence": config.policy.prevalence.get(lb)}
                       for lb, t, o, b in zip(LABELS, scaler.temperature_, scaler.offset_, scaler.base_rate_,
                                              strict=True)},
            "policies": policies,
        }
    export_dir = run_dir / "onnx"
    with stage("export ONNX fp32 and check parity", timings):
        fp32_path = export_onnx(model, tokenizer, export_dir, config.export.opset)
        fp32_logits = onnx_logits(fp32_path, tokenizer, test_texts, max_len, bs)
        parity: dict = {"fp32": check_fp32_parity(test_logits, fp32_logits, config.export), "int8_attempts": []}
        tokenizer.save_pretrained(str(export_dir / "tokenizer"))
    int8_path = int8_logits = None
    for recipe in config.export.int8_recipes:
        with stage(f"quantise int8 ({recipe}) and check parity", timings):
            path = quantize_int8(fp32_path, export_dir / int8_file(recipe), recipe)
            logits = onnx_logits(path, tokenizer, test_texts, max_len, bs)
            report = {"recipe": recipe, **check_int8_parity(test_logits, logits, scaler.transform,
                                                              thresholds, config.export)}
            parity["int8_attempts"].append(report)
            print(f"[qorgan]   int8 {recipe}: {'passed' if report['passed'] else 'failed: ' + '; '.join(report['problems'])}",
                  file=sys.stderr)
        if report["passed"]:
            int8_path, int8_logits = path, logits
            break
    if int8_path is None and config.export.require_int8:
        raise ParityError("ONNX parity check failed, bundle not written: no int8 recipe passed "
                          f"({'; '.join(a['recipe'] + ': ' + ', '.join(a['problems']) for a in parity['int8_attempts'])})")
    serving_variant = "int8" if int8_path is not None else "fp32"
    parity.update(serving_variant=serving_variant,
                  int8_recipe=parity["int8_attempts"][-1]["recipe"] if int8_path is not None else None)

    metrics: dict = {"test": {}, "macro_pr_auc": {}}
    served_path = int8_path if int8_path is not None else fp32_path
    with stage("evaluate on the test split", timings):
        test_proba = scaler.transform(test_logits)
        variants = {"torch": test_proba, f"onnx_{serving_variant}":
                    scaler.transform(int8_logits if int8_path is not None else fp32_logits)}
        for name, proba in variants.items():
            metrics["test"][name] = label_table(proba, y_test, test_langs, list(LABELS), thresholds)
        # Calibration is judged at the test split's own base rate (that of calib), before the
        # prior shift: the shifted scores are calibrated for traffic that test does not resemble.
        at_base_rate = scaler.transform(test_logits, shift=False)
        metrics["calibration"] = calibration_summary(test_logits, at_base_rate, y_test, list(LABELS))
        curves = {"qorgan": test_proba}
        if config.baseline:
            bl = TfidfBaseline().fit([r.text for r in train], _labels(train))
            bl_calib_logits = bl.decision_function([r.text for r in calib])
            bl_scaler = TemperatureScaler().fit(bl_calib_logits, y_calib)
            bl_policies = PolicyFitter(config.policy).fit(bl_scaler.transform(bl_calib_logits), y_calib,
                                                          list(LABELS))
            bl_proba = bl_scaler.transform(bl.decision_function(test_texts))
            metrics["test"]["baseline"] = label_table(bl_proba, y_test, test_langs, list(LABELS),
                                                      _thresholds(bl_policies))
            curves["tfidf baseline"] = bl_proba
            metrics["gap_vs_baseline"] = macro_pr_auc_gap(test_proba, bl_proba, y_test, test_langs,
                                                          config.policy.bootstrap_samples,
                                                          config.policy.confidence)
        for name, table in metrics["test"].items():
            metrics["macro_pr_auc"][name] = {lang: block["macro_pr_auc"] for lang, block in table.items()}
        if config.data.split.pinned:
            metrics["test_pinned"] = pinned_test_quality(test, test_proba, y_test, list(LABELS), thresholds,
                                                         config.data.split.pinned)
        plot_reliability(test_logits, at_base_rate, y_test, run_dir / PLOTS[0])
        plot_pr_curves(curves, y_test, list(LABELS), run_dir / PLOTS[1])
        metrics["parity"] = parity
        manifest = json.loads((data_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        metrics["data"] = {"counts": manifest["counts"], "dedup": {k: v for k, v in manifest["dedup"].items()
                                                                   if k != "dropped_ids"}}
    if bg_eval:
        with stage("flag rates on held-out real text", timings):
            bg_proba = scaler.transform(onnx_logits(served_path, tokenizer, [r.text for r in bg_eval], max_len, bs))
            rates = flag_rates(bg_proba, [r.lang for r in bg_eval], list(LABELS), thresholds,
                               config.data.background.unknown)
            breaches = gate_breaches(rates, config.eval.max_flag_rate)
            metrics["background"] = {
                "messages": dict(sorted(Counter(r.lang for r in bg_eval).items())),
                "sources": sorted({r.source for r in bg_eval}), "holdout": config.data.background.holdout,
                "unknown": config.data.background.unknown,
                "training_pool": len(bg_train), "background_share": config.train.background_share,
                "flag_rate": rates,
                "gate": {"mode": config.eval.background_gate, "limits": config.eval.max_flag_rate,
                         "breaches": breaches, "passed": not breaches},
            }
        apply_gate("real-text flag-rate limits", breaches, config.eval.background_gate, "background_gate",
                   BackgroundGateError, "metrics.json → background.gate")
    if config.eval.functional_gate != "off":
        with stage("functional suite (benchmarks/functional)", timings):
            suite = load_suite()
            texts = [c.text for f in suite for c in f.cases]
            suite_proba = scaler.transform(onnx_logits(served_path, tokenizer, texts, max_len, bs))
            floors = Floors(must_pass_rate=config.eval.functional_must_pass_rate,
                            max_group_gap=config.eval.functional_max_group_gap)
            metrics["functional"] = evaluate_suite(suite, suite_proba, tuple(LABELS), thresholds, floors)
        apply_gate("functional-suite floors", metrics["functional"]["failures"], config.eval.functional_gate,
                   "functional_gate", FunctionalGateError, "metrics.json → functional")
    metrics["timings_s"] = timings

    with stage("write bundle", timings):
        data_summary = {"records": sum(c["records"] for c in manifest["counts"].values()),
                        "splits": {s: c["records"] for s, c in manifest["counts"].items()}}
        if bg_train:
            data_summary["background"] = (
                f"Plus real, human-written background text (`data/background/SOURCES.md`): a pool of "
                f"{len(bg_train)} messages, of which {config.train.background_share:.0%} of each epoch's "
                f"examples are drawn afresh every epoch, labelled negative for every label but "
                f"{', '.join(config.data.background.unknown) or 'none'} (unknown, masked in the loss).")
        languages = [lg for lg in LANGS if any(r.lang == lg for r in train)]
        card = model_card(name=config.name, version=config.version, base_model=config.model.base_model,
                          pooling=config.model.pooling, labels=list(LABELS), languages=languages, calibration=calibration,
                          metrics=metrics, data_summary=data_summary)
        bundle: Bundle = write_bundle(
            config.bundle_dir,
            name=config.name,
            version=config.version,
            base_model=config.model.base_model if base == config.model.base_model
            else f"{config.model.base_model} ({base})",
            labels=list(LABELS),
            languages=languages,
            priority=priority_spec(),
            max_length=max_len,
            onnx_inputs=ONNX_INPUTS,
            onnx_output=ONNX_OUTPUT,
            serving_variant=serving_variant,
            files={**({MODEL_FILE: int8_path} if int8_path is not None else {}), MODEL_FP32_FILE: fp32_path,
                   TOKENIZER_FILE: export_dir / "tokenizer" / "tokenizer.json",
                   PLOTS[0]: run_dir / PLOTS[0], PLOTS[1]: run_dir / PLOTS[1]},
            calibration=calibration,
            metrics=metrics,
            card=card,
            config=config.to_dict(),
            serving=asdict(config.serving),
        )
    total = sum(timings.values())
    print(f"[qorgan] bundle written to {bundle.path} (total {total:.0f} s)", file=sys.stderr)
    return bundle.path
