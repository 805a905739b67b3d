"""Corpus statistics: counts per language × label, lengths, duplicate rate."""

from __future__ import annotations

from collections import Counter

import numpy as np

from data.dedup import find_duplicates
from data.schema import LABELS, LANGS, Record


def _lang_stats(rs: list[Record]) -> dict:
    clean = [r for r in rs if r.is_clean]
    positives = [r for r in rs if not r.is_clean]
    return {
        "records": len(rs),
        "by_label": {lb: sum(lb in r.labels for r in rs) for lb in LABELS},
        # Partial labels: records for which a label is not known (neither positive nor negative).
        "unknown_by_label": {lb: sum(lb in r.unknown for r in rs) for lb in LABELS},
        "partial": sum(bool(r.unknown) for r in rs),
        "clean": len(clean),
        "clean_share": round(len(clean) / len(rs), 3) if rs else 0.0,
        "hard_negatives": sum(r.is_hard_negative for r in clean),
        "hard_negative_share_of_clean": round(sum(r.is_hard_negative for r in clean) / len(clean), 3) if clean else 0.0,
        "multi_label": sum(len(r.labels) > 1 for r in positives),
        "multi_label_share_of_positives": round(sum(len(r.labels) > 1 for r in positives) / len(positives), 3) if positives else 0.0,
        "translit": sum("translit" in r.tags for r in rs),
        "obfuscated": sum("obfuscated" in r.tags for r in rs),
        "augmented": sum(r.is_augmented for r in rs),
    }


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"min": int(a.min()), "p10": int(np.percentile(a, 10)), "p50": int(np.median(a)),
            "p90": int(np.percentile(a, 90)), "max": int(a.max()), "mean": round(float(a.mean()), 1)}


def compute_stats(records: list[Record]) -> dict:
    """All corpus statistics as a JSON-ready dictionary (no message text)."""
    langs = [lg for lg in LANGS if any(r.lang == lg for r in records)]
    by_lang = {lg: _lang_stats([r for r in records if r.lang == lg]) for lg in langs}
    dups = find_duplicates(records)
    combos = Counter("+".join(r.labels) or "clean" for r in records)
    return {
        "total": _lang_stats(records),
        "by_lang": by_lang,
        "label_combinations": dict(combos.most_common()),
        "length_words": _lengths([len(r.text.split()) for r in records]),
        "length_chars": _lengths([len(r.text) for r in records]),
        "duplicates": dups.summary(),
        "augmented_share": round(sum(r.is_augmented for r in records) / len(records), 4) if records else 0.0,
    }


def format_stats(stats: dict) -> str:
    """Human-readable tables for :func:`compute_stats` output."""
    cols = ["records", *LABELS, "clean", "partial", "hard_negatives", "multi_label", "translit", "obfuscated", "augmented"]
    rows = [("lang", *cols)]
    for name, s in [*stats["by_lang"].items(), ("all", stats["total"])]:
        rows.append((name, *(str(s["by_label"][c] if c in LABELS else s[c]) for c in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    t = stats["total"]
    lines += [
        "",
        f"clean share {t['clean_share']:.1%}; hard negatives {t['hard_negative_share_of_clean']:.1%} of clean; "
        f"multi-label {t['multi_label_share_of_positives']:.1%} of positives; augmented {stats['augmented_share']:.1%} of all",
        "unknown (partial labels): " + ", ".join(f"{lb} {n}" for lb, n in t["unknown_by_label"].items()),
        "length (words): " + ", ".join(f"{k} {v}" for k, v in stats["length_words"].items()),
        "length (chars): " + ", ".join(f"{k} {v}" for k, v in stats["length_chars"].items()),
        "duplicates: " + ", ".join(f"{k} {v}" for k, v in stats["duplicates"].items()),
    ]
    return "\n".join(lines)
