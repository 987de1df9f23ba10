"""notebooks/02_visual_contribution.ipynb: up to date with its generator, and executes with small settings."""

from __future__ import annotations

from pathlib import Path

import nbformat
from notebook_utils import NOTEBOOKS, execute, outputs, parameters_cell

from analysis.probes import ExactScorer, ablation_probe, swap_probe
from analysis.probes.aggregate import combine
from analysis.theory import VisualMarkovSource

NOTEBOOK = NOTEBOOKS / "02_visual_contribution.ipynb"
SMALL = """SOURCE = dict(K=4, M=3, alpha=0.5, seed=1)
T = 6
N_EXACT = 300
NUM_SWAPS = (1, 8)
PLANTED_STEPS = 80
N_PLANTED = 12
SEED = 0
RESULTS = {results!r}"""


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
    parameters_cell(nb).source = SMALL.format(results=str(tmp_path / "probes"))
    text, images = outputs(execute(nb, NOTEBOOK.parent))
    assert "posterior-weighted swap probe is within" in text
    assert "a perfect colour reader with the same contrast images" in text
    assert f"Read {n_rows} rows for checkpoints ['baseline', 'vista']" in text
    assert images == 4  # exact-source curves, planted curves, and the two results figures
