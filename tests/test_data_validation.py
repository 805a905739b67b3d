"""Validation contract: every error code is reported at the right location, valid rows
survive next to invalid ones, and no message ever quotes the text being validated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.formats import iter_rows
from data.schema import LABELS, LANGS, MAX_TEXT_CHARS, Record
from data.validate import ERROR_CODES, Issue, load_records, validate_fields, validate_path

DATA = Path(__file__).parent / "fixtures" / "data"
ERRORS_JSONL = DATA / "errors.jsonl"
ERRORS_CSV = DATA / "errors.csv"
#: Every text in the fixtures contains this; it must never appear in a message.
MARKER = "zqxmarker"

#: errors.jsonl: line → codes reported there (lines 1, 14 and 17 are valid, 5 is blank).
JSONL_EXPECTED = {
    2: ["invalid_utf8"],
    3: ["bad_json"],  # unterminated string
    4: ["bad_json"],  # a JSON list, not an object
    6: ["empty_text"],  # ""
    7: ["empty_text"],  # spaces, tab, no-break space
    8: ["empty_text"],  # no text field
    9: ["bad_text_type"],  # a number
    10: ["text_too_long"],
    11: ["bad_lang"],
    12: ["unknown_label"],
    13: ["duplicate_id"],  # reuses the id of line 1
    15: ["bad_lang", "unknown_label"],
    16: ["label_conflict"],  # bullying both set and unknown
}
#: errors.csv: line → codes (1 header, 2 valid, 5-6 one valid quoted two-line row,
#: 12 blank, 13 valid).
CSV_EXPECTED = {
    3: ["invalid_utf8"],
    4: ["bad_csv"],  # unquoted comma: more fields than the header
    7: ["empty_text"],
    8: ["empty_text"],
    9: ["bad_lang"],
    10: ["unknown_label"],
    11: ["duplicate_id"],  # reuses the id of line 2
}


def _by_line(issues: list[Issue], path: Path) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for issue in issues:
        file, _, line = issue.where.rpartition(":")
        assert file == str(path), issue.where
        out.setdefault(int(line), []).append(issue.code)
    return out


def _assert_no_text(message: str, *fragments: str) -> None:
    assert MARKER not in message
    for fragment in fragments:
        assert fragment not in message


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def jsonl_report():
    return validate_path(ERRORS_JSONL)


@pytest.fixture(scope="module")
def csv_report():
    return validate_path(ERRORS_CSV)


def test_fixtures_cover_every_error_code(jsonl_report, csv_report):
    seen = {i.code for i in jsonl_report.issues + csv_report.issues}
    assert seen == set(ERROR_CODES)


def test_jsonl_errors_are_reported_at_their_lines(jsonl_report):
    assert _by_line(jsonl_report.issues, ERRORS_JSONL) == JSONL_EXPECTED
    assert not jsonl_report.ok


def test_csv_errors_are_reported_at_their_lines(csv_report):
    assert _by_line(csv_report.issues, ERRORS_CSV) == CSV_EXPECTED


def test_valid_rows_survive_next_to_invalid_ones(jsonl_report, csv_report):
    assert [r.id for r in jsonl_report.records] == ["r01", "r14", "r17"]
    # Blank lines are skipped, not counted as rows.
    assert jsonl_report.rows == 16
    assert {r.id for r in csv_report.records} == {"k01", "k04", "k13"}
    two_lines = next(r for r in csv_report.records if r.id == "k04")
    assert two_lines.text == f"{MARKER} quoted text over\ntwo lines"
    assert two_lines.labels == ("threat",)


def test_partial_labels_are_read_as_unknown_not_negative(jsonl_report):
    partial = next(r for r in jsonl_report.records if r.id == "r17")
    assert partial.unknown == ("bullying",) and partial.is_clean
    vector = partial.label_vector()
    assert np.isnan(vector[LABELS.index("bullying")])
    assert [v for i, v in enumerate(vector) if i != LABELS.index("bullying")] == [0.0, 0.0, 0.0]
    assert Record.from_dict(partial.to_dict()) == partial


def test_invalid_utf8_points_at_the_byte(jsonl_report, csv_report):
    raw = ERRORS_JSONL.read_bytes().splitlines()[1]
    column = raw.index(b"\xff") + 1
    [issue] = [i for i in jsonl_report.issues if i.code == "invalid_utf8"]
    assert issue.message.endswith(f"column {column}")
    [issue] = [i for i in csv_report.issues if i.code == "invalid_utf8"]
    column = ERRORS_CSV.read_bytes().splitlines()[2].index(b"\xff") + 1
    assert issue.message.endswith(f"line 3, column {column}")


def test_duplicate_id_names_the_first_location(jsonl_report, csv_report):
    [issue] = [i for i in jsonl_report.issues if i.code == "duplicate_id"]
    assert f"{ERRORS_JSONL}:1" in issue.message
    [issue] = [i for i in csv_report.issues if i.code == "duplicate_id"]
    assert f"{ERRORS_CSV}:2" in issue.message


def test_no_issue_message_quotes_the_text(jsonl_report, csv_report):
    for issue in jsonl_report.issues + csv_report.issues:
        _assert_no_text(issue.message, "homework", "unterminated", "comma")
        _assert_no_text(str(issue), "homework", "unterminated", "comma")
        assert str(issue) == f"{issue.where}: {issue.code}: {issue.message}"
        assert issue.code in ERROR_CODES


@pytest.mark.parametrize("n_chars", [MAX_TEXT_CHARS + 1, 50_000, 300_000])
def test_long_texts_are_reported_without_quoting_them(tmp_path, n_chars):
    words = " ".join(f"tok{i:06d}" for i in range(n_chars // 10 + 1))
    text = f"{MARKER} {words}"[:n_chars]
    path = _write_jsonl(tmp_path / "long.jsonl", [
        {"id": "a", "text": "short neutral text about homework 123", "lang": "en"},
        {"id": "b", "text": text, "lang": "en"},
    ])
    report = validate_path(path)
    assert [(i.where, i.code) for i in report.issues] == [(f"{path}:2", "text_too_long")]
    assert f"has {n_chars} characters" in report.issues[0].message
    _assert_no_text(str(report.issues[0]), "tok0")
    assert [r.id for r in report.records] == ["a"]


def test_text_at_the_limit_is_accepted(tmp_path):
    path = _write_jsonl(tmp_path / "limit.jsonl", [{"id": "a", "text": "x" * MAX_TEXT_CHARS, "lang": "en"}])
    assert validate_path(path).ok


def test_long_csv_text_is_reported_without_quoting_it(tmp_path):
    text = f"{MARKER} " + " ".join(f"tok{i:06d}" for i in range(700))  # ~7 000 chars
    path = tmp_path / "long.csv"
    path.write_text(f"id,text,lang\na,short neutral text,en\nb,{text},en\nc,another neutral text,kk\n",
                    encoding="utf-8")
    report = validate_path(path)
    assert [(i.where, i.code) for i in report.issues] == [(f"{path}:3", "text_too_long")]
    _assert_no_text(str(report.issues[0]), "tok0")
    assert [r.id for r in report.records] == ["a", "c"]


def test_csv_field_over_the_parser_limit_is_a_bad_row_not_a_crash(tmp_path):
    # Python's csv module refuses fields over 131 072 characters; that must become a
    # located issue (and the parser must not resync inside the text and echo it).
    text = f"{MARKER} " + " ".join(f"tok{i:06d}" for i in range(20_000))
    path = tmp_path / "huge.csv"
    path.write_text(f'id,text,lang\na,short neutral text,en\nb,"{text}\nsecond, line",en\n',
                    encoding="utf-8")
    report = validate_path(path)
    assert [(i.where, i.code) for i in report.issues] == [(f"{path}:3", "bad_csv")]
    _assert_no_text(str(report.issues[0]), "tok0", "second")
    assert [r.id for r in report.records] == ["a"]


@pytest.mark.parametrize("text", ["\u200b\u200b", "\ufeff \u2060", "\x00\x01", "\u00ad"])
def test_text_of_invisible_characters_only_is_empty(tmp_path, text):
    # It would normalise to "" and reach training as an empty message.
    path = _write_jsonl(tmp_path / "zw.jsonl", [{"id": "a", "text": text, "lang": "en"}])
    assert [i.code for i in validate_path(path).issues] == ["empty_text"]


@pytest.mark.parametrize("text", [[MARKER], {"t": MARKER}, 1.5, True])
def test_non_string_text_is_bad_text_type(text):
    issues = validate_fields({"id": "a", "text": text, "lang": "en", "labels": []}, "here")
    assert [i.code for i in issues] == ["bad_text_type"]
    _assert_no_text(issues[0].message)
    assert type(text).__name__ in issues[0].message


@pytest.mark.parametrize("lang", [None, "", "KK", "kz", "ru-kk", ["kk"]])
def test_bad_language_codes(lang):
    issues = validate_fields({"id": "a", "text": "neutral text", "lang": lang, "labels": []}, "here")
    assert [(i.where, i.code) for i in issues] == [("here", "bad_lang")]


def test_every_schema_language_and_label_is_accepted():
    for lang in LANGS:
        assert validate_fields({"text": "neutral text", "lang": lang, "labels": list(LABELS)}, "x") == []


def test_long_field_values_are_shortened_in_messages():
    issues = validate_fields({"text": "neutral", "lang": "q" * 500, "labels": ["w" * 500]}, "x")
    assert [i.code for i in issues] == ["bad_lang", "unknown_label"]
    assert all(len(i.message) < 200 for i in issues)


@pytest.mark.parametrize("labels", [5, "[not json", {"bullying": 1}, "[1, 2]"])
def test_malformed_labels_are_reported_not_raised(tmp_path, labels):
    path = _write_jsonl(tmp_path / "labels.jsonl", [
        {"id": "a", "text": "neutral text one", "lang": "en", "labels": labels},
        {"id": "b", "text": "neutral text two", "lang": "en", "labels": ["bullying"]},
    ])
    report = validate_path(path)
    assert {(i.where, i.code) for i in report.issues} == {(f"{path}:1", "unknown_label")}
    assert [r.id for r in report.records] == ["b"]


def test_utf8_bom_is_accepted_in_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "text": "neutral", "lang": "en"}).encode() + b"\n")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfid,text,lang\na,neutral,en\n")
    for path in (jsonl, csv_path):
        report = validate_path(path)
        assert report.ok, report.issues
        assert [r.id for r in report.records] == ["a"]


def test_invalid_utf8_in_csv_header_is_reported_at_line_1(tmp_path):
    path = tmp_path / "header.csv"
    path.write_bytes(b"id,te\xffxt,lang\na,neutral,en\n")
    report = validate_path(path)
    assert (f"{path}:1", "invalid_utf8") in [(i.where, i.code) for i in report.issues]


def test_crlf_csv_line_numbers(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"id,text,lang\r\na,neutral one,en\r\n\r\nb,neutral two,xx\r\n")
    report = validate_path(path)
    assert [(i.where, i.code) for i in report.issues] == [(f"{path}:4", "bad_lang")]


def test_rows_without_id_get_unique_positional_ids(tmp_path):
    path = _write_jsonl(tmp_path / "noid.jsonl", [
        {"text": "neutral text one", "lang": "en"},
        {"text": "neutral text two", "lang": "en"},
    ])
    report = validate_path(path)
    assert report.ok
    assert [r.id for r in report.records] == ["row-1", "row-2"]


def test_load_records_raises_with_located_issues_and_no_text():
    with pytest.raises(ValueError) as info:
        load_records(ERRORS_JSONL)
    message = str(info.value)
    assert message.startswith(f"14 invalid rows in {ERRORS_JSONL}:")
    assert f"{ERRORS_JSONL}:15: unknown_label" in message
    _assert_no_text(message, "homework")


def test_load_records_lists_at_most_20_issues(tmp_path):
    path = _write_jsonl(tmp_path / "many.jsonl",
                        [{"id": f"r{i}", "text": f"{MARKER} {i}", "lang": "xx"} for i in range(25)])
    with pytest.raises(ValueError) as info:
        load_records(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "… and 5 more"
    _assert_no_text(str(info.value))


def test_load_records_returns_records_of_clean_data():
    records = load_records(DATA / "clean.jsonl")
    assert len(records) == 12
    assert records[1].labels == ("bullying", "threat")  # canonical LABELS order
    assert records[-1].group == "kkru-1" and records[-1].is_augmented
    assert records[2].is_hard_negative


def test_raw_rows_carry_locations_not_only_data():
    rows = list(iter_rows(ERRORS_JSONL))
    assert [r.where.rpartition(":")[2] for r in rows] == [str(n) for n in range(1, 18) if n != 5]
    assert all((r.data is None) == (r.error is not None) for r in rows)
