"""MI between the image state and each text position: one estimate per (target, position, method) across the
samples that reach the position, and its figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.mi.estimate import estimate_mi
from analysis.mi.states import SampleStates

TARGETS = ("e_t", "h_t")


def mi_by_position(
    states: list[SampleStates],
    *,
    targets: tuple[str, ...] = TARGETS,
    methods: tuple[str, ...] = ("ksg", "gaussian"),
    max_position: int | None = None,
    min_samples: int = 20,
    positions: str = "after-image",
    **options: Any,
) -> pd.DataFrame:
    """One row per (target, position, method): ``I(h_v; target_t)`` across the samples that reach position t.

    Columns: ``target, position, method, mi, stderr, n_samples, frac_supervised, skipped`` plus estimator
    details. ``position`` is 1-based among the sample's text tokens after the image (``positions="after-image"``,
    the default: earlier tokens cannot see the image) or among all its text tokens (``"all"``, the VISTA loss's
    indexing). Failed or under-populated cells have ``mi`` NaN and the reason in ``skipped``.
    """
    if positions not in ("after-image", "all"):
        raise ValueError(f"positions={positions!r}; expected 'after-image' or 'all'")
    offset = {id(s): (s.before_image if positions == "after-image" else 0) for s in states}
    longest = max((s.e_t.shape[0] - offset[id(s)] for s in states), default=0)
    last = longest if max_position is None else min(longest, max_position)
    rows = []
    for target in targets:
        for t in tqdm(range(1, last + 1), desc=f"MI h_v vs {target}", unit="pos"):
            reach = [s for s in states if s.e_t.shape[0] - offset[id(s)] >= t]
            base = {
                "target": target,
                "position": t,
                "n_samples": len(reach),
                "frac_supervised": float(np.mean([s.supervised[offset[id(s)] + t - 1] for s in reach]))
                if reach
                else np.nan,
            }
            x = np.stack([s.h_v for s in reach]) if reach else None
            y = np.stack([getattr(s, target)[offset[id(s)] + t - 1] for s in reach]) if reach else None
            for method in methods:
                rows.append(base | {"method": method} | _one_estimate(x, y, method, min_samples, options))
    return pd.DataFrame(rows)


def _one_estimate(
    x: np.ndarray | None, y: np.ndarray | None, method: str, min_samples: int, options: dict
) -> dict:
    if x is None or x.shape[0] < min_samples:
        n = 0 if x is None else x.shape[0]
        return {"mi": np.nan, "skipped": f"{n} samples < min_samples={min_samples}"}
    try:
        est = estimate_mi(x, y, method, **options_for(method, options))
    except ValueError as err:
        return {"mi": np.nan, "skipped": str(err)}
    row = est.as_row()
    row.pop("method")
    return row | {"skipped": ""}


def options_for(method: str, options: dict) -> dict:
    """Keep only the options ``method`` understands (the CLI passes one set to every method)."""
    common = {"standardize", "pca_dim", "jitter", "seed"}
    own = {
        "ksg": {"k", "workers"},
        "gaussian": {"bias_correct", "ridge"},
    }.get(method, {"critic", "steps", "batch_size", "lr", "eval_fraction", "clip", "hidden", "threads"})
    return {k: v for k, v in options.items() if k in common | own and v is not None}


BAND_Z = 1.96
"""The figure's band: estimate +- ``BAND_Z`` standard errors, an approximate 95% interval (as the report's
above/below-zero counts and notebook 03)."""


def plot_mi_by_position(table: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """MI (nats) versus text position, one panel per target, one line per method, with +-1.96 stderr bands (an
    approximate 95% interval; the stderr is the estimator's approximation, see :class:`MIEstimate`).

    ``table``: :func:`mi_by_position`'s rows. ``title``: what the figure shows (the run / checkpoint), put in the
    figure's title. Writes ``path`` (PNG) and returns it.
    """
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], targets):
        for method, sub in table[table["target"] == target].groupby("method", sort=False):
            sub = sub.sort_values("position")
            ax.plot(sub["position"], sub["mi"], marker="o", ms=3, label=method)
            if "stderr" in sub and sub["stderr"].notna().any():
                lo, hi = sub["mi"] - BAND_Z * sub["stderr"], sub["mi"] + BAND_Z * sub["stderr"]
                ax.fill_between(sub["position"], lo, hi, alpha=0.2)
        ax.set(title=f"I(h_v; {target})", xlabel="text position t", ylabel="MI (nats)")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend()
    heading = f"{title}: " if title else ""
    fig.suptitle(f"{heading}MI per text position (bands: approx. 95% interval, estimate +- {BAND_Z} SE)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
