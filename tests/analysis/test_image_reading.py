"""analysis.image_reading's table and report section on planted per-document results."""

from __future__ import annotations

import pandas as pd
import pytest

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


SCENE = {
    "image_size": 32,
    "objects": [
        {"shape": "circle", "colour": "red", "size": "small", "row": 0, "col": 0, "dx": 0, "dy": 0},
        {"shape": "square", "colour": "blue", "size": "large", "row": 1, "col": 1, "dx": 0, "dy": 0},
    ],
}


def test_wrong_kind_tells_a_binding_error_from_a_reading_error():
    from analysis.image_reading import NOT_IN_SCENE, OTHER_OBJECT, wrong_kind

    # question about the circle (red, top left); the square is blue, bottom right
    assert wrong_kind("colour", "red", "red", SCENE) == ""
    assert wrong_kind("colour", "Blue.", "red", SCENE) == OTHER_OBJECT  # the benchmark's normalisation
    assert wrong_kind("colour", "green", "red", SCENE) == NOT_IN_SCENE
    assert wrong_kind("colour", "a red thing", "red", SCENE) == NOT_IN_SCENE
    assert wrong_kind("position", "bottom right", "top left", SCENE) == OTHER_OBJECT
    assert wrong_kind("position", "top right", "top left", SCENE) == NOT_IN_SCENE
    assert wrong_kind("size", "large", "small", SCENE) == OTHER_OBJECT
    assert wrong_kind("count", "three", "two", SCENE) == ""  # not one object's attribute


def test_section_lists_what_wrong_answers_name(tmp_path):
    from analysis.image_reading import NOT_IN_SCENE, OTHER_OBJECT

    rows = _rows(12, 10)
    wrong = (rows["correct_image"] == 0) & rows["attribute"].isin(["colour", "shape", "size", "position"])
    rows["wrong_kind"] = ""
    rows.loc[wrong, "wrong_kind"] = NOT_IN_SCENE
    first_colour = rows.index[wrong & (rows["attribute"] == "colour")][
        :12
    ]  # 12 of the 16 wrong colour answers
    rows.loc[first_colour, "wrong_kind"] = OTHER_OBJECT
    (tmp_path / "image_reading").mkdir()
    rows.to_csv(tmp_path / "image_reading" / "per_document.csv", index=False)
    metrics: dict = {}
    text = "\n".join(reading_section(tmp_path, metrics))
    assert "| colour | 16 | 75.0 | 25.0 |" in text and "| shape | 16 | 0.0 | 100.0 |" in text
    assert "| count |" not in text.split("What the wrong answers")[1]
    assert metrics["image_reading"]["wrong_answers"][0]["wrong"] == 16
    # a file from before the column existed: the section has no such table
    _rows(12, 10).to_csv(tmp_path / "image_reading" / "per_document.csv", index=False)
    assert "What the wrong answers" not in "\n".join(reading_section(tmp_path, {}))


def test_reference_names_what_the_question_picks_out():
    from analysis.image_reading import ALL_OBJECTS, reference_of

    assert reference_of({"kind": "colour", "ref": {"shape": "circle"}}) == "shape"
    assert reference_of({"kind": "colour", "ref": {"shape": "circle", "size": "small"}}) == "size+shape"
    assert reference_of({"kind": "shape", "ref": {"position": "top left"}}) == "position"
    assert reference_of({"kind": "exist", "filter": {"shape": "cross", "colour": "red"}}) == "colour+shape"
    assert reference_of({"kind": "count", "filter": {}}) == ALL_OBJECTS


def test_binding_tables_separate_reading_from_binding(tmp_path):
    from analysis.image_reading import binding_tables

    rows = _rows(12, 10)
    # planted: every answer right with one object, docs 1 and 17 with more (colour by shape, size+shape alternate)
    rows["n_objects"] = rows["doc"] % 4 + 1
    rows["reference"] = ["size+shape" if d % 8 >= 4 else "shape" for d in rows["doc"]]
    rows["correct_image"] = [int(n == 1 or d % 16 == 1) for n, d in zip(rows["n_objects"], rows["doc"])]
    by_count, by_reference = binding_tables(rows)
    assert by_count.loc["colour", 1] == 100.0
    assert by_count.loc["colour", 2] == 100 * 2 / 5  # docs 1, 5, 9, 13, 17: 1 and 17 right
    assert by_count.loc["colour", 3] == by_count.loc["colour", 4] == 0.0
    assert list(by_count.index) == list(READING_TASKS)
    colour = by_reference[by_reference["attribute"] == "colour"].set_index("reference")
    assert colour.loc["shape", "docs"] == 2 * 12 and colour.loc["size+shape", "docs"] == 2 * 8
    # right "shape" docs: 0, 8, 16 (one object) and 1, 17 (d % 16 == 1), per seed
    assert colour.loc["shape", "accuracy"] == pytest.approx(100 * (2 * 3 + 2 * 2) / 24)
    (tmp_path / "image_reading").mkdir()
    rows.to_csv(tmp_path / "image_reading" / "per_document.csv", index=False)
    metrics: dict = {}
    text = "\n".join(reading_section(tmp_path, metrics))
    assert "| colour | 100.0 | 40.0 | 0.0 | 0.0 |" in text
    assert metrics["image_reading"]["accuracy_by_objects"]["colour"][1] == 100.0
    # a file from before the columns existed: no such tables
    _rows(12, 10).to_csv(tmp_path / "image_reading" / "per_document.csv", index=False)
    assert "by the number of objects" not in "\n".join(reading_section(tmp_path, {}))


def test_a_finished_runs_result_is_not_replaced_without_overwrite(tmp_path, capsys):
    """``--limit 5`` on a finished run used to overwrite the per-document CSV that REPORT.md reads."""
    from analysis.image_reading import OUTPUT, main

    finished = tmp_path / OUTPUT
    finished.parent.mkdir(parents=True)
    finished.write_text("the run's own rows\n")
    assert main(["--results", str(tmp_path), "--limit", "5"]) == 2
    assert "exists" in capsys.readouterr().err and finished.read_text() == "the run's own rows\n"
    # elsewhere, or with --overwrite, it goes on to read the run (which has no checkpoints here: exit 2, one line)
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "mine")]) == 2
    assert "no stage-2 checkpoint" in capsys.readouterr().err
