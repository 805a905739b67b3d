"""Session-scoped fixtures: tiny artefacts built once and loaded through the
production loaders. Nothing is written into the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
        # The export's parity gates are the production ones: whether this tiny model's
        # int8 graph passes them depends on its training, so tests that need an int8
        # graph served use `int8_bundle`, whose outcome does not.
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


@pytest.fixture(scope="session")
def int8_bundle(tiny_bundle, tmp_path_factory, mini_records) -> Path:
    """A bundle serving a weight-only int8 graph of the tiny model, deterministic by
    construction: its thresholds sit in the middle of the widest gaps between the fp32
    graph's scores of the mini corpus, so the serving path (int8 graph → calibration →
    flags) can be held to the production parity gates without depending on how the
    tiny model happened to train."""
    from models.bundle import MODEL_FILE, MODEL_FP32_FILE, TOKENIZER_FILE, load_bundle, write_bundle
    from serving.scorer import Scorer, ScorerConfig
    from training.export import quantize_int8

    src = load_bundle(tiny_bundle)
    tmp = tmp_path_factory.mktemp("int8")
    int8 = quantize_int8(src.model_path("fp32"), tmp / "int8.onnx", "weight_only")
    proba = Scorer(src, ScorerConfig(variant="fp32", intra_op_threads=1)).proba([r["text"] for r in mini_records])
    thresholds = []
    for column in proba.T:
        values = np.unique(column)
        widest = int(np.argmax(np.diff(values)))
        thresholds.append(float((values[widest] + values[widest + 1]) / 2))
    calibration = json.loads(json.dumps(src.calibration))
    for per_label in calibration["policies"].values():
        for lb, th in zip(src.labels, thresholds, strict=True):
            per_label[lb]["threshold"] = th
    manifest = src.manifest
    bundle = write_bundle(
        tmp / "bundle", name=src.name, version=src.version, base_model=manifest["base_model"],
        labels=list(src.labels), languages=list(src.languages), priority=src.priority,
        max_length=src.max_length, onnx_inputs=list(src.onnx_inputs), onnx_output=src.onnx_output,
        serving_variant="int8",
        files={MODEL_FILE: int8, MODEL_FP32_FILE: src.model_path("fp32"), TOKENIZER_FILE: src.tokenizer_path},
        calibration=calibration, metrics=src.metrics, card="int8 test bundle\n", config=manifest["config"],
        serving=src.serving)
    return bundle.path
