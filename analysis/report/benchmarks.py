"""The benchmark section: lmms-eval scores per variant, seed-paired differences to the baseline, the disclosure
of limited evaluations and the accuracy behind more and more preceding text (``world_len_*``).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd

from analysis.markdown import GAP, format_mean_sd, markdown_table
from analysis.report.stats import ALPHA, format_p, mean_sd, paired_difference


def load_eval_results(results: Path) -> pd.DataFrame | None:
    """The lmms-eval results under ``results/eval`` as ``load_lmms_results``'s long frame (None if there are none)."""
    from analysis.tables import load_lmms_results

    eval_dir = results / "eval"
    if not eval_dir.is_dir() or not any(eval_dir.rglob("*_results.json")):
        return None
    return load_lmms_results([eval_dir])


# what a benchmark map's metric measures, for the units sentence (other metrics are named by their lmms-eval key)
METRIC_NAMES = {"exact_match": "exact-match accuracy", "object_f1": "object F1", "anls": "ANLS"}
LIMITED = "evaluated on part of the benchmark (--limit)"  # analysis.tables.columns' warning of limited runs


def metric_unit(bench) -> str:
    """A :class:`analysis.tables.Benchmark`'s unit in words: ``"exact-match accuracy (%)"``, ``"object F1 (%)"``,
    ``"ocrbench_accuracy × 1000"`` (its first metric key and field, times the map's scale; scale 100 = %)."""
    metric = bench.metric_keys[0].split(",")[0]
    name = METRIC_NAMES.get(
        metric, f"`{metric}`" + (f" ({bench.dict_fields[0]})" if bench.dict_fields else "")
    )
    if bench.scale == 100:
        return f"{name} (%)"
    return name if bench.scale == 1 else f"{name} × {bench.scale:g}"


