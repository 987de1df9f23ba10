"""The report's ablation section: paired statistics per variant, a forest plot, diagnostics curves, conclusions.

Called by :func:`analysis.report.write_report` when the results folder holds evaluations of a baseline and at
least one other variant and its ``profile.yaml`` has an ``ablation`` mapping (``tiny-ablation``). The conclusion
sentences are generated from the numbers with these thresholds (stated in the report too):

- a variant **helps** (or **hurts**) a benchmark when its Holm-adjusted paired t-test p < ``ALPHA`` (0.05) *and* the
  bootstrap 95% interval of the seed-paired mean difference excludes 0 on the same side; otherwise "no difference
  detected", with the interval saying which effect sizes the data cannot rule out;
- with fewer than ``MIN_SEEDS`` (5) paired seeds, no claim is made in either direction;
- a difference that is the same in every seed (sd = 0) leaves the t statistic undefined: the sentence states the
  constant difference and that the test is undefined, never "no difference detected";
- the **collapse signature** (the term pulling ``h_v`` and the text embeddings toward each other / their mean): at
  the last logged step of stage 2, relative to the baseline of the same seed, ``diag_hv_target_cos`` higher by more
  than ``COS_MARGIN`` (0.1) *and* ``diag_text_erank`` lower by more than ``ERANK_DROP`` (10%) in a majority of seeds;
  when only one half holds in most seeds, the sentence says which. The diagnostics follow each run's own VISTA anchor
  and target set, so a variant whose anchor or targets differ from the baseline's (``vista-anchor-mean``,
  ``vista-targets-supervised``) is reported but not compared ("not comparable with the baseline").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.palette import variant_palette
from analysis.report.ablation_stats import (
    OVERALL,
    ablation_table,
    forest_plot,
    is_zero_variance,
    paired_comparisons,
)
from analysis.report.stats import p_digits
from analysis.report.training_curves import find_trainer_state
from vista.diagnostics import NAMES
from vista.run_metadata import parse_run_name, read_run_metadata

ALPHA = 0.05
MIN_SEEDS = 5
COS_MARGIN = 0.1
ERANK_DROP = 0.10
COLLAPSE_COLUMNS = [
    "variant",
    "seeds",
    "collapse_seeds",
    "median_d_hv_target_cos",
    "median_erank_ratio",
    "pulled_seeds",
    "rank_loss_seeds",
    "definition",
    "baseline_definition",
]
STATS_FILE, COLLAPSE_FILE = "ablation_stats.csv", "ablation_collapse.csv"  # in the results folder


def long_scores(wide: pd.DataFrame) -> pd.DataFrame:
    """``analysis.report.benchmark_scores``' wide table -> (variant, seed, benchmark, score) rows."""
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed", "mean of benchmarks")]
    wide = wide.copy()
    wide.attrs = {}  # benchmark_scores' attrs (warnings, tables) are not comparable by pandas' concat
    long = wide.melt(
        id_vars=["variant", "seed"], value_vars=benchmarks, var_name="benchmark", value_name="score"
    )
    return long.dropna(subset=["score"])


def diagnostics_definition(run: Path) -> str:
    """What a run's diagnostics were computed over: ``"anchor=<a> targets=<t>"`` from its ``vista_run.json``.

    ``vista.diagnostics`` uses the run's own VISTA anchor and target set, so a variant that changes either (e.g.
    ``vista.targets=supervised``) logs ``h_v`` and embedding rows that the baseline's diagnostics do not describe.
    """
    meta, _ = read_run_metadata(run)
    vista = meta.get("vista") or {}
    return f"anchor={vista.get('anchor', 'last')} targets={vista.get('targets', 'text')}"


def diagnostics_logs(results: Path, stage: str = "finetune") -> pd.DataFrame:
    """Logged ``diag_*`` values of every run's ``stage``: columns variant, seed, step, metric, value and
    ``definition`` (:func:`diagnostics_definition`)."""
    rows, unfinished = [], []
    for run_dir in sorted((results / "runs").glob("*")):
        labels = parse_run_name(run_dir.name)
        if labels is None or not (run_dir / stage).is_dir():
            continue
        try:
            state = find_trainer_state(run_dir / stage)
        except (
            FileNotFoundError
        ):  # a run still training (or killed): reported by the section, not dropped silently
            unfinished.append(run_dir.name)
            continue
        history = json.loads(state.read_text())["log_history"]
        definition = diagnostics_definition(run_dir / stage)
        for entry in history:
            for name in NAMES:
                if name in entry and "step" in entry:
                    rows.append({"variant": labels["variant"], "seed": labels["seed"], "step": entry["step"],
                                 "metric": name, "value": float(entry[name]), "definition": definition})  # fmt: skip
    logs = pd.DataFrame(rows, columns=["variant", "seed", "step", "metric", "value", "definition"])
    logs.attrs["unfinished"] = unfinished
    return logs


