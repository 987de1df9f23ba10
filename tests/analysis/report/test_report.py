"""REPORT.md's statistics and figures: the paired t-test against hand-computed values, markers defined where used,
numeric bucket order, one measure per axis, no report from an empty folder."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from analysis.probes.plots import plot_curves, x_order  # noqa: E402
from analysis.report.benchmarks import _difference_cell, benchmark_section  # noqa: E402
from analysis.report.document import write_report  # noqa: E402
from analysis.report.stats import paired_difference  # noqa: E402
from analysis.report.training import training_section  # noqa: E402
from analysis.report.training_curves import load_training_logs, plot_training_curves  # noqa: E402
from vista.errors import DataError  # noqa: E402


def scores(diffs: list[float]) -> pd.DataFrame:
    rows = []
    for seed, d in enumerate(diffs, 1):
        rows += [{"variant": "baseline", "seed": seed, "acc": 50.0 + seed}, {"variant": "vista", "seed": seed,
                 "acc": 50.0 + seed + d}]  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_t_test_matches_hand_computation():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641 with 2 df; two-sided p = 0.07418 (t table);
    # 95% interval 2 ± t_{0.975, 2} / sqrt 3 = 2 ± 4.3027 / 1.7321 = [-0.4841, 4.4841]
    diff = paired_difference(scores([1.0, 2.0, 3.0]), "acc", "vista")
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(2.0) and diff["sd"] == pytest.approx(1.0)
    assert diff["t"] == pytest.approx(2 * math.sqrt(3))
    assert diff["p"] == pytest.approx(0.07418, abs=1e-4)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((-0.4841, 4.4841), abs=1e-3)
    assert not diff["significant"]
    # the old screening rule (|mean| > 2 sd / sqrt n) would have starred this cell
    assert abs(diff["mean"]) > 2 * diff["sd"] / math.sqrt(diff["n"])
    assert _difference_cell(diff) == "2.00 ± 1.00 (p 0.07)"


def test_significant_cell_is_marked_and_one_seed_is_not_tested():
    diff = paired_difference(scores([2.0, 2.1, 1.9, 2.05]), "acc", "vista")
    assert diff["p"] < 0.001 and _difference_cell(diff).endswith("*")
    one = paired_difference(scores([5.0]), "acc", "vista")
    assert one["n"] == 1 and math.isnan(one["p"]) and _difference_cell(one) == "5.00 (n=1)"


def test_the_marker_is_defined_under_the_table():
    wide = scores([1.0, 2.0, 3.0]).rename(columns={"acc": "Colour"})
    wide["family"] = "tiny"
    lines = benchmark_section(wide[["family", "variant", "seed", "Colour"]], {})
    text = "\n".join(lines)
    assert "(p 0.07)" in text and "paired t-test" in text and "`*`: p < 0.05" in text


def test_buckets_are_ordered_by_their_numbers():
    assert x_order(pd.Series(["102-152", "153-362", "53-66", "67-101"])) == [
        "53-66",
        "67-101",
        "102-152",
        "153-362",
    ]
    summary = pd.DataFrame(
        [{"probe": "ablation", "variant": "blank", "checkpoint": c, "length_bucket": b, "mean": m, "ci_low": m - 0.1,
          "ci_high": m + 0.1, "level": 0.95}
         for c in ("baseline", "vista") for b, m in (("153-362", 0.1), ("53-66", 0.5), ("102-152", 0.2))]
    )  # fmt: skip
    grid = plot_curves(summary, x="length_bucket")
    ax = grid.axes.flat[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["53-66", "102-152", "153-362"]
    assert "[tokens]" in ax.get_xlabel() and "[nats]" in ax.get_ylabel()
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [0.5, 0.2, 0.1]  # plotted in bucket order, not string order


def test_attention_by_layer_is_a_line_over_layers():
    summary = pd.DataFrame(
        [{"probe": "attention", "variant": "image", "checkpoint": "baseline", "layer": layer, "mean": 0.1 * layer,
          "ci_low": 0.0, "ci_high": 1.0, "level": 0.95} for layer in range(4)]
    )  # fmt: skip
    grid = plot_curves(summary, x="layer")
    assert len(grid.axes.flat) == 1
    assert len(grid.axes.flat[0].get_lines()[0].get_xdata()) == 4


def test_mse_and_cosine_similarity_get_separate_panels(tmp_path):
    rows = []
    for variant, distance, value in (("vista", "l2", 2.0), ("vista-cosine", "cosine", 0.3)):
        for step in (1, 2):
            rows.append({"stage": "finetune", "variant": variant, "seed": 1, "step": step, "metric":
                         "vista_similarity", "value": value, "distance": distance})  # fmt: skip
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    plot_training_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert set(plt.get_fignums()) == before  # closed


def test_no_report_from_an_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nothing to report"):
        write_report(tmp_path)
    assert not (tmp_path / "REPORT.md").exists()


def test_theory_section_names_the_monte_carlo_method(tmp_path):
    from analysis.report.theory import theory_section

    (tmp_path / "theory").mkdir()
    profile = pd.DataFrame({"t": [1, 2], "I_vision_given_prefix": [0.05, 0.02], "H_token_given_prefix": [1.8, 1.9],
                            "I_vision_given_prefix_se": [0.001, 0.002], "I_vision_cumulative_se": [0.001, 0.003]})  # fmt: skip
    profile.to_csv(tmp_path / "theory" / "profile.csv", index=False)
    (tmp_path / "theory" / "summary.json").write_text(
        json.dumps({"method": "monte_carlo", "n_samples": 2000})
    )
    text = "\n".join(theory_section(tmp_path, metrics := {}))
    assert "Monte Carlo estimate from 2000 sampled sequences" in text and "± 0.0030" in text
    assert "exact" not in text.split("Method:")[0] and metrics["theory"]["method"] == "monte_carlo"


def test_length_trend_claims_a_fall_only_when_monotonic():
    from analysis.report.conclusions import length_trend

    falling = length_trend({"53-66": 0.5, "67-101": 0.3, "102-152": 0.3, "153-362": 0.1})
    assert "falls monotonically from 0.500 nats (53-66 tokens) to 0.100" in falling
    peaked = length_trend({"53-66": 0.253, "67-101": 0.507, "102-152": 0.079, "153-362": 0.043})
    assert "not monotonically: it peaks at 0.507 (67-101 tokens)" in peaked and "falls" not in peaked
    assert "does not fall" in length_trend({"a": 0.1, "b": 0.2})


def test_text_only_windows_are_left_out_of_the_vista_curve_and_counted(tmp_path):
    # the Trainer's log of a modality-grouped finetune: image windows and text-only ones (vista_samples = 0)
    history = [
        {
            "step": 1,
            "loss": 1.5,
            "ce_loss": 0.9,
            "vista_loss": 0.6,
            "vista_samples": 8.0,
            "vista_similarity": 1.2,
        },
        {"step": 2, "loss": 0.7, "ce_loss": 0.7, "vista_loss": 0.0, "vista_samples": 0.0},
        {
            "step": 3,
            "loss": 1.3,
            "ce_loss": 0.8,
            "vista_loss": 0.5,
            "vista_samples": 8.0,
            "vista_similarity": 1.1,
        },
        {"step": 4, "loss": 0.6, "ce_loss": 0.6, "vista_loss": 0.0, "vista_samples": 0.0},
    ]
    run = tmp_path / "results" / "runs" / "tiny__vista__seed1" / "finetune"
    run.mkdir(parents=True)
    (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    logs = load_training_logs([({"variant": "vista", "seed": 1, "stage": "finetune"}, run)])
    vista = logs[logs["metric"] == "vista_loss"]
    assert list(vista["step"]) == [1, 3] and list(vista["value"]) == [0.6, 0.5]  # no saw down to 0
    assert list(logs.loc[logs["metric"] == "ce_loss", "step"]) == [1, 2, 3, 4]  # CE keeps every window
    assert logs.attrs["text_only_windows"] == {"finetune": 2}
    lines = training_section(tmp_path / "results", tmp_path / "figures", metrics := {})
    assert (
        metrics["training_final"]["finetune"]["vista"]["vista_loss"]["mean"] == 0.5
    )  # the last image window
    assert metrics["training_text_only_windows"] == {"finetune": 2}
    assert any("2 in finetune" in line and "left out" in line for line in lines)


@pytest.mark.parametrize("probe, variant", [("swap", "posterior"), ("ablation", "blank"), ("kl", "blank"),
                                            ("attention", "image"), ("alignment", "l2")])  # fmt: skip
def test_axis_labels_fit_their_panel(probe, variant):
    """The swap probe's y-label was taller than its panel and ran into the figure's title."""
    summary = pd.DataFrame(
        [{"probe": probe, "variant": variant, "checkpoint": c, "length_bucket": b, "mean": 0.1, "ci_low": 0.0,
          "ci_high": 0.2, "level": 0.95} for c in ("baseline", "vista") for b in ("53-66", "67-138")]
    )  # fmt: skip
    grid = plot_curves(summary, x="length_bucket", title="probe, by length")
    renderer = grid.figure.canvas.get_renderer()
    for ax in grid.axes.flat:
        label, panel = ax.yaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert label.height <= panel.height, (probe, ax.get_ylabel())
