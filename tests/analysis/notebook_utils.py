"""Helpers for the notebook tests: load a generator script, set parameters, execute, collect outputs."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
GENERATORS = ROOT / "reproduce" / "notebooks"
NOTEBOOKS = ROOT / "notebooks"


def load_generator(script: str) -> ModuleType:
    """Import ``reproduce/notebooks/<script>.py`` (which imports its sibling ``nbtools``)."""
    if str(GENERATORS) not in sys.path:
        sys.path.insert(0, str(GENERATORS))
    spec = importlib.util.spec_from_file_location(script, GENERATORS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def set_parameters(nb: nbformat.NotebookNode, **overrides: object) -> nbformat.NotebookNode:
    """Override ``NAME = ...`` assignments in the cell tagged "parameters" (as papermill would)."""
    cell = parameters_cell(nb)
    for name, value in overrides.items():
        cell.source, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert count == 1, f"parameter {name} not found in the parameters cell"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 240) -> nbformat.NotebookNode:
    """Run every cell with the environment's python3 kernel; a cell error raises."""
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the executed notebook printed or displayed (stream, plain, markdown), and its PNG count."""
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            data = out.get("data", {})
            texts += [out.get("text", ""), data.get("text/plain", ""), data.get("text/markdown", "")]
            images += "image/png" in data
    return "\n".join(texts), images
