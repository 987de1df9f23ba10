"""Runs in paper columns -> the map's tables (mean ± std over seeds per (family, variant), "Avg. Improvement");
the paper's own numbers through the same tables, runs minus the paper, the audit of the paper's printed averages,
and the per-benchmark relative gains.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.tables.benchmark_map import (
    PAPER_RESULTS,
    Benchmark,
    MissingBenchmarkWarning,
    as_map,
    table_ids,
)
from analysis.tables.results import UNKNOWN_VARIANT

TABLE_TITLES = {"semantic": "Semantic VQA", "general": "General", "fine_grained": "Fine-grained"}
AVG = "Avg. Improvement"
VARIANT_ORDER = ("baseline", "vista-cosine", "vista")
# family id -> (name of the baseline row, prefix of the VISTA rows), as printed in the paper
FAMILY_NAMES = {"tinyllava-3b": ("TinyLLaVA-3B", "TinyLLaVA"), "llava-1.5-7b": ("LLaVA-1.5-7B", "LLaVA")}
VARIANT_SUFFIX = {"vista": "VISTA", "vista-cosine": "VISTA(cosine)"}


def row_label(family: str, variant: str) -> str:
    """Row name as in the paper ("LLaVA-1.5-7B", "LLaVA-VISTA(cosine)"), or "<family>-<variant>" otherwise."""
    base, prefix = FAMILY_NAMES.get(family.lower(), (family, family))
    if variant in ("baseline", UNKNOWN_VARIANT):  # a run without identity is named by its model alone
        return base
    return f"{prefix}-{VARIANT_SUFFIX.get(variant, variant)}"


def _ordered_rows(wide: pd.DataFrame) -> list[tuple[str, str]]:
    families = list(dict.fromkeys(wide["family"]))
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    rows = []
    for fam in families:
        variants = set(wide.loc[wide["family"] == fam, "variant"])
        rows += [(fam, v) for v in sorted(variants, key=lambda v: (rank.get(v, len(rank)), v))]
    return rows


@dataclass
class Table:
    """One of the paper's tables for a set of rows. ``mean``/``std``/``n``: label x (benchmarks + [AVG])."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, str]]  # (family, variant) per row, in display order
    labels: list[str]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    decimals: dict[str, int]
    partial_avg: set[str] = field(default_factory=set)  # labels whose average skipped missing benchmarks
    signed: bool = False  # deltas: print "+0.12"
    partial_cells: set[tuple[str, str]] = field(default_factory=set)  # (label, column) with a --limit run

    def to_markdown(self) -> str:
        from analysis.tables.render import render_markdown

        return render_markdown(self)

    def to_latex(self) -> str:
        from analysis.tables.render import render_latex

        return render_latex(self)

    def to_csv(self) -> str:
        from analysis.tables.render import render_csv

        return render_csv(self)


def _per_seed_avg_gain(
    wide: pd.DataFrame, family: str, variant: str, cols: list[str]
) -> tuple[list[float], bool]:
    """Avg. Improvement (%) of each seed of (family, variant) over the family's baseline mean; partial flag."""
    base = wide[(wide["family"] == family) & (wide["variant"] == "baseline")][cols].mean()
    gains, partial = [], False
    for _, seed_row in wide[(wide["family"] == family) & (wide["variant"] == variant)].iterrows():
        rel = 100.0 * (seed_row[cols].astype(float) - base) / base
        partial |= bool(rel.isna().any())
        if rel.notna().any():
            gains.append(float(rel.mean(skipna=True)))
    return gains, partial


