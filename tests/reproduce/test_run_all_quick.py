"""The main job end to end: ``run_all.sh --quick`` on CPU, then its report and tables against the raw files.

This is the suite's longest test (a few minutes): it builds the world and the foundations, trains baseline, VISTA
and VISTA-cosine through both stages, evaluates them with lmms-eval, probes them, estimates MI and writes the
tables and REPORT.md. A second run must skip every stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.report.training_curves import load_training_logs
from analysis.tables import choose_map, load_lmms_results, to_paper_columns
from vista.run_metadata import parse_run_name

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("baseline", "vista", "vista-cosine")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, str, float]:
    out = tmp_path_factory.mktemp("run_all") / "results"
    command = [sys.executable, str(ROOT / "reproduce" / "pipeline.py"), "--quick", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    start = time.perf_counter()
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    rerun_seconds = time.perf_counter() - start
    assert again.returncode == 0, again.stderr[-3000:]
    return out, again.stdout, rerun_seconds


def test_every_stage_ran_and_a_rerun_skips_them_all(quick_run):
    out, rerun_log, rerun_seconds = quick_run
    stamps = {p.stem for p in (out / "stages").glob("*.json")}
    expected = {
        "theory",
        "world",
        "foundation-vision",
        "foundation-language",
        "image-reading",
        "length-effect",
        "probes",
        "mi",
        "tables",
        "report",
    }
    expected |= {f"{kind}-{v}-seed1" for kind in ("train", "eval") for v in VARIANTS}
    assert stamps == expected
    stage_lines = [line for line in rerun_log.splitlines() if line.startswith("[")]
    assert len(stage_lines) == len(expected) and all("skipped" in line for line in stage_lines), rerun_log
    print(f"rerun of {len(expected)} finished stages took {rerun_seconds:.1f} s")


def test_outputs_a_reader_looks_for(quick_run):
    out, _, _ = quick_run
    for path in ("REPORT.md", "figures/training_curves.png", "tables/tables.md", "probes/probes.parquet",
                 "theory/profile.csv", "benchmark_scores.csv", "report_metrics.json"):  # fmt: skip
        assert (out / path).is_file() and (out / path).stat().st_size > 0, path
    report = (out / "REPORT.md").read_text()
    for section in ("## How strongly the baseline reads the image", "### The length effect, measured",
                    "## Training curves", "## Local benchmarks", "## Visual contribution", "## Mutual information",
                    "## Theory", "## What these numbers support"):  # fmt: skip
        assert section in report


def test_report_benchmark_numbers_match_the_lmms_eval_results(quick_run):
    out, _, _ = quick_run
    long = load_lmms_results([out / "eval"])
    wide = to_paper_columns(long, choose_map(long))
    metrics = json.loads((out / "report_metrics.json").read_text())
    report = (out / "REPORT.md").read_text()
    benchmarks = [c for c in wide.columns if c not in ("family", "variant", "seed") and wide[c].notna().any()]
    assert benchmarks, "no benchmark values in the lmms-eval results"
    assert set(metrics["benchmarks"]) == set(VARIANTS)
    for variant in VARIANTS:
        raw = wide[wide["variant"] == variant]
        for bench in benchmarks:
            reported = metrics["benchmarks"][variant][bench]["mean"]
            assert reported == pytest.approx(raw[bench].mean(), abs=1e-9), (variant, bench)
            assert f"{reported:.2f}" in report
        mean_of_benchmarks = raw[benchmarks].mean(axis=1).mean()
        assert metrics["benchmarks"][variant]["mean of benchmarks"]["mean"] == pytest.approx(
            mean_of_benchmarks
        )
    for variant in ("vista", "vista-cosine"):
        for bench in benchmarks:
            diff = (
                wide.loc[wide.variant == variant, bench].mean()
                - wide.loc[wide.variant == "baseline", bench].mean()
            )
            assert metrics["paired_differences"][variant][bench]["mean"] == pytest.approx(diff, abs=1e-9)


def test_tables_match_the_same_results(quick_run):
    out, _, _ = quick_run
    wide = pd.read_csv(out / "tables" / "runs" / "paper_columns.csv")
    scores = pd.read_csv(out / "benchmark_scores.csv")
    merged = wide.merge(scores, on=["family", "variant", "seed"], suffixes=("_tables", "_report"))
    for column in [c for c in scores.columns if c not in ("family", "variant", "seed", "mean of benchmarks")]:
        pd.testing.assert_series_equal(
            merged[f"{column}_tables"], merged[f"{column}_report"], check_names=False, atol=1e-9
        )


def test_report_training_numbers_match_the_trainer_logs(quick_run):
    out, _, _ = quick_run
    runs = []
    for run_dir in sorted((out / "runs").iterdir()):
        labels = parse_run_name(run_dir.name)
        runs += [({**labels, "stage": stage}, run_dir / stage) for stage in ("pretrain", "finetune")]
    logs = load_training_logs(runs)
    metrics = json.loads((out / "report_metrics.json").read_text())["training_final"]
    last = logs.sort_values("step").groupby(["stage", "variant", "metric"])["value"].last()
    for (stage, variant, metric), value in last.items():
        if metric == "loss":
            continue
        assert metrics[stage][variant][metric]["mean"] == pytest.approx(value), (stage, variant, metric)
    # the baseline logs the VISTA term without adding it: loss == ce_loss there; VISTA adds it
    finetune = logs[(logs.stage == "finetune")].pivot_table(
        index=["variant", "step"], columns="metric", values="value"
    )
    base = finetune.loc["baseline"]
    assert (base["loss"] - base["ce_loss"]).abs().max() < 2e-4  # the Trainer rounds loss to 4 decimals
    vista = finetune.loc["vista"]
    image = vista["vista_loss"].notna()  # windows with an image sample; text-only ones log no VISTA term
    assert ((vista["loss"] - vista["ce_loss"] - vista["vista_loss"])[image].abs() < 1e-3).all()
    assert ((vista["loss"] - vista["ce_loss"])[~image].abs() < 2e-4).all()
    assert vista["vista_similarity"].notna().any()  # logged wherever a window had image samples


def test_report_length_split_matches_the_raw_results(quick_run):
    out, _, _ = quick_run
    long = load_lmms_results([out / "eval"])
    split = long[long["task"].str.fullmatch(r"world_len_\d+") & (long["metric_key"] == "exact_match,none")]
    assert split["task"].nunique() == 6, "the world's length split (world_len_*) was not evaluated"
    reported = json.loads((out / "report_metrics.json").read_text())["accuracy_by_preceding_words"]
    for (variant, task), part in split.groupby(["variant", "task"]):
        words = task.rsplit("_", 1)[1].lstrip("0") or "0"
        assert reported[variant][words]["mean"] == pytest.approx(100 * part["value"].mean())


def test_length_effect_accuracy_matches_lmms_eval(quick_run):
    """The length effect's per-document accuracy (lmms-eval's logged samples) averages to lmms-eval's score."""
    out, _, _ = quick_run
    long = load_lmms_results([out / "eval"])
    split = long[long["task"].str.fullmatch(r"world_len_\d+") & (long["metric_key"] == "exact_match,none")]
    summary = pd.read_csv(out / "length_effect" / "summary.csv")
    accuracy = summary[summary["measure"] == "accuracy"].set_index(["variant", "words"])["mean"]
    contribution = summary[summary["measure"] == "contribution"]
    assert len(accuracy) == split.groupby(["variant", "task"]).ngroups == 18
    for row in split.itertuples():
        assert accuracy[(row.variant, int(row.task.rsplit("_", 1)[1]))] == pytest.approx(100 * row.value)
    assert len(contribution) == 18 and contribution["mean"].notna().all()
    assert (out / "figures" / "length_effect.png").stat().st_size > 0


