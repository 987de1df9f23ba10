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
from analysis.report.stats import ALPHA, mean_sd, paired_difference


def load_eval_results(results: Path) -> pd.DataFrame | None:
    """The lmms-eval results under ``results/eval`` as ``load_lmms_results``'s long frame (None if there are none)."""
    from analysis.tables import load_lmms_results

    eval_dir = results / "eval"
    if not eval_dir.is_dir() or not any(eval_dir.rglob("*_results.json")):
        return None
    return load_lmms_results([eval_dir])


def benchmark_scores(long: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated run (family, variant, seed) and one column per benchmark, in the map's units."""
    from analysis.tables import choose_map, to_paper_columns

    mapping = choose_map(long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wide = to_paper_columns(long, mapping=mapping)
    wide.attrs["warnings"] = [str(w.message) for w in caught]
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed") and wide[c].notna().any()]
    wide = wide[["family", "variant", "seed", *benchmarks]]
    wide["mean of benchmarks"] = wide[benchmarks].mean(axis=1)
    return wide


def benchmark_section(wide: pd.DataFrame, metrics: dict) -> list[str]:
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed")]
    variants = list(dict.fromkeys(wide["variant"]))
    lines = ["## Local benchmarks (lmms-eval)", ""]
    lines.append(
        "Scores per variant: mean ± sd over seeds (n seeds). Units: the benchmark map's (accuracy in %)."
    )
    lines.append("")
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
        lines.append("Seed-paired differences to the baseline, variant − baseline (points):")
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
            f"n = paired seeds). `*`: p < {ALPHA}. The 95% confidence intervals of mean(d) are in "
            "`report_metrics.json` (`paired_differences`). With n = 1 seed no test is possible (`n=1`)."
        )
        lines.append("")
    if wide.attrs.get("warnings"):
        lines.append("Gaps: " + "; ".join(sorted(set(wide.attrs["warnings"]))))
        lines.append("")
    return lines


def _difference_cell(diff: dict) -> str:
    """``-3.35 ± 1.59 (p 0.07)``, ``*`` appended when p < ALPHA; ``(n=1)`` when no test is possible."""
    if not diff.get("n"):
        return GAP
    text = format_mean_sd(diff["mean"], diff.get("sd"))
    if diff["n"] < 2:
        return f"{text} (n=1)"
    if math.isnan(diff["p"]):
        return f"{text} (no test: identical differences)"
    return f"{text} (p {diff['p']:.2f}){'*' if diff['significant'] else ''}"


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
