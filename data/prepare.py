"""The data stage: labelled files in → validated, normalised, deduplicated
train / calib / test files out (plus a split manifest)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data.adapters import ADAPTERS, ColumnMap, parse_label_map
from data.background import BackgroundConfig, load_background, split_background
from data.dedup import find_duplicates, normalize_records
from data.formats import write_jsonl
from data.split import BACKGROUND_SPLITS, SPLIT_FILES, SplitConfig, assign_splits, write_splits
from data.validate import load_records


@dataclass
class SourceConfig:
    """Where labelled data comes from and how its columns map to records."""

    path: str = "data/corpus"
    adapter: str = "qorgan"
    label_map: str | None = None
    text_column: str | None = None
    default_lang: str | None = None

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter {self.adapter!r} is not one of {sorted(ADAPTERS)}")
        if self.label_map:
            parse_label_map(self.label_map)  # fail early on a bad spec

    def column_map(self) -> ColumnMap:
        kw = {}
        if self.text_column:
            kw["text_column"] = self.text_column
        if self.default_lang:
            kw["default_lang"] = self.default_lang
        if self.label_map:
            kw["label_map"] = parse_label_map(self.label_map)
        return ADAPTERS[self.adapter](**kw)


@dataclass
class PrepareConfig:
    """Configuration of the data stage."""

    source: SourceConfig = field(default_factory=SourceConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    near_duplicate_threshold: float = 0.8
    #: Real background text (partially labelled); ``path: ""`` leaves it out.
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    def __post_init__(self) -> None:
        if isinstance(self.source, dict):
            self.source = SourceConfig(**self.source)
        if isinstance(self.split, dict):
            self.split = SplitConfig(**self.split)
        if isinstance(self.background, dict):
            self.background = BackgroundConfig(**self.background)
        if not 0.5 <= self.near_duplicate_threshold <= 1.0:
            raise ValueError("near_duplicate_threshold must be in [0.5, 1.0]")


def prepare_dataset(config: PrepareConfig, out_dir: str | Path) -> Path:
    """Validate → normalise → deduplicate → split. Writes ``train/calib/test.jsonl``
    and ``split_manifest.json`` into ``out_dir`` and returns it.

    Exact duplicates of an earlier record in another group are dropped; near
    duplicates are kept but forced into the same split as what they resemble.
    With ``config.background.path`` set, the background text is written too:
    ``background_train.jsonl`` (the pool training samples from) and
    ``background_eval.jsonl`` (held-out sources / domains, for evaluation only).
    """
    records = normalize_records(load_records(config.source.path, config.source.column_map()))
    dups = find_duplicates(records, threshold=config.near_duplicate_threshold)
    group_of = {r.id: r.group for r in records}
    dropped = {a for a, b in dups.exact if group_of[a] != group_of[b]}
    kept = [r for r in records if r.id not in dropped]
    links = [(a, b) for a, b in dups.exact + dups.near if a not in dropped]
    assignment = assign_splits(kept, config.split, links)
    extra = {"source": asdict(config.source), "dedup": {**dups.summary(), "dropped_ids": sorted(dropped)}}
    if config.background.path:
        pool, held_out = split_background(load_background(config.background), config.background,
                                          config.split.seed)
        parts = dict(zip(BACKGROUND_SPLITS, (pool, held_out), strict=True))
        for name, rs in parts.items():
            write_jsonl([r.to_dict() for r in rs], Path(out_dir) / SPLIT_FILES[name])
        extra["background"] = {"config": asdict(config.background),
                               "counts": {name: dict(sorted(Counter(r.lang for r in rs).items()))
                                          for name, rs in parts.items()}}
    return write_splits(kept, assignment, out_dir, config.split, extra)