def test_reading_geometry_on_a_trained_checkpoint(quick_run):
    """analysis.reading_geometry reads the quick run's baseline: one row per attribute, shares in [0, 1], and colour
    (the pixels' own values) a visible share of the CLIP patch features' variance."""
    from analysis.reading_geometry import reading_geometry

    out, _, _ = quick_run
    checkpoint = out / "runs" / "tiny__baseline__seed1" / "finetune"
    rows = reading_geometry(checkpoint, out / "data", n_scenes=200)
    assert [r["attribute"] for r in rows] == ["shape", "colour", "size"]
    for r in rows:
        assert 0 <= r["vision_share"] <= 1 and 0 <= r["projector_share"] <= 1, r
        assert -1 <= r["lm_head_cosine"] <= 1, r
    assert rows[1]["vision_share"] > 0.05, rows


def test_caption_reading_scores_every_attribute_word(quick_run):
    """analysis.reading_geometry's caption reading on the quick run's stage-1 checkpoint scores one size, colour and
    shape word per object of the held-out scenes (counted from the scenes themselves), with finite NLLs and the
    attribute's chance level."""
    from analysis.reading_geometry import caption_reading
    from vista.world.scenes import read_scenes

    out, _, _ = quick_run
    checkpoint = out / "runs" / "tiny__baseline__seed1" / "pretrain"
    rows = caption_reading(checkpoint, out / "data", n_scenes=40)
    objects = sum(len(s.objects) for s in read_scenes(out / "data" / "scenes" / "heldout.jsonl", 40))
    assert {r["attribute"]: r["words"] for r in rows} == {
        "shape": objects,
        "colour": objects,
        "size": objects,
    }
    chance = {r["attribute"]: r["chance"] for r in rows}
    assert chance == pytest.approx({"shape": 1 / 4, "colour": 1 / 6, "size": 1 / 2})
    for r in rows:
        assert 0 < r["nll_image"] < 20 and 0 < r["nll_blank"] < 20, r
        assert 0 <= r["accuracy_image"] <= 1 and 0 <= r["accuracy_blank"] <= 1, r
