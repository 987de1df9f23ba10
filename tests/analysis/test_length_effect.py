"""analysis.length_effect on planted data: known per-document values must come back exactly, intervals must
cover the planted mean and widen with seed-to-seed spread, and the report section must show them."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from analysis.length_effect import (
    accuracy_rows,
    contribution_rows,
    crossed_bootstrap,
    length_effect_section,
    probed_split,
    summarise,
)


def _write_samples(eval_dir, run, words, correct):
    folder = eval_dir / run / f"{run}__finetune"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"doc_id": i, "doc": {"id": f"len{words}-{i}"}, "exact_match": float(c)})
             for i, c in enumerate(correct)]  # fmt: skip
    (folder / f"20260101_000000_samples_world_len_{words:03d}.jsonl").write_text("\n".join(lines) + "\n")


def test_accuracy_rows_read_planted_samples(tmp_path):
    _write_samples(tmp_path, "tiny__baseline__seed1", 0, [1, 1, 1, 0])
    _write_samples(tmp_path, "tiny__baseline__seed1", 300, [1, 0, 0, 0])
    _write_samples(tmp_path, "tiny__vista__seed2", 0, [0, 1, 0, 1])
    (tmp_path / "not_a_run").mkdir()
    rows = accuracy_rows(tmp_path)
    assert len(rows) == 12
    means = rows.groupby(["variant", "seed", "words"])["accuracy"].mean()
    assert means[("baseline", 1, 0)] == 75.0 and means[("baseline", 1, 300)] == 25.0
    assert means[("vista", 2, 0)] == 50.0
    assert sorted(rows["question"].unique()) == [0, 1, 2, 3]


def test_accuracy_rows_name_a_bad_line(tmp_path):
    folder = tmp_path / "tiny__baseline__seed1" / "x"
    folder.mkdir(parents=True)
    (folder / "d_samples_world_len_000.jsonl").write_text('{"doc_id": 0}\n')
    with pytest.raises(ValueError, match=r"world_len_000.jsonl:1"):
        accuracy_rows(tmp_path)


def test_contribution_sums_answer_tokens():
    rows = pd.DataFrame({
        "probe": "ablation", "variant": "blank", "run_variant": "baseline", "seed": 1, "preceding_words": 0,
        "question": ["0", "0", "0", "1", "1"], "supervised": [True, True, False, True, True],
        "value": [1.5, 0.5, 9.0, -0.25, np.inf],
    })  # fmt: skip
    out = contribution_rows(rows).set_index("question")["contribution"]
    assert out[0] == 2.0  # the unsupervised (prompt) token is left out
    assert np.isnan(out[1])  # a non-finite token value: the document is missing, not silently zero


def test_crossed_bootstrap_covers_planted_mean_and_sees_seed_spread():
    rng = np.random.default_rng(0)
    docs = rng.normal(2.0, 1.0, size=(200, 1))
    same_seeds = np.repeat(docs, 3, axis=1)
    mean, low, high = crossed_bootstrap(same_seeds, n_resamples=500)
    assert mean == pytest.approx(docs.mean()) and low < 2.0 < high
    spread = same_seeds + np.array([-1.0, 0.0, 1.0])  # planted seed effect: the interval must widen
    _, low2, high2 = crossed_bootstrap(spread, n_resamples=500)
    assert high2 - low2 > 1.5 * (high - low)


def test_one_seed_bootstraps_over_documents_alone():
    docs = np.random.default_rng(1).normal(1.0, 1.0, size=(100, 1))
    mean, low, high = crossed_bootstrap(docs, n_resamples=300)
    assert mean == pytest.approx(docs.mean()) and low < mean < high and high - low < 1.0


def test_summarise_returns_planted_means_per_variant_and_length():
    rows = []
    for variant, drop in (("baseline", 0.0), ("vista", 1.0)):
        for seed in (1, 2):
            for words in (0, 100):
                for q in range(40):
                    rows.append({"variant": variant, "seed": seed, "words": words, "question": q,
                                 "accuracy": 100.0 * (q % 4 != 0), "contribution": 3.0 - drop * words / 100})  # fmt: skip
    summary = summarise(pd.DataFrame(rows), n_resamples=200)
    acc = summary[summary["measure"] == "accuracy"].set_index(["variant", "words"])
    contrib = summary[summary["measure"] == "contribution"].set_index(["variant", "words"])
    assert (acc["mean"] == 75.0).all() and (acc["docs"] == 40).all() and (acc["seeds"] == 2).all()
    assert contrib.loc[("baseline", 100), "mean"] == 3.0 and contrib.loc[("vista", 100), "mean"] == 2.0
    assert contrib.loc[("vista", 100), "ci_low"] == contrib.loc[("vista", 100), "ci_high"] == 2.0


def test_section_shows_table_and_figure(tmp_path):
    (tmp_path / "length_effect").mkdir()
    pd.DataFrame([
        {"measure": "accuracy", "variant": "baseline", "words": 0, "mean": 90.0, "ci_low": 85.0, "ci_high": 94.0,
         "docs": 100, "seeds": 3, "n_missing": 0},
        {"measure": "contribution", "variant": "baseline", "words": 0, "mean": 2.5, "ci_low": 2.1, "ci_high": 2.9,
         "docs": 100, "seeds": 3, "n_missing": 0},
    ]).to_csv(tmp_path / "length_effect" / "summary.csv", index=False)  # fmt: skip
    metrics: dict = {}
    text = "\n".join(length_effect_section(tmp_path, metrics))
    assert "| baseline | 90.0 [85.0, 94.0] |" in text and "| baseline | 2.50 [2.10, 2.90] |" in text
    assert "figures/length_effect.png" in text and len(metrics["length_effect"]) == 2
    assert length_effect_section(tmp_path / "missing", {}) == []


def test_probed_split_is_the_newest_split_the_stage_wrote(tmp_path):
    """Notebook 02 reads the length-effect stage's probe cache through the split file it probed."""
    assert probed_split(tmp_path) is None
    split = tmp_path / "length_effect" / "split"
    split.mkdir(parents=True)
    old, new = split / "length_split_q20.json", split / "length_split_q100.json"
    old.write_text("[]")
    new.write_text("[]")
    os.utime(old, (1_000, 1_000))
    assert probed_split(tmp_path) == new
    os.utime(new, (500, 500))
    assert probed_split(tmp_path) == old


def test_a_finished_runs_summary_is_not_replaced_without_overwrite(tmp_path, capsys):
    from analysis.length_effect import FOLDER, main, outputs

    summary = tmp_path / FOLDER / "summary.csv"
    summary.parent.mkdir(parents=True)
    summary.write_text("the run's own summary\n")
    assert main(["--results", str(tmp_path), "--limit", "5"]) == 2
    assert "exists" in capsys.readouterr().err and summary.read_text() == "the run's own summary\n"
    assert main(["--results", str(tmp_path), "--overwrite"]) == 2  # goes on: no eval samples here
    assert "/eval" in capsys.readouterr().err
    assert outputs(tmp_path, tmp_path / "mine") == (
        tmp_path / "mine",
        tmp_path / "mine" / "length_effect.png",
    )
