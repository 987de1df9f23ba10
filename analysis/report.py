"""``vista report``: REPORT.md, training curves and a metrics file for one results folder of the pipeline.

    vista report --results results/tiny [--profile tiny]

Every number in REPORT.md is read from the folder's own files (stage stamps, Trainer logs, lmms-eval results,
probe and MI tables, the theory profile); nothing is typed in. All the numbers the report prints are also written
to ``report_metrics.json`` so that tests (and readers) can check them against the raw files.

Comparisons across seeds are paired by seed: for each seed s, ``d_s = score(variant, s) - score(baseline, s)``;
the report gives ``mean(d) ± sd(d)``, the two-sided paired t-test of mean(d) = 0 (``scipy.stats.ttest_rel``, n - 1
degrees of freedom; its p-value and the 95% confidence interval of mean(d)) and marks a cell ``*`` when p < 0.05.
With one seed no test is possible and nothing is marked. Every marker is defined under the table that uses it.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.training_curves import load_training_logs, plot_training_curves
from vista.errors import DataError, MissingInputError
from vista.run_metadata import parse_run_name

ALPHA = 0.05  # significance level of the paired t-test marker `*`
# (probe, probe variant) pairs summarised in the report; swap "posterior" is the MI estimate of I(V; X_t | X_<t).
IMAGE_PROBES = (("swap", "posterior"), ("ablation", "blank"), ("ablation", "masked"), ("kl", "blank"))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, required=True, help="a results folder written by run_all.sh")
    parser.add_argument(
        "--profile", default=None, help="profile name for the title (default: from profile.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    path = write_report(args.results, profile=args.profile)
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------------ runs


def length_trend(by_length: dict[str, float]) -> str:
    """One honest sentence on the image's contribution by text-length bucket (buckets in increasing length).

    "Falls" is claimed only when every bucket is at or below the one before; otherwise the sentence names the peak.
    """
    names, values = list(by_length), list(by_length.values())
    caveat = (
        "(in held-out data length goes with record type; the world_len_* benchmarks hold the question fixed)"
    )
    span = f"from {values[0]:.3f} nats ({names[0]} tokens) to {values[-1]:.3f} ({names[-1]} tokens)"
    if all(b <= a for a, b in zip(values, values[1:])) and values[-1] < values[0]:
        return f"the image's contribution to image words falls monotonically {span}, as the paper's decay predicts {caveat}."
    peak = max(range(len(values)), key=values.__getitem__)
    if values[-1] < values[0]:
        return (
            f"the image's contribution to image words goes {span} but not monotonically: it peaks at "
            f"{values[peak]:.3f} ({names[peak]} tokens), so length alone does not order it {caveat}."
        )
    return f"the image's contribution to image words does not fall with text length ({span}) {caveat}."


def parse_run_dir(name: str) -> dict | None:
    """``<family>__<variant>__seed<N>`` -> labels, or None for other folder names (one parser:
    :func:`vista.run_metadata.parse_run_name`)."""
    return parse_run_name(name)


def training_runs(results: Path) -> list[tuple[dict, Path]]:
    """(labels, stage folder) for every trained stage under ``results/runs``."""
    runs = []
    for run_dir in sorted((results / "runs").glob("*")):
        labels = parse_run_dir(run_dir.name)
        if labels is None:
            continue
        for stage in ("pretrain", "finetune"):
            if (run_dir / stage).is_dir():
                runs.append(({**labels, "stage": stage}, run_dir / stage))
    return runs


def stage_times(results: Path) -> pd.DataFrame:
    """One row per finished stage: name, description, seconds (from the stage stamps)."""
    rows = []
    for stamp in sorted((results / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(stamp.read_text())
        rows.append(
            {"stage": record["stage"], "description": record["description"], "seconds": record["seconds"]}
        )
    return pd.DataFrame(rows, columns=["stage", "description", "seconds"])


# ------------------------------------------------------------------------------------------------ statistics


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


def table_header(columns: list[str]) -> list[str]:
    """The first two lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def fmt(mean: float, sd: float | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:.{digits}f}"
    if sd is not None and not math.isnan(sd):
        text += f" ± {sd:.{digits}f}"
    return text