def build_tables(
    wide: pd.DataFrame,
    mapping: str | Path | Sequence[Benchmark] | None = None,
    printed_avg: pd.DataFrame | None = None,
    labels: dict[tuple[str, str], str] | None = None,
) -> dict[str, Table]:
    """Group runs by (family, variant) and lay them out as the map's tables (mean ± std over seeds).

    ``wide``: output of ``to_paper_columns``. ``printed_avg``: optional (family, variant) x table-id frame of
    averages to print instead of computing them (the paper's own). ``labels``: optional row names.
    """
    benches = as_map(mapping)
    rows = _ordered_rows(wide)
    names = [(labels or {}).get(r) or row_label(*r) for r in rows]
    grouped = wide.groupby(["family", "variant"], sort=False)
    tables = {}
    for tid in table_ids(benches):
        cols = [b.column for b in benches if b.table == tid]
        mean = pd.DataFrame(np.nan, index=names, columns=[*cols, AVG])
        std, n = mean.copy(), pd.DataFrame(0, index=names, columns=[*cols, AVG])
        partial = set()
        for (family, variant), label in zip(rows, names):
            group = grouped.get_group((family, variant))[cols].astype(float)
            mean.loc[label, cols] = group.mean()
            std.loc[label, cols] = group.std(ddof=1)
            n.loc[label, cols] = group.notna().sum()
            if variant in ("baseline", UNKNOWN_VARIANT):  # no baseline to compare a run without identity to
                continue
            if printed_avg is not None:
                value = (
                    printed_avg.loc[(family, variant), tid]
                    if (family, variant) in printed_avg.index
                    else np.nan
                )
                mean.loc[label, AVG], n.loc[label, AVG] = value, int(pd.notna(value))
                continue
            if not ((wide["family"] == family) & (wide["variant"] == "baseline")).any():
                warnings.warn(f"family {family}: no baseline run, {AVG} of {label} left empty",
                              MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
                continue
            gains, is_partial = _per_seed_avg_gain(wide, family, variant, cols)
            if gains:
                mean.loc[label, AVG] = float(np.mean(gains))
                std.loc[label, AVG] = float(np.std(gains, ddof=1)) if len(gains) > 1 else np.nan
                n.loc[label, AVG] = len(gains)
            if is_partial and gains:
                partial.add(label)
        decimals = {b.column: b.decimals for b in benches} | {AVG: 2}
        label_of = dict(zip(rows, names))
        cut = {(label_of[(f, v)], c) for (f, v, _, c) in wide.attrs.get("partial", {}) if c in cols}
        tables[tid] = Table(
            tid,
            TABLE_TITLES.get(tid, tid),
            cols,
            rows,
            names,
            mean,
            std,
            n,
            decimals,
            partial,
            partial_cells=cut,
        )
    return tables


# ----------------------------------------------------------------------------------------------- paper data


def load_paper_results(path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The paper's numbers: (wide frame like ``to_paper_columns``, printed averages, row labels).

    Printed averages: index (family, variant), columns table ids (NaN for baselines, printed as "-").
    """
    path = Path(path or PAPER_RESULTS)
    frame = pd.read_csv(path)
    avg_cols = [c for c in frame.columns if c.startswith("avg_")]
    wide = frame.drop(columns=["model", *avg_cols]).assign(seed=0)
    wide = wide[
        ["family", "variant", "seed", *[c for c in wide.columns if c not in ("family", "variant", "seed")]]
    ]
    printed = frame.set_index(["family", "variant"])[avg_cols].rename(
        columns=lambda c: c.removeprefix("avg_")
    )
    labels = {(r.family, r.variant): r.model for r in frame.itertuples()}
    return wide, printed, labels


def paper_tables(
    path: str | Path | None = None, mapping: str | Path | Sequence[Benchmark] | None = None
) -> dict[str, Table]:
    """The paper's three tables from ``reproduce/paper_results.csv``, with the averages as printed."""
    wide, printed, labels = load_paper_results(path)
    return build_tables(wide, mapping, printed_avg=printed, labels=labels)


def delta_tables(runs: dict[str, Table], paper: dict[str, Table] | None = None) -> dict[str, Table]:
    """Run means minus the paper's cells, for rows whose (family, variant) is in the paper; others dropped."""
    paper = paper or paper_tables()
    out = {}
    for tid, table in runs.items():
        ref = paper.get(tid)
        if ref is None:
            continue
        keep = [(r, lab) for r, lab in zip(table.rows, table.labels) if r in ref.rows]
        if not keep:
            continue
        rows, labels = [r for r, _ in keep], [lab for _, lab in keep]
        ref_labels = [ref.labels[ref.rows.index(r)] for r in rows]
        cols = [c for c in table.columns if c in ref.columns]
        delta = (
            table.mean.loc[labels, [*cols, AVG]].to_numpy()
            - ref.mean.loc[ref_labels, [*cols, AVG]].to_numpy()
        )
        mean = pd.DataFrame(delta, index=labels, columns=[*cols, AVG])
        n = table.n.loc[labels, [*cols, AVG]]
        out[tid] = Table(tid, f"{table.title}: ours minus paper", cols, rows, labels, mean,
                         mean * np.nan, n, table.decimals, table.partial_avg & set(labels), signed=True)  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- audit


def audit_paper_averages(
    path: str | Path | None = None, mapping: str | Path | Sequence[Benchmark] | None = None
) -> pd.DataFrame:
    """Recompute every printed "Avg. Improvement" of the paper and say which ones are reproduced.

    Columns: table, model, printed, mean_relative_gain (the documented formula), diff (recomputed - printed),
    reproduced (the recomputed value rounds to the printed one, |diff| <= 0.005), and two alternative formulas
    for context: relative_gain_of_means (100 (mean x - mean x0) / mean x0) and mean_absolute_gain
    (mean (x - x0), in each benchmark's units), with the list of formulas that reproduce the printed value.
    """
    benches = as_map(mapping)
    wide, printed, labels = load_paper_results(path)
    rows = []
    for tid in table_ids(benches):
        cols = [b.column for b in benches if b.table == tid]
        for (family, variant), value in printed[tid].dropna().items():
            x = wide[(wide.family == family) & (wide.variant == variant)][cols].iloc[0].astype(float)
            x0 = wide[(wide.family == family) & (wide.variant == "baseline")][cols].iloc[0].astype(float)
            formulas = {
                "mean_relative_gain": float((100 * (x - x0) / x0).mean()),
                "relative_gain_of_means": float(100 * (x.mean() - x0.mean()) / x0.mean()),
                "mean_absolute_gain": float((x - x0).mean()),
            }
            hits = [k for k, v in formulas.items() if abs(v - value) <= 0.005 + 1e-9]
            rows.append({"table": tid, "model": labels[(family, variant)], "printed": float(value), **formulas,
                         "diff": formulas["mean_relative_gain"] - value,
                         "reproduced": "mean_relative_gain" in hits, "formulas_reproducing": ", ".join(hits)})  # fmt: skip
    return pd.DataFrame(rows)


def relative_gains(
    wide: pd.DataFrame, mapping: str | Path | Sequence[Benchmark] | None = None, labels: dict | None = None
) -> pd.DataFrame:
    """Per-benchmark relative gain (%) of each non-baseline row over its family's baseline (means over seeds).

    Long frame: family, variant, model, table, column, gain_pct. Rows of families without a baseline are absent.
    """
    benches = as_map(mapping)
    cols = [b.column for b in benches]
    means = wide.groupby(["family", "variant"], sort=False)[cols].mean()
    out = []
    for family, variant in _ordered_rows(wide):
        if variant == "baseline" or (family, "baseline") not in means.index:
            continue
        gain = (
            100
            * (means.loc[(family, variant)] - means.loc[(family, "baseline")])
            / means.loc[(family, "baseline")]
        )
        label = (labels or {}).get((family, variant)) or row_label(family, variant)
        out += [{"family": family, "variant": variant, "model": label, "table": b.table, "column": b.column,
                 "gain_pct": float(gain[b.column])} for b in benches]  # fmt: skip
    return pd.DataFrame(out, columns=["family", "variant", "model", "table", "column", "gain_pct"])
