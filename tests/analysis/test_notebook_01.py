"""notebooks/01_theory_alignment_decay.ipynb executes end to end (nbclient) and shows its figures."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_theory_alignment_decay.ipynb"


def _with_parameters(nb: nbformat.NotebookNode, **overrides: object) -> nbformat.NotebookNode:
    """Override assignments in the cell tagged "parameters" (as papermill would)."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in overrides.items():
        cell.source, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert count == 1, f"parameter {name} not found in the parameters cell"
    return nb


def test_notebook_01_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a short bridge run keeps the training path covered; tests/analysis/test_theory_bridge.py checks its numbers
    nb = _with_parameters(nb, BRIDGE_STEPS=20)
    NotebookClient(
        nb, timeout=110, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6, f"expected the theory figures, got {len(images)} images"
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "Sum bound" in text and "Monte Carlo vs exact" in text
