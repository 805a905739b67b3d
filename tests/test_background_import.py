"""``data.background.importers``: sentence rebuilding, SHA-256 pinning, filters, dedup and
the Parquet layout, on tiny synthetic raw files; plus sanity checks of the real registry
and of the committed Parquet files."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import qorgan
from data.background import importers
from data.background.importers import (
    COLUMNS,
    SOURCES,
    RawFile,
    RawFileError,
    SourceSpec,
    conllu_parser,
    detokenize,
    import_source,
    iob2_parser,
    read_conllu,
    read_iob2,
    table_parser,
)

BACKGROUND = Path(importers.__file__).parent
PERMISSIVE = {"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "MIT", "Apache-2.0"}
MARKER = "zqxmarker"

CONLLU = """\
# newdoc id = reviews-000001
# sent_id = reviews-000001-0001
# genre = social
# text = The staff were friendly and quick.
1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tstaff\tstaff\tNOUN\t_\t_\t0\troot\t_\t_

# sent_id = weblog-000002-0001
1\tI\tI\tPRON\t_\t_\t2\tnsubj\t_\t_
2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_
2\tca\tcan\tAUX\t_\t_\t0\troot\t_\t_
3\tn't\tnot\tPART\t_\t_\t2\tadvmod\t_\t_
4\tcome\tcome\tVERB\t_\t_\t2\txcomp\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_
"""

IOB2 = """\
AID1 O
« O
Атырау B-LOCATION
» O
тұрғындары O
( O
бүгін O
) O
жиналды O
, O
деді O
ол O
. O

AID2 O
Ол O
" O
Алма O
" O
деп O
жауап O
берді O
! O
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(root: Path, rel: str, text: str) -> RawFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return RawFile(rel, sha(path))


def spec(name: str, files: tuple[RawFile, ...], parse, lang: str = "en") -> SourceSpec:
    return SourceSpec(name=name, lang=lang, licence="CC0-1.0", repo="example/repo", commit="0" * 40,
                      files=files, description="test", attribution="test", parse=parse)


@pytest.fixture
def registry(monkeypatch):
    """A registry holding only the specs a test adds."""
    fake: dict[str, SourceSpec] = {}
    monkeypatch.setattr(importers, "SOURCES", fake)
    return fake


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------------------
# Sentence rebuilding.


@pytest.mark.parametrize("tokens, text", [
    (["«", "Атырау", "»", "тұрғындары", ",", "деді", "."], "«Атырау» тұрғындары, деді."),
    (["Ол", "(", "бүгін", ")", "келді", "!"], "Ол (бүгін) келді!"),
    (["Ол", '"', "Алма", '"', "деді", "..."], 'Ол "Алма" деді...'),
    (["Сәлем", ":", "50", "%", "?", "»"], "Сәлем: 50%?»"),
    (["a", "—", "b"], "a — b"),
])
def test_detokenize(tokens, text):
    assert detokenize(tokens) == text


