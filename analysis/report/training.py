"""The training section: the trained stages of a results folder and the last logged value of each metric."""

from __future__ import annotations

from pathlib import Path

from analysis.markdown import GAP, format_mean_sd, markdown_table, table_row
from analysis.report.stats import mean_sd
from analysis.report.training_curves import load_training_logs, plot_training_curves
from vista.run_metadata import parse_run_name


def training_runs(results: Path) -> list[tuple[dict, Path]]:
    """(labels, stage folder) for every trained stage under ``results/runs``."""
    runs = []
    for run_dir in sorted((results / "runs").glob("*")):
        labels = parse_run_name(run_dir.name)
        if labels is None:
            continue
        for stage in ("pretrain", "finetune"):
            if (run_dir / stage).is_dir():
                runs.append(({**labels, "stage": stage}, run_dir / stage))
    return runs


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
    lines += markdown_table(["stage", "variant", *(header.get(c, c[0]) for c in columns)])
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
                    cells.append(GAP)
                    continue
            mean, sd, n = mean_sd(values["value"])
            entry = {"mean": mean, "sd": sd}
            if distance is not None:
                entry["distance"] = distance
            metrics["training_final"].setdefault(stage, {}).setdefault(variant, {})[metric] = entry
            cells.append(format_mean_sd(mean, sd, 4))
        lines.append(table_row([stage, variant, *cells]))
    lines += [
        "",
        "The VISTA columns are the official code's terms, logged for every variant including the baseline (where "
        "the term is not added to the loss): an L2 run logs the position-weighted MSE and MSE(h_v, e_t), a cosine "
        "run minus the weighted cosine and cos(h_v, e_t); they are different measures, hence separate columns "
        "and separate panels in the figure (lines: mean over seeds; bands: ± 1 sd over seeds).",
        "",
    ]
    return lines + _text_only_note(logs.attrs.get("text_only_windows", {}), metrics)


def _text_only_note(text_only: dict[str, int], metrics: dict) -> list[str]:
    """The disclosure of logging windows without an image sample, left out of ``vista_loss`` (curve and table)."""
    if not text_only:
        return []
    metrics["training_text_only_windows"] = dict(text_only)
    counts = ", ".join(f"{n} in {stage}" for stage, n in text_only.items())
    return [
        f"Logging windows without any image sample ({counts}, over all runs; `vista_samples` = 0 in the Trainer log) "
        "log a `vista_loss` of exactly 0: a text-only micro-batch has no image to align, so that 0 is not a value "
        "of the term. They are left out of the `vista_loss` curves and of its last value above (the last window "
        "with an image); `ce_loss` and `loss` keep every window.",
        "",
    ]
