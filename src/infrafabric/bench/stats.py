"""Summaries of latency samples, shared by every ``ifctl bench`` benchmark.

Percentiles use the **nearest-rank** method on the sorted samples: the p-th
percentile of n samples is the ``ceil(p/100 * n)``-th smallest one. Every
reported value is therefore a latency that was actually observed, and
``min <= p50 <= p95 <= p99 <= max`` holds by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["QUANTILE_METHOD", "nearest_rank", "ratio", "summarize"]

QUANTILE_METHOD = "nearest-rank on the sorted samples (p-th = ceil(p/100*n)-th smallest)"


def nearest_rank(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 < p <= 100) of already sorted values, by nearest rank."""
    if not sorted_values:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples_ns: Sequence[int]) -> dict[str, Any]:
    """count, min, p50, p95, p99, max and mean of samples given in
    nanoseconds, reported in milliseconds (rounded to 0.1 µs)."""
    if not samples_ns:
        return {"count": 0, "min": None, "p50": None, "p95": None, "p99": None,
                "max": None, "mean": None}
    ms = sorted(v / 1e6 for v in samples_ns)
    return {
        "count": len(ms),
        "min": round(ms[0], 4),
        "p50": round(nearest_rank(ms, 50), 4),
        "p95": round(nearest_rank(ms, 95), 4),
        "p99": round(nearest_rank(ms, 99), 4),
        "max": round(ms[-1], 4),
        "mean": round(sum(ms) / len(ms), 4),
    }


def ratio(ours: float | None, raw: float | None) -> float | None:
    """ours / raw rounded to 3 places, or None when either is missing or raw is 0."""
    if ours is None or raw is None or raw <= 0:
        return None
    return round(ours / raw, 3)