def test_read_conllu_uses_text_lines_and_rebuilds_missing_ones(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    first, second = read_conllu(path)
    assert first["text"] == "The staff were friendly and quick."
    assert first["sent_id"] == "reviews-000001-0001" and first["genre"] == "social"
    assert first["newdoc id"] == "reviews-000001"
    # No "# text": the multiword token is used once and SpaceAfter=No is honoured.
    assert second["text"] == "I can't come."


def test_read_iob2_with_and_without_ids(tmp_path):
    path = tmp_path / "iob.txt"
    path.write_text(IOB2, encoding="utf-8")
    got = [(sid, detokenize(tokens)) for sid, tokens in read_iob2(path, r"[A-Z]+\d+")]
    assert got == [("AID1", "«Атырау» тұрғындары (бүгін) жиналды, деді ол."),
                   ("AID2", 'Ол "Алма" деп жауап берді!')]
    ids = [sid for sid, _ in read_iob2(path)]
    assert ids == ["iob.txt:1", "iob.txt:15"]


# ---------------------------------------------------------------------------
# Import: pinning, filters, dedup, output.


def test_conllu_source_end_to_end(tmp_path, registry):
    raw = tmp_path / "raw"
    files = (write(raw, "data/a.conllu", CONLLU),)
    registry["toy"] = spec("toy", files, conllu_parser(lambda sid, meta: sid.split("-")[0]))
    out = import_source("toy", raw, tmp_path / "out")
    assert out == tmp_path / "out" / "toy.parquet"
    table = pq.read_table(out)
    assert tuple(table.column_names) == COLUMNS
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    assert table.schema.metadata[b"source"] == b"toy"
    rows = table.to_pylist()
    assert [(r["id"], r["text"], r["domain"], r["origin_id"]) for r in rows] == [
        ("toy-1", "The staff were friendly and quick.", "reviews", "a.conllu:reviews-000001-0001"),
        ("toy-2", "I can't come.", "weblog", "a.conllu:weblog-000002-0001"),
    ]
    assert {(r["lang"], r["source"], r["licence"]) for r in rows} == {("en", "toy", "CC0-1.0")}


def test_iob2_source(tmp_path, registry):
    raw = tmp_path / "raw"
    registry["ner"] = spec("ner", (write(raw, "ner/test.txt", IOB2),),
                           iob2_parser("news", r"[A-Z]+\d+"), lang="kk")
    rows = read_rows(import_source("ner", raw, tmp_path))
    assert [r["text"] for r in rows] == ["«Атырау» тұрғындары (бүгін) жиналды, деді ол.",
                                         'Ол "Алма" деп жауап берді!']
    assert [r["origin_id"] for r in rows] == ["AID1", "AID2"]
    assert {r["domain"] for r in rows} == {"news"} and {r["lang"] for r in rows} == {"kk"}


def test_filters_and_dedup(tmp_path, registry):
    long_words = " ".join(["word"] * 81)
    long_chars = " ".join(["x" * 40] * 11)  # 11 words, 450 characters
    texts = ["Good morning to you.", "good   MORNING to you.", "Too short", long_words, long_chars,
             " ".join(["word"] * 80), "Good morning to you!", "\u200bHello  there,\u00a0 friend."]
    body = "toxic\tneutral1\n" + "".join(f"{MARKER}\t{t}\n" for t in texts) + f"{MARKER}\t\n"
    raw = tmp_path / "raw"
    registry["tsv"] = spec("tsv", (write(raw, "p/x.tsv", body),), table_parser("neutral1", domain="rewrite"))
    rows = read_rows(import_source("tsv", raw, tmp_path))
    assert [r["text"] for r in rows] == ["Good morning to you.", " ".join(["word"] * 80),
                                         "Good morning to you!", "Hello there, friend."]
    assert [r["id"] for r in rows] == ["tsv-1", "tsv-2", "tsv-3", "tsv-4"]
    assert [r["origin_id"] for r in rows] == ["x.tsv:2", "x.tsv:7", "x.tsv:8", "x.tsv:9"]
    # Only the chosen column is read: the other column never reaches the output.
    assert not any(MARKER in r["text"] for r in rows)


def test_zipped_csv_with_id_and_domain_columns(tmp_path, registry):
    raw = tmp_path / "raw"
    archive = raw / "dataset" / "train.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.csv", 'custom_id,text,domain,label\n'
                                 'a1,"Өте жақсы қосымша, ұнады",appstore,1\n'
                                 'a2,Кітап маған ұнамады екен,bookstore,0\n')
    registry["rev"] = spec("rev", (RawFile("dataset/train.zip", sha(archive)),),
                           table_parser("text", id_column="custom_id", domain_column="domain",
                                        domain_prefix="reviews-"), lang="kk")
    rows = read_rows(import_source("rev", raw, tmp_path))
    assert [(r["origin_id"], r["domain"], r["text"]) for r in rows] == [
        ("a1", "reviews-appstore", "Өте жақсы қосымша, ұнады"),
        ("a2", "reviews-bookstore", "Кітап маған ұнамады екен")]


