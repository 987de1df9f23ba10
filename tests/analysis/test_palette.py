"""Every variant gets its own colour, also beyond the default palette's ten (the ablation profile has 11)."""

from __future__ import annotations

import seaborn as sns

from analysis.palette import variant_palette


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


def test_up_to_ten_variants_keep_the_default_colours_and_first_seen_order():
    palette = variant_palette(["vista", "baseline", "vista"])
    assert list(palette) == ["vista", "baseline"]
    assert list(palette.values()) == sns.color_palette(n_colors=2)
