"""Figures of probe curves: one panel per probe variant, one line (with its CI band) per checkpoint.

Every axis names its quantity and unit; text-length buckets (``"53-94"``) are ordered by their numbers, never as
strings; attention by layer draws layers on the x axis (one panel per variant); the band is the 95% bootstrap
confidence interval of the mean over samples (:func:`analysis.probes.aggregate.curve`), as each figure's caption
says.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from analysis.palette import variant_palette

# y-axis quantity and unit per probe (alignment: per variant, its two variants are different measures)
YLABELS = {
    # at most ~30 characters a line: a longer label outgrows a 2.8-inch panel and runs into the suptitle
    "ablation": "log p(token | image)\n− log p(token | ablated)\n[nats]",
    "swap": "log p(token | image)\n− log mean_k p(token | image_k)\n[nats]",
    "kl": "KL(p(· | image) ‖\np(· | counterfactual))\n[nats]",
    "attention": "attention mass on the tokens\n[fraction of 1]",
    "alignment": "h_v vs e_t",
    ("alignment", "l2"): "(1/d)‖h_v − e_t‖²\n[hidden units²]",
    ("alignment", "cosine"): "cos(h_v, e_t)\n[unitless]",
}
XLABELS = {
    "position": "text position t [tokens]",
    "answer_position": "position within the answer [tokens]",
    "length_bucket": "text length [tokens]",
    "layer": "decoder layer",
}


def bucket_start(label: object) -> float:
    """The number a bucket label starts with (``"102-152"`` -> 102.0); NaN for labels without one."""
    head = str(label).split("-")[0].strip()
    try:
        return float(head)
    except ValueError:
        return float("nan")


def x_order(values: pd.Series) -> list:
    """The x values in numeric order (bucket labels by their first number)."""
    unique = list(dict.fromkeys(values.dropna()))
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in unique):
        return sorted(unique)
    return sorted(unique, key=lambda v: (bucket_start(v), str(v)))


def _band(data: pd.DataFrame, x: str, order: list | None = None, color=None, label=None, **_: object) -> None:
    if order is None:  # numeric axis
        data = data.sort_values(x)
        xs = data[x].to_numpy(dtype=float)
    else:  # categorical axis: plot at fixed slots so every line shares the numeric bucket order
        data = data.assign(_slot=data[x].map({v: i for i, v in enumerate(order)})).sort_values("_slot")
        xs = data["_slot"].to_numpy(dtype=float)
    plt.plot(xs, data["mean"], color=color, label=label, marker="o" if len(data) < 12 else None, ms=3)
    plt.fill_between(xs, data["ci_low"], data["ci_high"], color=color, alpha=0.2, linewidth=0)


def _ylabel(probe: str, variant: str) -> str:
    if probe == "attention":
        return f"attention mass on {variant} token{'' if variant == 'first' else 's'}\n[fraction of 1]"
    return YLABELS.get((probe, variant), YLABELS.get(probe, "value"))


def plot_curves(
    summary: pd.DataFrame,
    x: str = "position",
    hue: str = "checkpoint",
    title: str | None = None,
    col_wrap: int = 3,
    height: float = 2.8,
) -> sns.FacetGrid:
    """Lines with CI bands from :func:`analysis.probes.aggregate.curve` output.

    Panels: one per (probe, variant[, layer]) (with ``x="layer"``, one per (probe, variant): layers are the x
    axis); lines: one per ``hue`` value (e.g. baseline vs VISTA). Axis labels name quantity and unit.
    """
    data = summary.copy()
    panel = data["probe"].astype(str) + ": " + data["variant"].astype(str)
    if x != "layer" and "layer" in data and data["layer"].notna().any():
        panel = panel + " (layer " + data["layer"].astype("Int64").astype(str) + ")"
    data["panel"] = panel
    if hue not in data:
        data[hue] = "model"
    numeric = pd.api.types.is_numeric_dtype(data[x]) and not isinstance(data[x].dtype, pd.CategoricalDtype)
    order = None if numeric else x_order(data[x].astype(str))
    if order is not None:
        data[x] = data[x].astype(str)
    grid = sns.FacetGrid(
        data,
        col="panel",
        hue=hue,
        palette=variant_palette(data[hue]) if hue == "checkpoint" else None,  # checkpoint: a variant's name
        col_wrap=min(col_wrap, data["panel"].nunique()),
        height=height,
        aspect=1.3,
        sharey=False,
        sharex=False,
    )
    grid.map_dataframe(_band, x=x, order=order)
    grid.set_titles("{col_name}")
    level = data["level"].iloc[0] if "level" in data else 0.95
    for name, ax in grid.axes_dict.items():
        probe, variant = name.split(": ", 1)
        ax.set_ylabel(_ylabel(probe, variant.split(" (layer")[0]), fontsize=8)
        ax.set_xlabel(XLABELS.get(x, x.replace("_", " ")), fontsize=8)
        ax.axhline(0.0, color="0.7", linewidth=0.8, zorder=0)
        if order is not None:
            ax.set_xticks(range(len(order)), order, rotation=30)
        elif x == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if data[hue].nunique() > 1:
        grid.add_legend(title=hue)
    grid.figure.subplots_adjust(wspace=0.5, hspace=0.6)
    caption = f"lines: mean over samples; bands: {level:.0%} bootstrap CI of the mean"
    grid.figure.suptitle(f"{title}\n{caption}" if title else caption, y=1.12, fontsize=10)
    return grid


def save_figure(grid: sns.FacetGrid, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure (PNG) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(grid.figure)
    return path
