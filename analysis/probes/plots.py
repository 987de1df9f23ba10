"""Seaborn figures of probe curves: one panel per probe variant, one line (with its CI band) per checkpoint."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

YLABELS = {
    "ablation": "log p(image) - log p(ablated) [nats]",
    "swap": "swap contrast [nats]",
    "kl": "KL(with image || counterfactual) [nats]",
    "attention": "attention mass",
    "alignment": "h_v vs e_t",
}


def _band(data: pd.DataFrame, x: str, color=None, label=None, **_: object) -> None:
    data = data.sort_values(x)
    xs = data[x].astype(str) if isinstance(data[x].dtype, pd.CategoricalDtype) else data[x]
    plt.plot(xs, data["mean"], color=color, label=label, marker="o" if len(data) < 12 else None, ms=3)
    plt.fill_between(xs, data["ci_low"], data["ci_high"], color=color, alpha=0.2, linewidth=0)


def plot_curves(
    summary: pd.DataFrame,
    x: str = "position",
    hue: str = "checkpoint",
    title: str | None = None,
    col_wrap: int = 3,
    height: float = 2.8,
) -> sns.FacetGrid:
    """Lines with CI bands from :func:`analysis.probes.aggregate.curve` output.

    Panels: one per (probe, variant[, layer]); lines: one per ``hue`` value (e.g. baseline vs VISTA).
    """
    data = summary.copy()
    panel = data["probe"].astype(str) + ": " + data["variant"].astype(str)
    if "layer" in data and data["layer"].notna().any():
        panel = panel + " (layer " + data["layer"].astype("Int64").astype(str) + ")"
    data["panel"] = panel
    if hue not in data:
        data[hue] = "model"
    grid = sns.FacetGrid(
        data,
        col="panel",
        hue=hue,
        col_wrap=min(col_wrap, data["panel"].nunique()),
        height=height,
        aspect=1.3,
        sharey=False,
    )
    grid.map_dataframe(_band, x=x)
    grid.set_titles("{col_name}")
    grid.set_axis_labels(x.replace("_", " "), "mean [95% CI]" if data["level"].iloc[0] == 0.95 else "mean")
    for ax in grid.axes.flat:
        ax.axhline(0.0, color="0.7", linewidth=0.8, zorder=0)
        if isinstance(summary[x].dtype, pd.CategoricalDtype):
            ax.tick_params(axis="x", labelrotation=30)
    if data[hue].nunique() > 1:
        grid.add_legend(title=hue)
    if title:
        grid.figure.suptitle(title, y=1.02)
    return grid


def save_figure(grid: sns.FacetGrid, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure (PNG) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(grid.figure)
    return path
