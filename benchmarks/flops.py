"""Analytic FLOP count of a BERT encoder and roofline arithmetic.

Counts the matrix multiplications only (layer norms, softmax, GELU and the
embedding lookup are a few per cent at most). Per encoder layer and message of
``L`` tokens, width ``h`` and FFN width ``i``, in multiply–accumulates (MACs):

* Q, K, V and output projections: ``4·L·h²``
* feed-forward up and down: ``2·L·h·i``
* attention scores ``QKᵀ`` and the weighted sum ``A·V``: ``2·L²·h``

plus a pooler (``h²``) and a classifier head (``h·labels``) once per message.
One MAC is two FLOPs. (The issue's formula ``2·L·(4h² + 2hi) + 2·2·L²·h``
already includes that factor of two; it is not doubled again here.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EncoderShape:
    """The dimensions that set an encoder's compute (defaults: multilingual-e5-small)."""

    layers: int = 12
    hidden: int = 384
    intermediate: int = 1536
    labels: int = 4
    pooler: bool = True

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "intermediate", "labels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, path: str | Path, labels: int | None = None) -> EncoderShape:
        """Read a Hugging Face ``config.json`` (BERT-style keys)."""
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        n_labels = labels or cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 4
        return cls(layers=int(cfg["num_hidden_layers"]), hidden=int(cfg["hidden_size"]),
                   intermediate=int(cfg["intermediate_size"]), labels=int(n_labels))

    @property
    def encoder_params(self) -> int:
        """Weights of the matmuls per forward pass (what is streamed from memory per batch)."""
        h, i = self.hidden, self.intermediate
        per_layer = 4 * h * h + 2 * h * i
        return self.layers * per_layer + (h * h if self.pooler else 0) + h * self.labels


def macs_per_message(seq_len: float, shape: EncoderShape = EncoderShape()) -> float:
    """Multiply–accumulates for one message of ``seq_len`` tokens (may be a mean, so a float)."""
    if seq_len < 0:
        raise ValueError(f"seq_len must be >= 0, got {seq_len}")
    h, i, L = shape.hidden, shape.intermediate, float(seq_len)
    per_layer = L * (4 * h * h + 2 * h * i) + 2 * L * L * h
    head = (h * h if shape.pooler else 0) + h * shape.labels
    return shape.layers * per_layer + head


def flops_per_message(seq_len: float, shape: EncoderShape = EncoderShape()) -> float:
    """FLOPs (2 per MAC) for one message of ``seq_len`` tokens."""
    return 2.0 * macs_per_message(seq_len, shape)


def flops_for_lengths(lengths: Iterable[float], shape: EncoderShape = EncoderShape()) -> float:
    """Total FLOPs for messages of the given (padded or unpadded) lengths."""
    return float(sum(flops_per_message(L, shape) for L in lengths))


def arithmetic_intensity(batch: int, seq_len: float, bytes_per_weight: float,
                         shape: EncoderShape = EncoderShape()) -> float:
    """FLOPs per byte of weights for one batch, assuming the weights are read once per batch.

    An upper bound (activations are ignored); the roofline's memory-bound ceiling
    is this times the memory bandwidth.
    """
    if batch < 1 or bytes_per_weight <= 0:
        raise ValueError("batch must be >= 1 and bytes_per_weight > 0")
    return batch * flops_per_message(seq_len, shape) / (shape.encoder_params * bytes_per_weight)


def roofline(achieved_flops_s: float, peak_flops_s: float, intensity: float | None = None,
             bandwidth_bytes_s: float | None = None) -> dict[str, float | None]:
    """Achieved FLOP/s as a fraction of the compute peak and of the roofline ceiling."""
    ceiling = peak_flops_s
    if intensity is not None and bandwidth_bytes_s:
        ceiling = min(peak_flops_s, intensity * bandwidth_bytes_s)
    return {
        "achieved_gflops": achieved_flops_s / 1e9,
        "peak_gflops": peak_flops_s / 1e9,
        "pct_of_peak": 100.0 * achieved_flops_s / peak_flops_s if peak_flops_s else None,
        "ceiling_gflops": ceiling / 1e9,
        "pct_of_ceiling": 100.0 * achieved_flops_s / ceiling if ceiling else None,
    }
