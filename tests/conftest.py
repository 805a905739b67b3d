"""Session-scoped fixtures: tiny artefacts built once and loaded through the
production loaders. Nothing is written into the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MINI_CORPUS = FIXTURES / "mini_corpus.jsonl"
#: Ordinary sentences written for the tests, standing in for real background text.
BACKGROUND_TEXTS = FIXTURES / "background.jsonl"
#: The background source of the tiny run that is held out for evaluation.
HELD_OUT_SOURCE = "bg-b"
#: The tiny bundle's request limits, unlike the defaults, so that tests show every
#: scorer reads them from the bundle (bundle.json → serving).
TINY_LIMITS = {"max_messages": 64, "max_text_chars": 1000, "max_id_chars": 64}


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def mini_records() -> list[dict]:
    """A small labelled sample of the corpus (every language and label)."""
    return read_jsonl(MINI_CORPUS)


@pytest.fixture(scope="session")
def tiny_background(tmp_path_factory) -> Path:
    """A background folder in the importers' layout: two sources of ordinary sentences."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data.background import BACKGROUND_COLUMNS

    out = tmp_path_factory.mktemp("background")
    rows = read_jsonl(BACKGROUND_TEXTS)
    for source, part in (("bg-a", rows[::2]), (HELD_OUT_SOURCE, rows[1::2])):
        table = {"id": [f"{source}-{i}" for i in range(len(part))], "text": [r["text"] for r in part],
                 "lang": [r["lang"] for r in part], "source": [source] * len(part),
                 "licence": ["CC0-1.0"] * len(part), "origin_id": [str(i) for i in range(len(part))],
                 "domain": [r["domain"] for r in part]}
        assert tuple(table) == BACKGROUND_COLUMNS
        pq.write_table(pa.table(table), out / f"{source}.parquet", compression="zstd")
    return out


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory, mini_records) -> Path:
    """A tiny random BERT encoder with a WordPiece tokenizer trained on the fixture texts."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-base")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([r["text"] for r in mini_records],
                            trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(out)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_pins(tmp_path_factory, mini_records) -> Path:
    """A pin file freezing the split of every other group of the mini corpus, as an
    earlier corpus version would have dealt it (another seed)."""
    from data.schema import Record
    from data.split import SplitConfig, assign_splits, write_pins

    records = [Record.from_dict(r) for r in mini_records]
    earlier = sorted({r.group for r in records})[::2]
    old = [r for r in records if r.group in earlier]
    return write_pins(old, assign_splits(old, SplitConfig(seed=1)), tmp_path_factory.mktemp("pins") / "pins.json")


@pytest.fixture(scope="session")
def tiny_run_config(tmp_path_factory, tiny_base_model, tiny_background, tiny_pins):
    """A run configuration that trains the tiny model for a few steps on the mini corpus,
    with background text mixed in and one background source held out."""
    from training.config import load_config

    root = tmp_path_factory.mktemp("run")
    return load_config(None, [
        f"data.source.path={MINI_CORPUS}",
        f"data.split.pinned={tiny_pins}",
        f"data.background.path={tiny_background}",
        f"data.background.holdout=[{HELD_OUT_SOURCE}]",
        "train.background_share=0.1",
        # A model trained for seconds flags ordinary text at random: measure, do not gate.
        "eval.background_gate=warn",
        f"model.base_model={tiny_base_model}",
        "model.max_length=32",
        "model.freeze_embeddings=false",
        "train.max_steps=120",
        "train.eval_steps=60",
        "train.batch_size=16",
        "train.learning_rate=0.003",
        "policy.bootstrap_samples=50",
        # A 2-layer model trained for seconds has a narrow score spread, so int8
        # rounding flips flags near the thresholds far more often than on a real
        # model: the flag-agreement gate is tested on its own (test_training.py)
        # and here only the probability gate is kept; the fp32 gate stays strict.
        "export.int8_min_flag_agreement=0.0",
        "export.int8_max_proba_diff=0.1",
        f"run_dir={root / 'run'}",
        f"bundle_dir={root / 'bundle'}",
        "name=qorgan-tiny",
        *(f"serving.{k}={v}" for k, v in TINY_LIMITS.items()),
    ])


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run_config) -> Path:
    """A complete bundle from the tiny model, written by the production pipeline."""
    from training.pipeline import run_pipeline

    return run_pipeline(tiny_run_config)
