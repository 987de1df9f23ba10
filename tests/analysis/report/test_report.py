"""REPORT.md's statistics and figures: the paired t-test against hand-computed values, markers defined where used,
numeric bucket order, one measure per axis, no report from an empty folder."""

from __future__ import annotations

import json
import math
import re

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
    assert _difference_cell(diff) == "2.00 ± 1.00 (p 0.074)"


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
    assert "(p 0.074)" in text and "paired t-test" in text and "`*`: p < 0.05" in text


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
    assert (
        "not monotonically: it rises from 0.253 (53-66 tokens) to its peak 0.507 (67-101 tokens)," in peaked
    )
    assert "falls" not in peaked and "again" not in peaked
    assert "does not fall" in length_trend({"a": 0.1, "b": 0.2})


def test_length_trend_names_where_it_rises_again():
    """vista's 0.924, 0.924, 0.315, 0.371 was described as "not monotonically: it peaks at 0.924 (53-66 tokens)":
    the peak is the first bucket; what breaks the fall is 0.315 -> 0.371."""
    from analysis.report.conclusions import length_trend

    dip = length_trend({"53-66": 0.9237, "67-138": 0.9236, "139-231": 0.3154, "232-362": 0.3708})
    assert "not monotonically: it rises again from 0.315 (139-231 tokens) to 0.371 (232-362 tokens)," in dip
    assert "peak" not in dip
    both = length_trend({"53-66": 0.912, "67-138": 0.925, "139-231": 0.2909, "232-362": 0.2916})
    assert ("it rises from 0.912 (53-66 tokens) to its peak 0.925 (67-138 tokens) and rises again from 0.291 "
            "(139-231 tokens) to 0.292 (232-362 tokens),") in both  # fmt: skip
    close = length_trend(
        {"a": 0.5, "b": 0.50001, "c": 0.4}
    )  # a rise that 3 decimals would print as 0.500 -> 0.500
    assert "rises from 0.50000 (a tokens) to its peak 0.50001 (b tokens)" in close
    assert "falls monotonically" in length_trend({"a": 0.9, "b": 0.9, "c": 0.3})


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


@pytest.mark.parametrize("difference", [False, True])
@pytest.mark.parametrize("probe, variant", [("swap", "posterior"), ("swap", "uniform"), ("ablation", "blank"),
                                            ("kl", "blank"), ("attention", "image"), ("alignment", "l2")])  # fmt: skip
def test_axis_labels_fit_their_panel(probe, variant, difference):
    """The swap probe's y-label was taller than its panel and ran into the figure's title."""
    names = ("vista - baseline", "vista-cosine - baseline") if difference else ("baseline", "vista")
    summary = pd.DataFrame(
        [{"probe": probe, "variant": variant, "checkpoint": c, "length_bucket": b, "mean": 0.1, "ci_low": 0.0,
          "ci_high": 0.2, "level": 0.95} for c in names for b in ("53-66", "67-138")]
    )  # fmt: skip
    grid = plot_curves(summary, x="length_bucket", title="probe, by length", difference=difference)
    renderer = grid.figure.canvas.get_renderer()
    for ax in grid.axes.flat:
        label, panel = ax.yaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert label.height <= panel.height, (probe, ax.get_ylabel())
        assert max(len(line) for line in ax.get_ylabel().splitlines()) <= 31, ax.get_ylabel()


def _swap_summary(checkpoints=("baseline", "vista")) -> pd.DataFrame:
    return pd.DataFrame(
        [{"probe": "swap", "variant": v, "checkpoint": c, "answer_position": x, "mean": 0.1, "ci_low": 0.0,
          "ci_high": 0.2, "level": 0.95} for v in ("posterior", "uniform") for c in checkpoints for x in (1, 2)]
    )  # fmt: skip


