"""data.augment made data/corpus/augmented.jsonl: its variants keep labels and group,
carry the augmented tags, and are deterministic for a seed."""

from __future__ import annotations

import random

import pytest

from data.augment import augment, augment_record, leetspeak, transliterate, typos
from data.schema import Record


def _rec(rid: str, text: str, lang: str, labels=("bullying",)) -> Record:
    return Record(id=rid, text=text, lang=lang, labels=labels, source="unit", tags=("quotes_insult",))


def test_transliteration_is_informal_latin_and_keeps_case():
    assert transliterate("Сен ақымақсың", "kk") == "Sen akymaksyn"
    assert transliterate("Ты дурак, Ёжик", "ru") == "Ty durak, Yozhik"
    assert transliterate("hello 123", "ru") == "hello 123"


def test_variants_keep_labels_group_and_tags():
    kk = _rec("kk-1", "сен ақымақсың", "kk")
    v = augment_record(kk, "translit", random.Random(0))
    assert v.text == "sen akymaksyn" and v.id == "kk-1-translit" and v.source == "unit+augmented"
    assert v.labels == kk.labels and v.group == kk.group == "kk-1"
    assert v.tags == ("quotes_insult", "translit", "augmented", "aug:translit") and v.is_augmented
    en = _rec("en-1", "loser loser loser", "en")
    leet = augment_record(en, "leet", random.Random(1))
    assert leet.text != en.text and "obfuscated" in leet.tags and leet.labels == en.labels
    # Kinds that do not apply give no variant.
    assert augment_record(en, "translit", random.Random(0)) is None
    assert augment_record(kk, "leet", random.Random(0)) is None
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_record(en, "shout", random.Random(0))


def test_typos_and_leetspeak_change_only_letters_and_are_seeded():
    text = "nobody wants you in the group chat"
    assert typos(text, random.Random(3), rate=0.3) == typos(text, random.Random(3), rate=0.3)
    assert typos(text, random.Random(3), rate=0.0) == text
    assert leetspeak("sos", random.Random(0), rate=1.0) == "505"


def test_augment_is_deterministic_and_never_augments_a_variant():
    records = [_rec(f"r{i}", f"сен ақымақсың {i}", "kk") for i in range(50)]
    first, again = augment(records, fraction=0.3, seed=5), augment(records, fraction=0.3, seed=5)
    assert first == again and 0 < len(first) < 50
    assert augment(first, fraction=1.0, seed=5) == []
