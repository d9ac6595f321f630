"""How a study calls one encoder better than another: a paired t interval over seeds.

Each seed pretrains once and draws the head and the random weights, so the cells of one seed (one per subset
seed) are not independent: they are averaged into one paired difference per seed, and the seeds are the pairs.
A is called better than B when the 95% interval of the mean paired difference excludes 0 on A's side (and B over A
alike); its half-width shrinks as 1/sqrt(n), so more seeds settle a gap that fewer could not.

Why a t interval and not a paired bootstrap: at the 3-10 pairs a CPU study affords, the bootstrap's percentile
interval is too narrow (a resample of 3 values has at most 10 distinct means, its coverage well under 95%), while
the t interval is exact for normal differences and close to its level for the near-symmetric spread of
seed-to-seed differences.

The Student t quantile is written here (Simpson's rule on the density, then bisection) so that the package does not
depend on scipy for one number; it agrees with the tables to 1e-4 (tests/test_study.py).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["paired_verdict", "seeds_to_separate", "t_quantile"]

LEVEL = 0.95


def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with `df` degrees of freedom (x >= 0), by Simpson's rule on [0, x]."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    steps = 1000
    h = x / steps
    total = density(0.0) + density(x) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return 0.5 + total * h / 3


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p >= 0.5) of Student's t with `df` >= 1 degrees of freedom: numerically below 30 degrees
    of freedom, above by the Cornish-Fisher expansion around the normal quantile (error under 1e-5 there)."""
    if df >= 30:
        z = statistics.NormalDist().inv_cdf(p)
        return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
                + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def _half_width(sd: float, n: int, level: float = LEVEL) -> float:
    return t_quantile(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n)


def seeds_to_separate(mean: float, sd: float, level: float = LEVEL, most: int = 1000) -> int | None:
    """How many seeds would make the interval of a gap `mean` with paired spread `sd` exclude 0 (None: no finite
    number, the gap is 0, or more than `most`)."""
    if mean == 0:
        return None
    # t > z: no fewer seeds than the normal interval would need
    start = max(2, math.floor((statistics.NormalDist().inv_cdf(1 - (1 - level) / 2) * sd / abs(mean)) ** 2))
    for n in range(start, most + 1):
        if _half_width(sd, n, level) < abs(mean):
            return n
    return None


def paired_verdict(a: Sequence[float], b: Sequence[float], seeds: Sequence[int] | None = None,
                   level: float = LEVEL) -> dict[str, Any]:
    """Compare A and B on the same cells. `a`, `b`: their values on the same cells, in the same order; `seeds`:
    each cell's seed (cells of one seed are averaged into one pair; default: every cell its own seed).

    Returns `diffs` (A - B per seed), `mean_diff`, `sd` (of the paired differences), `low`/`high` (the interval),
    `pairs` (seeds), `cells`, `seeds_needed` (for the observed gap and spread) and `verdict`: "A", "B",
    "no verdict", or "no verdict: one seed"."""
    seeds = list(range(len(a))) if seeds is None else list(seeds)
    per_seed: dict[int, list[float]] = {}
    for seed, x, y in zip(seeds, a, b):
        per_seed.setdefault(seed, []).append(x - y)
    diffs = [statistics.mean(d) for d in per_seed.values()]
    mean = statistics.mean(diffs)
    found: dict[str, Any] = {"diffs": diffs, "mean_diff": mean, "pairs": len(diffs), "cells": len(a),
                             "level": level, "sd": None, "low": None, "high": None, "seeds_needed": None}
    if len(diffs) < 2:
        return found | {"verdict": "no verdict: one seed"}
    sd = statistics.stdev(diffs)
    half = _half_width(sd, len(diffs), level)
    found |= {"sd": sd, "low": mean - half, "high": mean + half, "seeds_needed": seeds_to_separate(mean, sd, level)}
    verdict = "A" if mean - half > 0 else "B" if mean + half < 0 else "no verdict"
    return found | {"verdict": verdict}
