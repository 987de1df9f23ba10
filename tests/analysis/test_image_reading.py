"""analysis.image_reading's table and report section on planted per-document results."""

from __future__ import annotations

import pandas as pd

from analysis.image_reading import READING_TASKS, meets_target, reading_section, reading_table


def _rows(image_correct: int, blank_correct: int, docs: int = 20, seeds=(1, 2)) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for attribute, task in READING_TASKS.items():
            for d in range(docs):
                rows.append({"attribute": attribute, "task": task, "doc": d, "answer": "yes" if d % 2 else "no",
                             "correct_image": int(d < image_correct), "correct_blank": int(d < blank_correct),
                             "variant": "baseline", "seed": seed})  # fmt: skip
    return pd.DataFrame(rows)


def test_table_reports_planted_accuracies():
    table = reading_table(_rows(image_correct=18, blank_correct=10)).set_index("attribute")
    assert list(table.index) == [*READING_TASKS, "mean"]
    assert table.loc["colour", "image"] == 90.0 and table.loc["colour", "blank"] == 50.0
    assert table.loc["colour", "text_only"] == 50.0 and table.loc["mean", "blank_minus_text"] == 0.0
    assert table.loc["mean", "image"] == 90.0 and table.loc["colour", "n"] == 20


def test_target_needs_every_condition():
    assert all(meets_target(reading_table(_rows(18, 10))).values())
    weak = meets_target(reading_table(_rows(12, 10)))
    assert weak == {"mean_image": False, "each_image": False, "blank_near_text_only": True}
    leaky = meets_target(reading_table(_rows(18, 14)))  # blank 70% against a 50% text-only predictor
    assert leaky["blank_near_text_only"] is False


def test_section_says_what_the_comparison_can_show(tmp_path):
    (tmp_path / "image_reading").mkdir()
    _rows(12, 10).to_csv(tmp_path / "image_reading" / "per_document.csv", index=False)
    metrics: dict = {}
    text = "\n".join(reading_section(tmp_path, metrics))
    assert "## How strongly the baseline reads the image" in text
    assert "| colour | 60.0 ± 0.0 | 50.0 ± 0.0 | 50.0 | +0.0 | 20 |" in text
    assert "does not meet the bar" in text and metrics["image_reading"]["meets"]["mean_image"] is False
    assert reading_section(tmp_path / "absent", {}) == []
