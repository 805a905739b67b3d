"""Normalisation, duplicate detection, deterministic group-aware stratified splits,
and the data stage (prepare_dataset) with its manifest and configuration checks."""

from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from data.dedup import canonical_key, find_duplicates, normalize_records, normalize_text
from data.formats import write_jsonl
from data.prepare import PrepareConfig, SourceConfig, prepare_dataset
from data.schema import LABELS, LANGS, Record
from data.split import (
    MANIFEST_FILE,
    SPLIT_FILES,
    SPLITS,
    SplitConfig,
    assign_splits,
    read_pins,
    read_split,
    split_counts,
    write_pins,
)

MARKER = "zqxmarker"
VOCAB = (
    "homework", "library", "teacher", "bus", "lunch", "garden", "music", "painting", "chess",
    "football", "river", "museum", "science", "robot", "camera", "bicycle", "window", "pencil",
    "notebook", "holiday", "morning", "weekend", "kitchen", "bridge", "concert", "weather",
    "tomorrow", "theatre", "planet", "island", "forest", "mountain", "puzzle", "history",
    "village", "orange", "summer", "winter", "ticket", "market", "station",
)
#: Label combinations dealt round-robin to synthetic records.
COMBOS = [(), (), ("bullying",), ("threat",), ("self_harm",), ("bullying_disclosure",),
          ("bullying", "threat")]


def _text(i: int) -> str:
    """A neutral synthetic text, unlike every other index's text."""
    words = random.Random(i).sample(VOCAB, 9)
    return f"{MARKER} {i} " + " ".join(words)


def _records(n: int, *, group_size: int = 1) -> list[Record]:
    """n records over every language and label combination; consecutive records share
    a group in runs of ``group_size`` (an original and its variants)."""
    out = []
    for i in range(n):
        g = i // group_size
        out.append(Record(id=f"r{i:04d}", text=_text(i), lang=LANGS[g % len(LANGS)],
                          labels=COMBOS[g % len(COMBOS)], group=f"g{g}"))
    return out


# --- normalisation ---------------------------------------------------------------------


def test_nfc_composes_decomposed_letters():
    decomposed = "и\u0306" + "е\u0308" + "e\u0301"
    assert normalize_text(decomposed) == "йёé"
    assert normalize_text(f"{MARKER} сабақ бітті, и\u0306ә") == f"{MARKER} сабақ бітті, йә"


def test_kazakh_letters_survive_normalisation():
    # ә ғ қ ң ө ұ ү һ і have no canonical decomposition: NFC must leave them alone.
    letters = "әғқңөұүһі ӘҒҚҢӨҰҮҺІ"
    assert normalize_text(letters) == letters
    assert normalize_text(unicodedata.normalize("NFD", letters)) == letters


def test_whitespace_runs_collapse_and_ends_are_trimmed():
    assert normalize_text("  a \t\n b\u00a0\u2003c \r\n ") == "a b c"


def test_invisible_characters_are_removed_but_zwj_is_kept():
    assert normalize_text("home\u200bwork\u200c \u2060note\ufeff\u00ad") == "homework note"
    emoji = "\U0001f469\u200d\U0001f4bb"  # woman technologist: a ZWJ sequence
    assert normalize_text(emoji) == emoji


def test_control_characters_become_spaces():
    assert normalize_text("a\x00b\x07c") == "a b c"


def test_normalisation_is_idempotent():
    for i in range(50):
        once = normalize_text(_text(i) + " \u200b и\u0306 ")
        assert normalize_text(once) == once


def test_canonical_key_ignores_case_punctuation_and_emoji():
    assert canonical_key("Homework, DUE Friday!!! 🙂") == canonical_key("homework due friday")
    assert canonical_key("ÁЙ_ә") == "áй ә"


def test_normalize_records_changes_only_the_text():
    r = Record(id="a", text=" x\u200b y ", lang="kk", labels=("threat",), group="g", tags=("t",))
    [n] = normalize_records([r])
    assert n.text == "x y"
    assert (n.id, n.lang, n.labels, n.group, n.tags) == (r.id, r.lang, r.labels, r.group, r.tags)


# --- duplicates ------------------------------------------------------------------------

LONG = (f"{MARKER} please bring the notebook for the science lesson on friday morning, "
        "the teacher wants everyone to finish the chapter about rivers and mountains")


