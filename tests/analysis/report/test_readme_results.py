"""The README's ablation block is rendered from an ablation run's numbers, and the committed block matches the
committed reference numbers (reproduce/reference/tiny-ablation/)."""

from __future__ import annotations

import pandas as pd
import pytest
from test_ablation_stats import planted

from analysis.report import readme_results as rr
from analysis.report.ablation import COLLAPSE_COLUMNS, COLLAPSE_FILE, STATS_FILE
from analysis.report.ablation_stats import paired_comparisons


def _results(tmp_path):
    paired_comparisons(planted(8), n_resamples=500).to_csv(tmp_path / STATS_FILE, index=False)
    collapse = [{"variant": "good", "seeds": 8, "collapse_seeds": 6, "median_d_hv_target_cos": 0.3,
                 "median_erank_ratio": 0.5, "pulled_seeds": 6, "rank_loss_seeds": 6, "definition": "",
                 "baseline_definition": ""}]  # fmt: skip
    pd.DataFrame(collapse, columns=COLLAPSE_COLUMNS).to_csv(tmp_path / COLLAPSE_FILE, index=False)
    summary = [{"measure": m, "variant": v, "words": n, "mean": mean, "ci_low": mean - 1, "ci_high": mean + 1,
                "docs": 20, "seeds": 8, "n_missing": 0}
               for m in ("accuracy", "contribution") for v in ("baseline", "good")
               for n, mean in ((0, 60.0), (100, 50.0), (300, 40.0))]  # fmt: skip
    (tmp_path / "length_effect").mkdir()
    pd.DataFrame(summary).to_csv(tmp_path / "length_effect" / "summary.csv", index=False)
    return tmp_path


def test_block_is_rendered_from_the_numbers(tmp_path):
    block = rr.render(_results(tmp_path))
    assert block.startswith(rr.BEGIN) and block.endswith(rr.END)
    assert "| good | 8 | +0.05" in block  # the planted +0.05 gain of paired_comparisons' test data
    assert "**good** vs baseline, mean of benchmarks: supported gain" in block
    assert "**good**: collapse signature in 6/8 seeds" in block and "supported for this variant" in block
    assert "| baseline | 60.0 [59.0, 61.0] | 40.0 [39.0, 41.0] | 60.00 [59.00, 61.00] | 40.00" in block
    readme = f"intro\n{rr.BEGIN}\nold numbers\n{rr.END}\noutro\n"
    assert rr.replace_block(readme, block) == f"intro\n{block}\noutro\n"
    with pytest.raises(ValueError, match="ablation-results:begin"):
        rr.replace_block("no markers", block)


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=STATS_FILE):
        rr.render(tmp_path)


def test_cli_check_and_update(tmp_path):
    results, readme = _results(tmp_path), tmp_path / "README.md"
    readme.write_text(f"# x\n{rr.BEGIN}\n{rr.END}\n")
    assert rr.main(["--results", str(results), "--readme", str(readme), "--check"]) == 1
    assert rr.main(["--results", str(results), "--readme", str(readme)]) == 0
    assert rr.main(["--results", str(results), "--readme", str(readme), "--check"]) == 0
    assert rr.main(["--results", str(tmp_path / "none"), "--readme", str(readme)]) == 2


def test_readme_block_matches_the_reference_numbers():
    reference = rr.reference_folder()
    readme = (rr.REPO / "README.md").read_text()
    assert readme.count(rr.BEGIN) == 1, "README.md lost its generated ablation block"
    assert rr.replace_block(readme, rr.render(reference)) == readme, (
        "README's ablation block differs from reproduce/reference/tiny-ablation: regenerate it with "
        "python -m analysis.report.readme_results --results <run> --save-reference"
    )
