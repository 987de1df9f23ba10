"""Every shipped notebook equals what its generator script builds (edit the script, then rerun it)."""

from __future__ import annotations

import nbformat
import pytest
from notebook_utils import NOTEBOOKS, load_generator

GENERATED = {
    "01_theory_alignment_decay.ipynb": "make_01_theory",
    "02_visual_contribution.ipynb": "make_02_probes",
    "03_mutual_information.ipynb": "make_03_mi",
    "04_benchmark_tables.ipynb": "make_04_tables",
}


def test_every_notebook_has_a_generator():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(GENERATED)


@pytest.mark.parametrize("notebook, script", GENERATED.items())
def test_notebook_matches_its_generator(notebook, script):
    shipped = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    built = load_generator(script).build()
    assert [(c.cell_type, c.source, c.metadata.get("tags")) for c in shipped.cells] == [
        (c.cell_type, c.source, c.metadata.get("tags")) for c in built.cells
    ], f"notebooks/{notebook} is stale: run .venv/bin/python reproduce/notebooks/{script}.py"
