"""The messages every benchmark runs on, chosen deterministically.

The bundle does not ship its training run's data. With ``--run-dir`` (the
training run folder, e.g. ``runs/default``) its prepared splits
(``<run_dir>/data/{train,calib,test}.jsonl``) give the test split (held out
from training, so quality is honest); without it the whole of ``data/corpus``
stands in as the "test" messages (speed only: there is no train split and no
honest quality). The chosen messages are shuffled with a fixed seed and
cycled up to the requested count. Texts stay in memory and are never printed
or written into results.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.schema import Record
from data.split import read_split

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT / "data" / "corpus"
#: How every "needs the training run" message names the way to give it.
RUN_DIR_HINT = "pass --run-dir (the training run folder, e.g. runs/default)"


def run_path(run_dir: Path | None, sub: str, what: str) -> Path:
    """``<run_dir>/<sub>``, which must exist: the bundle does not ship ``what``.

    Raises :class:`FileNotFoundError` naming ``--run-dir`` when no run folder was
    given, or naming the missing path when the given one lacks it: the run folder
    is never guessed (from the manifest or elsewhere).
    """
    if run_dir is None:
        raise FileNotFoundError(f"{what} is not in the bundle: {RUN_DIR_HINT}")
    path = Path(run_dir) / sub
    if not path.exists():
        raise FileNotFoundError(f"{what} is not in --run-dir {run_dir} (no {sub})")
    return path


def _corpus_records(corpus_dir: Path = CORPUS_DIR) -> list[Record]:
    records = []
    for path in sorted(corpus_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            records.extend(Record.from_dict(json.loads(line)) for line in fh if line.strip())
    return records


@dataclass(frozen=True)
class Splits:
    """Prepared splits of the training run (``None`` fields when no run folder is given)."""

    train: list[Record] | None
    calib: list[Record] | None
    test: list[Record] | None
    source: str


def load_splits(run_dir: Path | None) -> Splits:
    """The run's prepared splits; without ``run_dir``, the whole corpus as ``test``."""
    if run_dir is None:
        return Splits(None, None, _corpus_records(), source="data/corpus (no --run-dir)")
    data = run_path(run_dir, "data/test.jsonl", "the prepared test split").parent
    return Splits(*(read_split(data, s) for s in ("train", "calib", "test")),
                  source=f"{Path(run_dir).name}/data test split")


def cycle(items: list, n: int, seed: int = 0) -> list:
    """``items`` shuffled once with ``seed`` and repeated until there are ``n``."""
    if not items:
        raise ValueError("no messages to benchmark on")
    order = list(items)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def benchmark_texts(run_dir: Path | None, n: int = 2000, seed: int = 0) -> list[str]:
    """The ``n`` benchmark messages: the test split (or the corpus), shuffled with ``seed``, cycled to ``n``."""
    return cycle([r.text for r in load_splits(run_dir).test], n, seed)


def label_matrix(records: list[Record]) -> np.ndarray:
    """Multi-hot targets in label order."""
    return np.array([r.label_vector() for r in records], dtype=np.float32)