def test_wrong_sha256_is_refused_naming_the_file(tmp_path, registry, capsys):
    raw = tmp_path / "raw"
    good = write(raw, "data/a.conllu", CONLLU.replace("friendly", MARKER))
    registry["toy"] = spec("toy", (RawFile(good.path, "0" * 64),), conllu_parser(lambda s, m: "x"))
    with pytest.raises(RawFileError, match=r"data/a\.conllu.*sha256") as err:
        import_source("toy", raw, tmp_path / "out")
    assert MARKER not in str(err.value)
    assert not (tmp_path / "out").exists()
    # Through the CLI: exit 2, the file named, no text anywhere.
    assert qorgan.main(["data", "import-background", "toy", str(raw), "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "data/a.conllu" in captured.err and MARKER not in captured.out + captured.err


def test_missing_raw_file_is_refused(tmp_path, registry):
    registry["toy"] = spec("toy", (RawFile("nowhere.conllu", "0" * 64),), conllu_parser(lambda s, m: "x"))
    with pytest.raises(RawFileError, match="nowhere.conllu.*missing"):
        import_source("toy", tmp_path, tmp_path)


def test_unknown_source(tmp_path, registry):
    with pytest.raises(ValueError, match="unknown background source"):
        import_source("nope", tmp_path, tmp_path)


def test_cli_list_files_and_import(tmp_path, registry, capsys):
    raw = tmp_path / "raw"
    registry["toy"] = spec("toy", (write(raw, "data/a.conllu", CONLLU.replace("friendly", MARKER)),),
                           conllu_parser(lambda s, m: "web"))
    assert qorgan.main(["data", "import-background", "--list"]) == 0
    assert capsys.readouterr().out.split("\t")[:3] == ["toy", "en", "CC0-1.0"]
    assert qorgan.main(["data", "import-background", "--files", "toy"]) == 0
    assert capsys.readouterr().out == f"{'0' * 40} data/a.conllu\n"
    out = tmp_path / "bg"
    assert qorgan.main(["data", "import-background", "toy", str(raw), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 rows" in captured.err and MARKER not in captured.out + captured.err
    assert len(read_rows(out / "toy.parquet")) == 2
    assert qorgan.main(["data", "import-background", "toy"]) == 2  # RAW_DIR missing


# ---------------------------------------------------------------------------
# The real registry and the committed files.


def test_registry_is_permissive_and_pinned():
    assert SOURCES, "no background sources registered"
    for name, s in SOURCES.items():
        assert s.name == name and s.lang in ("kk", "ru", "en")
        assert s.licence in PERMISSIVE, f"{name}: {s.licence} is not a permissive licence"
        assert "NC" not in s.licence.split("-")
        assert re.fullmatch(r"[0-9a-f]{40}", s.commit)
        assert s.files and len({f.path for f in s.files}) == len(s.files)
        for f in s.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f"{name}: {f.path}"
            assert not f.commit or re.fullmatch(r"[0-9a-f]{40}", f.commit)
        # Reserved for independent evaluation: never imported.
        assert s.repo.lower() != "alla-g/toxicity-detection-thesis"
        assert "chatterbot" not in s.repo.lower()
        if s.repo == "IS2AI/KazSAnDRA":
            assert all(not re.match(r"dataset/(04|05|09|10)_", f.path) for f in s.files)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_committed_parquet_matches_its_spec(name):
    path = BACKGROUND / f"{name}.parquet"
    if not path.exists():
        pytest.skip(f"{path.name} not built")
    s = SOURCES[name]
    table = pq.read_table(path)
    assert tuple(table.column_names) == COLUMNS
    assert set(table.column("source").to_pylist()) == {name}
    assert set(table.column("lang").to_pylist()) == {s.lang}
    assert set(table.column("licence").to_pylist()) == {s.licence}
    assert table.schema.metadata[b"commit"].decode() == s.commit
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    texts = table.column("text").to_pylist()
    assert all(importers.keep(t) for t in texts)
    assert len({importers.dedup_key(t) for t in texts}) == len(texts)
    assert all(table.column("domain").to_pylist())