def plot_diagnostics(logs: pd.DataFrame, path: Path) -> Path:
    """One panel per diagnostic: mean over seeds per variant against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = variant_palette(sorted(set(logs["variant"])))
    fig, axes = plt.subplots(1, len(NAMES), figsize=(4 * len(NAMES), 3.2))
    for ax, name in zip(axes, NAMES):
        part = logs[logs["metric"] == name]
        for variant, group in part.groupby("variant"):
            curve = group.groupby("step")["value"].mean()
            ax.plot(curve.index, curve.values, label=variant, linewidth=1, color=palette[variant])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collapse_signature(logs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per variant: seeds compared, seeds with the collapse signature (module docstring) and with each half of it,
    median changes, and the diagnostics' definition of the variant and of the baseline (compared only if equal)."""
    last = logs.sort_values("step").groupby(["variant", "seed", "metric"])["value"].last().unstack("metric")
    definitions = (
        logs.groupby("variant")["definition"].agg(lambda d: "; ".join(sorted(set(d)))).to_dict()
        if "definition" in logs
        else {}
    )
    rows = []
    if baseline not in last.index.get_level_values(0):
        return pd.DataFrame(rows, columns=COLLAPSE_COLUMNS)
    base = last.loc[baseline]
    for variant in sorted(set(last.index.get_level_values(0)) - {baseline}):
        own = last.loc[variant]
        seeds = own.index.intersection(base.index)
        if seeds.empty:
            continue
        d_cos = own.loc[seeds, "diag_hv_target_cos"] - base.loc[seeds, "diag_hv_target_cos"]
        ratio = own.loc[seeds, "diag_text_erank"] / base.loc[seeds, "diag_text_erank"]
        pulled, lost_rank = d_cos > COS_MARGIN, ratio < 1 - ERANK_DROP
        rows.append({"variant": variant, "seeds": len(seeds), "collapse_seeds": int((pulled & lost_rank).sum()),
                     "median_d_hv_target_cos": float(d_cos.median()), "median_erank_ratio": float(ratio.median()),
                     "pulled_seeds": int(pulled.sum()), "rank_loss_seeds": int(lost_rank.sum()),
                     "definition": definitions.get(variant, ""),
                     "baseline_definition": definitions.get(baseline, "")})  # fmt: skip
    return pd.DataFrame(rows, columns=COLLAPSE_COLUMNS)


def _collapse_sentence(row) -> str:
    counts = (f"collapse signature in {row.collapse_seeds}/{row.seeds} seeds (median change of cos(h_v, mean "
              f"target) {row.median_d_hv_target_cos:+.3f}, effective-rank ratio {row.median_erank_ratio:.2f})")  # fmt: skip
    own, base = (
        "" if pd.isna(d) else str(d) for d in (row.definition, row.baseline_definition)
    )  # CSV: "" -> NaN
    if own != base:
        return (f"{counts}; not comparable with the baseline: this variant's diagnostics are over "
                f"{own} (the baseline's: {base}), so no claim either way.")  # fmt: skip
    if row.seeds < MIN_SEEDS:
        return f"{counts}: only {row.seeds} paired seed{'' if row.seeds == 1 else 's'}: no claim either way."
    majority = row.collapse_seeds > row.seeds / 2
    verdict = "the collapse explanation is " + (
        "supported for this variant." if majority else "not supported by these runs."
    )
    if not majority:
        pulled, lost = row.pulled_seeds > row.seeds / 2, row.rank_loss_seeds > row.seeds / 2
        if pulled and not lost:
            verdict += (f" Half of it holds: h_v is pulled toward the mean target in {row.pulled_seeds}/{row.seeds} "
                        f"seeds, but the text embeddings keep their rank ({row.rank_loss_seeds}/{row.seeds} seeds lose "
                        f"> {ERANK_DROP:.0%}).")  # fmt: skip
        elif lost and not pulled:
            verdict += (f" Half of it holds: the text embeddings lose rank in {row.rank_loss_seeds}/{row.seeds} "
                        f"seeds, but h_v is not pulled toward the mean target ({row.pulled_seeds}/{row.seeds}).")  # fmt: skip
    return f"{counts}: {verdict}"


def _constant_verdict(row) -> str:
    """A difference that is the same in every seed: sd = 0, so the paired t-test is undefined (not "no difference")."""
    if row.mean_diff == 0:
        return (f"identical scores in all {row.seeds} paired seeds (difference 0, sd = 0): no difference in these "
                "runs; the paired t-test is undefined with sd = 0, so nothing is said about other seeds")  # fmt: skip
    return (f"a constant difference of {row.mean_diff:+.3f} in every one of the {row.seeds} paired seeds (sd = 0): "
            "the paired t-test is undefined with sd = 0 (no p-value, no interval beyond that value), so the "
            "thresholds cannot be applied; the difference is not absent, it just shows no seed-to-seed "
            "variation to test it against")  # fmt: skip