def benchmark_scores(long: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated run (family, variant, seed) and one column per benchmark, in the map's units.

    ``attrs``: ``warnings`` (the tables' warnings), ``partial`` (``{(family, variant, seed, column): "100/200"}``,
    limited evaluations), ``units`` (column -> :func:`metric_unit`) and ``benchmark_map`` (the map file's name).
    """
    from analysis.tables import choose_map, load_benchmark_map, to_paper_columns

    mapping = choose_map(long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wide = to_paper_columns(long, mapping=mapping)
    partial = dict(wide.attrs.get("partial", {}))
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed") and wide[c].notna().any()]
    wide = wide[["family", "variant", "seed", *benchmarks]].copy()
    wide["mean of benchmarks"] = wide[benchmarks].mean(axis=1)
    units = {b.column: metric_unit(b) for b in load_benchmark_map(mapping) if b.column in benchmarks}
    wide.attrs = {"warnings": [str(w.message) for w in caught], "partial": partial, "units": units,
                  "benchmark_map": Path(mapping).name}  # fmt: skip
    return wide


def units_sentence(wide: pd.DataFrame) -> str:
    """The units of every column, grouped: ``Units (`reproduce/benchmark_map_local.csv`): Colour, ...: exact-match
    accuracy (%); Describe: object F1 (%); ...`` from ``wide.attrs["units"]`` (:func:`benchmark_scores`); a neutral
    sentence when the units are not known."""
    units = wide.attrs.get("units") or {}
    if not units:
        return "Units: each column's metric as the benchmark map defines it."
    groups: dict[str, list[str]] = {}
    for column, unit in units.items():
        groups.setdefault(unit, []).append(column)
    parts = "; ".join(f"{', '.join(columns)}: {unit}" for unit, columns in groups.items())
    where = f" (`reproduce/{wide.attrs['benchmark_map']}`)" if wide.attrs.get("benchmark_map") else ""
    mean = (
        "; mean of benchmarks: the unweighted mean of those columns"
        + (", mixing their units" if len(groups) > 1 else "")
        if "mean of benchmarks" in wide
        else ""
    )
    return f"Units{where}: {parts}{mean}."


def gaps_lines(wide: pd.DataFrame) -> list[str]:
    """The tables' warnings as one paragraph: limited evaluations (``--limit``) summarised by count, one entry per
    documents fraction, instead of one warning per run and column; any other warning as it is."""
    partial = wide.attrs.get("partial") or {}
    others = sorted({w for w in wide.attrs.get("warnings", []) if not (partial and LIMITED in w)})
    parts = []
    by_fraction: dict[str, list[tuple]] = {}
    for key, fraction in partial.items():
        by_fraction.setdefault(str(fraction), []).append(key)
    for fraction, keys in sorted(by_fraction.items(), key=lambda item: -len(item[1])):
        runs = sorted({"/".join(str(k) for k in key[:3]) for key in keys})
        columns = list(dict.fromkeys(key[3] for key in keys))
        shape = (
            f"every one of {len(columns)} benchmarks in each of {len(runs)} runs"
            if len(keys) == len(runs) * len(columns)
            else f"{len(columns)} benchmarks across {len(runs)} runs"
        )
        who = "" if len(runs) > 3 else f": {', '.join(runs)}"
        docs = f"on {fraction.replace('/', ' of ')} documents" if "/" in fraction else f"with {fraction}"
        parts.append(f"{len(keys)} scores {docs} ({shape}{who})")
    lines = []
    if parts:
        lines.append(
            f"Gaps: limited evaluations (`--limit`; marked ‡ in the tables of `vista tables`): {'; '.join(parts)}."
        )
    if others:
        lines.append(("Gaps: " if not parts else "Other gaps: ") + "; ".join(others))
    return [line for pair in zip(lines, [""] * len(lines)) for line in pair]


def benchmark_section(wide: pd.DataFrame, metrics: dict) -> list[str]:
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed")]
    variants = list(dict.fromkeys(wide["variant"]))
    lines = ["## Local benchmarks (lmms-eval)", ""]
    lines.append(f"Scores per variant: mean ± sd over seeds (n seeds). {units_sentence(wide)}")
    lines.append("")
    metrics["benchmark_units"] = dict(wide.attrs.get("units") or {})
    lines += markdown_table(["variant", *benchmarks])
    metrics["benchmarks"] = {}
    for variant in variants:
        part = wide[wide["variant"] == variant]
        cells = []
        for bench in benchmarks:
            mean, sd, n = mean_sd(part[bench])
            metrics["benchmarks"].setdefault(variant, {})[bench] = {"mean": mean, "sd": sd, "n": n}
            cells.append(f"{format_mean_sd(mean, sd)} ({n})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    if "baseline" in variants:
        lines.append(
            "Seed-paired differences to the baseline, variant − baseline (points of each column's unit):"
        )
        lines.append("")
        lines += markdown_table(["variant", *benchmarks])
        metrics["paired_differences"] = {}
        for variant in [v for v in variants if v != "baseline"]:
            cells = []
            for bench in benchmarks:
                diff = paired_difference(wide, bench, variant)
                metrics["paired_differences"].setdefault(variant, {})[bench] = diff
                cells.append(_difference_cell(diff))
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Each cell: mean ± sd over seeds of d_s = score(variant, seed s) − score(baseline, seed s), and "
            "p, the two-sided paired t-test of mean(d) = 0 (`scipy.stats.ttest_rel`, n − 1 degrees of freedom; "
            f"n = paired seeds). `*`: p < {ALPHA} (p is shown with 3 decimals below 0.1, more where 3 would round "
            "across 0.05). The 95% confidence intervals of mean(d) are in `report_metrics.json` "
            "(`paired_differences`). With n = 1 seed no test is possible (`n=1`); neither is it when d is the same "
            "in every seed (sd = 0: the t statistic is undefined)."
        )
        lines.append("")
    lines += gaps_lines(wide)
    return lines


def _difference_cell(diff: dict) -> str:
    """``-3.35 ± 1.59 (p 0.074)``, ``*`` appended when p < ALPHA (:func:`format_p`: digits enough that the number
    and the star agree); ``(n=1)`` or ``(no test: sd = 0 ...)`` when no test is possible."""
    if not diff.get("n"):
        return GAP
    text = format_mean_sd(diff["mean"], diff.get("sd"))
    if diff["n"] < 2:
        return f"{text} (n=1)"
    if diff.get("zero_variance"):
        return f"{text} (no test: sd = 0, the same difference in every seed)"
    if math.isnan(diff["p"]):
        return f"{text} (no test)"
    return f"{text} ({format_p(diff['p'])}){'*' if diff['significant'] else ''}"


def eval_limits(results: Path) -> list[float]:
    """The ``--limit`` (documents per task) of every evaluation under ``results/eval`` (from ``vista_eval.json``)."""
    limits = []
    for sidecar in sorted((results / "eval").glob("*/vista_eval.json")):
        limit = json.loads(sidecar.read_text()).get("settings", {}).get("limit")
        if limit is not None:
            limits.append(float(limit))
    return sorted(set(limits))


def limits_note(results: Path, metrics: dict) -> list[str]:
    """The disclosure of limited evaluations (lmms-eval: limited runs are checks, not real metrics)."""
    limits = eval_limits(results)
    metrics["eval_limits"] = limits
    if not limits:
        return ["Every benchmark was evaluated on all of its documents.", ""]
    text = ", ".join(f"{v:g}" for v in limits)
    worst = 50 / math.sqrt(min(limits))  # binomial standard error at accuracy 50%, in points
    return [
        f"**Evaluation limit:** each task was scored on its first {text} documents only (`vista eval --limit`); "
        "lmms-eval itself warns that limited runs are for checking, not real metrics. At that size one "
        f"accuracy's binomial standard error is up to {worst:.1f} points.",
        "",
    ]


def length_section(long: pd.DataFrame, metrics: dict) -> list[str]:
    """Accuracy on the same questions behind more and more preceding text (the world's ``world_len_*`` tasks)."""
    split = long[long["task"].str.fullmatch(r"world_len_\d+") & (long["metric_key"] == "exact_match,none")]
    if split.empty:
        return []
    split = split.assign(words=split["task"].str.extract(r"(\d+)$")[0].astype(int))
    table = split.groupby(["variant", "words"])["value"].agg(["mean", "std", "count"]).reset_index()
    metrics["accuracy_by_preceding_words"] = {
        v: {int(r.words): {"mean": 100 * r.mean, "sd": 100 * r.std} for r in part.itertuples()}
        for v, part in table.groupby("variant", sort=False)
    }
    words = sorted(set(table["words"]))
    lines = ["Accuracy (%) on the same questions and images behind N words of image-independent text "
             "(`world_len_N`; mean ± sd over seeds):", ""]  # fmt: skip
    lines += markdown_table(["variant", *(f"N={w}" for w in words)])
    for variant, by_words in metrics["accuracy_by_preceding_words"].items():
        cells = [
            format_mean_sd(by_words[w]["mean"], by_words[w]["sd"], 1) if w in by_words else GAP for w in words
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines
