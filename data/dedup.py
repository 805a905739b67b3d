"""Text normalisation and exact / near-duplicate detection.

Near duplicates are found with MinHash over character shingles of a
canonical key (datasketch's ``MinHashLSH``), so that reworded copies with a
changed name or an extra emoji are caught, not only byte-identical ones.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, replace

from data.schema import Record

# Zero-width and BOM characters that change bytes but not what is read.
# U+200D (zero-width joiner) is kept: emoji sequences need it.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u2060\ufeff\u00ad"))
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Unicode NFC, invisible characters removed, whitespace runs collapsed to one space."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = "".join(ch if unicodedata.category(ch) != "Cc" or ch.isspace() else " " for ch in text)
    return " ".join(text.split())


def canonical_key(text: str) -> str:
    """Case-, punctuation- and emoji-insensitive form used for duplicate detection."""
    key = _NON_WORD.sub(" ", normalize_text(text).casefold())
    return " ".join(key.split())


def _shingles(key: str, k: int = 4) -> set[bytes]:
    padded = f" {key} "
    if len(padded) <= k:
        return {padded.encode()}
    return {padded[i : i + k].encode() for i in range(len(padded) - k + 1)}


@dataclass
class DuplicateReport:
    """Pairs ``(record id, id of the earlier record it duplicates)``."""

    exact: list[tuple[str, str]] = field(default_factory=list)
    near: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    #: Pairs across different groups (unintended) vs within a group (augmented variants).
    cross_group: int = 0

    @property
    def duplicate_ids(self) -> set[str]:
        return {a for a, _ in self.exact} | {a for a, _ in self.near}

    @property
    def rate(self) -> float:
        """Share of records that duplicate an earlier record of another group."""
        return self.cross_group / self.total if self.total else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "records": self.total,
            "exact_duplicates": len(self.exact),
            "near_duplicates": len(self.near),
            "cross_group_duplicates": self.cross_group,
            "duplicate_rate": round(self.rate, 4),
        }


def find_duplicates(records: list[Record], *, threshold: float = 0.8, num_perm: int = 128,
                    min_chars: int = 12) -> DuplicateReport:
    """Find exact and near duplicates (estimated Jaccard ≥ ``threshold`` on 4-char shingles).

    Keys shorter than ``min_chars`` are compared exactly only: near-matching
    two-word messages ("ok bro" / "ok bruh") is noise, not duplication.
    """
    from datasketch import MinHash, MinHashLSH

    report = DuplicateReport(total=len(records))
    group_of = {r.id: r.group for r in records}
    seen: dict[str, str] = {}
    # Weight false negatives 4× false positives: a missed near duplicate leaks
    # between splits, a spurious one only ties two units together.
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    for r in records:
        key = canonical_key(r.text)
        digest = hashlib.sha1(key.encode()).hexdigest()
        if digest in seen:
            report.exact.append((r.id, seen[digest]))
            continue
        seen[digest] = r.id
        if len(key) < min_chars:
            continue
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch(list(_shingles(key)))
        hits = lsh.query(mh)
        if hits:
            report.near.append((r.id, sorted(hits)[0]))
        lsh.insert(r.id, mh)
    report.cross_group = sum(1 for a, b in report.exact + report.near if group_of[a] != group_of[b])
    return report


def normalize_records(records: list[Record]) -> list[Record]:
    """Records with normalised text (other fields unchanged)."""
    return [replace(r, text=normalize_text(r.text)) for r in records]
