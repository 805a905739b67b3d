"""Small, dependency-free summary helpers shared by every benchmark."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between order statistics.

    Matches ``numpy.percentile(values, q)`` (its default "linear" method).
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summary(values: Sequence[float], percentiles: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``n``, ``mean``, ``min``, ``max`` and ``p<q>`` of ``values``; an empty input gives ``{"n": 0}``."""
    if not values:
        return {"n": 0}
    out: dict[str, float] = {"n": len(values), "mean": float(statistics.fmean(values)),
                             "min": float(min(values)), "max": float(max(values))}
    for q in percentiles:
        out[f"p{q:g}"] = percentile(values, q)
    return out


def median(values: Sequence[float]) -> float:
    """Median of repeated runs (the figure every table reports)."""
    if not values:
        raise ValueError("median of an empty sequence")
    return float(statistics.median(values))


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b
