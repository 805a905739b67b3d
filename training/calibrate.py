"""Calibration (per-label temperature scaling) and policy thresholds.

Vocabulary: ``logits`` are raw model outputs, ``proba`` calibrated
probabilities, ``flags`` are ``proba >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import precision_recall_curve

from training.config import PolicyConfig


def _bce(logits: np.ndarray, y: np.ndarray) -> float:
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, computed stably.
    z = np.where(y > 0.5, logits, -logits)
    return float(np.mean(np.logaddexp(0.0, -z)))


class TemperatureScaler:
    """Per-label temperature scaling: ``proba = sigmoid(logits / T_label)``.

    Follows scikit-learn: ``fit`` learns ``temperature_`` (one per label) by
    minimising the binary cross-entropy on held-out (calib) data.
    """

    def __init__(self, min_temperature: float = 0.05, max_temperature: float = 20.0):
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature

    def fit(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        logits = np.asarray(logits, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if logits.ndim != 2 or logits.shape != y.shape:
            raise ValueError(f"logits and y must be 2-D and equal in shape, got {logits.shape} and {y.shape}")
        lo, hi = np.log(self.min_temperature), np.log(self.max_temperature)
        temps = []
        for j in range(logits.shape[1]):
            res = minimize_scalar(lambda log_t, j=j: _bce(logits[:, j] / np.exp(log_t), y[:, j]),
                                  bounds=(lo, hi), method="bounded")
            temps.append(float(np.exp(res.x)))
        self.temperature_ = np.array(temps)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw logits."""
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature_)

    def fit_transform(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.fit(logits, y).transform(logits)


def _precision_recall(proba: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    flags = proba >= threshold
    tp = float(np.sum(flags & (y > 0.5)))
    fp = float(np.sum(flags & (y < 0.5)))
    fn = float(np.sum(~flags & (y > 0.5)))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall


def _candidates(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision, recall, thresholds = precision_recall_curve(y, proba)
    # precision_recall_curve returns one more P/R point than thresholds (the recall=0 end).
    return precision[:-1], recall[:-1], thresholds


def choose_threshold(proba: np.ndarray, y: np.ndarray, objective: str, target: float | None = None) -> dict:
    """Pick a threshold for one label.

    Objectives: ``f1`` (F1-optimal), ``f1_at_precision`` (max F1 subject to
    precision ≥ target; falls back to F1-optimal and records
    ``achievable: false`` when no threshold reaches the target) and
    ``recall`` (the highest threshold with recall ≥ target, i.e. the most
    precise one that still meets the recall target).
    """
    y = np.asarray(y) > 0.5
    if y.sum() == 0:
        return {"threshold": 0.5, "objective": objective, "target": target, "achievable": False,
                "note": "no positives in the fitting data"}
    precision, recall, thresholds = _candidates(proba, y)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    achievable = True
    if objective == "f1":
        i = int(np.argmax(f1))
    elif objective == "f1_at_precision":
        ok = precision >= target
        if ok.any():
            i = int(np.argmax(np.where(ok, f1, -1)))
        else:
            achievable, i = False, int(np.argmax(f1))
    elif objective == "recall":
        ok = recall >= target
        # recall falls as the threshold rises; the last index meeting the target is the most precise.
        i = int(np.nonzero(ok)[0].max()) if ok.any() else 0
        achievable = bool(ok.any())
    else:
        raise ValueError(f"unknown threshold objective {objective!r}")
    return {"threshold": float(thresholds[i]), "objective": objective, "target": target,
            "achievable": achievable}


def bootstrap_interval(proba: np.ndarray, y: np.ndarray, threshold: float, samples: int,
                       confidence: float, seed: int = 0) -> dict[str, list[float]]:
    """Bootstrap percentile intervals for precision and recall at ``threshold``."""
    if samples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    n = len(y)
    ps, rs = [], []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        p, r = _precision_recall(proba[idx], y[idx], threshold)
        ps.append(p)
        rs.append(r)
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    return {"precision_ci": [float(np.percentile(ps, lo)), float(np.percentile(ps, hi))],
            "recall_ci": [float(np.percentile(rs, lo)), float(np.percentile(rs, hi))]}


@dataclass
class PolicyFitter:
    """Fits per-label thresholds for the ``moderation`` and ``triage`` policies."""

    config: PolicyConfig

    def objectives(self, labels: list[str]) -> dict[str, dict[str, tuple[str, float | None]]]:
        c = self.config
        return {
            "moderation": {lb: ("f1_at_precision", c.moderation_min_precision) for lb in labels},
            "triage": {lb: ("recall", c.triage_min_recall) if lb in c.triage_recall_labels else ("f1", None)
                       for lb in labels},
        }

    def fit(self, proba: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, dict[str, dict]]:
        """``{policy: {label: {threshold, objective, target, achievable, precision, recall, *_ci}}}``."""
        out: dict[str, dict[str, dict]] = {}
        for policy, per_label in self.objectives(labels).items():
            out[policy] = {}
            for j, lb in enumerate(labels):
                objective, target = per_label[lb]
                entry = choose_threshold(proba[:, j], y[:, j], objective, target)
                p, r = _precision_recall(proba[:, j], y[:, j], entry["threshold"])
                entry.update(precision=p, recall=r, support=int((y[:, j] > 0.5).sum()))
                entry.update(bootstrap_interval(proba[:, j], y[:, j], entry["threshold"],
                                                self.config.bootstrap_samples, self.config.confidence, seed=j))
                out[policy][lb] = entry
        return out
