"""notebooks/04_benchmark_tables.ipynb: up to date with its generator, and executes with and without runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_benchmark_tables.ipynb"
GENERATOR = ROOT / "reproduce" / "notebooks" / "make_04_tables.py"


def _generator():
    spec = importlib.util.spec_from_file_location("make_04_tables", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(monkeypatch, results: Path) -> str:
    monkeypatch.setenv("VISTA_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            data = out.get("data", {})
            texts.append(data.get("text/markdown", ""))
            if "image/png" in data:
                texts.append("<image/png>")
    return "\n".join(texts)


def test_notebook_matches_generator():
    shipped = [(c.cell_type, c.source) for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    assert shipped == [(c.cell_type, c.source) for c in _generator().build().cells], (
        "run: .venv/bin/python reproduce/notebooks/make_04_tables.py"
    )


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