def test_each_swap_variant_is_labelled_with_its_own_formula():
    """Both swap panels carried the uniform formula "log p(token | image) − log mean_k p(token | image_k)"; the
    posterior variant (analysis.probes.swap) weights the contrast images by w_k = p(x_<t | v_k)."""
    grid = plot_curves(_swap_summary(), x="answer_position")
    labels = {name: ax.get_ylabel() for name, ax in grid.axes_dict.items()}
    posterior, uniform = labels["swap: posterior"], labels["swap: uniform"]
    assert posterior != uniform
    assert "log p_0 − log[p_0/(K+1)" in posterior and "K/(K+1)·Σ w_k p_k/Σ w_k]" in posterior
    assert "w_k = p(answer x_<t | image_k)" in posterior and "mean_k" not in posterior
    assert "log p_0 − log mean_k p_k" in uniform and "k = 0..K" in uniform and "w_k" not in uniform
    assert all("p_k = p(x_t | image_k, x_<t)" in label and "[nats]" in label for label in labels.values())


def test_difference_figures_are_labelled_as_differences(monkeypatch, tmp_path):
    """The *_difference_by_answer_position figures used the raw labels ("cos(h_v, e_t)") and a legend titled
    "checkpoint" although their curves are variant − baseline."""
    from analysis.palette import variant_palette
    from analysis.probes import runner

    summary = _swap_summary(("vista - baseline", "vista-cosine - baseline"))
    grid = plot_curves(summary, x="answer_position", difference=True)
    for ax in grid.axes.flat:
        assert ax.get_ylabel().startswith("(variant − baseline) of\n")
    assert grid.legend.get_title().get_text() == "variant − baseline"
    entries = {t.get_text(): h.get_color() for t, h in zip(grid.legend.texts, grid.legend.legend_handles)}
    colours = variant_palette(["vista", "vista-cosine"])
    assert set(entries) == {"vista", "vista-cosine"}
    assert all(matplotlib.colors.same_color(entries[v], colours[v]) for v in entries)  # the variant's colour
    seen = []
    monkeypatch.setattr(runner, "plot_curves", lambda part, **kw: seen.append(kw) or plot_curves(part, **kw))
    runner.write_figures(
        {"by_answer_position": _swap_summary(), "difference_by_answer_position": summary}, tmp_path
    )
    assert [kw["difference"] for kw in seen] == [False, True]
    assert seen[1]["title"] == "swap probe: each variant minus baseline (paired), by answer position"


def test_a_constant_difference_is_not_t_tested():
    """score + 5.0 in every seed: the spread of the differences is float rounding (~1e-15), on which ttest_rel
    reported t ~ 1e15 and p ~ 1e-62; the difference is the same in every seed, so the test is undefined."""
    from analysis.report.conclusions import conclusions

    base = [52.37, 17.91, 89.33, 61.71, 33.13]  # 61.71 + 5.0 - 61.71 = 5.000000000000007
    wide = pd.DataFrame([{"variant": v, "seed": s, "acc": b + (5.0 if v == "vista" else 0.0)}
                         for s, b in enumerate(base, 1) for v in ("baseline", "vista")])  # fmt: skip
    assert (wide[wide.variant == "vista"].acc.to_numpy() - base).std() > 0  # rounding noise is there
    diff = paired_difference(wide, "acc", "vista")
    assert diff["zero_variance"] and diff["sd"] == 0 and math.isnan(diff["p"]) and not diff["significant"]
    assert diff["mean"] == pytest.approx(5.0)
    assert _difference_cell(diff) == "5.00 ± 0.00 (no test: sd = 0, the same difference in every seed)"
    text = "\n".join(conclusions({"paired_differences": {"vista": {"mean of benchmarks": diff}}}))
    assert "+5.00 points" in text and "same difference in every one of the 5 paired seeds (sd = 0)" in text
    assert "t-test is undefined" in text


@pytest.mark.parametrize("p, shown, star", [(0.04998, "(p 0.04998)*", True), (0.0534, "(p 0.053)", False),
                                            (0.0496, "(p 0.0496)*", True), (0.0004, "(p < 0.001)*", True),
                                            (0.41, "(p 0.41)", False), (0.05, "(p 0.050)", False)])  # fmt: skip
def test_the_p_value_shown_agrees_with_its_star(p, shown, star):
    """p = 0.04998 was shown as "(p 0.05)*" and p = 0.0534 as "(p 0.05)": the same number, opposite markers."""
    from analysis.report.conclusions import conclusions

    diff = {"n": 3, "mean": 1.0, "sd": 0.5, "p": p, "significant": p < 0.05, "ci_low": 0.1, "ci_high": 1.9}
    assert _difference_cell(diff) == f"1.00 ± 0.50 {shown}"
    assert _difference_cell(diff).endswith("*") == star
    sentence = conclusions({"paired_differences": {"vista": {"mean of benchmarks": diff}}})[2]
    relation, number = re.search(r"paired t-test p ([=<]) ([0-9.]+) \(n = 3 seeds\)", sentence).groups()
    assert (relation == "<" or float(number) < 0.05) == star == ("different from zero" in sentence)


