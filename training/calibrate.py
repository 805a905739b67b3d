"""Calibration (per-label temperature scaling) and policy thresholds.

Vocabulary: ``logits`` are raw model outputs, ``proba`` calibrated
probabilities, ``flags`` are ``proba >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import roc_curve

from data.schema import POLICIES
from training.config import PolicyConfig


def known(y: np.ndarray) -> np.ndarray:
    """Mask of the known targets: unknown labels (partial labels) are ``nan``."""
    return ~np.isnan(np.asarray(y, dtype=np.float64))


def prior_offset(base_rate: np.ndarray, prevalence: np.ndarray) -> np.ndarray:
    """Logit offset that moves calibrated probabilities from ``base_rate`` to ``prevalence``.

    The standard prior-shift correction (Saerens et al., 2002): by Bayes' rule
    the odds scale by ``(π' / (1 − π')) / (π / (1 − π))``, so the logit moves by
    ``logit(π') − logit(π)``. Where ``prevalence`` is ``nan`` the offset is 0.
    """
    offset = logit(np.asarray(prevalence, dtype=np.float64)) - logit(np.asarray(base_rate, dtype=np.float64))
    return np.nan_to_num(offset, nan=0.0)


def _bce(logits: np.ndarray, y: np.ndarray) -> float:
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, computed stably.
    z = np.where(y > 0.5, logits, -logits)
    return float(np.mean(np.logaddexp(0.0, -z)))


class TemperatureScaler:
    """Per-label temperature scaling with an optional prior shift:
    ``proba = sigmoid(logits / T_label + offset_label)``.

    Follows scikit-learn: ``fit`` learns ``temperature_`` (one per label) by
    minimising the binary cross-entropy on held-out (calib) data, skipping
    unknown (``nan``) targets, and records that data's base rate per label in
    ``base_rate_``. With ``prevalence`` (one share per label, ``nan`` to keep
    the base rate) ``offset_`` shifts the probabilities to that prior, so that
    a score of 0.9 means 90% at the deployment base rate (:func:`prior_offset`).
    """

    def __init__(self, min_temperature: float = 0.05, max_temperature: float = 20.0,
                 prevalence: np.ndarray | None = None):
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.prevalence = prevalence

    def fit(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        logits = np.asarray(logits, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if logits.ndim != 2 or logits.shape != y.shape:
            raise ValueError(f"logits and y must be 2-D and equal in shape, got {logits.shape} and {y.shape}")
        lo, hi = np.log(self.min_temperature), np.log(self.max_temperature)
        temps, rates = [], []
        for j in range(logits.shape[1]):
            k = known(y[:, j])
            z, t = logits[k, j], y[k, j]
            res = minimize_scalar(lambda log_t, z=z, t=t: _bce(z / np.exp(log_t), t),
                                  bounds=(lo, hi), method="bounded")
            temps.append(float(np.exp(res.x)))
            rates.append(float(t.mean()) if len(t) else np.nan)
        self.temperature_ = np.array(temps)
        self.base_rate_ = np.array(rates)
        prevalence = np.full(len(temps), np.nan) if self.prevalence is None else np.asarray(self.prevalence, float)
        # A label with no positives (or no negatives) in the fitting data cannot be shifted.
        usable = (self.base_rate_ > 0) & (self.base_rate_ < 1)
        self.offset_ = np.where(usable, prior_offset(np.where(usable, self.base_rate_, 0.5), prevalence), 0.0)
        return self

    def transform(self, logits: np.ndarray, *, shift: bool = True) -> np.ndarray:
        """Calibrated probabilities for raw logits, at the deployment prevalence
        (``shift=False``: at the base rate of the data the scaler was fitted on)."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature_
        return expit(z + self.offset_ if shift else z)

    def fit_transform(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.fit(logits, y).transform(logits)


def _precision_at(tpr, fpr, prevalence: float | None, base_rate: float):
    """Precision when positives make up ``prevalence`` of the traffic (``None``: ``base_rate``,
    the plain tp / (tp + fp) of the data). 1 where nothing is flagged."""
    pi = base_rate if prevalence is None else prevalence
    flagged = pi * np.asarray(tpr, float) + (1 - pi) * np.asarray(fpr, float)
    return np.where(flagged > 0, pi * np.asarray(tpr, float) / np.where(flagged > 0, flagged, 1), 1.0)


def _precision_recall(proba: np.ndarray, y: np.ndarray, threshold: float,
                      prevalence: float | None = None) -> tuple[float, float]:
    k = known(y)
    flags, y = proba[k] >= threshold, y[k] > 0.5
    pos, neg = y.sum(), (~y).sum()
    recall = float(np.sum(flags & y) / pos) if pos else 0.0
    fpr = float(np.sum(flags & ~y) / neg) if neg else 0.0
    precision = float(_precision_at(recall, fpr, prevalence, pos / len(y) if len(y) else 0.0))
    return precision, recall


def _candidates(proba: np.ndarray, y: np.ndarray,
                prevalence: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision (at ``prevalence``), recall and threshold at every distinct score."""
    fpr, tpr, thresholds = roc_curve(y, proba, drop_intermediate=False)
    # roc_curve starts with an infinite threshold that flags nothing.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    return _precision_at(tpr, fpr, prevalence, y.mean()), tpr, thresholds


def choose_threshold(proba: np.ndarray, y: np.ndarray, objective: str, target: float | None = None,
                     prevalence: float | None = None) -> dict:
    """Pick a threshold for one label; unknown (``nan``) targets are skipped.

    Objectives: ``f1`` (F1-optimal), ``f1_at_precision`` (max F1 subject to
    precision ≥ target; falls back to F1-optimal and records
    ``achievable: false`` when no threshold reaches the target) and
    ``recall`` (the highest threshold with recall ≥ target, i.e. the most
    precise one that still meets the recall target). Precision (and so F1) is
    computed at ``prevalence``, the deployment base rate, when it is given:
    ``π·recall / (π·recall + (1 − π)·false-positive rate)``.
    """
    k = known(y)
    proba, y = np.asarray(proba)[k], np.asarray(y)[k] > 0.5
    if y.sum() == 0 or y.all():
        return {"threshold": 0.5, "objective": objective, "target": target, "achievable": False,
                "note": "the fitting data has no positives or no negatives"}
    precision, recall, thresholds = _candidates(proba, y, prevalence)
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
        # Thresholds fall and recall rises along the curve: the first index meeting the
        # target is the highest, most precise threshold that does.
        i = int(np.nonzero(ok)[0].min()) if ok.any() else len(recall) - 1
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
    k = known(y)
    proba, y = proba[k], y[k]
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
        objectives = {
            "moderation": {lb: ("f1_at_precision", c.moderation_min_precision) for lb in labels},
            "triage": {lb: ("recall", c.triage_min_recall) if lb in c.triage_recall_labels else ("f1", None)
                       for lb in labels},
        }
        assert tuple(objectives) == POLICIES, "every policy of data.schema.POLICIES needs objectives"
        return objectives

    def fit(self, proba: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, dict[str, dict]]:
        """``{policy: {label: {threshold, objective, target, achievable, precision, recall,
        prevalence, precision_at_prevalence, *_ci}}}``; precision is that of the fitting data,
        ``precision_at_prevalence`` the one at ``config.prevalence`` that the objectives use."""
        out: dict[str, dict[str, dict]] = {}
        for policy, per_label in self.objectives(labels).items():
            out[policy] = {}
            for j, lb in enumerate(labels):
                objective, target = per_label[lb]
                prevalence = self.config.prevalence.get(lb)
                entry = choose_threshold(proba[:, j], y[:, j], objective, target, prevalence)
                p, r = _precision_recall(proba[:, j], y[:, j], entry["threshold"])
                p_at, _ = _precision_recall(proba[:, j], y[:, j], entry["threshold"], prevalence)
                entry.update(precision=p, recall=r, support=int(np.nansum(y[:, j] > 0.5)),
                             prevalence=prevalence, precision_at_prevalence=p_at)
                entry.update(bootstrap_interval(proba[:, j], y[:, j], entry["threshold"],
                                                self.config.bootstrap_samples, self.config.confidence, seed=j))
                out[policy][lb] = entry
        return out
