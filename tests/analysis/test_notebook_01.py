"""notebooks/01_theory_alignment_decay.ipynb executes end to end (nbclient) and shows its figures."""

from __future__ import annotations

import nbformat
from notebook_utils import NOTEBOOKS, ROOT, execute, outputs, set_parameters

NOTEBOOK = NOTEBOOKS / "01_theory_alignment_decay.ipynb"


def test_notebook_01_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a short bridge run keeps the training path covered; tests/analysis/theory/test_theory_bridge.py checks its numbers
    nb = set_parameters(nb, BRIDGE_STEPS=20)
    text, images = outputs(execute(nb, ROOT, timeout=110))
    assert images >= 6, f"expected the theory figures, got {images} images"
    assert "Sum bound" in text and "Monte Carlo vs exact" in text
