"""The ablation section's conclusions and collapse signature follow the stated thresholds on planted numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ablation_stats import planted

from analysis.report.ablation import collapse_signature, conclusions, long_scores
from analysis.report.ablation_stats import ablation_table, paired_comparisons


def test_conclusions_follow_the_thresholds():
    table = paired_comparisons(planted(8), n_resamples=1000)
    text = "\n".join(conclusions(table, pd.DataFrame()))
    assert "**good** vs baseline, mean of benchmarks: supported gain of +0.05" in text
    assert "**null** vs baseline, mean of benchmarks: no difference detected" in text
    few = "\n".join(conclusions(paired_comparisons(planted(3), n_resamples=500), pd.DataFrame()))
    assert "only 3 paired seeds: no claim either way" in few


def test_collapse_signature_counts_seeds_over_both_thresholds():
    rows = []
    for seed in range(1, 6):
        for variant, cos, erank in (("baseline", 0.1, 40.0), ("vista", 0.5, 20.0), ("mild", 0.15, 39.0)):
            rows += [{"variant": variant, "seed": seed, "step": 10, "metric": "diag_hv_target_cos", "value": cos},
                     {"variant": variant, "seed": seed, "step": 10, "metric": "diag_text_erank", "value": erank}]  # fmt: skip
    collapse = collapse_signature(pd.DataFrame(rows), "baseline").set_index("variant")
    assert collapse.loc["vista", "collapse_seeds"] == 5 and collapse.loc["mild", "collapse_seeds"] == 0
    table = paired_comparisons(planted(8), n_resamples=200)
    text = "\n".join(conclusions(table, collapse.reset_index()))
    assert "**vista**: collapse signature in 5/5 seeds" in text and "supported for this variant" in text
    assert "**mild**: collapse signature in 0/5 seeds" in text and "not supported by these runs" in text
    few = "\n".join(conclusions(table, collapse_signature(pd.DataFrame(rows[:12]), "baseline")))
    assert "**vista**: collapse signature in 2/2 seeds" in few and "only 2 paired seeds: no claim" in few


def test_long_scores_drops_the_mean_column():
    wide = pd.DataFrame({"family": ["tiny"], "variant": ["vista"], "seed": [1], "colour": [50.0],
                         "count": [None], "mean of benchmarks": [50.0]})  # fmt: skip
    assert long_scores(wide).to_dict(orient="records") == [
        {"variant": "vista", "seed": 1, "benchmark": "colour", "score": 50.0}
    ]


def test_collapse_halves_and_definitions_that_differ_from_the_baseline():
    """A variant whose diagnostics are over another target set is not compared; a variant that only pulls h_v
    toward the mean target is told apart from one that shows the whole signature."""
    rows = []
    for seed in range(1, 6):
        for variant, cos, erank, targets in (("baseline", 0.1, 40.0, "text"), ("vista", 0.8, 40.0, "text"),
                                             ("supervised", 0.8, 20.0, "supervised")):  # fmt: skip
            definition = f"anchor=last targets={targets}"
            rows += [{"variant": variant, "seed": seed, "step": 10, "metric": metric, "value": value,
                      "definition": definition}
                     for metric, value in (("diag_hv_target_cos", cos), ("diag_text_erank", erank))]  # fmt: skip
    collapse = collapse_signature(pd.DataFrame(rows), "baseline")
    by = collapse.set_index("variant")
    assert by.loc["vista", "pulled_seeds"] == 5 and by.loc["vista", "rank_loss_seeds"] == 0
    assert (
        by.loc["vista", "definition"] == by.loc["vista", "baseline_definition"] == "anchor=last targets=text"
    )
    assert by.loc["supervised", "definition"] == "anchor=last targets=supervised"
    text = "\n".join(conclusions(paired_comparisons(planted(8), n_resamples=200), collapse))
    assert "Half of it holds: h_v is pulled toward the mean target in 5/5 seeds" in text
    assert ("**supervised**: collapse signature in 5/5 seeds" in text and "not comparable with the baseline" in text
            and "(the baseline's: anchor=last targets=text)" in text)  # fmt: skip


def constant_shift(shift: float, seeds: int = 5) -> pd.DataFrame:
    """A variant that is the baseline plus ``shift`` in every seed and benchmark (61.71 + 5.0 - 61.71 is
    5.000000000000007: the differences carry rounding noise)."""
    rows = []
    for seed in range(seeds):
        for benchmark, base in (
            ("colour", (52.37, 17.91, 89.33, 61.71, 33.13)[seed % 5]),
            ("count", 47.33 + seed),
        ):
            rows += [("baseline", seed, benchmark, base), ("const", seed, benchmark, base + shift)]
    return pd.DataFrame(rows, columns=["variant", "seed", "benchmark", "score"])


def test_a_constant_difference_is_stated_not_called_no_difference():
    """baseline + 5.0 in every seed was reported as "no difference detected (... 95% CI [+5.000, +5.000], Holm p =
    nan)"."""
    table = paired_comparisons(constant_shift(5.0), n_resamples=200)
    overall = table[table.benchmark == "overall"].iloc[0]
    assert overall.sd == 0 and np.isnan(overall.p) and overall.mean_diff == pytest.approx(5.0)
    text = "\n".join(conclusions(table, pd.DataFrame()))
    line = next(line for line in text.splitlines() if "**const**" in line)
    assert "no difference detected" not in line and "nan" not in line
    assert "constant difference of +5.000 in every one of the 5 paired seeds (sd = 0)" in line
    assert "t-test is undefined" in line
    assert "same in every seed, sd = 0: no test" in ablation_table(table)
    same = "\n".join(conclusions(paired_comparisons(constant_shift(0.0), n_resamples=200), pd.DataFrame()))
    assert "identical scores in all 5 paired seeds (difference 0, sd = 0)" in same


def test_rows_of_an_older_csv_without_sd_are_recognised():
    table = paired_comparisons(constant_shift(5.0), n_resamples=200).drop(columns="sd")
    assert "constant difference of +5.000" in "\n".join(conclusions(table, pd.DataFrame()))
