"""Run a set of probes on one scorer, and turn probe rows into summary tables and figures on disk.

Shared by ``vista probe`` (:mod:`analysis.probes.cli`) and notebook 02.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.probes.ablation import ablation_probe
from analysis.probes.aggregate import add_length_buckets, curve, paired_difference
from analysis.probes.alignment import alignment_probe
from analysis.probes.attention import attention_probe
from analysis.probes.kl import kl_probe
from analysis.probes.plots import plot_curves, save_figure, split_difference
from analysis.probes.scoring import HFScorer, ProbeSample, Scorer
from analysis.probes.swap import draw_contrast_images, swap_probe

logger = logging.getLogger(__name__)

PROBES = ("ablation", "swap", "kl", "attention", "alignment")
MODEL_ONLY = ("attention", "alignment")  # need an HFScorer


def attention_backend(probes: Sequence[str]) -> str:
    """The ``attn_implementation`` to load a model with for ``probes``: ``"eager"`` if the attention probe is among
    them (it reads attention weights, which SDPA does not return), else ``"sdpa"`` (the same log-probabilities up
    to float rounding, faster)."""
    return "eager" if "attention" in probes else "sdpa"


def run_probes(
    scorer: Scorer,
    samples: Sequence[ProbeSample],
    probes: Sequence[str] = PROBES,
    num_swaps: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """All requested probes on ``samples``, as one tidy frame (rows of every probe stacked).

    Contrast images for ``swap`` and ``kl`` are drawn once (from ``seed``), so two checkpoints probed with the same
    samples and seed see the same contrasts (a paired comparison). ``kl`` uses the first ``min(K, 4)`` of them.
    """
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; expected a subset of {PROBES}")
    if not isinstance(scorer, HFScorer) and set(probes) & set(MODEL_ONLY):
        raise ValueError(
            f"probes {sorted(set(probes) & set(MODEL_ONLY))} need a transformers model (HFScorer)"
        )
    contrast = draw_contrast_images(samples, num_swaps, seed) if {"swap", "kl"} & set(probes) else None
    frames = []
    for probe in probes:
        logger.info("probe %s on %d samples", probe, len(samples))
        if probe == "ablation":
            frames.append(ablation_probe(scorer, samples, progress=progress))
        elif probe == "swap":
            frames.append(swap_probe(scorer, samples, contrast=contrast, progress=progress))
        elif probe == "kl":
            few = [c[: min(num_swaps, 4)] for c in contrast]
            frames.append(kl_probe(scorer, samples, contrast=few, progress=progress))
        elif probe == "attention":
            frames.append(attention_probe(scorer, samples, progress=progress))
        else:
            frames.append(alignment_probe(scorer, samples, progress=progress))
    return pd.concat([f for f in frames if len(f)], ignore_index=True)


def summarise(
    df: pd.DataFrame,
    n_buckets: int = 4,
    n_resamples: int = 1000,
    seed: int = 0,
    reference: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Curves with bootstrap CIs: ``by_position`` (text position), ``by_answer_position`` (supervised tokens
    only, rank within the answer) and ``by_length`` (text-length buckets, per-sample means)."""
    settings = dict(n_resamples=n_resamples, seed=seed)
    answer = df[df["supervised"].astype(bool)]
    out = {"by_position": curve(df, x="position", **settings)}
    if len(answer):
        out["by_answer_position"] = curve(answer, x="answer_position", **settings)
    out["by_length"] = curve(add_length_buckets(df, n_buckets=n_buckets), x="length_bucket", **settings)
    if reference is not None and len(answer) and answer["checkpoint"].nunique() > 1:
        diff = paired_difference(answer, reference)
        out["difference_by_answer_position"] = curve(diff, x="answer_position", **settings)
    attention = answer[answer["probe"] == "attention"] if len(answer) else answer
    if len(attention):
        attention = attention.astype({"layer": int})
        out["by_layer"] = curve(attention, x="layer", groups=("checkpoint", "probe", "variant"), **settings)
    return out


def write_figures(summaries: dict[str, pd.DataFrame], out: str | Path) -> list[Path]:
    """One PNG per (summary, probe): panels per variant (and layer), one line per checkpoint (per checkpoint minus
    the reference in the ``difference_*`` summaries, labelled as differences)."""
    out = Path(out)
    x_of = {
        "by_position": "position",
        "by_answer_position": "answer_position",
        "by_length": "length_bucket",
        "by_layer": "layer",
        "difference_by_answer_position": "answer_position",
    }
    paths = []
    for name, summary in summaries.items():
        for probe, part in summary.groupby("probe", sort=True):
            if probe == "attention" and name != "by_layer":
                part = _some_layers(part[part["variant"] == "image"])
            difference = name.startswith("difference_")
            title = f"{probe} probe, {name.replace('_', ' ')}"
            if difference:
                references = {(split_difference(c) or ("", "the reference"))[1] for c in part["checkpoint"]}
                title = (f"{probe} probe: each variant minus {', '.join(sorted(references))} (paired), "
                         f"{name.removeprefix('difference_').replace('_', ' ')}")  # fmt: skip
            grid = plot_curves(part, x=x_of[name], title=title, difference=difference)
            paths.append(save_figure(grid, out / f"{probe}_{name}.png"))
    return paths


def _some_layers(part: pd.DataFrame, most: int = 9) -> pd.DataFrame:
    """At most ``most`` evenly spaced layers (first and last included), to keep attention figures readable."""
    layers = sorted(part["layer"].dropna().unique())
    if len(layers) <= most:
        return part
    keep = {layers[round(i * (len(layers) - 1) / (most - 1))] for i in range(most)}
    return part[part["layer"].isin(keep)]
