"""Real, human-written background text (kk / ru / en) with permissive licences.

This folder holds one Parquet file per source (``<name>.parquet``, columns
``BACKGROUND_COLUMNS``); ``importers`` rebuilds each from pinned raw files of a
public repository, and ``SOURCES.md`` records where each came from, its
licence and how to rebuild it.

Background messages are sentences nobody on this project wrote (reviews,
forums, e-mail, news). They are known to carry no ``threat``, ``self_harm``
or ``bullying_disclosure``, but some may insult someone, so ``bullying`` is
marked unknown (``BackgroundConfig.unknown``): the loss masks it and every
metric skips it. Whole sources or domains are held out (``holdout``): they
never reach training and serve as the real-text evaluation set, on which the
training pipeline measures how often ordinary text is flagged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from data.dedup import normalize_text
from data.schema import LABELS, Record
from data.validate import validate_fields

#: Tag of every background record; the domain is tagged ``domain:<name>``.
BACKGROUND_TAG = "background"
DOMAIN_TAG_PREFIX = "domain:"
#: Where the importers write the Parquet files and the default model's config reads them.
BACKGROUND_DIR = "data/background"
#: Columns every background Parquet file has (``data.background.importers`` writes them).
BACKGROUND_COLUMNS = ("id", "text", "lang", "source", "licence", "origin_id", "domain")


@dataclass
class BackgroundConfig:
    """Where background text comes from and which part of it is held out for evaluation."""

    #: Folder of background Parquet files (the default config: ``data/background``);
    #: empty: no background text.
    path: str = ""
    #: Labels not known for background text (masked in the loss, skipped by metrics).
    unknown: list[str] = field(default_factory=lambda: ["bullying"])
    #: ``source`` or ``source:domain`` entries kept out of training: the real-text evaluation set.
    holdout: list[str] = field(default_factory=list)
    #: Evaluation messages kept per language (a seeded sample of the held-out text; 0: all).
    eval_per_lang: int = 2000

    def __post_init__(self) -> None:
        bad = [lb for lb in self.unknown if lb not in LABELS]
        if bad:
            raise ValueError(f"data.background.unknown has unknown labels {bad}; known: {list(LABELS)}")
        if self.eval_per_lang < 0:
            raise ValueError("data.background.eval_per_lang must be ≥ 0")

    def is_held_out(self, source: str, domain: str) -> bool:
        return source in self.holdout or f"{source}:{domain}" in self.holdout


def domain_of(record: Record) -> str:
    """The domain a background record came from ("" for other records)."""
    return next((t[len(DOMAIN_TAG_PREFIX):] for t in record.tags if t.startswith(DOMAIN_TAG_PREFIX)), "")


def load_background(config: BackgroundConfig) -> list[Record]:
    """Every background message under ``config.path`` as a record with ``config.unknown`` labels.

    Rows that fail validation (empty, too long, unknown language) raise
    ``ValueError`` naming the file and row, never the text.
    """
    if not config.path:
        return []
    import pyarrow.parquet as pq

    files = sorted(Path(config.path).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no background Parquet files in {config.path}")
    records = []
    for path in files:
        table = pq.read_table(path)
        missing = [c for c in BACKGROUND_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: background file lacks columns {missing}")
        for i, row in enumerate(table.select(list(BACKGROUND_COLUMNS)).to_pylist()):
            issues = validate_fields(row, f"{path}[{i}]")
            if issues:
                raise ValueError(f"invalid background row: {issues[0]}")
            records.append(Record(id=row["id"], text=normalize_text(row["text"]), lang=row["lang"],
                                  source=row["source"], unknown=tuple(config.unknown),
                                  tags=(BACKGROUND_TAG, DOMAIN_TAG_PREFIX + (row["domain"] or ""))))
    return records


def split_background(records: list[Record], config: BackgroundConfig,
                     seed: int = 13) -> tuple[list[Record], list[Record]]:
    """``(train, evaluation)``: held-out sources / domains go to evaluation, sampled to
    ``eval_per_lang`` per language; everything else is the training pool."""
    train, held = [], []
    for r in records:
        (held if config.is_held_out(r.source, domain_of(r)) else train).append(r)
    if config.eval_per_lang:
        rng = random.Random(seed)
        sample = []
        for lang in sorted({r.lang for r in held}):
            rs = [r for r in held if r.lang == lang]
            sample += rng.sample(rs, min(len(rs), config.eval_per_lang))
        held = sorted(sample, key=lambda r: r.id)
    return train, held