def test_exact_duplicates_after_normalisation_case_and_punctuation():
    variants = [
        LONG,
        LONG.upper(),
        LONG.replace(",", " ...") + " 🙂🙂",
        "  " + LONG.replace(" ", "\u200b  ") + "\n",
        unicodedata.normalize("NFD", LONG + " й"),
    ]
    records = [Record(id=f"v{i}", text=t, lang="en") for i, t in enumerate(variants)]
    records[-1] = Record(id="w0", text=LONG + " й", lang="en")
    records.append(Record(id="w1", text=unicodedata.normalize("NFD", LONG + " й"), lang="en"))
    report = find_duplicates(records)
    assert sorted(report.exact) == [("v1", "v0"), ("v2", "v0"), ("v3", "v0"), ("w1", "w0")]


def test_near_duplicate_with_a_changed_word():
    records = [Record("a", LONG, "en"), Record("b", LONG.replace("friday", "monday"), "en"),
               Record("c", _text(3), "en")]
    report = find_duplicates(records)
    assert report.exact == []
    assert report.near == [("b", "a")]
    assert report.duplicate_ids == {"b"}


def _one_word_edits(n_words: int, n_pairs: int = 100) -> list[Record]:
    """Pairs (o<i>, e<i>) of random messages that differ in one word."""
    out = []
    for i in range(n_pairs):
        rng = random.Random(1000 * n_words + i)
        words = [rng.choice(VOCAB) for _ in range(n_words)]
        edited = words[:]
        edited[rng.randrange(n_words)] = "changed"
        out += [Record(f"o{i}", f"{MARKER} {i} " + " ".join(words), "en"),
                Record(f"e{i}", f"{MARKER} {i} " + " ".join(edited), "en")]
    return out


