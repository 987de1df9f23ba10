"""Seed-paired comparisons of a variant with the baseline (``scipy.stats.ttest_rel``) and mean/sd over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05  # significance level of the paired t-test marker `*`
# differences whose spread is within this many float64 epsilons of the scores' magnitude are identical: what is left
# is rounding (score + 5.0 - score is not exactly 5.0 in every seed), and a t-test on it would report t ~ 1e15
ROUNDING_EPS = 64 * np.finfo(float).eps


def zero_variance(variant, baseline) -> bool:
    """True if the seed-paired differences ``variant - baseline`` (two equal-length sequences of scores, NaN pairs
    ignored) are the same in every seed up to float rounding (2 or more seeds): their spread ``max(d) - min(d)`` is
    within :data:`ROUNDING_EPS` of the scores' magnitude. Then the sd is 0 and the paired t statistic
    ``mean / (sd / sqrt n)`` is undefined: the constant difference is reported as such, never as "no difference".
    """
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return False
    d = a - b
    magnitude = max(1.0, float(np.max(np.abs(np.concatenate([a, b, d])))))
    return bool(np.ptp(d) <= ROUNDING_EPS * magnitude)


def p_digits(p: float, alpha: float = ALPHA, digits: int = 3, kind: str = "f") -> str:
    """``p`` with ``digits`` decimals (``kind="f"``) or significant digits (``"g"``), and more digits whenever fewer
    would show a number on the other side of ``alpha`` than ``p`` itself (0.04998 is "0.04998", never "0.050", next
    to a claim of p < 0.05); "nan" for NaN."""
    if math.isnan(p):
        return "nan"
    for more in range(0, 12):
        text = f"{p:.{digits + more}{kind}}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return repr(p)


def format_p(p: float, alpha: float = ALPHA) -> str:
    """``p < 0.001`` below 0.001; else 3 decimals below 0.1 and 2 above (``p 0.053``, ``p 0.41``), with more digits
    where needed so that the number and the ``p < alpha`` marker never disagree (:func:`p_digits`)."""
    if p < 0.001 <= alpha:
        return "p < 0.001"
    return f"p {p_digits(p, alpha, 3 if p < 0.1 else 2)}"


def paired_difference(scores: pd.DataFrame, column: str, variant: str, baseline: str = "baseline") -> dict:
    """Seed-paired difference ``variant - baseline`` of ``column`` in a (variant, seed, column) frame.

    Returns ``n`` (paired seeds), ``mean``, ``sd`` of the differences, ``positive`` (seeds with d > 0), the paired
    t-test's ``t`` and two-sided ``p`` (``scipy.stats.ttest_rel``; NaN with fewer than 2 seeds or identical
    differences), ``ci_low``/``ci_high`` (95% interval of the mean difference), ``significant`` (p < 0.05) and
    ``zero_variance`` (:func:`zero_variance`: the same difference in every seed, sd reported as 0, no test).
    """
    pivot = scores.pivot_table(index="seed", columns="variant", values=column)
    if variant not in pivot or baseline not in pivot:
        return {"n": 0}
    pairs = pivot[[variant, baseline]].dropna()
    diffs = pairs[variant] - pairs[baseline]
    n = len(diffs)
    mean = float(diffs.mean()) if n else math.nan
    sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
    constant = zero_variance(pairs[variant], pairs[baseline])
    if constant:
        sd = 0.0  # the spread left is float rounding
    t = p = low = high = math.nan
    if n > 1 and not constant:
        test = stats.ttest_rel(pairs[variant], pairs[baseline])
        t, p = float(test.statistic), float(test.pvalue)
        low, high = (float(v) for v in test.confidence_interval(0.95))
    return {"n": n, "mean": mean, "sd": sd, "positive": int((diffs > 0).sum()), "t": t, "p": p,
            "ci_low": low, "ci_high": high, "significant": bool(p < ALPHA), "zero_variance": constant}  # fmt: skip


def mean_sd(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna().astype(float)
    n = len(values)
    return (float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)
