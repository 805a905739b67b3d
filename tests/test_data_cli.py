"""``qorgan data validate | stats | prepare`` through the real dispatcher: exit codes,
output contents, and that no message text ever reaches the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qorgan
from data.formats import EXTENSIONS, write_jsonl
from data.schema import LABELS, LANGS
from data.split import MANIFEST_FILE, SPLIT_FILES, SPLITS

DATA = Path(__file__).parent / "fixtures" / "data"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
MARKER = "zqxmarker"

#: clean.jsonl, counted by hand: language → (records, per-label counts in LABELS order, clean).
CLEAN_TABLE = {
    "kk": (3, {"bullying": 1, "threat": 0, "self_harm": 1, "bullying_disclosure": 1}, 1),
    "ru": (3, {"bullying": 0, "threat": 0, "self_harm": 1, "bullying_disclosure": 1}, 1),
    "en": (4, {"bullying": 2, "threat": 1, "self_harm": 0, "bullying_disclosure": 0}, 2),
    "kk-ru": (2, {"bullying": 0, "threat": 1, "self_harm": 0, "bullying_disclosure": 0}, 1),
}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = qorgan.main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_no_text(output: str, *fragments: str) -> None:
    assert MARKER not in output
    for fragment in fragments:
        assert fragment not in output


# --- validate -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clean.jsonl", "clean.csv", "folder"])
def test_validate_clean_data_exits_0(capsys, name):
    code, out, err = run(capsys, "validate", DATA / name)
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("OK: ")
    assert out.splitlines()[-1].endswith(", 0 errors")
    assert_no_text(out + err)


def test_validate_reports_every_error_with_its_location_and_exits_1(capsys):
    path = DATA / "errors.jsonl"
    code, out, err = run(capsys, "validate", path)
    assert code == 1
    lines = out.splitlines()
    assert lines[-1] == "FAILED: 16 rows read, 3 valid, 14 errors"
    issues = [ln.split(": ")[:2] for ln in lines[:-1]]
    assert [loc for loc, _ in issues] == [f"{path}:{n}" for n in (2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 15, 15, 16)]
    assert [c for _, c in issues] == [
        "invalid_utf8", "bad_json", "bad_json", "empty_text", "empty_text", "empty_text",
        "bad_text_type", "text_too_long", "bad_lang", "unknown_label", "duplicate_id",
        "bad_lang", "unknown_label", "label_conflict"]
    assert_no_text(out + err, "homework", "unterminated")


def test_validate_csv_errors(capsys):
    path = DATA / "errors.csv"
    code, out, err = run(capsys, "validate", path)
    assert code == 1
    assert [ln.split(": ")[0] for ln in out.splitlines()[:-1]] == [
        f"{path}:{n}" for n in (3, 4, 7, 8, 9, 10, 11)]
    assert f"{path}:4: bad_csv: " in out
    assert_no_text(out + err, "homework", "comma", "quoted")


def test_validate_max_errors(capsys):
    code, out, _ = run(capsys, "validate", DATA / "errors.jsonl", "--max-errors", "3")
    lines = out.splitlines()
    assert code == 1
    assert len(lines) == 3 + 2
    assert lines[3] == "… and 11 more"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("n_words", [600, 30_000])
def test_validate_never_prints_long_texts(capsys, tmp_path, suffix, n_words):
    text = f"{MARKER} " + " ".join(f"tok{i:06d}" for i in range(n_words))
    path = tmp_path / f"long{suffix}"
    if suffix == ".jsonl":
        write_jsonl([{"id": "a", "text": "neutral text one", "lang": "en"},
                     {"id": "b", "text": text, "lang": "en", "labels": ["threat"]},
                     {"id": "c", "text": text, "lang": "zz"}], path)
    else:
        path.write_text(f'id,text,lang\na,neutral text one,en\nb,"{text}",en\nc,"{text}",zz\n',
                        encoding="utf-8")
    code, out, err = run(capsys, "validate", path)
    assert code == 1
    assert f"{path}:{2 if suffix == '.jsonl' else 3}: " in out  # the long row, located
    assert_no_text(out + err, "tok0")
    assert len(out) < 1000


def test_validate_with_adapters_and_options(capsys, tmp_path):
    jigsaw = DATA / "jigsaw.csv"
    assert run(capsys, "validate", jigsaw, "--adapter", "jigsaw")[0] == 0
    code, out, _ = run(capsys, "validate", jigsaw)  # plain layout: no text, no language
    assert code == 1 and "empty_text" in out and "bad_lang" in out

    lists = DATA / "list_labels.jsonl"
    assert run(capsys, "validate", lists, "--label-map", "insult=bullying,threat=threat,spam=")[0] == 0
    code, out, _ = run(capsys, "validate", lists, "--label-map", "insult=bullying,threat=threat")
    assert code == 1 and out.splitlines()[0].startswith(f"{lists}:2: unknown_label: label 'spam'")

    path = write_jsonl([{"message": f"{MARKER} neutral", "labels": ["threat"]}], tmp_path / "r.jsonl")
    assert run(capsys, "validate", path)[0] == 1
    code, out, _ = run(capsys, "validate", path, "--text-column", "message", "--lang", "kk")
    assert code == 0, out


def test_validate_unusable_input_exits_2(capsys, tmp_path):
    code, out, err = run(capsys, "validate", tmp_path / "missing.jsonl")
    assert code == 2 and "no such file" in err and out == ""
    code, _, err = run(capsys, "validate", DATA / "clean.jsonl", "--label-map", "insult=rude")
    assert code == 2 and "is not one of" in err
    with pytest.raises(SystemExit) as info:
        run(capsys, "validate", DATA / "clean.jsonl", "--adapter", "kaggle")
    assert info.value.code == 2


# --- stats --------------------------------------------------------------------------------


def test_stats_json_counts_per_language_and_label(capsys):
    code, out, err = run(capsys, "stats", DATA / "clean.jsonl", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert list(stats["by_lang"]) == list(LANGS)  # schema order
    for lang, (records, by_label, clean) in CLEAN_TABLE.items():
        s = stats["by_lang"][lang]
        assert (s["records"], s["by_label"], s["clean"]) == (records, by_label, clean), lang
    total = stats["total"]
    assert total["records"] == 12 and total["clean"] == 5
    assert total["by_label"] == {lb: sum(t[1][lb] for t in CLEAN_TABLE.values()) for lb in LABELS}
    assert (total["hard_negatives"], total["multi_label"], total["translit"], total["augmented"]) == (1, 2, 1, 1)
    assert stats["by_lang"]["en"]["hard_negatives"] == 1
    assert stats["label_combinations"] == {
        "clean": 5, "bullying": 2, "bullying+threat": 1, "self_harm": 1, "bullying_disclosure": 1,
        "self_harm+bullying_disclosure": 1, "threat": 1}
    assert stats["duplicates"]["records"] == 12 and stats["duplicates"]["duplicate_rate"] == 0.0
    assert stats["augmented_share"] == round(1 / 12, 4)
    assert stats["length_words"]["min"] <= stats["length_words"]["p50"] <= stats["length_words"]["max"]
    assert_no_text(out + err)


def test_stats_json_matches_the_file_for_csv_lists(capsys):
    code, out, _ = run(capsys, "stats", DATA / "clean.csv", "--json")
    stats = json.loads(out)
    assert code == 0
    assert {lang: s["by_label"] for lang, s in stats["by_lang"].items()} == {
        "kk": {"bullying": 0, "threat": 0, "self_harm": 1, "bullying_disclosure": 0},
        "ru": {"bullying": 0, "threat": 0, "self_harm": 0, "bullying_disclosure": 0},
        "en": {"bullying": 1, "threat": 1, "self_harm": 0, "bullying_disclosure": 0},
        "kk-ru": {"bullying": 0, "threat": 0, "self_harm": 0, "bullying_disclosure": 1},
    }
    assert stats["total"]["obfuscated"] == 1 and stats["total"]["hard_negatives"] == 1


def test_stats_counts_duplicates(capsys, tmp_path):
    text = f"{MARKER} the bus to the museum leaves at nine on saturday morning"
    path = write_jsonl([{"id": "a", "text": text, "lang": "en"},
                        {"id": "b", "text": text.upper() + "!", "lang": "en"},
                        {"id": "c", "text": text + "\u200b", "lang": "en", "group": "a"},
                        {"id": "d", "text": "another neutral message", "lang": "kk"}], tmp_path / "d.jsonl")
    code, out, _ = run(capsys, "stats", path, "--json")
    dups = json.loads(out)["duplicates"]
    assert code == 0
    assert dups == {"records": 4, "exact_duplicates": 2, "near_duplicates": 0,
                    "cross_group_duplicates": 1, "duplicate_rate": 0.25}


def test_stats_table(capsys):
    code, out, err = run(capsys, "stats", DATA / "clean.jsonl")
    assert code == 0
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    header = rows["lang"]
    assert header[:6] == ["lang", "records", *LABELS]
    assert rows["en"][1:6] == ["4", "2", "1", "0", "0"]
    assert rows["kk-ru"][1:6] == ["2", "0", "1", "0", "0"]
    assert rows["all"][1] == "12"
    assert "duplicates:" in out and "length (words):" in out
    assert_no_text(out + err)


def test_stats_on_invalid_data_exits_2_without_text(capsys):
    path = DATA / "errors.jsonl"
    code, out, err = run(capsys, "stats", path, "--json")
    assert code == 2 and out == ""
    assert f"14 invalid rows in {path}" in err and f"{path}:10: text_too_long" in err
    assert_no_text(err, "homework")


# --- prepare ------------------------------------------------------------------------------


def test_prepare_writes_splits(capsys, tmp_path):
    out_dir = tmp_path / "prepared"
    code, out, err = run(capsys, "prepare", DATA / "clean.jsonl", "-o", out_dir, "--seed", "3",
                         "--train", "0.5", "--calib", "0.25", "--test", "0.25")
    assert code == 0, err
    assert f"wrote {out_dir}" in err and "dropped 0 exact duplicates" in err
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["config"] == {"train": 0.5, "calib": 0.25, "test": 0.25, "seed": 3, "pinned": None}
    assert sorted(i for ids in manifest["ids"].values() for i in ids) == sorted(
        json.loads(line)["id"] for line in (DATA / "clean.jsonl").read_text(encoding="utf-8").splitlines())
    assert all((out_dir / SPLIT_FILES[s]).is_file() for s in SPLITS)
    assert_no_text(out + err)


def test_prepare_with_bad_fractions_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "prepare", DATA / "clean.jsonl", "-o", tmp_path / "o", "--train", "0.9")
    assert code == 2 and "sum to 1" in err
    assert not (tmp_path / "o").exists()


# --- the real corpus ----------------------------------------------------------------------


def test_repository_corpus_validates(capsys):
    if not CORPUS.is_dir() or not any(f.suffix in EXTENSIONS for f in CORPUS.iterdir()):
        pytest.skip("data/corpus holds no data files yet")
    code, out, _ = run(capsys, "validate", CORPUS)
    assert code == 0, "\n".join(out.splitlines()[:20])
