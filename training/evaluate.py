"""Evaluation on the test split: per label × language ROC-AUC, PR-AUC and
precision / recall / F1 at each policy; ECE and Brier score before and after
calibration; a paired bootstrap interval for the macro PR-AUC gap between
two scorers; the same figures on the test messages of a pinned earlier corpus
version (like for like across versions); reliability diagram and PR curves as
PNG files. On held-out real
text: the share of ordinary messages flagged per language × policy × label,
and the gate on it.

Unknown targets (partial labels, ``nan`` in ``y``) are skipped by every metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.metrics import brier_score_loss, roc_auc_score

from data.split import read_pins
from training.calibrate import known


def _reliability_bins(proba: np.ndarray, y: np.ndarray, bins: int = 10):
    """Per non-empty equal-width bin: mean predicted probability, observed frequency, share of points."""
    p, t = np.asarray(proba).ravel(), np.asarray(y, dtype=np.float64).ravel()
    p, t = p[known(t)], t[known(t)]
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    return [(p[which == b].mean(), t[which == b].mean(), (which == b).mean())
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins, over all labels' probabilities pooled."""
    return float(sum(w * abs(pred - obs) for pred, obs, w in _reliability_bins(proba, y, bins)))


def _prf(flags: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp = float(np.sum(flags & y))
    fp = float(np.sum(flags & ~y))
    fn = float(np.sum(~flags & y))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def label_table(proba: np.ndarray, y: np.ndarray, langs: list[str], labels: list[str],
                thresholds: dict[str, np.ndarray]) -> dict:
    """``{lang|all: {label: {support, roc_auc, pr_auc, <policy>: {precision, recall, f1}}, macro_pr_auc}}``."""
    k = known(y)
    y = np.asarray(y) > 0.5
    langs_arr = np.asarray(langs)
    out = {}
    for lang in ["all", *sorted(set(langs))]:
        m = np.ones(len(y), bool) if lang == "all" else langs_arr == lang
        per_label = {}
        for j, lb in enumerate(labels):
            mj = m & k[:, j]
            yt, pp = y[mj, j], proba[mj, j]
            entry: dict = {"support": int(yt.sum()), "n": int(mj.sum())}
            if 0 < yt.sum() < len(yt):
                entry["roc_auc"] = float(roc_auc_score(yt, pp))
                entry["pr_auc"] = average_precision(yt, pp)
            for policy, th in thresholds.items():
                entry[policy] = _prf(pp >= th[j], yt)
            per_label[lb] = entry
        pr = [e["pr_auc"] for e in per_label.values() if "pr_auc" in e]
        out[lang] = {"labels": per_label, "macro_pr_auc": float(np.mean(pr)) if pr else None}
    return out


def pinned_test_quality(test: list, proba: np.ndarray, y: np.ndarray, labels: list[str],
                        thresholds: dict[str, np.ndarray], pin_file: str | Path) -> dict:
    """Macro PR-AUC per language and triage recall per label on the test messages whose
    group the pin file holds in test: the test split of the corpus version that was
    pinned, which later versions keep whole. Models trained on different corpus
    versions compare like for like here, not on their whole test splits."""
    pins = read_pins(pin_file)
    keep = np.array([pins.get(r.group) == "test" for r in test], bool)
    out: dict = {"pin_file": str(pin_file), "messages": int(keep.sum())}
    if keep.any():
        table = label_table(proba[keep], y[keep], [r.lang for r, k in zip(test, keep, strict=True) if k],
                            labels, thresholds)
        out["macro_pr_auc"] = {lang: block["macro_pr_auc"] for lang, block in table.items()}
        out["recall"] = {policy: {lang: {lb: e[policy]["recall"] for lb, e in block["labels"].items()}
                                  for lang, block in table.items()} for policy in thresholds}
    return out


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score`` for one binary label, without its
    input checks (about 30× faster; the bootstrap calls it tens of thousands of times).
    The one AP of the project: every PR-AUC in metrics.json comes from here."""
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(t)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_pr_auc(scores: np.ndarray, y: np.ndarray) -> float | None:
    """Mean average precision over the labels that have both classes (None if none has)."""
    k = known(y)
    y = np.asarray(y) > 0.5
    pr = []
    for j in range(y.shape[1]):
        yj, sj = y[k[:, j], j], scores[k[:, j], j]
        if 0 < yj.sum() < len(yj):
            pr.append(average_precision(yj, sj))
    return float(np.mean(pr)) if pr else None


def macro_pr_auc_gap(proba_a: np.ndarray, proba_b: np.ndarray, y: np.ndarray, langs: list[str],
                     samples: int, confidence: float, seed: int = 0) -> dict:
    """Macro PR-AUC of ``a`` minus ``b`` per language, with a paired bootstrap interval.

    Messages are resampled within each language and both scorers are scored on
    the same resample, so the interval reflects how much the gap depends on
    which test messages were drawn — wide where a language has few positives.
    """
    langs_arr = np.asarray(langs)
    rng = np.random.default_rng(seed)
    out = {}
    for lang in ["all", *sorted(set(langs))]:
        idx = np.arange(len(y)) if lang == "all" else np.flatnonzero(langs_arr == lang)
        a, b = macro_pr_auc(proba_a[idx], y[idx]), macro_pr_auc(proba_b[idx], y[idx])
        if a is None or b is None:
            continue
        gaps = []
        for _ in range(samples):
            r = rng.choice(idx, size=len(idx), replace=True)
            ga, gb = macro_pr_auc(proba_a[r], y[r]), macro_pr_auc(proba_b[r], y[r])
            if ga is not None and gb is not None:
                gaps.append(ga - gb)
        tail = (1 - confidence) / 2 * 100
        ci = [float(np.percentile(gaps, tail)), float(np.percentile(gaps, 100 - tail))] if gaps else None
        out[lang] = {"gap": a - b, "ci": ci, "confidence": confidence,
                     "p_gap_le_0": float(np.mean(np.array(gaps) <= 0)) if gaps else None}
    return out


def calibration_summary(logits: np.ndarray, proba: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """ECE and Brier score before (plain sigmoid) and after calibration, overall and per label."""
    raw = expit(logits)
    k = known(y)
    per_label = {lb: {"brier_before": float(brier_score_loss(y[k[:, j], j], raw[k[:, j], j])),
                      "brier_after": float(brier_score_loss(y[k[:, j], j], proba[k[:, j], j])),
                      "ece_before": expected_calibration_error(raw[:, j], y[:, j]),
                      "ece_after": expected_calibration_error(proba[:, j], y[:, j])}
                 for j, lb in enumerate(labels)}
    return {
        "ece_before": expected_calibration_error(raw, y),
        "ece_after": expected_calibration_error(proba, y),
        "brier_before": float(np.mean((raw[k] - y[k]) ** 2)),
        "brier_after": float(np.mean((proba[k] - y[k]) ** 2)),
        "per_label": per_label,
    }


def plot_reliability(logits: np.ndarray, proba: np.ndarray, y: np.ndarray, path: str | Path, bins: int = 10) -> Path:
    """Reliability diagram (all labels pooled), before and after calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, p in (("before (sigmoid)", expit(logits)), ("after (temperature)", proba)):
        points = _reliability_bins(p, y, bins)
        ax.plot([x for x, _, _ in points], [o for _, o, _ in points], "o-",
                label=f"{name}, ECE {expected_calibration_error(p, y, bins):.3f}")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability (test split, all labels)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_pr_curves(curves: dict[str, np.ndarray], y: np.ndarray, labels: list[str], path: str | Path) -> Path:
    """PR curves per label, one line per model variant (e.g. model vs baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 4), squeeze=False)
    for j, lb in enumerate(labels):
        ax = axes[0, j]
        kj = known(y[:, j])
        yj = y[kj, j] > 0.5
        for name, scores in curves.items():
            if yj.sum() == 0:
                continue
            p, r, _ = precision_recall_curve(yj, scores[kj, j])
            ax.plot(r, p, label=f"{name} (AP {average_precision(yj, scores[kj, j]):.3f})")
        ax.set_title(lb)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


#: Key of the share of messages flagged for any label known to be negative.
ANY_KNOWN = "any_known_negative_label"


def flag_rates(proba: np.ndarray, langs: list[str], labels: list[str],
               thresholds: dict[str, np.ndarray], unknown: list[str] = ()) -> dict:
    """Share of messages flagged, ``{policy: {lang|all: {label: rate, ANY_KNOWN: rate}}}``.

    Meant for held-out ordinary text, where every flag of a label not in
    ``unknown`` is a false alarm; ``ANY_KNOWN`` is the share flagged for at
    least one of those labels.
    """
    langs_arr = np.asarray(langs)
    known_cols = [j for j, lb in enumerate(labels) if lb not in unknown]
    out: dict = {}
    for policy, th in thresholds.items():
        flags = np.asarray(proba) >= th
        out[policy] = {}
        for lang in ["all", *sorted(set(langs))]:
            m = np.ones(len(flags), bool) if lang == "all" else langs_arr == lang
            rates = {lb: float(flags[m, j].mean()) for j, lb in enumerate(labels)}
            rates[ANY_KNOWN] = float(flags[m][:, known_cols].any(axis=1).mean())
            out[policy][lang] = rates
    return out

def gate_breaches(rates: dict, limits: dict[str, dict[str, float]]) -> list[str]:
    """Every ``policy / lang / label`` whose flag rate is over its limit, as readable lines."""
    return [f"{policy} / {lang} / {lb}: {per_lang[lb]:.1%} flagged > {limit:.1%} allowed"
            for policy, per_label in limits.items() if policy in rates
            for lang, per_lang in rates[policy].items()
            for lb, limit in per_label.items() if per_lang.get(lb, 0.0) > limit]