# ------------------------------------------------------------------------------------------------ sections


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
    lines += table_header(["variant", *benchmarks])
    metrics["benchmarks"] = {}
    for variant in variants:
        part = wide[wide["variant"] == variant]
        cells = []
        for bench in benchmarks:
            mean, sd, n = mean_sd(part[bench])
            metrics["benchmarks"].setdefault(variant, {})[bench] = {"mean": mean, "sd": sd, "n": n}
            cells.append(f"{fmt(mean, sd)} ({n})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    if "baseline" in variants:
        lines.append("Seed-paired differences to the baseline, variant − baseline (points):")
        lines.append("")
        lines += table_header(["variant", *benchmarks])
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
        return "—"
    text = fmt(diff["mean"], diff.get("sd"))
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
    lines += table_header(["variant", *(f"N={w}" for w in words)])
    for variant, by_words in metrics["accuracy_by_preceding_words"].items():
        cells = [fmt(by_words[w]["mean"], by_words[w]["sd"], 1) if w in by_words else "—" for w in words]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def training_section(results: Path, figures: Path, metrics: dict) -> list[str]:
    runs = training_runs(results)
    if not runs:
        return ["## Training", "", "No training runs found under `runs/`.", ""]
    logs = load_training_logs(runs)
    plot_training_curves(logs, figures / "training_curves.png")
    lines = ["## Training curves", "", "![training curves](figures/training_curves.png)", ""]
    lines.append("Last logged value of each stage (mean ± sd over seeds):")
    lines.append("")
    metric_names = [m for m in ("ce_loss", "vista_loss", "vista_similarity") if m in set(logs["metric"])]
    distances = sorted(set(logs["distance"])) if "distance" in logs else ["l2"]
    # one measure per column: the VISTA metrics of L2 runs (MSE) and of cosine runs (cosine) in separate columns
    columns = [(m, None) for m in metric_names if not m.startswith("vista_")]
    columns += [(m, d) for m in metric_names if m.startswith("vista_") for d in distances]
    header = {("vista_loss", "l2"): "vista_loss (L2 runs)", ("vista_loss", "cosine"): "vista_loss (cosine runs)",
              ("vista_similarity", "l2"): "MSE(h_v, e_t) (L2 runs)",
              ("vista_similarity", "cosine"): "cos(h_v, e_t) (cosine runs)"}  # fmt: skip
    lines += table_header(["stage", "variant", *(header.get(c, c[0]) for c in columns)])
    keys = ["stage", "variant", "seed", "metric"] + (["distance"] if "distance" in logs else [])
    last = logs.sort_values("step").groupby(keys)["value"].last().reset_index()
    if "distance" not in last:
        last["distance"] = "l2"
    metrics["training_final"] = {}
    for (stage, variant), part in last.groupby(["stage", "variant"], sort=False):
        cells = []
        for metric, distance in columns:
            values = part.loc[part["metric"] == metric]
            if distance is not None:
                values = values[values["distance"] == distance]
                if values.empty:
                    cells.append("—")
                    continue
            mean, sd, n = mean_sd(values["value"])
            entry = {"mean": mean, "sd": sd}
            if distance is not None:
                entry["distance"] = distance
            metrics["training_final"].setdefault(stage, {}).setdefault(variant, {})[metric] = entry
            cells.append(fmt(mean, sd, 4))
        lines.append(f"| {stage} | {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The VISTA columns are the official code's terms, logged for every variant including the baseline (where "
        "the term is not added to the loss): an L2 run logs the position-weighted MSE and MSE(h_v, e_t), a cosine "
        "run minus the weighted cosine and cos(h_v, e_t); they are different measures, hence separate columns "
        "and separate panels in the figure (lines: mean over seeds; bands: ± 1 sd over seeds).",
        "",
    ]
    return lines


def probe_section(results: Path, metrics: dict) -> list[str]:
    path = results / "probes" / "probes.parquet"
    if not path.is_file():
        return []
    rows = pd.read_parquet(path)
    lines = ["## Visual contribution per text position (probes)", ""]
    image_dependent = _image_dependent_words(results)
    answer = rows[rows["supervised"].astype(bool)] if "supervised" in rows else rows
    present = set(zip(answer["probe"], answer["variant"]))
    probes = [p for p in IMAGE_PROBES if p in present]
    if not probes:
        return lines + ["No image-dependence probe in probes.parquet.", ""]
    if image_dependent:
        tokens = answer["token"].astype(str).str.strip().str.lower()
        answer = answer.assign(kind=np.where(tokens.isin(image_dependent), "image word", "other word"))
    else:
        answer = answer.assign(kind="answer token")
    lines.append(
        "Mean over supervised (answer) tokens, in nats; image words are the world's attribute words "
        "(colours, shapes, sizes, counts, positions) whose value only the image determines. "
        "`swap/posterior` estimates I(V; X_t | X_<t); `ablation/*` is log p(with image) - log p(without)."
    )
    lines.append("")
    kinds = sorted(set(answer["kind"]))
    header = [f"{p}/{v} ({k})" for p, v in probes for k in kinds]
    lines += table_header(["model", *header])
    metrics["probes"] = {}
    for model, part in answer.groupby("checkpoint", sort=False):
        cells = []
        for probe, variant in probes:
            for kind in kinds:
                mask = (part["probe"] == probe) & (part["variant"] == variant) & (part["kind"] == kind)
                values = part.loc[mask, "value"]
                mean = float(values.mean()) if len(values) else math.nan
                metrics["probes"].setdefault(str(model), {})[f"{probe}/{variant}/{kind}"] = {
                    "mean": mean,
                    "n": len(values),
                }
                cells.append(fmt(mean, digits=3))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    if image_dependent:
        lines += _probe_by_length(rows, answer, metrics, _probe_settings(results).get("buckets") or 4)
    lines += _probe_disclosure(results, metrics)
    for figure in sorted((results / "probes").glob("*.png"))[:4]:
        lines.append(f"![{figure.stem}](probes/{figure.name})")
    lines.append("")
    return lines


def _probe_settings(results: Path) -> dict:
    path = results / "probes" / "probe_run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _probe_by_length(rows: pd.DataFrame, answer: pd.DataFrame, metrics: dict, buckets: int) -> list[str]:
    """Blank-image ablation on image-word answer tokens, by text-length bucket.

    The buckets are those of ``vista probe``'s ``summary_by_length.csv`` and figures: quantiles of the per-sample
    text lengths of every probed row (:func:`analysis.probes.aggregate.add_length_buckets`), in numeric order.
    """
    from analysis.probes.aggregate import add_length_buckets

    if rows["text_len"].nunique() < 2:
        return []
    bucketed = add_length_buckets(rows, n_buckets=buckets)["length_bucket"]
    words = answer.assign(bucket=bucketed.loc[answer.index])
    words = words[
        (words["kind"] == "image word") & (words["probe"] == "ablation") & (words["variant"] == "blank")
    ]
    if words.empty:
        return []
    labels = list(bucketed.cat.categories)  # numeric order
    table = words.groupby(["checkpoint", "bucket"], observed=True)["value"].agg(["mean", "count"])
    metrics["probes_by_length"] = {
        str(model): {label: float(table.loc[(model, label), "mean"]) for label in labels if (model, label) in table.index}
        for model in dict.fromkeys(words["checkpoint"])
    }  # fmt: skip
    lines = ["How much the image contributes to image-word answer tokens as the text grows: log p(token | image) − "
             f"log p(token | blank image) in nats (mean over tokens), by text length in tokens ({len(labels)} "
             "quantile buckets of the probed samples). The figures in `probes/` and `probes/summary_by_length.csv` "
             "use the same buckets but average every probed token, template and prompt tokens included, so their "
             "values differ from this table's:", ""]  # fmt: skip
    lines += table_header(["model", *labels])
    for model, values in metrics["probes_by_length"].items():
        lines.append(
            f"| {model} | "
            + " | ".join(fmt(values.get(label, math.nan), digits=3) for label in labels)
            + " |"
        )
    lines.append("")
    return lines


def _probe_disclosure(results: Path, metrics: dict) -> list[str]:
    """Which checkpoints (training seeds), how many samples and which settings the probes used."""
    settings = _probe_settings(results)
    if not settings:
        return []
    parts = []
    for label, info in settings.get("checkpoints", {}).items():
        run = parse_run_dir(Path(info["path"]).parent.name) or {}
        seed = f"training seed {run['seed']}" if "seed" in run else "training seed unknown"
        parts.append(f"{label} ({seed}): {info.get('probed')} samples")
    metrics["probe_settings"] = settings
    return [
        f"**Probe settings:** one checkpoint per variant ({'; '.join(parts)}) on `{Path(settings['data']).name}` "
        f"(held-out records{', first ' + str(settings['limit']) + ' usable' if settings.get('limit') else ''}); "
        f"{settings.get('num_swaps')} contrast images per sample for swap/KL, drawn with seed {settings.get('seed')}; "
        "means above are over answer tokens; the figures' bands are 95% bootstrap intervals over samples "
        f"({settings.get('bootstrap', 1000)} resamples). One training seed per variant: differences between "
        "models here include seed-to-seed variation.",
        "",
    ]


def mi_section(results: Path, metrics: dict) -> list[str]:
    tables = []
    for path in sorted((results / "mi").glob("*/mi_by_position.csv")):
        labels = parse_run_dir(path.parent.name) or {"variant": path.parent.name}
        tables.append(pd.read_csv(path).assign(model=labels["variant"]))
    if not tables:
        return []
    table = pd.concat(tables, ignore_index=True)
    table = table[table["mi"].notna()]
    if "stderr" not in table:
        table = table.assign(stderr=math.nan)
    z = stats.norm.ppf(0.975)
    table = table.assign(
        below=(table["mi"] + z * table["stderr"]) < 0, above=(table["mi"] - z * table["stderr"]) > 0
    )
    summary = (
        table.groupby(["model", "target", "method"], sort=False)
        .agg(mean=("mi", "mean"), min=("mi", "min"), max=("mi", "max"), positions=("mi", "count"),
             above_zero=("above", "sum"), negative=("mi", lambda v: int((v < 0).sum())),
             below_zero=("below", "sum"), samples=("n_samples", "max"))
        .reset_index()
    )  # fmt: skip
    metrics["mi"] = summary.to_dict(orient="records")
    lines = ["## Mutual information between the image state and text representations", ""]
    lines.append(
        "I(h_v; e_t) and I(h_v; h_t) across held-out samples, estimated per text position t, in nats. Columns: "
        "mean, min and max of the estimates over positions; `positions`: positions with an estimate (reached by "
        "at least `--min-samples` samples); `above_zero` / `below_zero`: positions whose 95% interval "
        "(estimate ± 1.96 standard errors) lies entirely above / below 0; `negative`: positions whose point "
        "estimate is below 0; `samples`: held-out samples at the first position."
    )
    lines.append("")
    lines.append(summary.to_markdown(index=False, floatfmt=".4f"))
    lines.append("")
    lines += _mi_disclosure(results)
    for figure in sorted((results / "mi").glob("*/mi_by_position.png"))[:3]:
        lines.append(f"![MI {figure.parent.name}](mi/{figure.parent.name}/{figure.name})")
    lines.append("")
    return lines


def _mi_disclosure(results: Path) -> list[str]:
    """How the MI was estimated, on what, and why an estimate can be negative."""
    runs = []
    for path in sorted((results / "mi").glob("*/summary.json")):
        labels = parse_run_dir(path.parent.name) or {}
        counts = json.loads(path.read_text())
        seed = f"training seed {labels['seed']}" if "seed" in labels else "training seed unknown"
        runs.append(f"{labels.get('variant', path.parent.name)} ({seed}): {counts.get('samples')} samples")
    return [
        f"**MI settings:** {'; '.join(runs) or 'see mi/*/summary.json'}. Estimators: KSG (k-nearest neighbours) "
        "and a Gaussian (linear) estimate, on z-scored states projected to their leading principal components "
        "(`vista mi checkpoint` defaults; see `mi/*/summary.json`). True MI is never negative, but these "
        "estimates can be: KSG is a difference of digamma averages whose bias and sampling error at these sample "
        'sizes are of the order of the small MI measured here, so an estimate below 0 means "no dependence '
        'detected", not negative information. Judge each position by its interval (`stderr` in '
        "`mi/*/mi_by_position.csv`; the figures' bands are ± 1 standard error).",
        "",
    ]


def theory_section(results: Path, metrics: dict) -> list[str]:
    path = results / "theory" / "profile.csv"
    if not path.is_file():
        return []
    profile = pd.read_csv(path)
    total_visual = float(profile["I_vision_given_prefix"].sum())
    first, last = profile.iloc[0], profile.iloc[-1]
    share_first = float(first["I_vision_given_prefix"] / first["H_token_given_prefix"])
    share_last = float(last["I_vision_given_prefix"] / last["H_token_given_prefix"])
    summary_path = results / "theory" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    monte_carlo = summary.get("method") == "monte_carlo" or "I_vision_given_prefix_se" in profile
    se_total = float(last["I_vision_cumulative_se"]) if "I_vision_cumulative_se" in profile else math.nan
    se_first = float(first.get("I_vision_given_prefix_se", math.nan))
    se_last = float(last.get("I_vision_given_prefix_se", math.nan))
    if monte_carlo:
        samples = summary.get("n_samples")
        method_text = f"Monte Carlo estimate{f' from {samples} sampled sequences' if samples else ''}"
    else:
        method_text = "exact enumeration"
    params = ", ".join(f"{k} = {summary[k]}" for k in ("K", "M", "T", "alpha", "seed") if k in summary)
    metrics["theory"] = {"T": int(last["t"]) if "t" in profile else len(profile), "sum_I_vision_given_prefix": total_visual,
                         "share_first": share_first, "share_last": share_last, "method": summary.get("method"),
                         "method_text": method_text, "se_total": se_total}  # fmt: skip
    lines = ["## Theory (on the generative source)", ""]
    lines.append(
        f"Method: **{method_text}** (`vista theory`, {params or 'see theory/summary.json'}). "
        + (
            "The exact method enumerates every (last token, posterior) prefix state; at these parameters there "
            "are too many, so `--method auto` fell back to Monte Carlo: every number below is an estimate, "
            "± its standard error, and the figures' bands are ± 2 standard errors."
            if monte_carlo
            else "The numbers below are exact (no sampling error)."
        )
    )
    lines.append("")
    pm = lambda se: f" ± {se:.4f}" if monte_carlo and not math.isnan(se) else ""  # noqa: E731
    lines.append(
        f"Over T = {metrics['theory']['T']} tokens the visual information the cross-entropy objective can use, "
        f"sum_t I(V; Y_t | Y_<t) = I(V; Y_1..T), totals {total_visual:.4f}{pm(se_total)} nats (bounded by "
        f"H(V)). The per-token visual share I(V;Y_t|Y_<t) / H(Y_t|Y_<t) falls from {share_first:.4f} at t = 1 "
        f"(I = {float(first['I_vision_given_prefix']):.4f}{pm(se_first)} nats) to {share_last:.4f} at t = T "
        f"(I = {float(last['I_vision_given_prefix']):.4f}{pm(se_last)} nats)."
    )
    lines.append("")
    for figure in sorted((results / "theory").glob("*.png"))[:3]:
        lines.append(f"![{figure.stem}](theory/{figure.name})")
    lines.append("")
    return lines


def conclusions(metrics: dict) -> list[str]:
    lines = ["## What these numbers support, and what they do not", ""]
    diffs = metrics.get("paired_differences", {})
    for variant, per_bench in diffs.items():
        overall = per_bench.get("mean of benchmarks", {})
        if not overall.get("n"):
            continue
        direction = "above" if overall["mean"] > 0 else "below" if overall["mean"] < 0 else "equal to"
        if overall["n"] > 1 and not math.isnan(overall.get("p", math.nan)):
            verdict = (
                f"paired t-test p = {overall['p']:.3f} (n = {overall['n']} seeds), 95% interval of the mean "
                f"difference [{overall['ci_low']:+.2f}, {overall['ci_high']:+.2f}] points: "
                + ("different from zero at the 5% level" if overall["significant"]
                   else "not distinguishable from seed-to-seed variation at the 5% level")
            )  # fmt: skip
        else:
            verdict = "no test possible"
        lines.append(
            f"- {variant} vs baseline, mean over the local benchmarks: {overall['mean']:+.2f} points "
            f"({direction} the baseline; sd {fmt(overall.get('sd', math.nan))} over {overall['n']} paired seeds); "
            f"{verdict}."
        )
        if overall["n"] < 3:
            lines.append(
                f"  With {overall['n']} seed(s) no claim about the sign of this difference is warranted."
            )
    for model, parts in metrics.get("probes", {}).items():
        image, other = parts.get("ablation/blank/image word"), parts.get("ablation/blank/other word")
        if image and other and image["n"] and other["n"]:
            relation = "above" if image["mean"] > other["mean"] else "not above"
            lines.append(
                f"- {model}: the image raises the log-probability of image words by {image['mean']:.3f} nats on "
                f"average vs {other['mean']:.3f} for other answer words ({relation}; blank-image ablation)."
            )
    for model, by_length in metrics.get("probes_by_length", {}).items():
        lines.append(f"- {model}: {length_trend(by_length)}")
    theory = metrics.get("theory")
    if theory:
        lines.append(
            f"- The theory ({theory['method_text']}) reproduces the paper's mechanism on its generative source: the "
            f"visual share per token drops from {theory['share_first']:.3f} to {theory['share_last']:.3f} along "
            "the text."
        )
    lines += [
        "- Scale: these are tiny models on a synthetic world trained for minutes on a CPU. They test that the "
        "pipeline, the loss and the analyses behave as specified; they do not estimate the effect of VISTA on "
        "LLaVA-1.5-7B or TinyLLaVA-3B, whose benchmark numbers come only from GPU runs (see the tables section of "
        "the README).",
        "",
    ]
    return lines


def _image_dependent_words(results: Path) -> set[str]:
    manifest = results / "data" / "manifest.json"
    if not manifest.is_file():
        return set()
    data = json.loads(manifest.read_text())
    return {str(w).lower() for w in data.get("image_words", [])}


def _header(results: Path, profile_name: str | None, metrics: dict) -> list[str]:
    profile_path = results / "profile.yaml"
    profile = {}
    if profile_path.is_file():
        import yaml

        profile = yaml.safe_load(profile_path.read_text()) or {}
    name = profile_name or profile.get("profile", results.name)
    lines = [f"# VISTA study: profile `{name}`", ""]
    lines.append("Generated by `vista report` from the files in this folder; every number below is read from them "
                 "(`report_metrics.json` holds them all).")  # fmt: skip
    lines.append("")
    if profile:
        lines.append(f"- Seeds: {profile.get('seeds')}; variants: {', '.join(profile.get('variants') or profile.get('ablation') or [])}; "
                     f"quick: {profile.get('quick', False)}.")  # fmt: skip
    times = stage_times(results)
    if len(times):
        total = float(times["seconds"].sum())
        metrics["stage_seconds"] = dict(zip(times["stage"], times["seconds"].astype(float)))
        main_run = _main_pipeline_run(results)
        if main_run:
            metrics["pipeline_wall_seconds"] = main_run["wall_seconds"]
            lines.append(
                f"- Wall time: {main_run['wall_seconds'] / 60:.1f} min for the complete run of "
                f"{len(main_run['ran'])} stages ({main_run['jobs']} at a time); the stage times below add up to "
                f"{total / 60:.1f} min."
            )
        else:
            lines.append(
                f"- The stage times below add up to {total / 60:.1f} min (no complete run recorded)."
            )
        lines.append("")
        lines += table_header(["stage", "what", "seconds"])
        lines += [f"| {r.stage} | {r.description} | {r.seconds:.1f} |" for r in times.itertuples()]
    failed = sorted((results / "logs").glob("*.failed-*.log"))
    if failed:
        metrics["failed_attempt_logs"] = [str(p.relative_to(results)) for p in failed]
        lines += ["", "Failed attempts before the runs reported here (their logs are kept): "
                  + ", ".join(f"`{p.relative_to(results)}`" for p in failed) + "."]  # fmt: skip
    lines.append("")
    return lines


def _main_pipeline_run(results: Path) -> dict | None:
    """The last recorded pipeline invocation (``pipeline_runs.jsonl``) that ran every stage itself, if any.

    Partial reruns (some stages skipped) do not say how long the study takes, so they are not reported.
    """
    path = results / "pipeline_runs.jsonl"
    if not path.is_file():
        return None
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    complete = [r for r in runs if r.get("ran") and not r.get("skipped") and not r.get("failed")]
    return complete[-1] if complete else None


def write_report(results: str | Path, profile: str | None = None) -> Path:
    """Write ``REPORT.md``, ``figures/`` and ``report_metrics.json`` into ``results``; return the report path."""
    results = Path(results).resolve()
    if not results.is_dir():
        raise MissingInputError(
            f"--results {results}: no such folder; give a folder `bash reproduce/run_all.sh` wrote, e.g. results/tiny"
        )
    found = [name for name, present in _inputs_present(results).items() if present]
    if not found:
        raise DataError(
            f"--results {results}: nothing to report (no runs/, eval/, probes/, mi/ or theory/ results in it); "
            "run `bash reproduce/run_all.sh` first or point --results at its output, e.g. results/tiny"
        )
    figures = results / "figures"
    figures.mkdir(exist_ok=True)
    metrics: dict = {}
    lines = _header(results, profile, metrics)
    lines += training_section(results, figures, metrics)
    long = load_eval_results(results)
    if long is not None:
        wide = benchmark_scores(long)
        wide.to_csv(results / "benchmark_scores.csv", index=False)
        lines += benchmark_section(wide, metrics)
        lines += limits_note(results, metrics)
        lines += length_section(long, metrics)
        if "ablation" in _profile_yaml(results):  # analysis.ablation: paired statistics, forest plot, diagnostics
            from analysis.ablation import ablation_section

            lines += ablation_section(results, wide, figures, metrics)
    lines += probe_section(results, metrics)
    lines += mi_section(results, metrics)
    lines += theory_section(results, metrics)
    lines += conclusions(metrics)
    (results / "report_metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    path = results / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _profile_yaml(results: Path) -> dict:
    """The ``profile.yaml`` run_all.sh wrote into ``results`` ({} if absent)."""
    import yaml

    path = results / "profile.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _inputs_present(results: Path) -> dict[str, bool]:
    """Which of the report's inputs the folder holds."""
    return {
        "training runs": bool(training_runs(results)),
        "lmms-eval results": (results / "eval").is_dir() and any((results / "eval").rglob("*_results.json")),
        "probes": (results / "probes" / "probes.parquet").is_file(),
        "mutual information": any((results / "mi").glob("*/mi_by_position.csv")),
        "theory": (results / "theory" / "profile.csv").is_file(),
    }


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
