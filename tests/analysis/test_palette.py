"""One colour per variant in every figure: whatever order or subset of variants a figure passes, each variant the
project defines has its own fixed colour, and every other name a colour of its own too (the ablation has 11)."""

from __future__ import annotations

import sys
from pathlib import Path

import seaborn as sns

from analysis.palette import VARIANT_COLOURS, variant_palette

ROOT = Path(__file__).resolve().parents[2]
ABLATION = ["baseline", "vista", "l2t", "viral", *(f"vista-c{c}" for c in (0.03, 0.1, 0.3)), "vista-uniform",
            "vista-anchor-mean", "vista-targets-supervised", "vista-detach"]  # fmt: skip


def test_colours_are_distinct_for_eleven_variants():
    names = [
        "baseline",
        "vista",
        "l2t",
        "viral",
        *(f"vista-c{c}" for c in (0.03, 0.1, 0.3)),
        "a",
        "b",
        "c",
        "d",
    ]
    palette = variant_palette(names)
    assert list(palette) == names and len(set(palette.values())) == 11
    assert (
        len(set(sns.color_palette(n_colors=11))) == 10
    )  # what the figures did before: two variants shared one
    assert len(set(variant_palette([*ABLATION, "vista-cosine", "a", "b"]).values())) == 14


def test_a_variant_keeps_its_colour_whatever_order_or_subset_a_figure_passes():
    """The training curves passed (baseline, vista-cosine, vista), the length effect (baseline, vista,
    vista-cosine): vista was green in one figure and orange in the other."""
    calls = [
        ["baseline", "vista", "vista-cosine"],
        ["baseline", "vista-cosine", "vista"],
        ["vista-cosine", "vista"],
        ["vista"],
        sorted(ABLATION),
        ABLATION,
        [*reversed(ABLATION), "vista-cosine", "my-variant"],
        ["my-variant", "vista"],
        ["other", "my-variant"],
    ]
    seen: dict[str, tuple] = {}
    for variants in calls:
        palette = variant_palette(variants)
        assert list(palette) == list(dict.fromkeys(variants))
        for name, colour in palette.items():
            assert seen.setdefault(name, colour) == colour, (name, variants)


def test_the_three_main_variants_keep_the_default_colours_in_first_seen_order():
    palette = variant_palette(["vista", "baseline", "vista", "vista-cosine"])
    assert list(palette) == ["vista", "baseline", "vista-cosine"]
    blue, orange, green = sns.color_palette("tab10", 3)
    assert palette == {"baseline": blue, "vista": orange, "vista-cosine": green}


def test_every_variant_a_profile_trains_has_its_own_fixed_colour():
    sys.path.insert(0, str(ROOT / "reproduce"))
    from pipeline import PROFILES, read_profile

    names = set()
    for path in PROFILES.glob("*.yaml"):
        profile = read_profile(path.stem)
        names |= set(profile.get("variants") or []) | set(profile.get("ablation") or {})
    assert {"baseline", "vista", "vista-cosine", *ABLATION} <= names
    assert names <= set(VARIANT_COLOURS), sorted(names - set(VARIANT_COLOURS))
    assert len(set(VARIANT_COLOURS.values())) == len(VARIANT_COLOURS)


def test_probe_figures_draw_each_checkpoint_in_its_variants_colour():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt
    import pandas as pd

    from analysis.probes.plots import plot_curves

    summary = pd.DataFrame(
        [{"probe": "ablation", "variant": "blank", "checkpoint": c, "position": p, "mean": 0.1, "ci_low": 0.0,
          "ci_high": 0.2, "level": 0.95} for c in ("vista-cosine", "vista") for p in range(3)]
    )  # fmt: skip
    grid = plot_curves(summary, x="position")
    lines = grid.axes.flat[0].get_lines()[:2]  # then the zero line
    colours = [mcolors.to_rgb(line.get_color()) for line in lines]
    plt.close(grid.figure)
    assert colours == [VARIANT_COLOURS["vista-cosine"], VARIANT_COLOURS["vista"]]
