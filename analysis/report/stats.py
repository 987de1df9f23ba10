"""Seed-paired comparisons of a variant with the baseline (``scipy.stats.ttest_rel``) and mean/sd over seeds."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

ALPHA = 0.05  # significance level of the paired t-test marker `*`


def paired_difference(scores: pd.DataFrame, column: str, variant: str, baseline: str = "baseline") -> dict:
    """Seed-paired difference ``variant - baseline`` of ``column`` in a (variant, seed, column) frame.

    Returns ``n`` (paired seeds), ``mean``, ``sd`` of the differences, ``positive`` (seeds with d > 0), the paired
    t-test's ``t`` and two-sided ``p`` (``scipy.stats.ttest_rel``; NaN with fewer than 2 seeds or identical
    differences), ``ci_low``/``ci_high`` (95% interval of the mean difference) and ``significant`` (p < 0.05).
    """
    pivot = scores.pivot_table(index="seed", columns="variant", values=column)
    if variant not in pivot or baseline not in pivot:
        return {"n": 0}
    pairs = pivot[[variant, baseline]].dropna()
    diffs = pairs[variant] - pairs[baseline]
    n = len(diffs)
    mean = float(diffs.mean()) if n else math.nan
    sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
    t = p = low = high = math.nan
    if n > 1 and sd > 0:
        test = stats.ttest_rel(pairs[variant], pairs[baseline])
        t, p = float(test.statistic), float(test.pvalue)
        low, high = (float(v) for v in test.confidence_interval(0.95))
    return {"n": n, "mean": mean, "sd": sd, "positive": int((diffs > 0).sum()), "t": t, "p": p,
            "ci_low": low, "ci_high": high, "significant": bool(p < ALPHA)}  # fmt: skip


def mean_sd(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna().astype(float)
    n = len(values)
    return (float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)
