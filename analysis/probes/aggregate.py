"""Probe results -> curves versus position and versus text-length bucket, with bootstrap confidence intervals.

Resampling unit: the sample. Rows are first averaged within each sample (for a per-position curve there is one
row per sample and position anyway; for a length bucket, a sample's mean over its positions), then the mean over
samples is bootstrapped with :func:`scipy.stats.bootstrap`. Several checkpoints compare in one frame through a
``checkpoint`` column (:func:`combine`).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_GROUPS = ("checkpoint", "probe", "variant", "layer")
# Resampled values held at once by bootstrap_mean_cis (float64: 20M values = 160 MB).
_BATCH_VALUES = 20_000_000


def combine(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate probe frames of several checkpoints into one with a ``checkpoint`` column (name -> frame)."""
    parts = [frame.assign(checkpoint=name) for name, frame in frames.items() if len(frame)]
    if not parts:
        raise ValueError("combine: every probe frame is empty")
    return pd.concat(parts, ignore_index=True)


def paired_difference(df: pd.DataFrame, reference: str, value: str = "value") -> pd.DataFrame:
    """Per-row differences ``checkpoint - reference`` on the rows both share (same sample, position, probe, ...).

    Feed the result to :func:`curve` for a paired bootstrap CI of, e.g., VISTA minus baseline: pairing removes
    the between-sample variance that separate CIs carry. ``checkpoint`` becomes ``"<name> - <reference>"``.
    """
    if reference not in set(df["checkpoint"]):
        raise ValueError(
            f"paired_difference: no checkpoint {reference!r} among {sorted(set(df['checkpoint']))}"
        )
    keys = [c for c in ("sample_id", "abs_position", "probe", "variant", "layer") if c in df.columns]
    ref = df[df["checkpoint"] == reference].set_index(keys)[value]
    if ref.index.has_duplicates:
        raise ValueError(f"paired_difference: rows of {reference!r} are not unique by {keys}")
    parts = []
    for name, part in df[df["checkpoint"] != reference].groupby("checkpoint", sort=True):
        other = part.set_index(keys)
        shared = other.index.intersection(ref.index)
        diff = other.loc[shared].copy()
        diff[value] = diff[value] - ref.loc[shared]
        parts.append(diff.reset_index().assign(checkpoint=f"{name} - {reference}"))
    if not parts:
        raise ValueError("paired_difference: needs at least one checkpoint besides the reference")
    return pd.concat(parts, ignore_index=True)


