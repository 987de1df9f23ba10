"""The probe section: the image's contribution to answer tokens (image words vs other words), by text length."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.markdown import format_mean_sd, markdown_table, table_row
from vista.run_metadata import parse_run_name

# (probe, probe variant) pairs summarised in the report; swap "posterior" is the MI estimate of I(V; X_t | X_<t).
IMAGE_PROBES = (("swap", "posterior"), ("ablation", "blank"), ("ablation", "masked"), ("kl", "blank"))


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
    lines += markdown_table(["model", *header])
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
                cells.append(format_mean_sd(mean, decimals=3))
        lines.append(table_row([model, *cells]))
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
    lines += markdown_table(["model", *labels])
    for model, values in metrics["probes_by_length"].items():
        cells = [format_mean_sd(values.get(label, math.nan), decimals=3) for label in labels]
        lines.append(table_row([model, *cells]))
    lines.append("")
    return lines


def _probe_disclosure(results: Path, metrics: dict) -> list[str]:
    """Which checkpoints (training seeds), how many samples and which settings the probes used."""
    settings = _probe_settings(results)
    if not settings:
        return []
    parts = []
    for label, info in settings.get("checkpoints", {}).items():
        run = parse_run_name(Path(info["path"]).parent.name) or {}
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


def _image_dependent_words(results: Path) -> set[str]:
    manifest = results / "data" / "manifest.json"
    if not manifest.is_file():
        return set()
    data = json.loads(manifest.read_text())
    return {str(w).lower() for w in data.get("image_words", [])}
