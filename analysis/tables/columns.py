"""The long results -> one row per run and one column per paper benchmark, in the paper's units (the map's
scale and overrides), with the provenance of every value and the ``--limit`` runs marked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.tables.benchmark_map import Benchmark, MissingBenchmarkWarning, as_map

PARTIAL_MARK = "‡"


def _partial(rows: pd.DataFrame) -> pd.Series:
    """Rows from a run that evaluated fewer documents than the task holds (``--limit``)."""
    return rows["documents"] < rows["documents_total"]


def _gap(file: str, bench: Benchmark, key: str, why: str) -> None:
    warnings.warn(f"{file}: results[{bench.task!r}][{key!r}] {why}: {bench.column} left as a gap",
                  MissingBenchmarkWarning, stacklevel=4)  # fmt: skip


def _pick(df: pd.DataFrame, bench: Benchmark, run: str) -> tuple[float, dict] | None:
    """Value (lmms-eval units) and provenance of one benchmark for one run's rows, or None (a gap, warned) if
    absent or not a usable score. Among several files, complete runs win over ``--limit`` runs, then the latest."""
    task_rows = df[df["task"] == bench.task]
    for key in bench.metric_keys:
        rows = task_rows[task_rows["metric_key"] == key]
        if rows.empty:
            continue
        ordered = rows.assign(_partial=_partial(rows)).sort_values(["_partial", "date", "file"],
                                                                    ascending=[False, True, True])  # fmt: skip
        files = ordered["file"].unique()
        if len(files) > 1:
            warnings.warn(f"run {run}: {bench.task} {key} found in {len(files)} files; using {files[-1]} "
                          "(complete runs before --limit runs, then the latest)", stacklevel=3)  # fmt: skip
        rows = rows[rows["file"] == files[-1]]
        scalar = rows[rows["subkey"] == ""]
        if scalar.empty:
            fields = [f for f in bench.dict_fields if f in set(rows["subkey"])]
            if not fields:
                _gap(files[-1], bench, key, f"is a dict with fields {sorted(rows['subkey'])[:8]}, none of the "
                     f"mapped dict_fields {list(bench.dict_fields)}")  # fmt: skip
                return None
            scalar = rows[rows["subkey"] == fields[0]]
        row = scalar.iloc[0]
        if row["note"]:
            _gap(row["file"], bench, key, f"is {row['note']}")
            return None
        return float(row["value"]), {"file": row["file"], "task": bench.task, "metric_key": key,
                                     "subkey": row["subkey"], "documents": row["documents"],
                                     "documents_total": row["documents_total"]}  # fmt: skip
    return None


def _warn_unmapped(df: pd.DataFrame, benches: Sequence[Benchmark]) -> None:
    """One warning listing the tasks of the results that no column of the map uses (with their runs)."""
    mapped = {b.task for b in benches}
    unmapped = df[~df["task"].isin(mapped)].groupby("task", sort=True)["run"].nunique()
    if not unmapped.empty:
        listed = ", ".join(f"{task} ({n} run{'s' * (n > 1)})" for task, n in unmapped.items())
        warnings.warn(f"tasks not in the benchmark map (not in the tables): {listed}", MissingBenchmarkWarning,
                      stacklevel=3)  # fmt: skip


def to_paper_columns(
    df: pd.DataFrame, mapping: str | Path | Sequence[Benchmark] | None = None
) -> pd.DataFrame:
    """One row per run (family, variant, seed), one column per paper benchmark in the paper's units.

    ``df``: output of ``load_lmms_results``. Overrides of the map win over lmms-eval values. A benchmark with no
    usable value is NaN plus a ``MissingBenchmarkWarning``. Runs with no task of the map are left out, with one
    warning; tasks outside the map are listed in one warning. ``result.attrs["provenance"]``: a long DataFrame
    saying where each value came from (file/task/key or ``override``), the scale applied and the documents
    evaluated; ``result.attrs["partial"]``: ``{(family, variant, seed, column): "<evaluated>/<total>"}`` for values
    from ``--limit`` runs (part of the benchmark; the tables mark them).
    """
    benches = as_map(mapping)
    _warn_unmapped(df, benches)
    columns = [b.column for b in benches]
    records, provenance, partial, unmatched = [], [], {}, []
    runs = df[["family", "variant", "seed"]].drop_duplicates().itertuples(index=False)
    for family, variant, seed in runs:
        run_rows = df[(df["family"] == family) & (df["variant"] == variant) & (df["seed"] == seed)]
        run = f"{family}/{variant}/{seed}"
        has_task = any(b.task in set(run_rows["task"]) or b.override_for(family, variant, int(seed)) is not None
                       for b in benches)  # fmt: skip
        if not has_task:
            unmatched.append(run)
            continue
        record: dict = {"family": family, "variant": variant, "seed": int(seed)}
        gaps: list[str] = []
        details: list[str] = []
        for bench in benches:
            manual = bench.override_for(family, variant, int(seed))
            picked = None if manual is not None else _pick(run_rows, bench, run)
            if manual is not None:
                record[bench.column] = manual
                provenance.append({"run": run, "column": bench.column, "value": manual, "source": "override"})
            elif picked is None:
                record[bench.column] = math.nan
                gaps.append(bench.column)
                details.append(f"{bench.column} ({bench.task}: {' | '.join(bench.metric_keys)})")
            else:
                value, where = picked
                record[bench.column] = value * bench.scale
                provenance.append({"run": run, "column": bench.column, "value": value * bench.scale,
                                   "source": "lmms-eval", "scale": bench.scale, **where})  # fmt: skip
                if where["documents"] < where["documents_total"]:
                    total = where["documents_total"]
                    partial[(family, variant, int(seed), bench.column)] = (
                        f"{where['documents']:g}/{total:.0f}"
                        if math.isfinite(total)
                        else f"--limit {where['documents']:g}"
                    )
        if gaps:
            listed = ", ".join(details if len(gaps) <= 3 else gaps)  # task and keys when few, else names
            warnings.warn(f"run {run}: no value for {listed}: left as gaps ({len(gaps)} of {len(benches)} "
                          "columns)", MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
        cut = [
            f"{c} ({n} documents)"
            for (f, v, k, c), n in partial.items()
            if (f, v, k) == (family, variant, seed)
        ]
        if cut:
            warnings.warn(f"run {run}: {', '.join(cut)}: evaluated on part of the benchmark (--limit); "
                          f"marked {PARTIAL_MARK} in the tables", MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
        records.append(record)
    if unmatched:
        warnings.warn(f"{len(unmatched)} run(s) have no task of the benchmark map and are left out of the tables "
                      f"(their values are in the long results): {', '.join(unmatched)}", MissingBenchmarkWarning,
                      stacklevel=2)  # fmt: skip
    wide = pd.DataFrame(records, columns=["family", "variant", "seed", *columns])
    wide.attrs["provenance"] = pd.DataFrame(provenance)
    wide.attrs["partial"] = partial
    return wide
