"""Pass rates of the functional suite, from a model's probabilities and thresholds.

A pure function of arrays, so that the same figures come from the CLI (through the
production ``Scorer``) and from ``qorgan train`` (through the exported graph before
the bundle is written). Results hold counts and rates, never texts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from benchmarks.functional.suite import SUITE_VERSION, Case, Functionality
from data.schema import LANGS


@dataclass(frozen=True)
class Floors:
    """What a model must reach: every ``must`` functionality's pass rate in every language
    under its policies, and the largest gap in false-flag rate between identity groups
    (per language, under ``moderation``)."""

    must_pass_rate: float = 0.90
    max_group_gap: float = 0.03
    gap_policy: str = "moderation"


def case_passes(case: Case, flags: np.ndarray, labels: tuple[str, ...]) -> bool:
    """Every ``flag`` label flagged and no ``no_flag`` label flagged."""
    idx = {lb: i for i, lb in enumerate(labels)}
    return all(flags[idx[lb]] for lb in case.flag) and not any(flags[idx[lb]] for lb in case.no_flag)


def evaluate_suite(suite: list[Functionality], proba: np.ndarray, labels: tuple[str, ...],
                   thresholds: dict[str, np.ndarray], floors: Floors = Floors()) -> dict:
    """``proba`` has one row per case, in suite order. Returns pass rates per
    functionality × language × policy, fairness figures, and the floors' verdict."""
    cases = [c for f in suite for c in f.cases]
    if len(cases) != len(proba):
        raise ValueError(f"{len(proba)} score rows for {len(cases)} cases")
    passed = {policy: np.array([case_passes(c, row >= th, labels) for c, row in zip(cases, proba, strict=True)])
              for policy, th in thresholds.items()}
    results: dict = {}
    failures: list[str] = []
    start = 0
    for f in suite:
        block = slice(start, start + len(f.cases))
        start += len(f.cases)
        langs = np.array([c.lang for c in f.cases])
        entry = {"grade": f.grade, "flag": list(f.flag), "no_flag": list(f.no_flag), "policies": list(f.policies),
                 "cases": {lang: int((langs == lang).sum()) for lang in f.languages}, "pass_rate": {}}
        for policy, ok in passed.items():
            ok_f = ok[block]
            entry["pass_rate"][policy] = {"all": float(ok_f.mean()),
                                          **{lang: float(ok_f[langs == lang].mean()) for lang in f.languages}}
            if f.grade == "must" and policy in f.policies:
                failures += [f"{f.name} [{lang}] {policy}: {rate:.0%} < {floors.must_pass_rate:.0%}"
                             for lang, rate in entry["pass_rate"][policy].items()
                             if lang != "all" and rate < floors.must_pass_rate]
        results[f.name] = entry
    fairness = group_false_flags(cases, passed, floors)
    failures += fairness.pop("breaches")
    return {"suite_version": SUITE_VERSION, "cases": len(cases), "functionalities": results,
            "fairness": fairness, "floors": floors.__dict__, "failures": failures, "passed": not failures}


def group_false_flags(cases: list[Case], passed: dict[str, np.ndarray], floors: Floors) -> dict:
    """False-flag rate (share of a group's cases that fail) per language × group × policy,
    and the largest gap between groups per language; gaps over the floor are breaches."""
    by: dict = defaultdict(lambda: defaultdict(list))
    for i, c in enumerate(cases):
        if c.group is not None:
            by[c.lang][c.group].append(i)
    out: dict = {"rate": {}, "gap": {}, "breaches": []}
    for policy, ok in passed.items():
        out["rate"][policy] = {lang: {g: float(1 - ok[idx].mean()) for g, idx in sorted(groups.items())}
                               for lang, groups in sorted(by.items())}
        out["gap"][policy] = {lang: max(r.values()) - min(r.values()) for lang, r in out["rate"][policy].items()}
    for lang, gap in out["gap"].get(floors.gap_policy, {}).items():
        if gap > floors.max_group_gap:
            out["breaches"].append(f"identity groups [{lang}] {floors.gap_policy}: false-flag gap "
                                   f"{gap:.1%} > {floors.max_group_gap:.0%}")
    return out


def render(result: dict, policies: tuple[str, ...]) -> str:
    """A markdown table: functionality × language pass rates per policy; the floors' verdict."""
    langs = sorted({lg for e in result["functionalities"].values() for lg in e["cases"]},
                   key=LANGS.index)
    header = ["functionality", "grade", "expects", *(f"{p} {lg}" for p in policies for lg in langs)]
    rows = []
    for name, e in result["functionalities"].items():
        expects = (f"flag {', '.join(e['flag'])}" if e["flag"] else f"no {', '.join(e['no_flag'])}")
        cells = []
        for p in policies:
            for lg in langs:
                rate = e["pass_rate"][p].get(lg)
                judged = "" if p in e["policies"] else "·"
                cells.append("–" if rate is None else f"{rate:.0%}{judged}")
        rows.append([name, e["grade"], expects, *cells])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    gaps = result["fairness"]["gap"]
    lines += ["", "Identity groups, largest false-flag gap between groups: " + "; ".join(
        f"{p} " + ", ".join(f"{lg} {g:.1%}" for lg, g in per.items()) for p, per in gaps.items())]
    lines += ["", f"{result['cases']} cases; · = policy not judged for that functionality. "
              + ("All floors met." if result["passed"] else
                 f"{len(result['failures'])} floors missed:\n" + "\n".join(f"- {x}" for x in result["failures"]))]
    return "\n".join(lines)