def write_local_results(
    folder, runs=(("baseline", 1), ("baseline", 2), ("vista", 1), ("vista", 2)), limit=100
):
    """lmms-eval result files of the local suite (reproduce/benchmark_map_local.csv), each task scored on ``limit``
    of its 200 documents (a ``--limit`` run)."""
    from analysis.tables import LOCAL_MAP, load_benchmark_map

    for variant, seed in runs:
        results, counts = {}, {}
        for i, bench in enumerate(load_benchmark_map(LOCAL_MAP)):
            key = bench.metric_keys[0]
            results[bench.task] = {"alias": bench.task, key: 0.4 + 0.01 * i + 0.02 * seed, "samples": limit}
            counts[bench.task] = {"original": 200, "effective": limit}
        doc = {"results": results, "n-samples": counts, "config": {"model": "vista", "limit": float(limit)},
               "lmms_eval_version": "unknown@unknown", "date": "20260101_120000"}  # fmt: skip
        run = folder / "eval" / f"tiny__{variant}__seed{seed}" / "m"
        run.mkdir(parents=True)
        (run / "20260101_120000_results.json").write_text(json.dumps(doc))


def test_units_are_named_per_column(tmp_path):
    """The section said "Units: the benchmark map's (accuracy in %)" although Describe is object F1 (%)."""
    from analysis.report.benchmarks import benchmark_scores, load_eval_results

    write_local_results(tmp_path)
    text = "\n".join(benchmark_section(benchmark_scores(load_eval_results(tmp_path)), metrics := {}))
    assert "accuracy in %" not in text
    assert ("Units (`reproduce/benchmark_map_local.csv`): Colour, Shape, Size, Count, Exist, Relation, Position, "
            "LongCtx: exact-match accuracy (%); Describe: object F1 (%); mean of benchmarks: the unweighted mean of "
            "those columns, mixing their units.") in text  # fmt: skip
    assert metrics["benchmark_units"]["Describe"] == "object F1 (%)"


def test_limited_evaluations_are_one_summary_line(tmp_path):
    """ "(100/200 documents)" was repeated once per run and column (81 times for 9 runs x 9 benchmarks)."""
    from analysis.report.benchmarks import benchmark_scores, load_eval_results

    write_local_results(tmp_path)
    lines = benchmark_section(benchmark_scores(load_eval_results(tmp_path)), {})
    gaps = [line for line in lines if line.startswith("Gaps")]
    assert gaps == ["Gaps: limited evaluations (`--limit`; marked ‡ in the tables of `vista tables`): 36 scores on 100 of 200 "
                    "documents (every one of 9 benchmarks in each of 4 runs)."]  # fmt: skip
    assert "100/200 documents" not in "\n".join(lines)


def test_stage_table_follows_the_recorded_start_times(tmp_path):
    """The table was ordered by the stamps' modification times, which `cp -r` renews in directory order."""
    import os

    from analysis.report.document import stage_times

    stages = tmp_path / "stages"
    stages.mkdir()
    started = {"world": "17:47:32", "train-a": "17:50:04", "eval-a": "17:56:24", "report": "17:59:07"}
    for i, (name, clock) in enumerate(sorted(started.items())):  # files written (and touched) in name order
        record = {"stage": name, "description": name, "seconds": 1.0, "started": f"2026-12-02T{clock}+0000",
                  "finished": f"2026-12-02T{clock[:-2]}59+0000"}  # fmt: skip
        path = stages / f"{name}.json"
        path.write_text(json.dumps(record))
        os.utime(path, (1000 + i, 1000 + i))
    assert list(stage_times(tmp_path)["stage"]) == ["world", "train-a", "eval-a", "report"]
    old = {"stage": "old", "description": "a stamp without times", "seconds": 1.0}
    (stages / "old.json").write_text(json.dumps(old))
    assert list(stage_times(tmp_path)["stage"])[-1] == "old"
