"""The one colour per training variant that every figure uses (training curves, diagnostics, length effect)."""

from __future__ import annotations

from collections.abc import Iterable

import seaborn as sns

DEFAULT_COLOURS = 10  # seaborn's default palette (matplotlib's tab10); asking it for more repeats colours


def variant_palette(variants: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """Distinct RGB colours (0-1) for ``variants`` in first-seen order: seaborn's default palette up to
    :data:`DEFAULT_COLOURS` variants, evenly spaced ``husl`` hues beyond (the ablation profile has 11)."""
    names = list(dict.fromkeys(variants))
    if len(names) <= DEFAULT_COLOURS:
        colours = sns.color_palette(n_colors=len(names))
    else:
        colours = sns.color_palette("husl", len(names))
    return dict(zip(names, colours))
