"""The batch scorer: every file format, rows with errors kept, priority sort,
resume after a crash, atomic output, and the ``qorgan score`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import qorgan
from models.bundle import load_bundle
from serving.batch import STATE_VERSION, BatchConfig, score_file
from serving.batch_io import Reader
from serving.scorer import Scorer

N_ROWS = 53
CHUNK = 10
#: Row index -> a text that cannot be scored (50: zero-width characters only, nothing to score).
BAD = {7: "", 21: "   ", 40: None, 50: "\u200b\u2060"}


@pytest.fixture(scope="module")
def scorer(tiny_bundle) -> Scorer:
    # fp32: dynamic int8 quantises activations per batch, so the same message can
    # score differently (here up to ~5e-3) in the scorer's chunks and in the
    # reference call below; fp32 makes the comparison exact up to float noise.
    return Scorer.from_bundle(tiny_bundle, variant="fp32", intra_op_threads=1)


def rows() -> list[dict]:
    out = []
    for i in range(N_ROWS):
        text = BAD.get(i, f"note {i}: meet at the library, Сәлем, привет")
        out.append({"id": f"r{i:03d}", "text": text, "group": i % 4})
    return out


def write_input(path: Path, data: list[dict] | None = None) -> Path:
    data = rows() if data is None else data
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for r in data:
                rec = {k: v for k, v in r.items() if not (k == "text" and v is None)}  # missing key
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    elif path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(data[0]))
            for r in data:
                w.writerow(["" if v is None else v for v in r.values()])
    else:
        pq.write_table(pa.Table.from_pylist(data), path)
    return path


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    return pq.read_table(path).to_pylist()


def run(scorer, src: Path, out: Path, **kw):
    config = BatchConfig(input=src, output=out, chunk_rows=kw.pop("chunk_rows", CHUNK), progress=False, **kw)
    return score_file(config, scorer=scorer)


FORMATS = [(".csv", ".csv"), (".jsonl", ".jsonl"), (".parquet", ".parquet"),
           (".csv", ".parquet"), (".jsonl", ".csv"), (".parquet", ".jsonl")]


@pytest.mark.parametrize(("src_ext", "out_ext"), FORMATS, ids=[f"{a[1:]}-{b[1:]}" for a, b in FORMATS])
def test_every_format_keeps_all_rows_and_columns(scorer, tmp_path, src_ext, out_ext):
    src = write_input(tmp_path / f"in{src_ext}")
    out = tmp_path / f"out{out_ext}"
    summary = run(scorer, src, out)
    got = read_output(out)
    assert summary.rows_in == len(got) == N_ROWS
    assert summary.rows_error == len(BAD) and summary.rows_scored == N_ROWS - len(BAD)
    assert sum(summary.per_priority.values()) == summary.rows_scored
    assert [r["id"] for r in got] == [r["id"] for r in rows()]
    labels = scorer.labels
    expected_cols = ["id", "text", "group", *(f"score_{lb}" for lb in labels),
                     *(f"flag_{lb}" for lb in labels), "priority", "error"]
    assert list(got[0]) == expected_cols
    good = [i for i in range(N_ROWS) if i not in BAD]
    proba = scorer.proba([rows()[i]["text"] for i in good])
    for k, i in enumerate(good):
        r = got[i]
        assert str(r["group"]) == str(i % 4)
        assert r["error"] in (None, "")
        np.testing.assert_allclose([float(r[f"score_{lb}"]) for lb in labels], proba[k], atol=1e-4)
        assert r["priority"] in scorer.priority_levels
    for i in BAD:
        assert got[i]["error"] and got[i]["priority"] in (None, "")
        assert all(got[i][f"score_{lb}"] in (None, "") for lb in labels)
    assert not (tmp_path / f".out{out_ext}.qorgan-parts").exists()


def test_error_reasons(scorer, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "fine note"}\n{"id": 2, "text": 5}\n{"id": 3}\n'
                   '{"id": 4, "text": " "}\nnot json at all\n[1, 2]\n{"id": 7, "text": "also fine"}\n',
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    summary = run(scorer, src, out)
    got = read_output(out)
    assert [r["error"] for r in got] == [None, "text is a int, not a string", "missing text", "empty text",
                                         "line 5 is not valid JSON", "line 6 is not a JSON object", None]
    assert summary.rows_in == 7 and summary.rows_error == 5


@pytest.mark.parametrize("out_ext", [".jsonl", ".parquet"])
def test_every_input_format_scores_the_same_rows_the_same(scorer, tmp_path, out_ext):
    texts = ['a "quoted", multi-line\nnote: see you at 5', "", "   ", "Сәлем, привет, hi", "ok"]
    data = [{"id": f"r{i:02d}", "text": texts[i % len(texts)], "group": i % 3} for i in range(23)]
    got = {}
    for src_ext in (".csv", ".jsonl", ".parquet"):
        out = tmp_path / f"out-{src_ext[1:]}{out_ext}"
        run(scorer, write_input(tmp_path / f"in{src_ext}", data), out)
        got[src_ext] = read_output(out)
    scored = [*(f"score_{lb}" for lb in scorer.labels), *(f"flag_{lb}" for lb in scorer.labels),
              "priority", "error"]
    columns = {ext: [{c: r[c] for c in ["id", "text", *scored]} for r in out] for ext, out in got.items()}
    assert columns[".csv"] == columns[".jsonl"] == columns[".parquet"]
    assert [r["error"] for r in columns[".csv"]][:5] == [None, "empty text", "empty text", None, None]
    assert all(r["priority"] in scorer.priority_levels for r in columns[".csv"] if r["error"] is None)


def test_jsonl_values_of_any_type_are_kept(scorer, tmp_path):
    records = [{"id": 1, "text": "fine note", "meta": {"a": [1, 2]}, "n": 1, "ok": True},
               {"id": 2, "text": 5, "meta": [1, "x"], "n": 2.5},
               {"id": 3, "meta": None, "ok": False, "big": 2**70}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n[1, 2]\n", encoding="utf-8")
    errors = [None, "text is a int, not a string", "missing text", "line 4 is not valid JSON",
              "line 5 is not a JSON object"]
    columns = ["id", "text", "meta", "n", "ok", "big"]

    run(scorer, src, tmp_path / "out.jsonl", chunk_rows=2)
    back = read_output(tmp_path / "out.jsonl")
    assert [r["error"] for r in back] == errors
    assert [{c: r[c] for c in columns} for r in back] == [{c: r.get(c) for c in columns}
                                                          for r in [*records, {}, {}]]
    assert back[0]["n"] == 1.0 and back[2]["big"] == 2**70  # one JSON number type; beyond int64 kept

    run(scorer, src, tmp_path / "out.csv", chunk_rows=2)
    as_csv = read_output(tmp_path / "out.csv")
    assert [r["error"] or None for r in as_csv] == errors
    assert [r["meta"] for r in as_csv] == ['{"a": [1, 2]}', '[1, "x"]', "", "", ""]
    assert [r["text"] for r in as_csv] == ["fine note", "5", "", "", ""]
    assert [r["ok"] for r in as_csv] == ["true", "", "false", "", ""]

    run(scorer, src, tmp_path / "out.parquet", chunk_rows=2)
    table = pq.read_table(tmp_path / "out.parquet")
    assert [str(table.schema.field(c).type) for c in columns] == ["int64", "string", "string", "double",
                                                                  "bool", "string"]
    assert table.column("text").to_pylist() == ["fine note", "5", None, None, None]
    assert table.column("big").to_pylist() == [None, None, str(2**70), None, None]
    assert table.column("error").to_pylist() == errors


class KeywordScorer:
    """The tiny model's scores, except that ``[label]`` in a text makes that label certain."""

    def __init__(self, real: Scorer, fail_on_call: int | None = None) -> None:
        self.real, self.calls, self.fail_on_call = real, 0, fail_on_call

    def __getattr__(self, name):
        return getattr(self.real, name)

    def proba(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash")
        return np.array([[1.0 if f"[{lb}]" in t else 0.0 for lb in self.real.labels] for t in texts])


def keyword_rows(n: int) -> list[dict]:
    tags = ["", "[bullying]", "[threat]", "[self_harm]", "[bullying_disclosure]", "[bullying] [self_harm]"]
    return [{"id": f"k{i:04d}", "text": (f"note {i} {tags[i % len(tags)]}" if i % 17 else "")} for i in range(n)]


def test_sort_by_priority_is_stable_and_most_urgent_first(scorer, tmp_path):
    src = tmp_path / "in.parquet"
    data = keyword_rows(80)
    pq.write_table(pa.Table.from_pylist(data), src)
    out = tmp_path / "out.csv"
    summary = run(KeywordScorer(scorer), src, out, sort="priority")
    got = read_output(out)
    assert len(got) == len(data) and sorted(r["id"] for r in got) == [r["id"] for r in data]
    rank = {lvl: i for i, lvl in enumerate(scorer.priority_levels)}
    keys = [(rank.get(r["priority"], len(rank)), r["id"]) for r in got]
    assert keys == sorted(keys)  # levels in order, input order (ids) within a level, errors last
    assert summary.per_priority == {"urgent": 24, "high": 24, "normal": 14, "low": 13}
    assert [r["priority"] for r in got[:2]] == ["urgent", "urgent"] and got[-1]["error"] == "empty text"


@pytest.mark.parametrize("sort", [None, "priority"])
def test_resume_after_a_crash_neither_loses_nor_duplicates_rows(scorer, tmp_path, sort):
    src = tmp_path / "in.jsonl"
    data = keyword_rows(95)
    src.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous output\n", encoding="utf-8")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(KeywordScorer(scorer, fail_on_call=4), src, out, sort=sort)
    assert out.read_text(encoding="utf-8") == "previous output\n"  # untouched until complete
    work = tmp_path / ".out.jsonl.qorgan-parts"
    assert json.loads((work / "state.json").read_text())["rows_done"] == 3 * CHUNK
    (work / "part-0000009.jsonl").write_text('{"id": "half-written leftover"}\n')  # never recorded

    with pytest.raises(ValueError, match="--resume"):
        run(KeywordScorer(scorer), src, out, sort=sort)
    with pytest.raises(ValueError, match="policy"):
        run(KeywordScorer(scorer), src, out, sort=sort, resume=True, policy="moderation")

    summary = run(KeywordScorer(scorer), src, out, sort=sort, resume=True)
    got = read_output(out)
    ids = [r["id"] for r in got]
    assert summary.rows_in == len(got) == len(data)
    assert summary.resumed_rows == 3 * CHUNK
    assert len(set(ids)) == len(ids) and set(ids) == {r["id"] for r in data}
    if sort is None:
        assert ids == [r["id"] for r in data]
    assert not work.exists()

    fresh = tmp_path / "fresh.jsonl"
    assert run(KeywordScorer(scorer), src, fresh, sort=sort).per_priority == summary.per_priority
    assert read_output(fresh) == got


def crash_after_three_chunks(scorer, src: Path, out: Path, sort: str | None) -> Path:
    """A run that died scoring its fourth chunk; its work folder."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(KeywordScorer(scorer, fail_on_call=4), src, out, sort=sort)
    return out.parent / f".{out.name}.qorgan-parts"


@pytest.mark.parametrize("sort", [None, "priority"])
def test_part_order_comes_from_the_state_not_file_names(scorer, tmp_path, sort):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(keyword_rows(57)), src)
    out = tmp_path / "out.csv"
    work = crash_after_three_chunks(scorer, src, out, sort)
    state = json.loads((work / "state.json").read_text())
    assert {p["chunk"] for p in state["parts"]} == {0, 1, 2}
    assert all((p["bucket"] is None) == (sort is None) for p in state["parts"])
    # Names that sort the other way round and say nothing of chunk or bucket.
    for i, part in enumerate(state["parts"]):
        new = f"renamed-{chr(ord('z') - i)}.csv"
        (work / part["file"]).rename(work / new)
        part["file"] = new
    (work / "state.json").write_text(json.dumps(state))

    run(KeywordScorer(scorer), src, out, sort=sort, resume=True)
    fresh = tmp_path / "fresh.csv"
    run(KeywordScorer(scorer), src, fresh, sort=sort)
    assert read_output(out) == read_output(fresh)


def test_resume_refuses_a_state_of_an_older_version(scorer, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in keyword_rows(45)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    work = crash_after_three_chunks(scorer, src, out, "priority")
    state = json.loads((work / "state.json").read_text())
    assert state["version"] == STATE_VERSION
    # Version 1 listed part file names only; their order was parsed from the names.
    state.update(version=1, parts=[p["file"] for p in state["parts"]])
    (work / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="made with a different state version; delete that folder"):
        run(KeywordScorer(scorer), src, out, sort="priority", resume=True)
    assert work.exists() and not out.exists()


def test_reader_streams_fixed_size_chunks(tmp_path):
    src = write_input(tmp_path / "in.csv")
    reader = Reader(src, chunk_rows=CHUNK)
    assert reader.rows == N_ROWS and reader.columns == ["id", "text", "group"]
    assert [len(c) for c in reader] == [CHUNK] * (N_ROWS // CHUNK) + [N_ROWS % CHUNK]


def test_reader_keeps_jsonl_lines_that_are_not_objects(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("not json\n[1]\n\n7\n", encoding="utf-8")
    reader = Reader(src, chunk_rows=2)
    assert reader.rows == 3 and reader.columns == []
    chunks = list(reader)
    assert [len(c) for c in chunks] == [2, 1]
    assert chunks[1].problems == ["line 4 is not a JSON object"]


def test_malformed_csv_rows_come_out_with_an_error_naming_the_row(scorer, tmp_path):
    """One bad row (wrong field count, a byte that is not UTF-8, a quote left open) used
    to stop the whole file; now every row comes out, and no error shows a value."""
    src = tmp_path / "in.csv"
    src.write_bytes(b'id,text\nr1,fine\nr2,a secret message,extra\nr3,bad \xff secret byte\n\n'
                    b'r4,"two\nlines"\nr5,"open secret quote\nmore secret\n')
    reader = Reader(src, chunk_rows=CHUNK)
    assert reader.rows == 5 and reader.columns == ["id", "text"]
    summary = run(scorer, src, tmp_path / "out.jsonl")
    rows = read_output(tmp_path / "out.jsonl")
    assert summary.rows_in == len(rows) == 5 and summary.rows_error == 3
    assert [r["id"] for r in rows] == ["r1", None, "r3", "r4", None]
    assert [r["error"] for r in rows] == [
        None,
        "row 2 (line 3): 3 fields where the header has 2",
        "row 3 (line 4): text not valid UTF-8",
        None,
        "row 5 (line 8): a quoted field is not closed before the end of the file",
    ]
    assert rows[3]["priority"] in scorer.priority_levels
    assert "secret" not in (tmp_path / "out.jsonl").read_text()
    src.write_bytes(b"id,t\xffext\nr1,fine\n")
    with pytest.raises(ValueError, match="header line cannot be read") as failure:
        Reader(src, chunk_rows=CHUNK)
    assert "fine" not in str(failure.value)


def test_a_lone_surrogate_in_jsonl_is_a_row_error_not_a_crash(scorer, tmp_path):
    """JSON can escape a lone surrogate; the tokenizer and every output format refuse one."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "hi \\udc80 there"}\n'
                   '{"id": "c", "text": "ok", "note": ["\\ud800"]}\n{"\\udfff": 1, "text": "x"}\n', encoding="utf-8")
    for out in (tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        run(scorer, src, out)
        rows = read_output(out)
        assert [r["id"] for r in rows] == ["a", "b", "c", None]
        assert [r["error"] for r in rows] == [
            None, "line 2: text not valid Unicode (a lone surrogate)",
            "line 3: note not valid Unicode (a lone surrogate)",
            "line 4 has a key that is not valid Unicode (a lone surrogate)"]


def test_bad_runs_fail_clearly(scorer, tmp_path):
    src = write_input(tmp_path / "in.csv")
    with pytest.raises(ValueError, match="--text-column"):
        run(scorer, src, tmp_path / "out.csv", text_column="message")
    with pytest.raises(ValueError, match="unknown policy"):
        run(scorer, src, tmp_path / "out.csv", policy="strictest")
    with pytest.raises(ValueError, match="unknown file type"):
        BatchConfig(input=src, output=tmp_path / "out.xlsx")
    with pytest.raises(ValueError, match="overwrite the input"):
        BatchConfig(input=src, output=src)
    with pytest.raises(FileNotFoundError):
        run(scorer, tmp_path / "missing.csv", tmp_path / "out.csv")


def test_empty_input_gives_empty_output(scorer, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n", encoding="utf-8")
    summary = run(scorer, src, tmp_path / "out.parquet")
    assert summary.rows_in == 0
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 0


def test_qorgan_score_command(tiny_bundle, tmp_path, capsys):
    src = write_input(tmp_path / "in.csv")
    out = tmp_path / "scored.jsonl"
    # No --policy: the bundle's batch default (triage), not the HTTP API's (moderation).
    code = qorgan.main(["score", str(src), "-o", str(out), "--bundle", str(tiny_bundle),
                        "--text-column", "text", "--sort", "priority",
                        "--chunk-rows", "16", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert "policy triage" in captured.out
    assert f"({load_bundle(tiny_bundle).digest})" in captured.out  # the exact bundle that scored
    assert len(read_output(out)) == N_ROWS
    assert f"rows in: {N_ROWS}" in captured.out and f"rows with errors: {len(BAD)}" in captured.out
    assert "per priority:" in captured.out
    assert "msg/s" in captured.err  # the progress bar (on stderr) shows a rate
    assert qorgan.main(["score", str(src), "-o", str(tmp_path / "x.csv"), "--bundle",
                        str(tmp_path / "no-bundle")]) == 2
