"""CONTRIBUTING.md's lists of files to touch stay true.

A source file that spells a label name as a string, or names several language codes
(it enumerates languages), is a place to touch when a label or a language is added:
it must be in the matching list. Every file a list names must exist. The third list
(change the base model) is followed by every run of the suite: the tiny model is a
local folder set through ``model.base_model`` alone (conftest.tiny_run_config).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data.schema import LABELS, LANGS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
#: Code and configuration; tests, docs and data files name labels by design.
SOURCE_DIRS = ("data", "training", "models", "serving", "benchmarks", "tools")
SOURCE_SUFFIXES = (".py", ".yaml")


def _section(title: str) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"CONTRIBUTING.md has no section {title!r}"
    return match.group(1)


def _listed_files(section: str) -> set[str]:
    """Repository paths named in backticks (``../shared`` documents are outside it)."""
    paths = {m.split(" ")[0].rstrip("/") for m in re.findall(r"`([^`]+)`", section)}
    return {p for p in paths if not p.startswith("../") and ("/" in p or p.endswith((".py", ".md", ".yaml")))}


#: Data that names labels and languages by design (test cases, like the corpus).
DATA_DIRS = (ROOT / "benchmarks" / "functional" / "templates",)


def _sources() -> list[Path]:
    return [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*"))
            if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts
            and not any(p.is_relative_to(data) for data in DATA_DIRS)]


def _literals(names: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in names))


@pytest.mark.parametrize("title", ["Add a label", "Add a language", "Change the base model"])
def test_every_listed_file_exists(title):
    listed = _listed_files(_section(title))
    assert listed, title
    missing = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing, f"{title}: CONTRIBUTING.md names files that do not exist: {missing}"


def test_every_file_that_spells_a_label_is_in_the_label_list():
    listed = _listed_files(_section("Add a label"))
    pattern = _literals(LABELS)
    spelling = {p.relative_to(ROOT).as_posix() for p in _sources() if pattern.search(p.read_text(encoding="utf-8"))}
    assert "data/schema.py" in spelling  # the check sees the definition itself
    assert spelling <= listed, f"label names are spelled in files CONTRIBUTING.md does not list: {sorted(spelling - listed)}"


def test_every_file_that_enumerates_languages_is_in_the_language_list():
    listed = _listed_files(_section("Add a language"))
    enumerating = set()
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if sum(bool(_literals((lang,)).search(text)) for lang in LANGS) >= 2:
            enumerating.add(path.relative_to(ROOT).as_posix())
    assert "data/schema.py" in enumerating
    assert enumerating <= listed, \
        f"languages are enumerated in files CONTRIBUTING.md does not list: {sorted(enumerating - listed)}"
