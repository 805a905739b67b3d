"""The scorer: tokenisation identical to training, calibrated probabilities,
policy flags, triage priority, micro-batching, and no torch on the scoring path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.bundle import load_bundle
from serving.scorer import Score, Scorer, ScorerConfig, available_cores, default_intra_op_threads

# Neutral, synthetic messages in every language, with one far over max_length.
TEXTS = [
    "see you at the library after lunch",
    "Привет, завтра контрольная по математике?",
    "Сәлем, ертең мектепке барасың ба?",
    "сен бүгін келесің бе, мы в кино идём",
    "ok",
    "",
    "a much longer message about homework, football practice and a birthday party " * 20,
    "Ertem kelem, ty gde?",
]


@pytest.fixture(scope="module")
def scorer(tiny_bundle) -> Scorer:
    return Scorer.from_bundle(tiny_bundle, batch_size=3)


@pytest.fixture(scope="module")
def fp32_scorer(tiny_bundle) -> Scorer:
    return Scorer.from_bundle(tiny_bundle, variant="fp32", batch_size=3)


def test_token_ids_match_the_training_tokenizer(scorer, tiny_base_model):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_base_model))
    expected = hf(TEXTS, truncation=True, max_length=scorer.max_length, padding=True)
    got = scorer.encode(TEXTS)
    np.testing.assert_array_equal(got.input_ids, np.array(expected["input_ids"]))
    np.testing.assert_array_equal(got.attention_mask, np.array(expected["attention_mask"]))
    assert got.input_ids.shape[1] == scorer.max_length  # the long text was truncated
    assert (got.input_ids[got.attention_mask == 0] == hf.pad_token_id).all()


def test_proba_is_sigmoid_of_logits_over_temperature_plus_prior_offset(scorer, tiny_bundle):
    logits = scorer.logits(TEXTS)
    bundle = load_bundle(tiny_bundle)
    temperatures, offsets = bundle.temperatures(), bundle.logit_offsets()
    # The tiny bundle is built with the default deployment prevalence: the offsets are real.
    assert np.all(offsets < 0)
    expected = 1 / (1 + np.exp(-(logits / temperatures + offsets)))
    np.testing.assert_allclose(scorer.proba(TEXTS), expected, rtol=1e-5, atol=1e-6)
    assert logits.shape == (len(TEXTS), len(scorer.labels))
    assert logits.dtype == np.float32


def test_micro_batches_keep_input_order(fp32_scorer):
    together = fp32_scorer.logits(TEXTS)
    alone = np.vstack([fp32_scorer.logits([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    order = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = fp32_scorer.logits([TEXTS[i] for i in order])
    np.testing.assert_allclose(shuffled, together[order], atol=1e-4)


def test_int8_serving_path_meets_the_production_parity_gates(int8_bundle, mini_records):
    from training.config import ExportConfig
    from training.export import check_int8_parity

    gates = ExportConfig()  # the production gates: |Δp| ≤ 0.03, flags agree on ≥ 99%
    int8 = Scorer.from_bundle(int8_bundle, intra_op_threads=1)
    fp32 = Scorer.from_bundle(int8_bundle, variant="fp32", intra_op_threads=1)
    assert int8.bundle.serving_variant == "int8" and int8.bundle.model_path().name == "model.onnx"
    texts = [r["text"] for r in mini_records]
    p8, p32 = int8.proba(texts), fp32.proba(texts)
    assert 0 < np.abs(p8 - p32).max() <= gates.int8_max_proba_diff  # a different graph, within the gate
    for policy in int8.policies:
        agreement = np.mean(np.all(int8.flags(p8, policy) == fp32.flags(p32, policy), axis=1))
        assert agreement >= gates.int8_min_flag_agreement, policy
    # The export's own gate says the same of the served logits.
    report = check_int8_parity(fp32.logits(texts), int8.logits(texts), int8.bundle.calibrate,
                               int8.thresholds, gates)
    assert report["passed"], report["problems"]


def test_flags_are_proba_at_or_over_the_policy_threshold(scorer, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    for policy in bundle.policies:
        th = bundle.thresholds(policy)
        proba = np.vstack([th, np.nextafter(th, -1), np.ones_like(th), np.zeros_like(th)])
        flags = scorer.flags(proba, policy)
        assert flags[0].all() and not flags[1].any() and flags[2].all() and not flags[3].any()


def test_priority_follows_the_bundle_rules(scorer, tiny_bundle):
    rules = load_bundle(tiny_bundle).priority
    labels = scorer.labels
    assert scorer.priorities(np.zeros((1, len(labels)), bool)) == [rules["default"]]
    for i, label in enumerate(labels):
        flags = np.zeros((1, len(labels)), bool)
        flags[0, i] = True
        expected = next(r["level"] for r in rules["rules"] if label in r["any_of"])
        assert scorer.priorities(flags) == [expected]
    # The first matching rule wins: everything flagged is the most urgent level.
    assert scorer.priorities(np.ones((2, len(labels)), bool)) == [rules["rules"][0]["level"]] * 2


def test_priority_levels_match_the_label_spec(scorer):
    def prio(*flagged):
        return scorer.priorities(np.array([[lb in flagged for lb in scorer.labels]]))[0]

    assert prio("self_harm", "bullying") == "urgent"
    assert prio("threat") == prio("bullying_disclosure") == "high"
    assert prio("bullying") == "normal"
    assert prio() == "low"
    assert scorer.priority_levels == ("urgent", "high", "normal", "low")


def test_score_returns_one_typed_result_per_text(scorer, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    results = scorer.score(TEXTS, policy="triage")
    proba = scorer.proba(TEXTS)
    assert len(results) == len(TEXTS)
    for row, result in zip(proba, results, strict=True):
        assert isinstance(result, Score)
        assert list(result.scores) == list(bundle.labels) == list(result.flags)
        assert result.model_version == bundle.version and result.policy == "triage"
        np.testing.assert_allclose(list(result.scores.values()), row, atol=1e-6)
        assert result.flags == {lb: result.scores[lb] >= t
                                for lb, t in zip(bundle.labels, bundle.thresholds("triage"), strict=True)}
        assert result.priority in bundle.priority["levels"]
    assert scorer.score([]) == []
    assert scorer.proba([]).shape == (0, len(bundle.labels))


def test_bad_calls_fail_clearly(scorer):
    with pytest.raises(ValueError, match="unknown policy"):
        scorer.score(["hello"], policy="strictest")
    with pytest.raises(TypeError, match="list of texts"):
        scorer.proba("hello")
    with pytest.raises(TypeError, match="not a str"):
        scorer.proba(["hello", 3])
    with pytest.raises(ValueError):
        ScorerConfig(batch_size=0)


def test_threads_default_to_cores_per_worker(tiny_bundle):
    assert default_intra_op_threads(1) == available_cores()
    assert default_intra_op_threads(available_cores() * 4) == 1
    assert ScorerConfig(workers=2).threads == max(1, available_cores() // 2)
    scorer = Scorer.from_bundle(tiny_bundle, intra_op_threads=1)
    assert scorer.session.get_session_options().intra_op_num_threads == 1


def test_serving_never_imports_torch_transformers_data_or_training(tiny_bundle):
    root = Path(__file__).resolve().parents[1]
    # serving.service reads the bundle's manifest when imported (its request limits).
    env = {**os.environ, "QORGAN_BUNDLE": str(tiny_bundle)}
    code = ("import sys, serving.scorer, serving.batch, serving.cli, serving.service; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'transformers', 'data', 'training'}); print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    banned = re.compile(r"^\s*(from|import)\s+(torch|transformers|data|training)\b", re.MULTILINE)
    for source in (root / "serving").glob("*.py"):
        assert not banned.search(source.read_text(encoding="utf-8")), source.name


def test_the_blank_rule_and_its_openapi_pattern_agree():
    """``is_blank`` is ``CONTENT_PATTERN`` not matching: the document states the rule the API applies."""
    import re
    import unicodedata

    from serving.scorer import CONTENT_PATTERN, is_blank

    for text in ["\u0000", "\u200b\u2060\ufeff", " \t\n\u00a0\u3000", "\u2028"]:
        assert is_blank(text), repr(text)
    for text in ["a", "😀", "?!", "5", "\u200dя", "\ue000"]:
        assert not is_blank(text), repr(text)
    pattern = re.compile(CONTENT_PATTERN)
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        content = not (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp"))
        assert bool(pattern.search(ch)) is content is not is_blank(ch), hex(cp)