def conclusions(comparisons: pd.DataFrame, collapse: pd.DataFrame) -> list[str]:
    """The "what these numbers support, and what they do not" sentences, generated from the numbers."""
    lines = [f"Thresholds: Holm-adjusted paired t-test p < {ALPHA} and a bootstrap 95% interval excluding 0; at "
             f"least {MIN_SEEDS} paired seeds; collapse signature = cos(h_v, mean target) up by > {COS_MARGIN} and "
             f"effective rank of the text embeddings down by > {ERANK_DROP:.0%} vs the same seed's baseline, in "
             "most seeds.", ""]  # fmt: skip
    for row in comparisons[comparisons["benchmark"] == OVERALL].sort_values("variant").itertuples():
        constant = is_zero_variance(row)
        holm_p = p_digits(row.p_holm, ALPHA, 3, "g")  # more digits if 3 would round across ALPHA
        interval = f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]" if not np.isnan(row.ci_low) else "(no interval)"
        if constant:
            interval = "(the same in every seed, sd = 0)"
        if row.seeds < MIN_SEEDS:
            verdict = f"only {row.seeds} paired seed{'' if row.seeds == 1 else 's'}: no claim either way (mean {row.mean_diff:+.3f} {interval})"
        elif constant:
            verdict = _constant_verdict(row)
        elif row.p_holm < ALPHA and row.ci_low > 0:
            verdict = f"supported gain of {row.mean_diff:+.3f} {interval}, Holm p = {holm_p}"
        elif row.p_holm < ALPHA and row.ci_high < 0:
            verdict = f"supported loss of {row.mean_diff:+.3f} {interval}, Holm p = {holm_p}"
        else:
            verdict = (f"no difference detected (mean {row.mean_diff:+.3f}, 95% CI {interval}, Holm p = "
                       f"{holm_p}); effects outside the interval are not supported, effects inside it are "
                       "not ruled out")  # fmt: skip
        lines.append(f"- **{row.variant}** vs baseline, mean of benchmarks: {verdict}.")
    lines.append("")
    for row in collapse.itertuples():
        lines.append(f"- **{row.variant}**: {_collapse_sentence(row)}")
    lines.append("")
    lines.append("What these numbers do not show: anything about the paper-scale models (this is the CPU "
                 "miniature), benchmarks other than the local suite, or why a difference arises beyond the logged "
                 "diagnostics.")  # fmt: skip
    return lines


def ablation_section(
    results: Path, wide: pd.DataFrame, figures: Path, metrics: dict, baseline: str = "baseline"
) -> list[str]:
    """Markdown lines of the ablation section; writes :data:`STATS_FILE`, :data:`COLLAPSE_FILE`, the forest plot and
    the diagnostics curves."""
    scores = long_scores(wide)
    if baseline not in set(scores["variant"]) or scores["variant"].nunique() < 2:
        return []
    comparisons = paired_comparisons(scores, baseline=baseline)
    comparisons.to_csv(results / STATS_FILE, index=False)
    forest_plot(comparisons, figures / "ablation_forest.png")
    lines = ["## Ablation: each variant vs the baseline, seed-paired", "",
             "Cells: mean difference to the baseline of the same seed [bootstrap 95% CI] (Holm-adjusted paired "
             "t-test p, across variants within each column). Units: the benchmark map's.", ""]  # fmt: skip
    lines += [ablation_table(comparisons), "", "![forest plot](figures/ablation_forest.png)", ""]
    logs = diagnostics_logs(results)
    collapse = pd.DataFrame(columns=COLLAPSE_COLUMNS)
    if not logs.empty:
        plot_diagnostics(logs, figures / "diagnostics_curves.png")
        collapse = collapse_signature(logs, baseline)
        lines += ["### Diagnostics during stage 2 (mean over seeds)", "",
                  "![diagnostics](figures/diagnostics_curves.png)", ""]  # fmt: skip
    collapse.to_csv(results / COLLAPSE_FILE, index=False)
    if logs.attrs.get("unfinished"):
        lines += [f"Runs without a trainer_state.json (unfinished), not in the curves: "
                  f"{', '.join(logs.attrs['unfinished'])}.", ""]  # fmt: skip
    lines += ["### What these numbers support, and what they do not", ""]
    lines += conclusions(comparisons, collapse)
    metrics["ablation"] = {
        "comparisons": comparisons.replace({np.nan: None}).to_dict(orient="records"),
        "collapse": collapse.to_dict(orient="records"),
    }
    return lines + [""]
