"""Score messages with a model bundle: onnxruntime and tokenizers only.

The one scoring path shared by the HTTP service, the batch scorer and any
scale-out adapter. It never imports torch or transformers, so a scoring host
installs only onnxruntime, tokenizers, numpy (and BentoML for the service).

Vocabulary (see ``shared/ARCHITECTURE.md``): ``logits`` are raw model outputs,
``proba`` are calibrated probabilities ``sigmoid(logit / temperature)``, and
``flags`` are ``proba >= threshold`` for one policy. Every call takes a batch
and returns a batch.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import Bundle, BundleError, load_bundle

logger = logging.getLogger(__name__)

#: Texts tokenised per tokenizer call inside :meth:`Scorer.logits` (bounds memory).
ENCODE_SLICE = 2048
#: Pad tokens looked up, in order, when the tokenizer file carries no padding settings.
_PAD_TOKEN_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>", "<PAD>")


def _blank_ranges() -> list[tuple[int, int]]:
    """Code-point ranges of the Basic Multilingual Plane that carry nothing to score:
    whitespace and separators (Z*), controls (Cc) and format characters (Cf: zero-width
    spaces and joiners, BOM, direction marks)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or not (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


#: A text must match this somewhere to be scored: one character that is content (not in
#: :func:`_blank_ranges`). Written with ``\uXXXX`` escapes, which Python's ``re`` and
#: JavaScript's regular expressions read alike, so that the OpenAPI document states it
#: as the ``pattern`` of a message text.
CONTENT_PATTERN = "[^" + "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in _blank_ranges()) + "]"
_CONTENT = re.compile(CONTENT_PATTERN)


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing to score: only whitespace, separator, control or
    format (zero-width) characters, i.e. no match of :data:`CONTENT_PATTERN`. Such a
    message is refused by the HTTP API and comes out of the batch scorer with an error,
    instead of being scored (a lone NUL once scored ``bullying`` 0.98). Letters, digits,
    punctuation, symbols and emoji count as content: an emoji-only message is a real one."""
    return _CONTENT.search(text) is None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the whole host)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_intra_op_threads(workers: int = 1) -> int:
    """onnxruntime threads per worker: the available cores divided by ``workers``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return max(1, available_cores() // workers)


@dataclass(frozen=True)
class ScorerConfig:
    """How a :class:`Scorer` runs a bundle.

    ``intra_op_threads`` of ``None`` means available cores ÷ ``workers``, so that
    several server workers on one host do not each claim every core.
    """

    #: ``int8`` or ``fp32``; ``None`` serves the bundle's serving variant.
    variant: str | None = None
    intra_op_threads: int | None = None
    workers: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")

    @property
    def threads(self) -> int:
        """The resolved number of intra-op threads."""
        return self.intra_op_threads or default_intra_op_threads(self.workers)


@dataclass(frozen=True)
class Encoded:
    """Token ids and attention mask of one padded batch, shape ``(n, longest)``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


@dataclass(frozen=True)
class Score:
    """The scores of one message under one policy.

    ``scores`` are calibrated probabilities per label, ``flags`` are
    ``scores >= threshold`` of ``policy``, ``priority`` is the triage level
    given by the bundle's priority rules.
    """

    scores: dict[str, float]
    flags: dict[str, bool]
    priority: str
    policy: str
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "flags": self.flags, "priority": self.priority,
                "policy": self.policy, "model_version": self.model_version}


class Scorer:
    """Calibrated multi-label scores from a bundle's ONNX graph.

    Build one with :meth:`from_bundle`. Texts are tokenised with the bundle's own
    ``tokenizer.json`` (truncated to the bundle's max length, padded with the
    tokenizer's pad token id) and run in micro-batches of ``batch_size`` sorted
    by token count; outputs are always returned in input order.

    The object is safe to share between threads: onnxruntime sessions allow
    concurrent ``run`` calls and the tokenizer is configured once, here.
    """

    def __init__(self, bundle: Bundle, config: ScorerConfig | None = None, *,
                 model_path: str | Path | None = None) -> None:
        """``model_path`` runs another ONNX graph of the same model (e.g. one the export
        wrote but the bundle does not ship) with everything else from ``bundle``;
        by default the graph of ``config.variant``."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = bundle
        self.config = config or ScorerConfig()
        #: The ONNX graph this scorer runs.
        self.model_path = Path(model_path) if model_path is not None else bundle.model_path(self.config.variant)

        self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        self.pad_id, pad_token = self._pad_token(self.tokenizer)
        self.tokenizer.enable_truncation(max_length=bundle.max_length)
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad_token)

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        graph_inputs = {i.name for i in self.session.get_inputs()}
        missing = [name for name in bundle.onnx_inputs if name not in graph_inputs]
        if missing:
            raise BundleError(f"{bundle.path}: the ONNX graph has no input(s) {missing} named in the manifest")
        self._inputs = bundle.onnx_inputs
        self._output = bundle.onnx_output

        self.labels: tuple[str, ...] = bundle.labels
        self.thresholds = {policy: bundle.thresholds(policy) for policy in bundle.policies}
        rules = bundle.priority.get("rules", [])
        for rule in rules:
            unknown = [lb for lb in rule["any_of"] if lb not in self.labels]
            if unknown:
                raise BundleError(f"{bundle.path}: priority rule {rule['level']!r} names unknown labels {unknown}")
        self._rules = [(rule["level"], np.array([lb in rule["any_of"] for lb in self.labels])) for rule in rules]
        self.priority_default: str = bundle.priority["default"]
        self.priority_levels: tuple[str, ...] = tuple(
            bundle.priority.get("levels") or [*(lvl for lvl, _ in self._rules), self.priority_default])

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        *,
        variant: str | None = None,
        intra_op_threads: int | None = None,
        workers: int = 1,
        batch_size: int = 32,
        verify: bool = True,
    ) -> Scorer:
        """Load and verify the bundle at ``path`` and build a scorer for it."""
        config = ScorerConfig(variant=variant, intra_op_threads=intra_op_threads,
                              workers=workers, batch_size=batch_size)
        return cls(load_bundle(path, verify=verify), config)

    # -- facts about the model ------------------------------------------------

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def policies(self) -> tuple[str, ...]:
        return self.bundle.policies

    @property
    def max_length(self) -> int:
        return self.bundle.max_length

    # -- scoring ----------------------------------------------------------------

    @staticmethod
    def _pad_token(tokenizer) -> tuple[int, str]:
        padding = tokenizer.padding
        if padding and padding.get("pad_token") is not None:
            return int(padding["pad_id"]), padding["pad_token"]
        for token in _PAD_TOKEN_CANDIDATES:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id, token
        logger.warning("the bundle's tokenizer names no pad token; padding with id 0")
        return 0, tokenizer.id_to_token(0) or "[PAD]"

    def encode(self, texts: list[str]) -> Encoded:
        """Tokenise one batch: truncated to the bundle's max length, padded to the longest."""
        _check_texts(texts)
        encodings = self.tokenizer.encode_batch(list(texts))
        if not encodings:
            return Encoded(np.zeros((0, 0), np.int64), np.zeros((0, 0), np.int64))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return Encoded(ids, mask)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Raw logits, shape ``(len(texts), len(labels))``, in input order."""
        _check_texts(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        # Tokenise in large slices (one parallel tokenizer call each, bounded memory),
        # then run token-length-sorted micro-batches so that padding stays small.
        # Right padding lets a micro-batch drop the columns past its own longest
        # text: the ids are then exactly those of padding that batch alone.
        size = self.config.batch_size
        for lo in range(0, len(texts), ENCODE_SLICE):
            enc = self.encode(texts[lo : lo + ENCODE_SLICE])
            lengths = enc.attention_mask.sum(axis=1)
            order = np.argsort(lengths, kind="stable")
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                width = int(lengths[idx].max())
                ids = enc.input_ids[idx, :width]
                feeds = {"input_ids": ids, "attention_mask": enc.attention_mask[idx, :width]}
                if "token_type_ids" in self._inputs:
                    feeds["token_type_ids"] = np.zeros_like(ids)
                out[lo + idx] = self.session.run([self._output], {k: feeds[k] for k in self._inputs})[0]
        return out

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities at the deployment prevalence (:meth:`Bundle.calibrate`)."""
        return self.bundle.calibrate(logits)

    def proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, shape ``(len(texts), len(labels))``, in input order."""
        return self.proba_from_logits(self.logits(texts))

    def flags(self, proba: np.ndarray, policy: str) -> np.ndarray:
        """``proba >= threshold`` of ``policy``, a boolean array of the same shape."""
        return np.asarray(proba) >= self.thresholds[self.bundle.check_policy(policy)]

    def priorities(self, flags: np.ndarray) -> list[str]:
        """Triage priority per row of ``flags``: the first rule with a flagged label wins."""
        flags = np.asarray(flags, dtype=bool).reshape(-1, len(self.labels))
        out = np.full(len(flags), self.priority_default, dtype=object)
        for level, mask in reversed(self._rules):  # reversed: earlier rules overwrite later ones
            out[(flags & mask).any(axis=1)] = level
        return out.tolist()

    def scores_from_proba(self, proba: np.ndarray, policy: str | None = None) -> list[Score]:
        """:class:`Score` objects for already computed probabilities (``policy``: default,
        the bundle's ``api`` default)."""
        policy = self.bundle.check_policy(policy)
        flags = self.flags(proba, policy)
        priorities = self.priorities(flags)
        return [
            Score(scores={lb: float(p) for lb, p in zip(self.labels, row, strict=True)},
                  flags={lb: bool(f) for lb, f in zip(self.labels, frow, strict=True)},
                  priority=prio, policy=policy, model_version=self.version)
            for row, frow, prio in zip(proba, flags, priorities, strict=True)
        ]

    def score(self, texts: list[str], policy: str | None = None) -> list[Score]:
        """Scores, flags and triage priority of every text under ``policy`` (default: the
        bundle's ``api`` default)."""
        policy = self.bundle.check_policy(policy)  # fail before the model runs
        return self.scores_from_proba(self.proba(texts), policy)


def _check_texts(texts: Any) -> None:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, not a str")
