"""One importer per source of real background text, in the ``SOURCES`` registry.

Each source is a ``SourceSpec``: the public repository and commit its raw files
come from, each file's SHA-256, the licence, and a parse function that yields
``Sentence`` tuples. ``import_source`` checks every raw file against its digest
before reading anything, parses, keeps sentences of ``MIN_WORDS``..``MAX_WORDS``
words and at most ``MAX_CHARS`` characters, drops exact duplicates (after
whitespace and case normalisation) and writes ``<out_dir>/<name>.parquet``.

The raw files are never copied into this repository: ``raw_dir`` is a checkout
of the source repository, or any folder holding the files under their
repository paths (``qorgan data import-background --files NAME`` lists them).
Nothing here prints or logs message text, only counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO

from data.background import BACKGROUND_COLUMNS as COLUMNS
from data.dedup import normalize_text

log = logging.getLogger(__name__)

MIN_WORDS = 3
MAX_WORDS = 80
MAX_CHARS = 400

MANIFESTS = Path(__file__).parent / "manifests"


class RawFileError(ValueError):
    """A raw file is missing or is not the pinned version."""


@dataclass(frozen=True)
class RawFile:
    """One raw file of a source: its path in the repository and its SHA-256."""

    path: str
    sha256: str
    #: The commit the file was taken from when it is not the source's ``commit``.
    commit: str = ""


class Sentence(NamedTuple):
    """One message as a parser yields it, before filtering."""

    text: str
    origin_id: str
    domain: str


Parser = Callable[["SourceSpec", Path], Iterator[Sentence]]


@dataclass(frozen=True)
class SourceSpec:
    """A pinned public source of background text."""

    name: str
    lang: str
    #: SPDX-style licence identifier, e.g. ``CC-BY-SA-4.0``.
    licence: str
    repo: str
    commit: str
    files: tuple[RawFile, ...]
    description: str
    #: The attribution the licence asks for.
    attribution: str
    parse: Parser


# ---------------------------------------------------------------------------
# Format readers shared by the sources.


def detokenize(tokens: list[str]) -> str:
    """Join tokens with spaces, except before closing punctuation (``, . ! ? : ; ) » …``)
    and after opening brackets and quotes (``( [ « „ “``); straight double quotes
    alternate between opening and closing."""
    closing = set(",.!?:;)]}»”’%…")
    opening = set("([{«„“‘")
    out: list[str] = []
    glue = True  # no space before the next token
    quotes = 0
    for tok in tokens:
        if tok == '"':
            quotes += 1
            is_open = quotes % 2 == 1
            if is_open and not glue:
                out.append(" ")
            out.append(tok)
            glue = is_open
            continue
        if not glue and not all(ch in closing for ch in tok):
            out.append(" ")
        out.append(tok)
        glue = tok in opening
    return "".join(out)


def read_conllu(path: Path) -> Iterator[dict[str, str]]:
    """Each sentence of a CoNLL-U file as its ``# key = value`` comments; ``text`` is
    rebuilt from the tokens (multiword tokens, ``SpaceAfter=No``) when the file has none."""
    meta: dict[str, str] = {}
    words: list[str] = []
    skip_to = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                if meta or words:
                    if "text" not in meta:
                        meta["text"] = "".join(words).strip()
                    yield meta
                meta, words, skip_to = {}, [], 0
            elif line.startswith("#"):
                key, sep, value = line[1:].partition("=")
                if sep:
                    meta[key.strip()] = value.strip()
            else:
                cols = line.split("\t")
                if len(cols) < 10 or "." in cols[0]:
                    continue  # malformed line or empty node
                first, _, last = cols[0].partition("-")
                if not last and int(first) <= skip_to:
                    continue  # a word inside a multiword token already added
                if last:
                    skip_to = int(last)
                space = "" if "SpaceAfter=No" in cols[9].split("|") else " "
                words.append(cols[1] + space)
    if meta or words:
        if "text" not in meta:
            meta["text"] = "".join(words).strip()
        yield meta


def read_iob2(path: Path, id_pattern: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """``(sentence id, tokens)`` for each blank-line separated block of ``TOKEN TAG`` lines.

    With ``id_pattern``, a block whose first token matches it carries the sentence
    id there (KazNERD's ``with_sentID`` files); otherwise the id is ``<file>:<line>``
    of the block's first line.
    """
    pattern = re.compile(id_pattern) if id_pattern else None
    tokens: list[str] = []
    sid = ""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                if tokens:
                    yield sid, tokens
                tokens, sid = [], ""
                continue
            token = " ".join(fields[:-1]) if len(fields) > 1 else fields[0]
            if not tokens and not sid:
                if pattern and pattern.fullmatch(token):
                    sid = token
                    continue
                sid = f"{path.name}:{number}"
            tokens.append(token)
    if tokens:
        yield sid, tokens


def _text_members(path: Path) -> Iterator[tuple[str, TextIO]]:
    """``(name, text stream)`` of a CSV/TSV file, or of each CSV/TSV inside a ZIP archive."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith((".csv", ".tsv")):
                    with archive.open(member) as raw:
                        yield member, io.TextIOWrapper(raw, encoding="utf-8", newline="")
    else:
        with open(path, encoding="utf-8", newline="") as fh:
            yield path.name, fh


def read_table(path: Path) -> Iterator[tuple[str, dict[str, str | None]]]:
    """``(origin, row)`` for each row of a headed CSV / TSV (or a ZIP of them);
    ``origin`` is ``<member>:<line>``. TSV is read without quote handling."""
    for member, stream in _text_members(path):
        if member.endswith(".tsv"):
            reader = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(stream)
        for row in reader:
            yield f"{Path(member).name}:{reader.line_num}", row


# ---------------------------------------------------------------------------
# Parser factories: one per format, configured per source.


def conllu_parser(domain: Callable[[str, dict[str, str]], str]) -> Parser:
    """Sentences from the ``# text`` lines of CoNLL-U files; ``domain(sent_id, comments)``."""

    def parse(spec: SourceSpec, raw_dir: Path) -> Iterator[Sentence]:
        for raw in spec.files:
            name = Path(raw.path).name
            for n, meta in enumerate(read_conllu(raw_dir / raw.path), 1):
                sid = meta.get("sent_id", str(n))
                yield Sentence(meta["text"], f"{name}:{sid}", domain(sid, meta))

    return parse


def iob2_parser(domain: str, id_pattern: str | None = None) -> Parser:
    """Sentences rebuilt from IOB2 token-per-line files (see ``detokenize``)."""

    def parse(spec: SourceSpec, raw_dir: Path) -> Iterator[Sentence]:
        for raw in spec.files:
            for sid, tokens in read_iob2(raw_dir / raw.path, id_pattern):
                yield Sentence(detokenize(tokens), sid, domain)

    return parse


def table_parser(text_column: str, *, id_column: str = "", domain: str = "",
                 domain_column: str = "", domain_prefix: str = "") -> Parser:
    """Rows of CSV / TSV files (or ZIPs of them): the text of ``text_column``, the id of
    ``id_column`` (else ``<file>:<line>``), the domain ``domain_prefix + row[domain_column]``
    (else ``domain``)."""

    def parse(spec: SourceSpec, raw_dir: Path) -> Iterator[Sentence]:
        for raw in spec.files:
            for origin, row in read_table(raw_dir / raw.path):
                text = row.get(text_column)
                if not text:
                    continue
                rid = (row.get(id_column) or origin) if id_column else origin
                dom = domain_prefix + (row.get(domain_column) or "") if domain_column else domain
                yield Sentence(text, rid, dom)

    return parse


# ---------------------------------------------------------------------------
# Domain mappings taken from each source's own metadata.


def _ewt_domain(sent_id: str, meta: dict[str, str]) -> str:
    """EWT sentence ids start with the genre: answers, email, newsgroup, reviews, weblog."""
    return sent_id.split("-", 1)[0]


_TAIGA_GENRES = {"social": "social", "fiction-kids": "fiction", "poetry": "poetry",
                 "news": "news", "nonfiction-academic-encycl": "encyclopedia"}


def _taiga_domain(sent_id: str, meta: dict[str, str]) -> str:
    genre = meta.get("genre", "")
    return _TAIGA_GENRES.get(genre, genre or "other")


def _pud_domain(sent_id: str, meta: dict[str, str]) -> str:
    """PUD ids start with ``n`` (news) or ``w`` (Wikipedia)."""
    return {"n": "news", "w": "wiki"}.get(sent_id[:1], "other")


_KTB_DOCS = {"akorda-random": "news", "wikipedia-news": "news", "udhr": "legal",
             "story": "fiction", "Ер_Төстік": "fiction", "Өлген_қазан": "fiction",
             "sholpan": "fiction", "Жиырма_Бесінші_Сөз": "essay", "kdt": "mixed",
             "әртүрлі": "mixed"}


def _ktb_domain(sent_id: str, meta: dict[str, str]) -> str:
    """KTB ids start with the document (``<doc>.tagged.txt:…``); other documents are
    Wikipedia articles named after their subject."""
    return _KTB_DOCS.get(sent_id.split(".tagged", 1)[0], "wiki")


def _manifest(name: str) -> tuple[RawFile, ...]:
    """Raw files listed in ``manifests/<name>.sha256`` (``sha256sum`` format)."""
    lines = (MANIFESTS / f"{name}.sha256").read_text(encoding="utf-8").splitlines()
    return tuple(RawFile(path, digest) for digest, path in (ln.split(None, 1) for ln in lines if ln.strip()))


# ---------------------------------------------------------------------------
# The registry.

_UD_ATTRIBUTION = "Universal Dependencies, {treebank} treebank (https://github.com/{repo}), {licence}; text unchanged except whitespace."


def _ud_source(treebank: str, *, name: str, lang: str, licence: str, commit: str, files: tuple[RawFile, ...],
               description: str, domain: Callable[[str, dict[str, str]], str]) -> SourceSpec:
    """A Universal Dependencies treebank (``UD_<Language>-<Name>``): repository and
    attribution follow from its name, sentences from the ``# text`` lines of its CoNLL-U files."""
    repo = f"UniversalDependencies/{treebank}"
    spdx_free, version = licence.rsplit("-", 1)  # "CC-BY-SA-4.0" → "CC BY-SA 4.0"
    readable = spdx_free.replace("-", " ", 1) + " " + version
    return SourceSpec(name=name, lang=lang, licence=licence, repo=repo, commit=commit, files=files,
                      description=description,
                      attribution=_UD_ATTRIBUTION.format(treebank=treebank.replace("_", " "), repo=repo,
                                                         licence=readable),
                      parse=conllu_parser(domain))

SOURCES: dict[str, SourceSpec] = {s.name: s for s in [
    SourceSpec(
        name="kaznerd", lang="kk", licence="CC-BY-4.0", repo="IS2AI/KazNERD",
        commit="bd4333d0f5952b9fafb2ef2ac2fefa0ad3c0333f",
        files=(RawFile("KazNERD/with_sentID/IOB2_test2.txt",
                       "db883e597ff98dbe5438a9f94ece4bd0adfe758f2e273eddc8eb04b7b9120b96"),
               RawFile("KazNERD/with_sentID/IOB2_valid2.txt",
                       "a78509fbd8b59e6f521320100cda26f14bc74b9edf9ee50a417dd99e149996da")),
        description="Kazakh TV news sentences (NER corpus; tokens rejoined into text)",
        attribution="KazNERD, Yeshpanov, Khassanov and Varol (LREC 2022), ISSAI, "
                    "https://github.com/IS2AI/KazNERD, CC BY 4.0; sentences rebuilt from tokens.",
        parse=iob2_parser("news", id_pattern=r"[A-Z]+\d+"),
    ),
    _ud_source(
        "UD_Kazakh-KTB", name="ud_kazakh_ktb", lang="kk", licence="CC-BY-SA-4.0",
        commit="e9f3b87a5faa95cf0b4cd97d62f2de8c90ee8153",
        files=(RawFile("kk_ktb-ud-test.conllu",
                       "1100846ee50c2f970562a21dca8415a381c470ea06bdb8496ae213d59c3a3c4e"),
               RawFile("kk_ktb-ud-train.conllu",
                       "6297597914a3f319db573573f927a6577c702f5fa00dcd653162aab46026aeaa")),
        description="Kazakh Wikipedia, folk tales and stories, news (akorda.kz), UDHR",
        domain=_ktb_domain,
    ),
    SourceSpec(
        name="kazsandra_train", lang="kk", licence="CC-BY-4.0", repo="IS2AI/KazSAnDRA",
        commit="d769cf7f7bd62b59f88915508d4bc062310b54d6",
        files=(RawFile("dataset/03_pc_train_rus.zip",
                       "d45ecfe90fedd386ba2a8e07335d73a84020ce8e6516e30d44c7380a7d484e24"),
               RawFile("dataset/08_sc_train_rus.zip",
                       "61f175400d5d00d843c9d89ef991910788c8e40045cfa7606539425685365cf3")),
        description="Kazakh app, book, map and marketplace reviews (train split only; "
                    "often kk-ru mixed or typed without Kazakh letters)",
        attribution="KazSAnDRA, Yeshpanov and Varol (2024), ISSAI, https://github.com/IS2AI/KazSAnDRA, "
                    "CC BY 4.0; raw review text (column `text`), train split only.",
        parse=table_parser("text", id_column="custom_id", domain_column="domain",
                           domain_prefix="reviews-"),
    ),
    _ud_source(
        "UD_Russian-Taiga", name="ud_russian_taiga", lang="ru", licence="CC-BY-SA-4.0",
        commit="3c64a056edcd5c6e2c29b3724d973729c354e016",
        files=(RawFile("ru_taiga-ud-dev.conllu",
                       "d1497731d5cb7162530eb7b278423a103412efa678096f7d456cb57088e12332"),
               RawFile("ru_taiga-ud-test.conllu",
                       "dec224e1e892153a8a4c83a905d7613c4a318e3e726d96551001eecea4aba3df"),
               # The current train-a..e files are too large for the snapshot; this is
               # the single train file of UD 2.7 (2020-11).
               RawFile("ru_taiga-ud-train.conllu",
                       "414ac026e383bf95b49c7b5c31f74b2919684fa4a2052676ad51edca6510d210",
                       commit="bb57373580079aa91cb989560601fc1afcae06b3")),
        description="Russian social media (VK, Instagram, Facebook, Twitter, YouTube comments, "
                    "otvet.mail.ru, reviews), children's fiction, poetry, encyclopedia, news",
        domain=_taiga_domain,
    ),
    _ud_source(
        "UD_Russian-GSD", name="ud_russian_gsd", lang="ru", licence="CC-BY-SA-4.0",
        commit="5400f2fd7264b7699727bb61b09f53841899df26",
        files=(RawFile("ru_gsd-ud-dev.conllu",
                       "e3e3d4e8d1d7544e531b2b81ae64257efacc97f93276ce6d2ce52fd1de052fa2"),
               RawFile("ru_gsd-ud-test.conllu",
                       "f26e022329162a1c6306f76644d06f770f1572501755421165387137fe63138d")),
        description="Russian Wikipedia sentences",
        domain=lambda sid, meta: "wiki",
    ),
    _ud_source(
        "UD_Russian-PUD", name="ud_russian_pud", lang="ru", licence="CC-BY-SA-3.0",
        commit="da5b3816eeaa24283c1d81a48bb1de4d062fc5d5",
        files=(RawFile("ru_pud-ud-test.conllu",
                       "a37e076d24f0c3cfd5d48a11bbfec36026da5dc46180b7a12dc991dc372de1ea"),),
        description="Russian news and Wikipedia sentences (professional translations of the "
                    "CoNLL 2017 parallel test set)",
        domain=_pud_domain,
    ),
    SourceSpec(
        name="ud_english_ewt", lang="en", licence="CC-BY-SA-4.0",
        repo="UniversalDependencies/UD_English-EWT", commit="15d613d8447b3478787d4c278730a1e48a945efb",
        files=_manifest("ud_english_ewt"),
        description="English Web Treebank: weblogs, newsgroups, emails, reviews, Yahoo! Answers "
                    "(all 1,174 per-document source files: train, dev and test)",
        attribution=_UD_ATTRIBUTION.format(treebank="UD English-EWT", repo="UniversalDependencies/UD_English-EWT",
                                           licence="CC BY-SA 4.0")
        + " Original text: English Web Treebank (LDC2012T13), Linguistic Data Consortium.",
        parse=conllu_parser(_ewt_domain),
    ),
    SourceSpec(
        name="paradetox", lang="en", licence="CC0-1.0", repo="s-nlp/paradetox",
        commit="d97b17d0813539cf05c74f9cdb5e66372704ca57",
        files=(RawFile("paradetox/paradetox.tsv",
                       "6e5e80def7deaf4a3410f7de6c638c13f100ce5ece09ee84a47f6f14ab69a0cd"),),
        description="Crowd-written neutral rewrites of toxic English comments "
                    "(column neutral1 only; the toxic side is never read)",
        attribution="ParaDetox, Logacheva et al. (ACL 2022), https://github.com/s-nlp/paradetox, CC0 1.0.",
        parse=table_parser("neutral1", domain="rewrite"),
    ),
]}


# ---------------------------------------------------------------------------
# Import.


def verify_files(spec: SourceSpec, raw_dir: Path) -> None:
    """Raise ``RawFileError`` naming the first raw file that is missing or whose SHA-256
    differs from the pinned one."""
    for raw in spec.files:
        path = Path(raw_dir) / raw.path
        if not path.is_file():
            raise RawFileError(f"{spec.name}: raw file {raw.path} is missing under {raw_dir}")
        with open(path, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != raw.sha256:
            raise RawFileError(f"{spec.name}: raw file {raw.path} has sha256 {actual}, "
                               f"expected {raw.sha256}; refusing to import it")


def keep(text: str) -> bool:
    """The length filter: ``MIN_WORDS``..``MAX_WORDS`` words and at most ``MAX_CHARS`` characters."""
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS and len(text) <= MAX_CHARS


def dedup_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def import_source(name: str, raw_dir: Path | str, out_dir: Path | str) -> Path:
    """Verify, parse, filter and deduplicate source ``name``; write ``out_dir/<name>.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if name not in SOURCES:
        raise ValueError(f"unknown background source {name!r}; known: {sorted(SOURCES)}")
    spec = SOURCES[name]
    raw_dir = Path(raw_dir)
    verify_files(spec, raw_dir)

    rows: dict[str, list[str]] = {c: [] for c in COLUMNS}
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for sentence in spec.parse(spec, raw_dir):
        counts["parsed"] += 1
        text = normalize_text(sentence.text)
        if not keep(text):
            counts["length"] += 1
            continue
        key = dedup_key(text)
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        values = (f"{spec.name}-{len(seen)}", text, spec.lang, spec.name, spec.licence,
                  sentence.origin_id, sentence.domain)
        for column, value in zip(COLUMNS, values, strict=True):
            rows[column].append(value)

    schema = pa.schema([(c, pa.string()) for c in COLUMNS], metadata={
        "source": spec.name, "repo": spec.repo, "commit": spec.commit, "licence": spec.licence,
        "attribution": spec.attribution})
    out = Path(out_dir) / f"{spec.name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), out, compression="zstd")
    log.info("%s: %d parsed, %d outside the length limits, %d duplicates, %d written",
             spec.name, counts["parsed"], counts["length"], counts["duplicate"], len(seen))
    return out
