"""The one colour per training variant that every figure uses (training curves, diagnostics, length effect, probes).

A variant's colour depends on its name only, never on which other variants a figure shows or in which order: each
variant a profile trains (``reproduce/configs/profiles/*.yaml``) has a fixed colour in :data:`VARIANT_COLOURS`, and
any other name gets a hue derived from the name itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import seaborn as sns

from vista.presets import VARIANTS as TRAINING_VARIANTS

_TAB10 = sns.color_palette("tab10")  # seaborn's default palette (matplotlib's tab10)
_TAB20_LIGHT = sns.color_palette("tab20")[1::2]  # tab10's hues, lighter: two more colours for the 12 variants

# the training variants (vista.presets, the colours the main study's figures always had), then the ablation
# profile's arms (reproduce/configs/profiles/tiny-ablation.yaml; tests/analysis/test_palette.py keeps them in step)
ABLATION_ARMS = ("l2t", "viral", "vista-c0.03", "vista-c0.1", "vista-c0.3", "vista-uniform", "vista-anchor-mean",
                 "vista-targets-supervised", "vista-detach")  # fmt: skip
VARIANTS = (*TRAINING_VARIANTS, *ABLATION_ARMS)
VARIANT_COLOURS: dict[str, tuple[float, float, float]] = dict(
    zip(VARIANTS, [*_TAB10, *_TAB20_LIGHT[:2]], strict=True)
)


def name_colour(name: str) -> tuple[float, float, float]:
    """An RGB colour (0-1) derived from ``name`` alone: a ``husl`` hue from its SHA-256 (stable across processes)."""
    hue = int.from_bytes(hashlib.sha256(str(name).encode()).digest()[:4], "big") / 2**32
    return tuple(sns.husl_palette(1, h=hue)[0])


def variant_palette(variants: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """RGB colours (0-1) for ``variants``, keyed in first-seen order: the fixed :data:`VARIANT_COLOURS` colour of a
    variant the project defines, :func:`name_colour` for any other name; so the same variant has the same colour in
    every figure, whatever order or subset of variants the figure passes."""
    names = dict.fromkeys(variants)
    return {name: VARIANT_COLOURS.get(name) or name_colour(name) for name in names}
