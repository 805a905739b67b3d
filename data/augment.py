"""Augmented variants of labelled messages: Latin transliteration of Kazakh
and Russian, leetspeak / spaced-letter obfuscation of English, and keyboard
typos. Each variant keeps the labels and the ``group`` of its original (so it
never lands in another split) and carries the ``augmented`` tag plus the kind.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from data.schema import AUGMENTED_TAG, Record

# Informal chat transliteration (how teenagers type on a Latin keyboard), not ISO 9.
_RU = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z",
    "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sch",
    "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya",
}
_KK = {**_RU, "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o", "ұ": "u", "ү": "u", "һ": "h", "і": "i",
       "у": "u", "и": "i"}
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def transliterate(text: str, lang: str) -> str:
    """Cyrillic Kazakh / Russian → informal Latin, preserving capitalisation."""
    table = _KK if lang in ("kk", "kk-ru") else _RU
    out = []
    for ch in text:
        low = ch.lower()
        if low in table:
            lat = table[low]
            out.append(lat.capitalize() if ch != low else lat)
        else:
            out.append(ch)
    return "".join(out)


def leetspeak(text: str, rng: random.Random, rate: float = 0.5) -> str:
    """Replace some letters with look-alike digits (``loser`` → ``l0s3r``)."""
    return "".join(_LEET[c.lower()] if c.lower() in _LEET and rng.random() < rate else c for c in text)


def typos(text: str, rng: random.Random, rate: float = 0.06) -> str:
    """Drop, double or swap a few letters, as fast thumbs do."""
    chars = list(text)
    i = 0
    while i < len(chars) - 1:
        if chars[i].isalpha() and rng.random() < rate:
            op = rng.choice(("drop", "double", "swap"))
            if op == "drop":
                del chars[i]
            elif op == "double":
                chars.insert(i, chars[i])
                i += 1
            else:
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
                i += 1
        i += 1
    return "".join(chars)


def augment_record(record: Record, kind: str, rng: random.Random) -> Record | None:
    """One variant of ``record`` (``translit``, ``leet`` or ``typo``), or None if it does not apply."""
    if kind == "translit":
        if record.lang == "en" or not _CYRILLIC.search(record.text):
            return None
        text, tags = transliterate(record.text, record.lang), ("translit",)
    elif kind == "leet":
        if record.lang != "en":
            return None
        text, tags = leetspeak(record.text, rng), ("obfuscated",)
    elif kind == "typo":
        text, tags = typos(record.text, rng), ()
    else:
        raise ValueError(f"unknown augmentation {kind!r}; expected translit, leet or typo")
    if text == record.text:
        return None
    return replace(record, id=f"{record.id}-{kind}", text=text, source=f"{record.source}+augmented",
                   tags=tuple(dict.fromkeys((*record.tags, *tags, AUGMENTED_TAG, f"aug:{kind}"))))


def augment(records: list[Record], fraction: float = 0.1, seed: int = 13) -> list[Record]:
    """Variants for about ``fraction`` of the records: transliteration for kk / ru / kk-ru,
    leetspeak or typos for en. Deterministic for a seed."""
    rng = random.Random(seed)
    chosen = [r for r in records if not r.is_augmented and rng.random() < fraction]
    out = []
    for r in chosen:
        kind = "translit" if r.lang != "en" else rng.choice(("leet", "typo"))
        variant = augment_record(r, kind, rng)
        if variant is not None:
            out.append(variant)
    return out
