"""Test-split quality of each variant, computed in the benchmark run from the scores it produced."""

from __future__ import annotations

import numpy as np

from training.evaluate import macro_pr_auc  # the project's one definition, as in metrics.json


def flag_agreement(proba_a: np.ndarray, proba_b: np.ndarray, thresholds: np.ndarray) -> float:
    """Share of messages whose flags (every label) are identical under ``thresholds``."""
    return float(np.mean(np.all((proba_a >= thresholds) == (proba_b >= thresholds), axis=1)))


def compare(scores: dict[str, np.ndarray], y: np.ndarray, thresholds: dict[str, np.ndarray],
            reference: str = "torch") -> dict:
    """Macro PR-AUC per variant; flag agreement and max |Δproba| of the ONNX variants vs ``reference``."""
    out: dict = {"messages": int(len(y)), "macro_pr_auc": {}, "vs_" + reference: {}}
    for name, s in scores.items():
        out["macro_pr_auc"][name] = macro_pr_auc(s, y)
    ref = scores.get(reference)
    if ref is not None:
        for name, s in scores.items():
            if name == reference or not name.startswith("onnx"):
                continue
            out["vs_" + reference][name] = {
                "max_abs_proba_diff": float(np.max(np.abs(s - ref))),
                "flag_agreement": {p: flag_agreement(s, ref, th) for p, th in thresholds.items()},
            }
    return out
