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


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
