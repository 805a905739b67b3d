"""Deterministic, stratified, group-aware train / calib / test splits.

A *unit* is the set of records that must land in the same split: one
``group`` (an original and its augmented variants) joined with every record it
near-duplicates. Units are stratified by language × label combination and
dealt out so that each stratum's split shares match the requested fractions.

A *pin file* (``SplitConfig.pinned``) freezes the split of groups that an earlier
version of the corpus already dealt: they keep their split, and only new units
are dealt, towards the same shares. Adding data then never moves a test message
into training, and test figures of two corpus versions can be compared on the
messages they share.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from data.schema import LABELS, Record

SPLITS: tuple[str, ...] = ("train", "calib", "test")
#: Real background text (data.background): the training pool and the held-out evaluation set.
BACKGROUND_SPLITS: tuple[str, ...] = ("background_train", "background_eval")
#: File names inside a prepared dataset folder.
SPLIT_FILES = {name: f"{name}.jsonl" for name in (*SPLITS, *BACKGROUND_SPLITS)}
MANIFEST_FILE = "split_manifest.json"


@dataclass
class SplitConfig:
    """Split fractions and seed."""

    train: float = 0.8
    calib: float = 0.1
    test: float = 0.1
    seed: int = 13
    #: A pin file (JSON: split name → group ids, see ``write_pins``) whose groups keep
    #: their split; ``None`` deals every unit afresh.
    pinned: str | None = None

    def __post_init__(self) -> None:
        fr = (self.train, self.calib, self.test)
        if any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be ≥ 0 and sum to 1, got {fr}")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "calib": self.calib, "test": self.test}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _stratum(records: list[Record]) -> str:
    """Stratum of a unit: language of its first record and its label combination."""
    first = min(records, key=lambda r: r.id)
    labels = sorted({lb for r in records for lb in r.labels}, key=LABELS.index)
    return f"{first.lang}|{'+'.join(labels) or 'clean'}"


def read_pins(path: str | Path) -> dict[str, str]:
    """Group id → split, from a pin file written by ``write_pins``."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    groups = doc.get("groups")
    if not isinstance(groups, dict) or not set(groups) <= set(SPLITS):
        raise ValueError(f"{path}: a pin file maps split names {SPLITS} to lists of group ids")
    pins: dict[str, str] = {}
    for split, ids in groups.items():
        for g in ids:
            if pins.setdefault(g, split) != split:
                raise ValueError(f"{path}: group {g!r} is pinned to both {pins[g]} and {split}")
    return pins


def write_pins(records: list[Record], assignment: dict[str, str], path: str | Path,
               note: str = "") -> Path:
    """Freeze a split: write the split of every group of ``records`` to ``path``."""
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r in records:
        groups[assignment[r.id]].add(r.group)
    doc = {"note": note, "groups": {s: sorted(g) for s, g in groups.items()}}
    Path(path).write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    return Path(path)


def _pinned_split(unit: list[Record], pins: dict[str, str]) -> str | None:
    """The split a unit is pinned to. A unit that joins groups pinned to different
    splits (a new near duplicate of two old groups) goes to the most protected one,
    test before calib before train, so no pinned test message ever leaves the test split."""
    splits = {pins[r.group] for r in unit if r.group in pins}
    return max(splits, key=SPLITS.index) if splits else None


def assign_splits(records: list[Record], config: SplitConfig | None = None,
                  links: list[tuple[str, str]] = ()) -> dict[str, str]:
    """Map record id → split name. ``links`` are extra must-stay-together pairs (near duplicates)."""
    config = config or SplitConfig()
    pins = read_pins(config.pinned) if config.pinned else {}
    uf = _UnionFind()
    for r in records:
        uf.union(r.id, f"group::{r.group}")
    for a, b in links:
        uf.union(a, b)
    units: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        units[uf.find(r.id)].append(r)

    by_stratum: dict[str, list[list[Record]]] = defaultdict(list)
    for unit in units.values():
        by_stratum[_stratum(unit)].append(unit)

    rng = random.Random(config.seed)
    fractions = config.fractions
    assignment: dict[str, str] = {}
    # Per-stratum targets by largest remainder, carrying the rounding left-over
    # from stratum to stratum so that small strata still add up to the global shares.
    carry = dict.fromkeys(SPLITS, 0.0)
    for stratum in sorted(by_stratum):
        unit_list = sorted(by_stratum[stratum], key=lambda u: min(r.id for r in u))
        rng.shuffle(unit_list)
        total = sum(len(u) for u in unit_list)
        raw = {s: fractions[s] * total + carry[s] for s in SPLITS}
        target = {s: math.floor(raw[s]) for s in SPLITS}
        for s in sorted(SPLITS, key=lambda s: raw[s] - target[s], reverse=True)[: total - sum(target.values())]:
            target[s] += 1
        filled = Counter()
        # Pinned units first: they count towards the targets the new units are dealt to.
        free = []
        for unit in unit_list:
            split = _pinned_split(unit, pins)
            if split is None:
                free.append(unit)
                continue
            filled[split] += len(unit)
            for r in unit:
                assignment[r.id] = split
        for unit in free:
            # Deal each unit to the split furthest below its target.
            split = max(SPLITS, key=lambda s: (target[s] - filled[s], -SPLITS.index(s)))
            filled[split] += len(unit)
            for r in unit:
                assignment[r.id] = split
        # Carry what was actually dealt, not the plan: units of several records
        # overshoot their target, and that must be made up in later strata.
        carry = {s: raw[s] - filled[s] for s in SPLITS}
    return assignment


def split_counts(records: list[Record], assignment: dict[str, str]) -> dict[str, dict]:
    """Counts per split: total, per language, per label, clean."""
    out: dict[str, dict] = {}
    for s in SPLITS:
        rs = [r for r in records if assignment[r.id] == s]
        out[s] = {
            "records": len(rs),
            "by_lang": dict(sorted(Counter(r.lang for r in rs).items())),
            "by_label": {lb: sum(lb in r.labels for r in rs) for lb in LABELS},
            "clean": sum(r.is_clean for r in rs),
        }
    return out


def write_splits(records: list[Record], assignment: dict[str, str], out_dir: str | Path,
                 config: SplitConfig, extra: dict | None = None) -> Path:
    """Write ``train/calib/test.jsonl`` and the split manifest into ``out_dir``."""
    from data.formats import write_jsonl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_jsonl([r.to_dict() for r in records if assignment[r.id] == s], out / SPLIT_FILES[s])
    manifest = {
        "config": asdict(config),
        "counts": split_counts(records, assignment),
        "ids": {s: sorted(r.id for r in records if assignment[r.id] == s) for s in SPLITS},
        **(extra or {}),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


def read_split(prepared_dir: str | Path, split: str) -> list[Record]:
    """Records of one split from a prepared dataset folder (a background split that
    was not prepared is empty)."""
    path = Path(prepared_dir) / SPLIT_FILES[split]
    if split in BACKGROUND_SPLITS and not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [Record.from_dict(json.loads(line)) for line in fh if line.strip()]
