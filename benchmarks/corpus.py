"""The messages every benchmark runs on, chosen deterministically from the bundle's own data.

The bundle's ``bundle.json`` records the training run's ``run_dir``; its
prepared splits (``<run_dir>/data/{train,calib,test}.jsonl``) give the test
split (held out from training, so quality is honest), which is shuffled with
a fixed seed and cycled up to the requested count. Texts stay in memory and
are never printed or written into results.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.schema import Record
from data.split import read_split
from models.bundle import load_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT / "data" / "corpus"


def resolve_run_dir(bundle_path: str | Path) -> Path | None:
    """The training run folder named in the bundle's manifest, if it still exists here."""
    bundle = load_bundle(bundle_path, verify=False)
    run_dir = (bundle.manifest.get("config") or {}).get("run_dir")
    if not run_dir:
        return None
    for candidate in (Path(run_dir), REPO_ROOT / run_dir, Path(bundle_path).resolve().parent / run_dir):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _corpus_records(corpus_dir: Path = CORPUS_DIR) -> list[Record]:
    records = []
    for path in sorted(corpus_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            records.extend(Record.from_dict(json.loads(line)) for line in fh if line.strip())
    return records


@dataclass(frozen=True)
class Splits:
    """Prepared splits of the bundle's training run (``None`` fields when unavailable)."""

    train: list[Record] | None
    calib: list[Record] | None
    test: list[Record] | None
    source: str


def load_splits(bundle_path: str | Path) -> Splits:
    """The bundle's prepared splits, or the whole corpus as ``test`` when the run folder is gone."""
    run_dir = resolve_run_dir(bundle_path)
    if run_dir is not None and (run_dir / "data" / "test.jsonl").is_file():
        data = run_dir / "data"
        return Splits(*(read_split(data, s) for s in ("train", "calib", "test")),
                      source=f"{run_dir.name}/data test split")
    return Splits(None, None, _corpus_records(), source="data/corpus (run folder not found)")


def cycle(items: list, n: int, seed: int = 0) -> list:
    """``items`` shuffled once with ``seed`` and repeated until there are ``n``."""
    if not items:
        raise ValueError("no messages to benchmark on")
    order = list(items)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def benchmark_texts(bundle_path: str | Path, n: int = 2000, seed: int = 0) -> list[str]:
    """The ``n`` benchmark messages: the test split, shuffled with ``seed``, cycled to ``n``."""
    return cycle([r.text for r in load_splits(bundle_path).test], n, seed)


def label_matrix(records: list[Record]) -> np.ndarray:
    """Multi-hot targets in label order."""
    return np.array([r.label_vector() for r in records], dtype=np.float32)
