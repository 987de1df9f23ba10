"""Seed-paired comparisons of variants against a baseline: paired t-test, bootstrap 95% interval, Holm correction.

Input: a long table with columns ``variant``, ``seed``, ``benchmark``, ``score`` (one row per run and benchmark).
For each variant ``v`` and benchmark ``b`` the paired differences are ``d_s = score(v, s, b) - score(base, s, b)``
over the seeds ``s`` both have; "overall" pairs the per-seed mean over the benchmarks both have. Per row:
the mean difference, ``scipy.stats.ttest_rel`` (two-sided), a percentile bootstrap 95% interval of the mean
difference (``scipy.stats.bootstrap``, paired by resampling seeds), and Holm's step-down adjusted p-value across
the variants (within each benchmark; Holm 1979, implemented here because scipy has none). When the difference is
the same in every seed (sd = 0 up to float rounding, :func:`analysis.report.stats.zero_variance`) the t statistic is
undefined: ``t``/``p`` are NaN, ``sd`` is 0 and the interval is that constant difference (every resample's mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.report.stats import p_digits, zero_variance

COLUMNS = ("variant", "seed", "benchmark", "score")
OVERALL = "overall"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values: sort ascending, ``p_(i) * (m - i)`` (i = 0..m-1), running maximum, capped at 1.

    NaN p-values are kept as NaN and do not count in ``m``.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, p[index] * (m - rank)))
        adjusted[index] = running
    return adjusted


def _check(scores: pd.DataFrame, baseline: str) -> None:
    missing = [c for c in COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores table lacks columns {missing}; expected {list(COLUMNS)}")
    duplicated = scores.duplicated(["variant", "seed", "benchmark"])
    if duplicated.any():
        row = scores[duplicated].iloc[0]
        raise ValueError(f"two scores for variant={row.variant} seed={row.seed} benchmark={row.benchmark}")
    if baseline not in set(scores["variant"]):
        raise ValueError(f"baseline {baseline!r} not among the variants {sorted(set(scores['variant']))}")


def paired_comparisons(
    scores: pd.DataFrame,
    baseline: str = "baseline",
    *,
    n_resamples: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (variant, benchmark incl. "overall"): seeds, mean_diff, sd (of the paired differences), t, p,
    ci_low, ci_high, p_holm.

    With fewer than 2 paired seeds the test and interval are NaN (reported, not dropped). Raises ``ValueError``
    for missing columns, duplicate runs or an absent baseline.
    """
    _check(scores, baseline)
    wide = scores.pivot(index=["benchmark", "seed"], columns="variant", values="score")
    overall = scores.pivot_table(index="seed", columns=["variant", "benchmark"], values="score")
    rows = []
    for variant in sorted(v for v in set(scores["variant"]) if v != baseline):
        for benchmark in sorted(set(scores["benchmark"])):
            pair = wide.loc[benchmark][[baseline, variant]].dropna()
            rows.append(_row(variant, benchmark, pair[variant], pair[baseline], n_resamples, seed))
        shared = sorted(set(overall[baseline].columns) & set(overall[variant].columns))
        means = pd.concat(
            [overall[variant][shared].mean(axis=1), overall[baseline][shared].mean(axis=1)], axis=1
        ).dropna()
        rows.append(_row(variant, OVERALL, means[0], means[1], n_resamples, seed))
    table = pd.DataFrame(rows)
    table["p_holm"] = np.nan
    for _, index in table.groupby("benchmark").groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p"].to_numpy())
    return table


def _row(
    variant: str, benchmark: str, scores: pd.Series, baseline: pd.Series, n_resamples: int, seed: int
) -> dict:
    """The comparison row of seed-paired ``scores`` and ``baseline`` scores (no NaN)."""
    d = (scores - baseline).to_numpy(dtype=float)
    row = {
        "variant": variant,
        "benchmark": benchmark,
        "seeds": len(d),
        "mean_diff": float(np.mean(d)) if len(d) else np.nan,
        "sd": float(np.std(d, ddof=1)) if len(d) >= 2 else np.nan,
    }
    row.update(t=np.nan, p=np.nan, ci_low=np.nan, ci_high=np.nan)
    if len(d) >= 2:
        # the same difference in every seed: no t statistic, the interval is the point
        if zero_variance(scores, baseline):
            row.update(sd=0.0, ci_low=row["mean_diff"], ci_high=row["mean_diff"])
            return row
        test = stats.ttest_rel(d, np.zeros_like(d))
        boot = stats.bootstrap(
            (d,), np.mean, confidence_level=0.95, n_resamples=n_resamples, method="percentile",
            random_state=np.random.default_rng(seed),
        )  # fmt: skip
        row.update(
            t=float(test.statistic),
            p=float(test.pvalue),
            ci_low=float(boot.confidence_interval.low),
            ci_high=float(boot.confidence_interval.high),
        )
    return row


def is_zero_variance(row) -> bool:
    """Whether a :func:`paired_comparisons` row is a difference that is the same in every seed (sd = 0, no test).

    Rows read back from an ``ablation_stats.csv`` written before the ``sd`` column existed are recognised by their
    NaN p-value and a zero-width interval with 2 or more seeds.
    """
    sd = getattr(row, "sd", np.nan)
    if row.seeds < 2:
        return False
    if not pd.isna(sd):
        return bool(sd == 0)
    return bool(np.isnan(row.p) and row.ci_low == row.ci_high)


def ablation_table(comparisons: pd.DataFrame, digits: int = 3) -> str:
    """Markdown: one row per variant, one column per benchmark: ``mean [low, high] (p_holm)``; overall last."""
    benchmarks = sorted(b for b in set(comparisons["benchmark"]) if b != OVERALL) + [OVERALL]

    def cell(r: pd.Series) -> str:
        if np.isnan(r.mean_diff):
            return "n/a"
        text = f"{r.mean_diff:+.{digits}f}"
        if is_zero_variance(r):
            return text + " (same in every seed, sd = 0: no test)"
        if not np.isnan(r.ci_low):
            text += f" [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]"
        if not np.isnan(r.p_holm):
            text += f" (p={p_digits(r.p_holm, digits=digits)})"
        return text

    header = "| variant | " + " | ".join(benchmarks) + " |"
    lines = [header, "|" + "---|" * (len(benchmarks) + 1)]
    for variant, group in comparisons.groupby("variant", sort=True):
        by = {r.benchmark: cell(r) for r in group.itertuples()}
        lines.append(f"| {variant} | " + " | ".join(by.get(b, "n/a") for b in benchmarks) + " |")
    return "\n".join(lines)


def forest_plot(comparisons: pd.DataFrame, path: str | Path, benchmark: str = OVERALL) -> Path:
    """A forest plot of one benchmark's mean differences with bootstrap 95% intervals (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparisons[comparisons["benchmark"] == benchmark].sort_values("variant")
    if rows.empty:
        raise ValueError(f"no comparisons for benchmark {benchmark!r}")
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1.2))
    low = (rows["mean_diff"] - rows["ci_low"]).fillna(0).to_numpy()
    high = (rows["ci_high"] - rows["mean_diff"]).fillna(0).to_numpy()
    ax.errorbar(rows["mean_diff"], y, xerr=[low, high], fmt="o", capsize=3)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, rows["variant"])
    ax.set_xlabel(f"{benchmark}: score - baseline (seed-paired mean, bootstrap 95% CI)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
