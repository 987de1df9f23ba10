"""notebooks/02_visual_contribution.ipynb: up to date with its generator, and executes with small settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from analysis.probes import ExactScorer, ablation_probe, swap_probe
from analysis.probes.aggregate import combine
from analysis.theory import VisualMarkovSource

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02_visual_contribution.ipynb"
GENERATOR = ROOT / "reproduce" / "notebooks" / "make_02_probes.py"
SMALL = """SOURCE = dict(K=4, M=3, alpha=0.5, seed=1)
T = 6
N_EXACT = 300
NUM_SWAPS = (1, 8)
PLANTED_STEPS = 80
N_PLANTED = 12
SEED = 0
RESULTS = {results!r}"""


def _generator():
    spec = importlib.util.spec_from_file_location("make_02_probes", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_matches_generator():
    shipped = [(c.cell_type, c.source) for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    assert shipped == [(c.cell_type, c.source) for c in _generator().build().cells], (
        "run: .venv/bin/python reproduce/notebooks/make_02_probes.py"
    )


def _fake_results(folder: Path) -> int:
    """A probes.parquet as `vista probe` writes it, for two 'checkpoints' (exact-source rows)."""
    scorer = ExactScorer(VisualMarkovSource.random(K=3, M=3, alpha=0.4, seed=2))
    samples = scorer.samples(40, 5, seed=0) + scorer.samples(40, 3, seed=1, id_prefix="short")
    rows = combine(
        {
            "baseline": swap_probe(scorer, samples, num_swaps=3),
            "vista": ablation_probe(scorer, samples),
        }
    )
    folder.mkdir(parents=True)
    rows.to_parquet(folder / "probes.parquet", index=False)
    return len(rows)


def test_notebook_executes_with_small_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    n_rows = _fake_results(tmp_path / "probes")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = SMALL.format(results=str(tmp_path / "probes"))
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            data = out.get("data", {})
            texts.append(out.get("text", "") + data.get("text/markdown", "") + data.get("text/plain", ""))
            images += "image/png" in data
    text = "\n".join(texts)
    assert "posterior-weighted swap probe is within" in text
    assert "a perfect colour reader with the same contrast images" in text
    assert f"Read {n_rows} rows for checkpoints ['baseline', 'vista']" in text
    assert images == 4  # exact-source curves, planted curves, and the two results figures