def bootstrap_mean_ci(
    values: np.ndarray, level: float = 0.95, n_resamples: int = 1000, method: str = "BCa", seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` and its bootstrap confidence interval ``(mean, low, high)``.

    One value: the interval is (nan, nan). All values equal: the interval is the point (no sampling variation is
    observable). BCa falls back to the percentile interval when its acceleration is undefined.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) == 1:
        return mean, np.nan, np.nan
    if np.ptp(values) == 0:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (values,), np.mean, confidence_level=level, n_resamples=n_resamples, method=method, rng=rng
        )
        low, high = res.confidence_interval
        if method != "percentile" and not (np.isfinite(low) and np.isfinite(high)):
            res = stats.bootstrap(
                (values,),
                np.mean,
                confidence_level=level,
                n_resamples=n_resamples,
                method="percentile",
                rng=rng,
            )
            low, high = res.confidence_interval
    return mean, float(low), float(high)


def bootstrap_mean_cis(
    samples: Sequence[np.ndarray],
    level: float = 0.95,
    n_resamples: int = 1000,
    method: str = "BCa",
    seed: int = 0,
) -> list[tuple[float, float, float]]:
    """:func:`bootstrap_mean_ci` of each array in ``samples`` (same means; intervals up to ties, below), in one vectorised
    :func:`scipy.stats.bootstrap` call per sample size instead of one call per array (a probe summary has
    thousands of small groups, and scipy's per-call overhead, ~3 ms, dominated ``vista probe``'s run time).

    :func:`bootstrap_mean_ci` seeds every call with ``seed``, and scipy draws the resample indices once for a whole
    batch, so each array is resampled with the indices it would get alone: means are identical, and intervals equal
    up to floating-point ties in BCa's bias correction (a resample mean that equals the sample mean to the last bit
    in one summation order and not in the other; on a quick study's 15,075 probe groups, 399 intervals moved, by at
    most 1.2% of their width). Arrays with fewer than two finite values, with no spread, or whose BCa interval is
    undefined go through :func:`bootstrap_mean_ci` itself.

    Args:
        samples: one 1-D array per group; NaN and infinite values are left out.
        level, n_resamples, method, seed: as :func:`bootstrap_mean_ci`.

    Returns:
        ``(mean, low, high)`` per array, in order.
    """
    finite = [np.asarray(v, dtype=np.float64) for v in samples]
    finite = [v[np.isfinite(v)] for v in finite]
    out: list[tuple[float, float, float] | None] = [None] * len(finite)
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, values in enumerate(finite):
        if len(values) < 2 or np.ptp(values) == 0:
            out[i] = bootstrap_mean_ci(values, level, n_resamples, method, seed)
        else:
            by_size[len(values)].append(i)
    for size, indices in by_size.items():
        per_batch = max(1, _BATCH_VALUES // (size * n_resamples))
        for start in range(0, len(indices), per_batch):
            chunk = indices[start : start + per_batch]
            data = np.stack([finite[i] for i in chunk])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", stats.DegenerateDataWarning)
                res = stats.bootstrap((data,), np.mean, confidence_level=level, n_resamples=n_resamples,
                                      method=method, axis=-1, rng=np.random.default_rng(seed))  # fmt: skip
            low, high = res.confidence_interval
            for j, i in enumerate(chunk):
                if method != "percentile" and not (np.isfinite(low[j]) and np.isfinite(high[j])):
                    out[i] = bootstrap_mean_ci(finite[i], level, n_resamples, method, seed)
                else:
                    out[i] = (float(data[j].mean()), float(low[j]), float(high[j]))
    return out  # type: ignore[return-value]


def curve(
    df: pd.DataFrame,
    x: str = "position",
    groups: Sequence[str] = DEFAULT_GROUPS,
    value: str = "value",
    unit: str = "sample_id",
    level: float = 0.95,
    n_resamples: int = 1000,
    method: str = "BCa",
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of ``value`` per ``groups`` x ``x`` with a bootstrap CI over ``unit`` (samples).

    Args:
        df: tidy probe rows (e.g. from :func:`analysis.probes.swap.swap_probe`, possibly :func:`combine`-d).
        x: the curve's axis: ``"position"``, ``"answer_position"``, ``"length_bucket"`` (see
            :func:`add_length_buckets`), ...
        groups: grouping columns; those absent from ``df`` are ignored.
        value: the column to average.
        unit: the resampling unit; rows are averaged within a unit first.
        level, n_resamples, method, seed: bootstrap settings (:func:`scipy.stats.bootstrap`).

    Returns:
        One row per group and ``x`` value: the group columns, ``x``, ``mean``, ``ci_low``, ``ci_high``, ``n``
        (number of units), ``n_nonfinite`` (rows whose value was NaN or infinite, e.g. a swap score where the
        gold token has probability 0 under every image: left out of the mean and counted here), ``level``.
    """
    keys = [g for g in groups if g in df.columns and df[g].notna().any()] + [x]
    data = df.assign(_nonfinite=~np.isfinite(df[value].to_numpy(dtype=np.float64)))
    data.loc[data["_nonfinite"], value] = np.nan  # left out of the means, and counted
    per_unit = (
        data.groupby([*keys, unit], observed=True, dropna=False)
        .agg(**{value: (value, "mean"), "_nonfinite": ("_nonfinite", "sum")})
        .reset_index()
    )
    # the groups as slices of one sorted array (iterating pandas groups costs more than the bootstrap)
    grouped = per_unit.groupby(keys, observed=True, dropna=False, sort=True)
    codes = grouped.ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(grouped.ngroups + 1))
    values = per_unit[value].to_numpy(dtype=np.float64)[order]
    nonfinite = per_unit["_nonfinite"].to_numpy()[order]
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    cis = bootstrap_mean_cis([values[s] for s in slices], level, n_resamples, method, seed)
    group_keys = per_unit[keys].iloc[order[bounds[:-1]]].itertuples(index=False, name=None)
    rows = [
        (*key, mean, low, high, int(np.isfinite(values[s]).sum()), int(nonfinite[s].sum()))
        for key, s, (mean, low, high) in zip(group_keys, slices, cis)
    ]
    out = pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n", "n_nonfinite"])
    out["level"] = level
    return out


def add_length_buckets(
    df: pd.DataFrame, edges: Sequence[float] | None = None, n_buckets: int = 4, column: str = "text_len"
) -> pd.DataFrame:
    """Add ``length_bucket`` (an ordered categorical of ``column`` intervals) to a copy of ``df``.

    Args:
        edges: bucket edges (right-closed intervals); default: quantiles of the per-sample lengths.
        n_buckets: number of quantile buckets when ``edges`` is not given (fewer if lengths repeat).
    """
    out = df.copy()
    if edges is None:
        keys = [k for k in ("sample_id", column) if k in out]
        lengths = out.drop_duplicates(keys)[column]
        edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)))
        edges[0] -= 0.5
        if len(edges) < 2:
            edges = np.array([lengths.min() - 0.5, lengths.max()])
    out["length_bucket"] = pd.cut(out[column], bins=np.asarray(edges, dtype=float))
    missing = int(out["length_bucket"].isna().sum())
    if missing:
        raise ValueError(f"add_length_buckets: {missing} rows have {column} outside the edges {list(edges)}")
    out["length_bucket"] = out["length_bucket"].map(
        lambda iv: f"{int(np.floor(iv.left)) + 1}-{int(iv.right)}"
    )
    order = sorted(out["length_bucket"].unique(), key=lambda s: int(s.split("-")[0]))
    out["length_bucket"] = pd.Categorical(out["length_bucket"], categories=order, ordered=True)
    return out
