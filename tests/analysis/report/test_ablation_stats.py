"""Paired statistics: Holm against hand-computed values, t-test and bootstrap against scipy on planted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.report.ablation_stats import OVERALL, ablation_table, forest_plot, holm, paired_comparisons


def test_holm_matches_hand_computed_values():
    # sorted p: 0.01, 0.02, 0.03, 0.04 (m=4) -> 0.04, 0.06, 0.06 (running max of 0.06), 0.06
    np.testing.assert_allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    # capped at 1; a NaN stays NaN and is not counted (m=2): 0.3*2=0.6, max(0.6, 0.7)=0.7
    np.testing.assert_allclose(holm([0.7, np.nan, 0.3]), [0.7, np.nan, 0.6])
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])


def planted(seeds: int = 8) -> pd.DataFrame:
    """baseline ~ 0.5; 'good' +0.05 on both benchmarks, 'null' +0 (plus per-seed noise)."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(seeds):
        base = {b: 0.5 + rng.normal(0, 0.01) for b in ("colour", "count")}
        for variant, effect in (("baseline", 0.0), ("good", 0.05), ("null", 0.0)):
            for benchmark, value in base.items():
                noise = 0.0 if variant == "baseline" else rng.normal(0, 0.01)
                rows.append((variant, seed, benchmark, value + effect + noise))
    return pd.DataFrame(rows, columns=["variant", "seed", "benchmark", "score"])


def test_paired_comparisons_match_scipy_on_planted_data(tmp_path):
    scores = planted()
    table = paired_comparisons(scores, n_resamples=2000)
    assert len(table) == 2 * 3  # 2 variants x (2 benchmarks + overall)
    wide = scores.pivot_table(index="seed", columns=["variant", "benchmark"], values="score")
    for variant in ("good", "null"):
        for benchmark in ("colour", "count"):
            row = table[(table.variant == variant) & (table.benchmark == benchmark)].iloc[0]
            test = stats.ttest_rel(wide[variant][benchmark], wide["baseline"][benchmark])
            assert row.p == pytest.approx(test.pvalue, rel=1e-9)
            assert row.t == pytest.approx(test.statistic, rel=1e-9)
            assert row.ci_low < row.mean_diff < row.ci_high
        overall = table[(table.variant == variant) & (table.benchmark == OVERALL)].iloc[0]
        d = wide[variant].mean(axis=1) - wide["baseline"].mean(axis=1)
        assert overall.mean_diff == pytest.approx(d.mean(), rel=1e-12)
        assert overall.p == pytest.approx(stats.ttest_rel(d, 0 * d).pvalue, rel=1e-9)
    good = table[(table.variant == "good") & (table.benchmark == OVERALL)].iloc[0]
    null = table[(table.variant == "null") & (table.benchmark == OVERALL)].iloc[0]
    assert good.ci_low > 0.03 and good.ci_high < 0.07 and good.p_holm < 0.01  # the planted +0.05 is found
    assert null.ci_low < 0 < null.ci_high and null.p_holm > 0.05
    per_benchmark = table[table.benchmark == "colour"]
    np.testing.assert_allclose(per_benchmark.p_holm, holm(per_benchmark.p.to_numpy()))
    markdown = ablation_table(table)
    assert markdown.splitlines()[0] == "| variant | colour | count | overall |"
    assert "| good | +0.05" in markdown
    assert forest_plot(table, tmp_path / "forest.png").stat().st_size > 1000


def test_bad_tables_are_clear_errors():
    scores = planted(2)
    with pytest.raises(ValueError, match="baseline 'vista' not among"):
        paired_comparisons(scores, baseline="vista")
    with pytest.raises(ValueError, match="two scores for variant=good seed=0 benchmark=colour"):
        paired_comparisons(pd.concat([scores, scores[scores.variant == "good"].head(1)]))
    one_seed = paired_comparisons(planted(1))
    assert one_seed.seeds.eq(1).all() and one_seed.p.isna().all()  # reported, not dropped