def _near_recall(records: list[Record]) -> float:
    report = find_duplicates(records)
    assert all(a[1:] == b[1:] for a, b in report.near), "an unrelated message was matched"
    return sum(1 for a, b in report.near if a[1:] == b[1:]) / (len(records) // 2)


def test_one_word_edits_of_long_messages_are_mostly_caught():
    assert _near_recall(_one_word_edits(30)) >= 0.75  # ~230 characters


def test_one_word_edits_of_chat_length_messages_are_caught():
    assert _near_recall(_one_word_edits(14)) >= 0.8


def test_clearly_different_messages_are_not_duplicates():
    records = [Record(f"d{i}", _text(i), LANGS[i % 4]) for i in range(120)]
    records += [Record("x1", f"{MARKER} the school bus leaves at eight tomorrow morning", "en"),
                Record("x2", f"{MARKER} the museum trip is cancelled because of the rain", "en")]
    report = find_duplicates(records)
    assert report.exact == [] and report.near == []
    assert report.rate == 0.0


def test_short_texts_are_compared_exactly_only():
    report = find_duplicates([Record("a", "ok see you", "en"), Record("b", "ok see yo", "en"),
                              Record("c", "OK, see you!", "en")])
    assert report.exact == [("c", "a")] and report.near == []


def test_duplicate_rate_counts_only_cross_group_pairs():
    records = [
        Record("a", LONG, "en", group="g1"),
        Record("a-aug", LONG.upper(), "en", group="g1", tags=("augmented",)),  # exact, same group
        Record("a-typo", LONG.replace("friday", "fridya"), "en", group="g1"),  # near, same group
        Record("b", LONG + "!", "en", group="g2"),  # exact, other group
        Record("c", LONG.replace("friday", "monday"), "en", group="g3"),  # near, other group
        Record("d", _text(1), "en", group="g4"),
    ]
    report = find_duplicates(records)
    assert len(report.exact) == 2 and len(report.near) == 2
    assert report.cross_group == 2
    assert report.rate == pytest.approx(2 / 6)
    assert report.summary() == {"records": 6, "exact_duplicates": 2, "near_duplicates": 2,
                                "cross_group_duplicates": 2, "duplicate_rate": 0.3333}


def test_no_records_no_duplicates():
    assert find_duplicates([]).rate == 0.0


# --- splits ------------------------------------------------------------------------------


def test_split_config_validation():
    assert SplitConfig().fractions == {"train": 0.8, "calib": 0.1, "test": 0.1}
    SplitConfig(train=1.0, calib=0.0, test=0.0)
    SplitConfig(train=0.7, calib=0.2, test=0.1)  # sums to 1 up to float error
    for bad in [dict(train=0.9), dict(train=0.8, calib=0.1, test=0.2),
                dict(train=1.1, calib=-0.05, test=-0.05), dict(train=0.0, calib=0.0, test=0.0)]:
        with pytest.raises(ValueError, match="sum to 1"):
            SplitConfig(**bad)


def test_same_seed_same_assignment_whatever_the_input_order():
    records = _records(300, group_size=2)
    first = assign_splits(records, SplitConfig(seed=5))
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(shuffled, SplitConfig(seed=5)) == first
    assert set(first) == {r.id for r in records}
    assert set(first.values()) == set(SPLITS)


def test_different_seed_different_assignment():
    records = _records(300)
    a = assign_splits(records, SplitConfig(seed=1))
    b = assign_splits(records, SplitConfig(seed=2))
    assert a != b
    # Only the membership changes, not the sizes.
    assert Counter(a.values()) == Counter(b.values())


@pytest.mark.parametrize(("fractions", "group_size", "n"), [
    ((0.8, 0.1, 0.1), 1, 420),
    ((0.8, 0.1, 0.1), 2, 200),
    # Groups of 3 over 28 small strata: every unit overshoots its target, and the
    # overshoot must be made up in later strata (the test split used to end up empty).
    ((0.8, 0.1, 0.1), 3, 200),
    ((0.8, 0.1, 0.1), 4, 420),
    ((0.6, 0.2, 0.2), 2, 420),
    ((0.7, 0.15, 0.15), 3, 300),
])
def test_split_sizes_follow_the_fractions(fractions, group_size, n):
    config = SplitConfig(*fractions, seed=7)
    sizes = Counter(assign_splits(_records(n, group_size=group_size), config).values())
    for split, frac in config.fractions.items():
        assert abs(sizes[split] - frac * n) <= max(3, 0.02 * n), sizes


def test_groups_never_straddle_splits():
    # Groups of mixed sizes, including one large conversation.
    records = []
    rng = random.Random(3)
    i = 0
    for g in range(150):
        for _ in range(rng.choice([1, 1, 2, 3, 5]) if g else 25):
            records.append(Record(f"r{i}", _text(i), LANGS[g % 4], COMBOS[g % len(COMBOS)],
                                  group=f"g{g}"))
            i += 1
    assignment = assign_splits(records, SplitConfig(seed=11))
    splits_of_group = defaultdict(set)
    for r in records:
        splits_of_group[r.group].add(assignment[r.id])
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_links_keep_records_of_different_groups_together():
    records = _records(200)
    links = [(f"r{i:04d}", f"r{i + 1:04d}") for i in range(0, 60, 3)]
    links += [("r0100", "r0150"), ("r0150", "r0199")]  # chained: all three together
    for seed in range(5):
        assignment = assign_splits(records, SplitConfig(seed=seed), links)
        for a, b in links:
            assert assignment[a] == assignment[b]


def test_every_language_and_label_reaches_every_split():
    records = _records(560)  # 140 per language, 20 per language × combination
    assignment = assign_splits(records, SplitConfig(seed=13))
    counts = split_counts(records, assignment)
    for split in SPLITS:
        assert set(counts[split]["by_lang"]) == set(LANGS), split
        assert all(counts[split]["by_label"][lb] > 0 for lb in LABELS), split
        assert counts[split]["clean"] > 0
    # Stratified: each language's share of calib is its share of the whole (25 %).
    for lang in LANGS:
        assert counts["calib"]["by_lang"][lang] == pytest.approx(counts["calib"]["records"] / 4, abs=2)


def test_split_counts_add_up():
    records = _records(90)
    assignment = assign_splits(records)
    counts = split_counts(records, assignment)
    assert sum(c["records"] for c in counts.values()) == 90
    for split, c in counts.items():
        assert sum(c["by_lang"].values()) == c["records"]
        assert c["records"] == sum(v == split for v in assignment.values())


# --- pinned splits -------------------------------------------------------------------------

def _pin(records, assignment, tmp_path):
    return str(write_pins(records, assignment, tmp_path / "pins.json", note="test"))


def test_pinned_groups_keep_their_split_when_data_is_added(tmp_path):
    old = _records(400, group_size=2)
    old_split = assign_splits(old, SplitConfig(seed=5))
    pins = _pin(old, old_split, tmp_path)
    # A later corpus version: the old records (in another order) plus as many new ones.
    new = [Record(f"n{i:04d}", _text(10_000 + i), LANGS[i % 4], COMBOS[i % len(COMBOS)], group=f"n{i}")
           for i in range(400)]
    assignment = assign_splits(new + old[::-1], SplitConfig(seed=99, pinned=pins))
    assert all(assignment[r.id] == old_split[r.id] for r in old)
    # Unpinned, the new seed would have moved old records: the pin is what holds them.
    unpinned = assign_splits(new + old, SplitConfig(seed=99))
    assert any(unpinned[r.id] != old_split[r.id] for r in old)
    # The new records are dealt towards the shares of the whole.
    sizes = Counter(assignment.values())
    for split, frac in SplitConfig().fractions.items():
        assert abs(sizes[split] - frac * 800) <= 0.02 * 800, sizes


def test_a_unit_joining_pinned_groups_of_different_splits_goes_to_the_most_protected(tmp_path):
    old = _records(200)
    old_split = assign_splits(old, SplitConfig(seed=5))
    in_test = next(r for r in old if old_split[r.id] == "test")
    in_train = next(r for r in old if old_split[r.id] == "train")
    bridge = Record("bridge", _text(5_000), "en", (), group="bridge")
    assignment = assign_splits([*old, bridge], SplitConfig(pinned=_pin(old, old_split, tmp_path)),
                               links=[("bridge", in_test.id), ("bridge", in_train.id)])
    assert assignment["bridge"] == assignment[in_test.id] == assignment[in_train.id] == "test"


def test_pin_file_round_trip_and_errors(tmp_path):
    records = _records(60, group_size=3)
    assignment = assign_splits(records)
    pins = read_pins(_pin(records, assignment, tmp_path))
    assert pins == {r.group: assignment[r.id] for r in records}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"groups": {"train": ["g1"], "test": ["g1"]}}))
    with pytest.raises(ValueError, match="pinned to both"):
        read_pins(bad)
    bad.write_text(json.dumps({"groups": {"dev": ["g1"]}}))
    with pytest.raises(ValueError, match="split names"):
        read_pins(bad)


