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

# y-axis quantity and unit per probe (alignment and swap: per variant, their variants are different measures; the
# swap formulas are analysis.probes.swap's, with p_k = p(x_t | image_k, x_<t), k = 0 the own image, K contrasts)
YLABELS = {
    # at most ~30 characters a line: a longer label outgrows a 2.8-inch panel and runs into the suptitle
    "ablation": "log p(token | image)\n− log p(token | ablated)\n[nats]",
    "swap": "image-swap contrast\nof the gold token [nats]",
    ("swap", "uniform"): (
        "log p_0 − log mean_k p_k\n(mean over k = 0..K)\np_k = p(x_t | image_k, x_<t)\nk = 0: own image [nats]"
    ),
    ("swap", "posterior"): (
        "log p_0 − log[p_0/(K+1)\n+ K/(K+1)·Σ w_k p_k/Σ w_k]\np_k = p(x_t | image_k, x_<t)\n"
        "w_k = p(answer x_<t | image_k)\nk = 0: own image [nats]"
    ),
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


def _ylabel(probe: str, variant: str, difference: str | None = None) -> str:
    """The y-label of a (probe, variant) panel; of a difference figure: ``"(variant − baseline) of"`` + that label."""
    if probe == "attention":
        label = f"attention mass on {variant} token{'' if variant == 'first' else 's'}\n[fraction of 1]"
    else:
        label = YLABELS.get((probe, variant), YLABELS.get(probe, "value"))
    return f"({difference}) of\n{label}" if difference else label


# analysis.probes.aggregate.paired_difference names its curves "<checkpoint> - <reference>"
DIFFERENCE_SEP = " - "


def split_difference(label: object) -> tuple[str, str] | None:
    """``"vista - baseline"`` -> ``("vista", "baseline")``; None for a label that is not a paired difference."""
    name, sep, reference = str(label).rpartition(DIFFERENCE_SEP)
    return (name, reference) if sep and name and reference else None


def _difference_legend(labels: pd.Series) -> tuple[dict, str]:
    """Colours (each difference in its variant's colour) and the legend title of a paired-difference figure."""
    palette, references = {}, set()
    for label in dict.fromkeys(labels):
        name, reference = split_difference(label) or (str(label), "")
        palette[label] = variant_palette([name])[name]
        references.add(reference)
    reference = references.pop() if len(references) == 1 else ""
    return palette, f"variant − {reference}" if reference else "difference"


def plot_curves(
    summary: pd.DataFrame,
    x: str = "position",
    hue: str = "checkpoint",
    title: str | None = None,
    col_wrap: int = 3,
    height: float = 2.8,
    difference: bool = False,
) -> sns.FacetGrid:
    """Lines with CI bands from :func:`analysis.probes.aggregate.curve` output.

    Panels: one per (probe, variant[, layer]) (with ``x="layer"``, one per (probe, variant): layers are the x
    axis); lines: one per ``hue`` value (e.g. baseline vs VISTA). Axis labels name quantity and unit.
    ``difference=True``: the curves are paired differences (:func:`analysis.probes.aggregate.paired_difference`,
    ``hue`` values ``"<variant> - <reference>"``): each y-label reads ``(variant − <reference>) of <quantity>``, the
    legend is titled ``variant − <reference>`` and each line has its variant's colour.
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
    palette = variant_palette(data[hue]) if hue == "checkpoint" else None  # checkpoint: a variant's name
    legend_title = hue
    if difference:  # "vista - baseline" -> "vista" in its colour, under the title "variant − baseline"
        palette, legend_title = _difference_legend(data[hue])
        names = {label: (split_difference(label) or (str(label),))[0] for label in palette}
        palette = {names[label]: colour for label, colour in palette.items()}
        data[hue] = data[hue].map(names)
    grid = sns.FacetGrid(
        data,
        col="panel",
        hue=hue,
        palette=palette,
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
        ax.set_ylabel(
            _ylabel(probe, variant.split(" (layer")[0], legend_title if difference else None), fontsize=8
        )
        ax.set_xlabel(XLABELS.get(x, x.replace("_", " ")), fontsize=8)
        ax.axhline(0.0, color="0.7", linewidth=0.8, zorder=0)
        if order is not None:
            ax.set_xticks(range(len(order)), order, rotation=30)
        elif x == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if data[hue].nunique() > 1 or difference:
        grid.add_legend(title=legend_title)
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
