"""The functional suite (benchmarks/functional): its committed templates, the pass-rate
and fairness arithmetic, the runner on the tiny bundle, and that no suite text is in
the training data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks.functional.evaluate import Floors, case_passes, evaluate_suite
from benchmarks.functional.suite import (
    MIN_CASES_PER_LANGUAGE,
    REQUIRED_LANGS,
    Case,
    Functionality,
    load_functionality,
    load_suite,
)
from data.schema import LABELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite() -> list[Functionality]:
    return load_suite()


def test_the_committed_suite_is_large_enough(suite):
    assert len(suite) >= 30
    assert sum(len(f.cases) for f in suite) >= 1800
    for f in suite:
        counts = Counter(c.lang for c in f.cases)
        assert all(counts[lang] >= MIN_CASES_PER_LANGUAGE for lang in REQUIRED_LANGS), (f.name, counts)
    assert {f.grade for f in suite} == {"must", "should"}


def test_every_case_validates_against_the_data_schema(suite):
    from data.validate import validate_fields

    for f in suite:
        for i, c in enumerate(f.cases):
            issues = validate_fields({"text": c.text, "lang": c.lang, "labels": list(c.flag)}, f"{f.name}:{i}")
            assert not issues, issues
            assert "{" not in c.text, f"{f.name}:{i} has an unfilled slot"


def test_identity_groups_are_recorded_and_balanced(suite):
    grouped = [c for f in suite for c in f.cases if c.group is not None]
    assert grouped, "no identity-group cases"
    for lang in REQUIRED_LANGS:
        per_group = Counter(c.group for c in grouped if c.lang == lang)
        assert len(per_group) >= 10 and min(per_group.values()) >= 3, (lang, per_group)


def test_no_suite_text_is_in_the_training_data(suite):
    import pyarrow.parquet as pq

    from data.dedup import canonical_key

    seen = set()
    for path in (ROOT / "data" / "corpus").glob("*.jsonl"):
        seen |= {canonical_key(json.loads(line)["text"]) for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()}
    for path in (ROOT / "data" / "background").glob("*.parquet"):
        seen |= {canonical_key(t) for t in pq.read_table(path, columns=["text"]).column("text").to_pylist()}
    # Very short texts ("ok", an emoji) are everyday messages that real text contains too;
    # what must not leak is a written test message.
    leaked = sorted({f"{f.name}:{c.lang}" for f in suite for c in f.cases
                     if len(canonical_key(c.text)) > 12 and canonical_key(c.text) in seen})
    assert not leaked, f"suite texts found in the training data: {leaked}"


def test_a_case_passes_when_flags_match_its_expectations():
    labels = tuple(LABELS)
    case = Case("x", "en", "f", "must", flag=("threat",), no_flag=("self_harm",))
    flags = dict.fromkeys(labels, False)
    assert not case_passes(case, np.array([flags[lb] for lb in labels]), labels)  # threat missed
    flags["threat"] = True
    assert case_passes(case, np.array([flags[lb] for lb in labels]), labels)
    flags["bullying"] = True  # neither expected nor forbidden: does not matter
    assert case_passes(case, np.array([flags[lb] for lb in labels]), labels)
    flags["self_harm"] = True
    assert not case_passes(case, np.array([flags[lb] for lb in labels]), labels)


def _write(folder: Path, name: str, grade: str, groups: bool = False) -> None:
    if groups:
        langs = {lang: {"templates": ["{group} message {n}"],
                        "slots": {"group": {"a": [f"{lang}-a"], "b": [f"{lang}-b"]}, "n": list(range(12))}}
                 for lang in REQUIRED_LANGS}
    else:
        langs = {lang: {"templates": [f"{lang} {name} {{n}}"], "slots": {"n": list(range(25))}}
                 for lang in REQUIRED_LANGS}
    doc = {"functionality": name, "description": "test", "grade": grade, "flag": [],
           "no_flag": ["self_harm"], "policies": ["moderation"], "languages": langs}
    (folder / f"{name}.yaml").write_text(json.dumps(doc), encoding="utf-8")


def test_pass_rates_floors_and_group_gaps(tmp_path):
    _write(tmp_path, "clean_must", "must")
    _write(tmp_path, "groups", "must", groups=True)
    suite = load_suite(tmp_path)
    cases = [c for f in suite for c in f.cases]
    proba = np.zeros((len(cases), len(LABELS)))
    sh = LABELS.index("self_harm")
    ths = {"moderation": np.full(len(LABELS), 0.5), "triage": np.full(len(LABELS), 0.5)}
    assert evaluate_suite(suite, proba, tuple(LABELS), ths)["passed"]
    # Flag self_harm on 20% of clean_must's kk cases and on every "b" group case in ru.
    kk = [i for i, c in enumerate(cases) if c.functionality == "clean_must" and c.lang == "kk"]
    proba[kk[: len(kk) // 5], sh] = 0.9
    proba[[i for i, c in enumerate(cases) if c.group == "b" and c.lang == "ru"], sh] = 0.9
    result = evaluate_suite(suite, proba, tuple(LABELS), ths, Floors(must_pass_rate=0.9, max_group_gap=0.03))
    assert result["functionalities"]["clean_must"]["pass_rate"]["moderation"]["kk"] == pytest.approx(0.8)
    assert result["fairness"]["rate"]["moderation"]["ru"] == {"a": 0.0, "b": 1.0}
    assert result["fairness"]["gap"]["moderation"]["en"] == 0.0
    assert not result["passed"]
    assert any(x.startswith("clean_must [kk] moderation: 80%") for x in result["failures"])
    assert any("identity groups [ru]" in x for x in result["failures"])
    assert not any("[en]" in x for x in result["failures"])


def test_template_errors_name_the_file(tmp_path):
    _write(tmp_path, "ok", "must")
    doc = json.loads((tmp_path / "ok.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(json.dumps({**doc, "functionality": "bad", "flag": ["nonsense"]}))
    with pytest.raises(ValueError, match="bad.yaml: flag must be a list of labels"):
        load_functionality(tmp_path / "bad.yaml")
    del doc["languages"]["kk"]
    (tmp_path / "bad.yaml").write_text(json.dumps({**doc, "functionality": "bad"}))
    with pytest.raises(ValueError, match=r"bad.yaml: languages must include"):
        load_functionality(tmp_path / "bad.yaml")


def test_the_runner_on_the_tiny_bundle(tiny_bundle, tmp_path, capsys):
    from benchmarks.functional.__main__ import main

    out = tmp_path / "functional.json"
    # Floors no model can miss: exit 0; floors no model can meet: exit 1.
    assert main(["--bundle", str(tiny_bundle), "--out", str(out), "--must-pass-rate", "0",
                 "--max-group-gap", "1"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    suite = load_suite()
    assert result["cases"] == sum(len(f.cases) for f in suite)
    assert set(result["functionalities"]) == {f.name for f in suite}
    table = capsys.readouterr().out
    assert "| functionality |" in table and "All floors met." in table
    assert main(["--bundle", str(tiny_bundle), "--out", str(out), "--must-pass-rate", "1.01"]) == 1
    assert "floors missed" in capsys.readouterr().out
    # No suite text is written to the results or printed.
    texts = [c.text for f in suite for c in f.cases if len(c.text) > 12]
    dumped = out.read_text(encoding="utf-8")
    assert not any(t in dumped for t in texts[:: max(1, len(texts) // 200)])
