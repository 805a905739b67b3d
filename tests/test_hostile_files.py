"""Hostile input files for ``qorgan score`` and ``qorgan data validate``: broken
quoting, NUL bytes, invalid UTF-8, a field over the CSV limit, JSON nested a hundred
thousand deep, a Parquet file whose text column has another type. Each gets a clear
error that names the row, never a traceback and never the text; ``qorgan score``
still accounts for every row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import qorgan
from serving.batch_io import CSV_FIELD_LIMIT

#: In every hostile value; it must appear in no message and no error column.
SECRET = "secret-walrus-2093"


def hostile_files(tmp_path):
    """name → (path, rows in the file, how the first score error starts)."""
    files = {}

    def text(name, content: bytes, rows, expect):
        path = tmp_path / name
        path.write_bytes(content)
        files[name] = (path, rows, expect)

    text("broken-quote.csv", f'id,text\nr1,fine\nr2,"{SECRET} open quote\nand more\n'.encode(), 2,
         "row 2 (line 3): a quoted field is not closed")
    text("nul.csv", f"id,text\nr1,{SECRET}\x00byte\nr2,\x00\n".encode(), 2, "empty text")  # a NUL is no content
    text("bad-utf8.csv", b"id,text\nr1," + SECRET.encode() + b"\xff\xfe\nr2,fine\n", 2, "row 1 (line 2): text not valid UTF-8")
    text("huge-field.csv", b"id,text\nr1," + (SECRET.encode() * (CSV_FIELD_LIMIT // len(SECRET) + 1)) + b"\nr2,ok\n",
         2, "row 1 (line 2): a field is longer than")
    text("bad-utf8.jsonl", b'{"id": "r1", "text": "' + SECRET.encode() + b'\xff"}\n{"id": "r2", "text": "ok"}\n', 2,
         "line 1 is not valid JSON")
    text("deep.jsonl", ('{"id": "r1", "text": "' + SECRET + '", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
                        + '{"id": "r2", "text": "ok"}\n').encode(), 2, "line 1 is nested too deeply")
    path = tmp_path / "wrong-schema.parquet"
    pq.write_table(pa.table({"id": ["r1", "r2"], "text": pa.array([1, 2], pa.int64())}), path)
    files["wrong-schema.parquet"] = (path, 2, "text is a int, not a string")
    return files


@pytest.mark.parametrize("name", ["broken-quote.csv", "nul.csv", "bad-utf8.csv", "huge-field.csv", "bad-utf8.jsonl",
                                  "deep.jsonl", "wrong-schema.parquet"])
def test_hostile_files_get_row_errors_without_the_text(name, tiny_bundle, tmp_path, capsys):
    path, rows, expect = hostile_files(tmp_path)[name]
    out = tmp_path / "out.jsonl"
    code = qorgan.main(["score", str(path), "-o", str(out), "--bundle", str(tiny_bundle), "--no-progress",
                        "--threads", "1"])
    scored = capsys.readouterr()
    assert code == 0, scored.err[-2000:]
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(got) == rows  # every row comes out
    errors = [r["error"] for r in got if r["error"]]
    assert errors and errors[0].startswith(expect), errors  # a reading problem names its row and line
    assert all(SECRET not in json.dumps(r["error"]) for r in got)

    code = qorgan.main(["data", "validate", str(path)])
    validated = capsys.readouterr()
    assert code in (0, 1)  # 1: errors found and reported, not a crash
    for stream in (scored.out, scored.err, validated.out, validated.err):
        assert "Traceback" not in stream and SECRET not in stream