def test_the_committed_pin_file_holds_the_0_1_0_split():
    # data/split_pins.json froze the split of the 8,531-record corpus of 0.1.0: 853 test messages.
    pins = read_pins(Path(__file__).parents[1] / "data" / "split_pins.json")
    assert set(pins.values()) == set(SPLITS)
    corpus = [json.loads(line) for f in sorted((Path(__file__).parents[1] / "data" / "corpus").glob("*.jsonl"))
              for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    pinned_test = [r for r in corpus if pins.get(r["group"]) == "test"]
    assert len(pinned_test) == 853
    # Every pinned group still exists: a group renamed in the corpus would silently unpin it.
    assert set(pins) <= {r["group"] for r in corpus}


# --- the data stage -----------------------------------------------------------------------


def _corpus_rows() -> list[dict]:
    rows = [r.to_dict() for r in _records(240)]
    rows += [
        # Exact duplicate (after case, punctuation and normalisation) of r0000, another group.
        {"id": "dup-exact", "text": rows[0]["text"].upper() + " !!", "lang": "ru", "labels": []},
        # An augmented variant in r0001's own group that happens to be identical: kept.
        {"id": "aug-same", "text": rows[1]["text"] + "\u200b", "lang": rows[1]["lang"],
         "labels": rows[1]["labels"], "group": rows[1]["group"], "tags": ["augmented"]},
        # Near duplicates in different groups: kept, but in one split.
        {"id": "near-a", "text": LONG, "lang": "en", "labels": ["threat"]},
        {"id": "near-b", "text": LONG.replace("friday", "monday"), "lang": "kk", "labels": []},
        # Text that normalisation changes.
        {"id": "messy", "text": f"  {MARKER}  и\u0306 \u200bnote \t about\n the bus ", "lang": "kk-ru",
         "labels": []},
    ]
    return rows


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    return write_jsonl(_corpus_rows(), tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


@pytest.fixture(scope="module")
def prepared(corpus_file, tmp_path_factory) -> Path:
    config = PrepareConfig(source=SourceConfig(path=str(corpus_file)), split=SplitConfig(seed=21))
    return prepare_dataset(config, tmp_path_factory.mktemp("prepared") / "out")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


def test_prepare_writes_split_files_and_manifest(prepared, corpus_file):
    assert sorted(p.name for p in prepared.iterdir()) == sorted([*(SPLIT_FILES[s] for s in SPLITS), MANIFEST_FILE])
    manifest = _manifest(prepared)
    assert manifest["config"] == {"train": 0.8, "calib": 0.1, "test": 0.1, "seed": 21, "pinned": None}
    assert manifest["source"]["path"] == str(corpus_file)
    ids = manifest["ids"]
    assert set(ids) == set(SPLITS)
    for split in SPLITS:
        records = read_split(prepared, split)
        assert sorted(r.id for r in records) == ids[split]
        assert manifest["counts"][split]["records"] == len(records)
        assert manifest["counts"][split]["by_lang"] == dict(sorted(Counter(r.lang for r in records).items()))
    all_ids = [i for split in SPLITS for i in ids[split]]
    assert len(all_ids) == len(set(all_ids)) == len(_corpus_rows()) - 1


def test_prepare_drops_cross_group_exact_duplicates_only(prepared):
    manifest = _manifest(prepared)
    assert manifest["dedup"]["dropped_ids"] == ["dup-exact"]
    assert manifest["dedup"]["exact_duplicates"] == 2  # dup-exact and aug-same
    assert manifest["dedup"]["near_duplicates"] >= 1
    assert manifest["dedup"]["cross_group_duplicates"] >= 2
    where = {i: s for s in SPLITS for i in manifest["ids"][s]}
    assert "dup-exact" not in where
    assert where["aug-same"] == where["r0001"]


def test_prepare_keeps_near_duplicates_in_one_split(prepared):
    where = {i: s for s in SPLITS for i in _manifest(prepared)["ids"][s]}
    assert where["near-a"] == where["near-b"]


def test_prepare_writes_normalised_text(prepared):
    records = {r.id: r for s in SPLITS for r in read_split(prepared, s)}
    assert records["messy"].text == f"{MARKER} й note about the bus"
    assert records["aug-same"].text == records["r0001"].text


def test_prepare_is_deterministic_and_seeded(corpus_file, prepared, tmp_path):
    again = prepare_dataset(PrepareConfig(source=SourceConfig(path=str(corpus_file)),
                                          split=SplitConfig(seed=21)), tmp_path / "again")
    assert _manifest(again)["ids"] == _manifest(prepared)["ids"]
    for split in SPLITS:
        assert (again / SPLIT_FILES[split]).read_bytes() == (prepared / SPLIT_FILES[split]).read_bytes()
    other = prepare_dataset(PrepareConfig(source={"path": str(corpus_file)}, split={"seed": 22}),
                            tmp_path / "other")
    assert _manifest(other)["ids"] != _manifest(prepared)["ids"]


def test_prepare_refuses_invalid_data(tmp_path):
    path = write_jsonl([{"id": "a", "text": "neutral", "lang": "xx"}], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="1 invalid rows"):
        prepare_dataset(PrepareConfig(source=SourceConfig(path=str(path))), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_config_validation():
    config = PrepareConfig(source={"path": "somewhere", "adapter": "jigsaw"}, split={"seed": 3})
    assert isinstance(config.source, SourceConfig) and config.source.adapter == "jigsaw"
    assert isinstance(config.split, SplitConfig) and config.split.seed == 3
    PrepareConfig(near_duplicate_threshold=0.5)
    PrepareConfig(near_duplicate_threshold=1.0)
    for threshold in (0.49, 1.01, -1):
        with pytest.raises(ValueError, match="near_duplicate_threshold"):
            PrepareConfig(near_duplicate_threshold=threshold)
    with pytest.raises(ValueError, match="sum to 1"):
        PrepareConfig(split={"train": 0.5})
    with pytest.raises(TypeError):
        PrepareConfig(split={"trian": 0.8})


def test_source_config_validation():
    with pytest.raises(ValueError, match="adapter 'kaggle' is not one of"):
        SourceConfig(adapter="kaggle")
    with pytest.raises(ValueError, match="SOURCE=LABEL"):
        SourceConfig(label_map="insult")
    with pytest.raises(ValueError, match="is not one of"):
        SourceConfig(label_map="insult=rude")
    cm = SourceConfig(adapter="jigsaw", text_column="body", default_lang="ru").column_map()
    assert (cm.text_column, cm.default_lang, cm.default_source) == ("body", "ru", "jigsaw")
