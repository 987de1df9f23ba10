"""notebooks/04_benchmark_tables.ipynb: up to date with its generator, and executes with and without runs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from notebook_utils import NOTEBOOKS, execute, outputs

NOTEBOOK = NOTEBOOKS / "04_benchmark_tables.ipynb"


def nb_from_disk() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def _run(monkeypatch, results: Path) -> str:
    monkeypatch.setenv("VISTA_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text, images = outputs(execute(nb_from_disk(), NOTEBOOK.parent, timeout=120))
    return text + "\n<image/png>" * images


def test_notebook_without_runs(monkeypatch, tmp_path):
    text = _run(monkeypatch, tmp_path / "nothing_here")
    assert "| LLaVA-VISTA | 79.06 | 56.25 | 62.55 | 46.63 | 57.39 | 22.66 | 2.72 |" in text
    assert "2 of 12 printed averages are reproduced" in text
    assert "No lmms-eval results under" in text
    assert text.count("<image/png>") == 1  # the paper's gains plot


def test_notebook_with_runs(monkeypatch, tmp_path):
    for variant, gqa in (("baseline", 0.60), ("vista", 0.66)):
        run = tmp_path / f"llava-1.5-7b__{variant}__seed0"
        (run / "m").mkdir(parents=True)
        doc = {"results": {"gqa": {"alias": "gqa", "exact_match,none": gqa, "exact_match_stderr,none": 0.01, "samples": 5}},
               "config": {"model": "vista", "model_backend": "x"}, "lmms_eval_version": "unknown@unknown",
               "date": "20260101_120000"}  # fmt: skip
        (run / "m" / "20260101_120000_results.json").write_text(json.dumps(doc))
    text = _run(monkeypatch, tmp_path)
    assert "| LLaVA-VISTA | — | — | 66.00 | — | — | — | 10.00* |" in text  # +10 % on GQA
    assert "ours minus paper" in text and "+3.45" in text  # 66.00 - 62.55
    assert text.count("<image/png>") == 2


def test_relative_gain_bars_have_each_variants_colour():
    """The notebook's relative-gain chart coloured VISTA(cosine) blue (the baseline's colour in every other figure)
    and VISTA orange by model order; each bar now has its variant's analysis.palette colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import same_color

    from analysis import tables as T
    from analysis.palette import variant_palette

    wide, _, labels = T.load_paper_results()
    gains = T.relative_gains(wide, labels=labels)
    ax = T.plot_relative_gains(gains)
    colours = variant_palette(["baseline", "vista", "vista-cosine"])
    models = list(dict.fromkeys(gains.dropna(subset=["gain_pct"])["model"]))
    variant_of = dict(zip(gains["model"], gains["variant"]))
    assert len(ax.containers) == len(models) == 4
    for container, model in zip(ax.containers, models):
        assert all(same_color(bar.get_facecolor(), colours[variant_of[model]]) for bar in container), model
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().texts, ax.get_legend().legend_handles)}
    assert same_color(legend["LLaVA-VISTA(cosine)"].get_facecolor(), colours["vista-cosine"])
    assert same_color(legend["LLaVA-VISTA"].get_facecolor(), colours["vista"])
    hatches = {model: container[0].get_hatch() or "" for container, model in zip(ax.containers, models)}
    assert hatches["LLaVA-VISTA"] != hatches["TinyLLaVA-VISTA"]  # families told apart by hatching, not colour
    plt.close(ax.figure)


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
