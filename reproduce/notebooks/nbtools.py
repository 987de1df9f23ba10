"""Shared by the ``make_*.py`` notebook generators: cells as ``(kind, source[, tags])`` -> an .ipynb file.

The notebooks in ``notebooks/`` are generated, never edited by hand, so that their code stays reviewable as Python
and ``tests/analysis/test_notebooks_fresh.py`` can check that the shipped file matches its generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

Cell = tuple[str, str] | tuple[str, str, list[str]]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def build_notebook(cells: Sequence[Cell]) -> nbformat.NotebookNode:
    """A notebook from ``("md" | "code", source[, tags])`` tuples (tags e.g. ``["parameters"]``)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for kind, source, *tags in cells:
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags[0])
        nb.cells.append(cell)
    return nb


def write_notebook(nb: nbformat.NotebookNode, out: str | Path) -> Path:
    """Validate and write ``nb`` (without outputs) to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    nbformat.write(nb, out)
    print(f"wrote {out}")
    return out
