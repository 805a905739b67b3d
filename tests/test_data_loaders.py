"""Loaders (JSONL, CSV, Parquet, saved HF datasets, hub names, folders) and the
label-mapping adapters (Jigsaw columns, generic 0/1 columns, list-of-labels columns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.adapters import JIGSAW_LABEL_MAP, ColumnMap, parse_label_map
from data.formats import detect_format, input_files, iter_rows, write_jsonl
from data.prepare import SourceConfig
from data.schema import Record
from data.validate import load_records, validate_path

DATA = Path(__file__).parent / "fixtures" / "data"
MARKER = "zqxmarker"

ROWS = [
    {"id": "p1", "text": f"{MARKER} row about the chess club", "lang": "en",
     "labels": ["threat", "bullying"], "source": "unit", "group": "g1", "tags": ["hn:gaming"]},
    {"id": "p2", "text": f"{MARKER} сабақ кестесі туралы", "lang": "kk",
     "labels": [], "source": "unit", "group": "g1", "tags": []},
    {"id": "p3", "text": f"{MARKER} расписание уроков", "lang": "ru",
     "labels": ["self_harm"], "source": "", "group": "", "tags": []},
]


def _by_id(records: list[Record]) -> dict[str, Record]:
    return {r.id: r for r in records}


def _check_rows(records: list[Record]) -> None:
    got = _by_id(records)
    assert list(got) == ["p1", "p2", "p3"]
    assert got["p1"].labels == ("bullying", "threat")
    assert got["p1"].tags == ("hn:gaming",) and got["p1"].group == "g1"
    assert got["p2"].text == f"{MARKER} сабақ кестесі туралы" and got["p2"].is_clean
    assert got["p3"].group == "p3"  # empty group falls back to the id


@pytest.fixture(scope="module")
def hf_dataset():
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(ROWS)


# --- file formats ---------------------------------------------------------------------


def test_jsonl_loader_reads_records_with_line_locations():
    rows = list(iter_rows(DATA / "clean.jsonl"))
    assert [r.where for r in rows] == [f"{DATA / 'clean.jsonl'}:{n}" for n in range(1, 13)]
    records = load_records(DATA / "clean.jsonl")
    assert {r.lang for r in records} == {"en", "ru", "kk", "kk-ru"}
    assert all(r.source == "fixture" for r in records)


def test_csv_loader_reads_quotes_multiline_and_list_strings():
    path = DATA / "clean.csv"
    rows = list(iter_rows(path))
    assert [r.where for r in rows] == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    got = _by_id(load_records(path))
    assert got["c-1"].labels == ("bullying", "threat")  # "bullying;threat"
    assert got["c-2"].text == f'{MARKER} quoted text, with a comma and "quotes"'
    assert got["c-2"].is_hard_negative
    assert got["c-3"].text == f"{MARKER} first line of a note\nsecond line of the same note"
    assert got["c-3"].tags == ("translit", "obfuscated")
    assert got["c-4"].lang == "kk-ru" and got["c-4"].labels == ("bullying_disclosure",)


def test_parquet_loader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    rows = list(iter_rows(path))
    assert [r.where for r in rows] == [f"{path}#row{n}" for n in (1, 2, 3)]
    _check_rows(load_records(path))


def test_parquet_null_labels_and_bad_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b", "c"],
        "text": [f"{MARKER} neutral", None, f"{MARKER} neutral two"],
        "lang": ["en", "en", "xx"],
        "labels": pa.array([None, [], ["bullying"]], type=pa.list_(pa.string())),
    }), path)
    report = validate_path(path)
    assert [(i.where, i.code) for i in report.issues] == [
        (f"{path}#row2", "empty_text"), (f"{path}#row3", "bad_lang")]
    assert report.records[0].labels == ()


def test_saved_hf_dataset(tmp_path, hf_dataset):
    path = tmp_path / "saved"
    hf_dataset.save_to_disk(str(path))
    rows = list(iter_rows(path))
    assert [r.where for r in rows] == [f"{path}[train][{i}]" for i in range(3)]
    _check_rows(load_records(path))
    # The hf: prefix on a local saved folder takes the same path.
    _check_rows(load_records(f"hf:{path}"))


def test_saved_hf_dataset_dict_reads_the_train_split(tmp_path, hf_dataset):
    import datasets

    other = datasets.Dataset.from_list([{**ROWS[0], "id": "other"}])
    path = tmp_path / "saved_dict"
    datasets.DatasetDict({"train": hf_dataset, "test": other}).save_to_disk(str(path))
    _check_rows(load_records(path))
    assert [r.data["id"] for r in iter_rows(path, hf_split="test")] == ["other"]


def test_saved_hf_dataset_dict_without_the_split_is_a_clear_error(tmp_path, hf_dataset):
    import datasets

    path = tmp_path / "saved_dict"
    datasets.DatasetDict({"validation": hf_dataset}).save_to_disk(str(path))
    with pytest.raises(ValueError, match=r"no split 'train'.*\['validation'\]"):
        list(iter_rows(path))


def test_hub_name_goes_through_load_dataset_without_network(monkeypatch, hf_dataset):
    import datasets

    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split, kw))
        return hf_dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "load_from_disk", lambda *a, **k: pytest.fail("not a saved dataset"))
    rows = list(iter_rows("hf:some-org/kids-messages", hf_split="validation"))
    assert calls == [("some-org/kids-messages", "validation", {})]
    assert rows[0].where == "some-org/kids-messages[validation][0]"
    _check_rows(load_records("hf:some-org/kids-messages"))
    assert calls[-1] == ("some-org/kids-messages", "train", {})


def test_folder_reads_every_data_file_in_name_order_and_ignores_others():
    folder = DATA / "folder"
    rows = list(iter_rows(folder))
    assert [r.where for r in rows] == [
        f"{folder / 'part1.jsonl'}:1", f"{folder / 'part1.jsonl'}:2", f"{folder / 'part2.csv'}:2"]
    records = load_records(folder)
    assert [(r.id, r.labels) for r in records] == [
        ("f1", ("threat",)), ("f2", ()), ("f3", ("bullying",))]
    assert input_files(folder) == [folder / "part1.jsonl", folder / "part2.csv"]


def test_duplicate_ids_are_found_across_files_of_a_folder(tmp_path):
    write_jsonl([{"id": "same", "text": "neutral one", "lang": "en"}], tmp_path / "a.jsonl")
    (tmp_path / "b.csv").write_text("id,text,lang\nsame,neutral two,ru\n", encoding="utf-8")
    report = validate_path(tmp_path)
    assert [(i.where, i.code) for i in report.issues] == [(f"{tmp_path / 'b.csv'}:2", "duplicate_id")]
    assert f"{tmp_path / 'a.jsonl'}:1" in report.issues[0].message


def test_folder_without_data_files_and_missing_paths_are_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no"):
        list(iter_rows(tmp_path))
    with pytest.raises(FileNotFoundError):
        list(iter_rows(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown file type"):
        list(iter_rows(tmp_path / "notes.txt"))


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.jsonl", "jsonl"), ("a.JSON", "jsonl"), ("a.csv", "csv"), ("a.Parquet", "parquet")])
def test_detect_format(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_write_jsonl_round_trips_unicode(tmp_path):
    path = write_jsonl([r for r in ROWS], tmp_path / "sub" / "out.jsonl")
    assert "сабақ" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert not list(path.parent.glob("*.tmp"))
    _check_rows(load_records(path))


def test_record_dict_round_trip_and_defaults():
    r = Record(id="x", text="neutral", lang="en", labels=("threat", "bullying", "threat"))
    assert r.labels == ("bullying", "threat") and r.group == "x"
    assert r.label_vector() == [1.0, 1.0, 0.0, 0.0]
    assert Record.from_dict(r.to_dict()) == r
    assert "tags" not in r.to_dict()


# --- adapters -----------------------------------------------------------------------------


JIGSAW_EXPECTED = {
    "j1": (),
    "j2": ("threat",),
    "j3": ("bullying",),  # insult
    "j4": ("bullying",),  # identity_hate
    "j5": (),  # severe_toxic + obscene: dropped on purpose
    "j6": ("bullying",),  # toxic
    "j7": ("bullying", "threat"),
}


def test_jigsaw_adapter_maps_binary_columns():
    records = load_records(DATA / "jigsaw.csv", ColumnMap.jigsaw())
    assert {r.id: r.labels for r in records} == JIGSAW_EXPECTED
    assert {(r.lang, r.source) for r in records} == {("en", "jigsaw")}
    assert records[0].text == f"{MARKER} comment about the article on rivers"


def test_jigsaw_map_drops_profanity_columns():
    assert JIGSAW_LABEL_MAP["obscene"] is None and JIGSAW_LABEL_MAP["severe_toxic"] is None
    assert JIGSAW_LABEL_MAP["threat"] == "threat" and JIGSAW_LABEL_MAP["insult"] == "bullying"


def test_jigsaw_adapter_with_a_custom_map():
    custom = parse_label_map("threat=threat,identity_hate=bullying,toxic=,insult=")
    records = load_records(DATA / "jigsaw.csv", ColumnMap.jigsaw(label_map=custom))
    assert {r.id: r.labels for r in records} == {
        "j1": (), "j2": ("threat",), "j3": (), "j4": ("bullying",), "j5": (), "j6": (),
        "j7": ("threat",)}
    # The same through the stage configuration (what the CLI builds).
    source = SourceConfig(path=str(DATA / "jigsaw.csv"), adapter="jigsaw",
                          label_map="threat=threat,identity_hate=bullying")
    got = {r.id: r.labels for r in load_records(source.path, source.column_map())}
    assert got["j3"] == () and got["j4"] == ("bullying",) and got["j7"] == ("threat",)


def test_generic_label_map_for_binary_columns():
    source = SourceConfig(path=str(DATA / "binary_columns.csv"),
                          label_map="is_threat=threat,is_insult=bullying,p_self_harm=self_harm,is_spam=")
    records = load_records(source.path, source.column_map())
    assert [(r.id, r.lang, r.labels) for r in records] == [
        ("row-1", "en", ("threat",)),  # p_self_harm 0.1 is under the 0.5 threshold
        ("row-2", "ru", ("bullying", "self_harm")),  # probability 0.7; is_spam dropped
        ("row-3", "kk", ("bullying", "threat")),  # "true" / "yes"; empty probability
        ("row-4", "kk-ru", ()),  # 0.49
    ]


def test_binary_threshold_is_configurable():
    cm = ColumnMap(label_map={"p": "self_harm"}, binary_threshold=0.3)
    assert cm.labels_from({"p": "0.31"}) == ["self_harm"]
    assert cm.labels_from({"p": 0.29}) == []
    assert cm.labels_from({"p": None}) == []
    assert cm.labels_from({"p": False}) == []
    assert cm.labels_from({"p": "no"}) == []


def test_generic_label_map_for_a_json_list_column():
    source = SourceConfig(path=str(DATA / "list_labels.jsonl"),
                          label_map="insult=bullying,threat=threat,spam=")
    report = validate_path(source.path, source.column_map())
    assert report.ok, report.issues
    assert {r.id: r.labels for r in report.records} == {
        "l1": ("bullying", "threat"),
        "l2": (),  # spam dropped
        "l3": ("bullying", "self_harm"),  # an existing Qorgan label passes through
        "l4": (),
    }


def test_generic_label_map_for_a_delimited_csv_column():
    source = SourceConfig(path=str(DATA / "list_labels.csv"), label_map="insult=bullying,threat=threat,spam=")
    records = load_records(source.path, source.column_map())
    assert {r.id: r.labels for r in records} == {"m1": ("bullying", "threat"), "m2": (), "m3": ()}


@pytest.mark.parametrize(("value", "expected"), [
    ('["insult", "threat"]', ["bullying", "threat"]),
    ("insult|threat", ["bullying", "threat"]),
    ("insult, threat", ["bullying", "threat"]),
    ("insult;insult", ["bullying"]),
    ("", []),
    (None, []),
    (["threat"], ["threat"]),
])
def test_list_values_in_every_spelling(value, expected):
    cm = ColumnMap(label_map={"insult": "bullying"})
    assert cm.labels_from({"labels": value}) == expected


def test_unmapped_values_are_reported_as_unknown_labels():
    # l2's "spam" is not in this map, so it passes through and validation reports it.
    source = SourceConfig(path=str(DATA / "list_labels.jsonl"), label_map="insult=bullying,threat=threat")
    report = validate_path(source.path, source.column_map())
    path = DATA / "list_labels.jsonl"
    assert [(i.where, i.code) for i in report.issues] == [(f"{path}:2", "unknown_label")]
    assert "'spam'" in report.issues[0].message
    # Without any map the source names themselves are unknown.
    codes = [(i.where, i.code) for i in validate_path(path).issues]
    assert codes == [(f"{path}:1", "unknown_label"), (f"{path}:2", "unknown_label"),
                     (f"{path}:3", "unknown_label")]


def test_binary_column_mapped_to_an_unknown_label_is_reported():
    report = validate_path(DATA / "binary_columns.csv",
                           ColumnMap(label_map={"is_threat": "menace"}, default_lang="en"))
    path = DATA / "binary_columns.csv"
    assert [(i.where, i.code) for i in report.issues] == [
        (f"{path}:2", "unknown_label"), (f"{path}:4", "unknown_label")]
    assert "'menace'" in report.issues[0].message


def test_column_map_defaults_and_renames():
    cm = ColumnMap(text_column="body", default_lang="ru", default_source="forum", id_prefix="f")
    fields = cm.fields_from({"body": "neutral", "tags": "a;b"}, 7)
    assert fields == {"id": "f-7", "text": "neutral", "lang": "ru", "labels": [], "source": "forum",
                      "group": "f-7", "tags": ["a", "b"], "unknown": []}
    # A row's own language wins over the default.
    assert cm.fields_from({"body": "x", "lang": "kk"}, 1)["lang"] == "kk"


def test_text_column_and_default_lang_from_source_config(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"message": f"{MARKER} neutral", "labels": ["threat"]}) + "\n",
                    encoding="utf-8")
    assert [i.code for i in validate_path(path).issues] == ["empty_text", "bad_lang"]
    source = SourceConfig(path=str(path), text_column="message", default_lang="kk")
    [record] = load_records(path, source.column_map())
    assert (record.id, record.lang, record.labels) == ("row-1", "kk", ("threat",))


def test_parse_label_map():
    assert parse_label_map(" insult = bullying , threat=threat,,obscene= ") == {
        "insult": "bullying", "threat": "threat", "obscene": None}
    assert parse_label_map("") == {}


@pytest.mark.parametrize(("spec", "match"), [
    ("insult", "must look like SOURCE=LABEL"),
    ("insult=bullying,threat", "must look like SOURCE=LABEL"),
    ("=bullying", "empty source name"),
    ("insult=insulting", "is not one of"),
    ("insult=Bullying", "is not one of"),
])
def test_parse_label_map_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_label_map(spec)
