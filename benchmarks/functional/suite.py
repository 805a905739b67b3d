"""The functional suite: templated test cases (CheckList / HateCheck style).

One YAML file per functionality under ``templates/``::

    functionality: hyperbole_idiom          # unique snake_case id (the file's stem)
    description: death and violence words used as hyperbole about oneself
    grade: must                             # must | should
    flag: []                                # labels that must be flagged
    no_flag: [threat, self_harm]            # labels that must not be flagged
    policies: [moderation, triage]          # policies whose pass rate the floor applies to
    languages:
      en:
        templates: ["this {thing} is killing me", ...]
        slots: {thing: [homework, "math test", ...]}
      ru: {...}
      kk: {...}
      kk-ru: {...}                          # where it fits

A template's ``{slot}`` is filled with every value of that slot (the cartesian
product over its slots); the cases of a language are that expansion, sampled
down to ``MAX_CASES_PER_LANGUAGE`` with a fixed seed. A slot named ``group`` may
be a mapping ``{group name: [terms]}``: each case then records its group, for the
fairness figures (false-flag rate per group). A case passes under a policy when
every ``flag`` label is flagged and no ``no_flag`` label is.

The suite is evaluation data: its texts never enter training (a test checks it).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data.schema import LABELS, LANGS, POLICIES

TEMPLATES = Path(__file__).parent / "templates"
#: Version of the suite (bump when templates change meaning, not when cases are added).
#: 2: disclosures must not be flagged self_harm (a bare report is not a risk to life).
SUITE_VERSION = "2"
GRADES = ("must", "should")
MIN_CASES_PER_LANGUAGE = 20
MAX_CASES_PER_LANGUAGE = 40
#: Languages every functionality must cover (kk-ru where it fits).
REQUIRED_LANGS = ("kk", "ru", "en")
_SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Case:
    """One test message and what a correct model does with it."""

    text: str
    lang: str
    functionality: str
    grade: str
    flag: tuple[str, ...]
    no_flag: tuple[str, ...]
    group: str | None = None


@dataclass(frozen=True)
class Functionality:
    """One functionality: its expectations and its expanded cases."""

    name: str
    description: str
    grade: str
    flag: tuple[str, ...]
    no_flag: tuple[str, ...]
    policies: tuple[str, ...]
    cases: tuple[Case, ...] = field(repr=False)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.lang for c in self.cases))


def _expand(templates: list[str], slots: dict[str, Any], where: str) -> list[tuple[str, str | None]]:
    """Every (text, group) a language's templates give."""
    out: list[tuple[str, str | None]] = []
    for template in templates:
        names = list(dict.fromkeys(_SLOT.findall(template)))
        missing = [n for n in names if n not in slots]
        if missing:
            raise ValueError(f"{where}: template uses undefined slots {missing}")
        choices = []
        for name in names:
            values = slots[name]
            if isinstance(values, dict):  # {group: [terms]}
                choices.append([(term, grp) for grp, terms in values.items() for term in terms])
            else:
                choices.append([(v, None) for v in values])
        for combo in itertools.product(*choices):
            filled = dict(zip(names, (v for v, _ in combo), strict=True))
            group = next((g for _, g in combo if g is not None), None)
            out.append((_SLOT.sub(lambda m, f=filled: str(f[m.group(1)]), template), group))
    return out


def _labels(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(lb not in LABELS for lb in value):
        raise ValueError(f"{where}: {key} must be a list of labels from {list(LABELS)}, got {value!r}")
    return tuple(value)


def load_functionality(path: Path) -> Functionality:
    """Read and expand one template file; every error names the file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = path.name
    name = doc.get("functionality")
    if name != path.stem:
        raise ValueError(f"{where}: functionality {name!r} must equal the file name {path.stem!r}")
    grade = doc.get("grade")
    if grade not in GRADES:
        raise ValueError(f"{where}: grade must be one of {GRADES}")
    flag = _labels(doc.get("flag", []), "flag", where)
    no_flag = _labels(doc.get("no_flag", []), "no_flag", where)
    if set(flag) & set(no_flag) or not (flag or no_flag):
        raise ValueError(f"{where}: flag and no_flag must be disjoint and not both empty")
    policies = tuple(doc.get("policies", POLICIES))
    if not policies or any(p not in POLICIES for p in policies):
        raise ValueError(f"{where}: policies must be a non-empty subset of {list(POLICIES)}")
    languages = doc.get("languages") or {}
    missing = [lg for lg in REQUIRED_LANGS if lg not in languages]
    unknown = [lg for lg in languages if lg not in LANGS]
    if missing or unknown:
        raise ValueError(f"{where}: languages must include {list(REQUIRED_LANGS)} and only {list(LANGS)}; "
                         f"missing {missing}, unknown {unknown}")
    cases: list[Case] = []
    for lang, spec in languages.items():
        expanded = _expand(spec.get("templates", []), spec.get("slots", {}), f"{where} [{lang}]")
        unique = list(dict.fromkeys(expanded))
        if len(unique) < MIN_CASES_PER_LANGUAGE:
            raise ValueError(f"{where} [{lang}]: {len(unique)} distinct cases, at least "
                             f"{MIN_CASES_PER_LANGUAGE} needed")
        if len(unique) > MAX_CASES_PER_LANGUAGE:
            unique = random.Random(f"{name}:{lang}").sample(unique, MAX_CASES_PER_LANGUAGE)
        cases += [Case(text, lang, name, grade, flag, no_flag, group) for text, group in unique]
    return Functionality(name, str(doc.get("description", "")), grade, flag, no_flag, policies, tuple(cases))


def load_suite(folder: Path = TEMPLATES) -> list[Functionality]:
    """Every functionality of the suite, in file-name order."""
    return [load_functionality(p) for p in sorted(Path(folder).glob("*.yaml"))]
