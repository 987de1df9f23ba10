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


# --- executing the shipped notebooks against a results folder (the notebook stages and refresh_outputs.py) ---

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
from analysis.notebook_io import RESULTS_ENV  # noqa: E402  (the one name of the variable)

VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def shipped_notebooks(names: Sequence[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """``folder/*.ipynb`` in order, or those whose file name starts with one of ``names`` (e.g. ``["02"]``)."""
    paths = sorted(Path(folder).glob("*.ipynb"))
    if names:
        chosen = [p for p in paths if any(p.name.startswith(n) for n in names)]
        unknown = [n for n in names if not any(p.name.startswith(n) for p in paths)]
        if unknown:
            raise SystemExit(
                f"no notebook in {NOTEBOOKS} starts with {unknown}; have {[p.name for p in paths]}"
            )
        paths = chosen
    if not paths:
        raise SystemExit(f"no notebooks found in {folder}")
    return paths


def execute_notebook(path: Path, results: Path, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run every cell of ``path`` (outputs cleared first) with ``$VISTA_RESULTS=results``, from ``notebooks/``.

    The sources stay exactly as shipped (the results folder reaches the kernel through the environment, not by
    editing the parameters cell), so an executed copy still matches its generator.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (the message names the cell and the error).
    """
    import os

    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    clear_outputs(nb)
    previous = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(Path(results).resolve())  # the kernel inherits this process's environment
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if previous is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = previous
    return nb


def clear_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop outputs, execution counts and volatile metadata (what a freshly generated notebook holds)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    return nb


def write_html(nb: nbformat.NotebookNode, out: Path) -> Path:
    """The executed notebook as a standalone HTML page (nbconvert's lab template)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def compact_outputs(nb: nbformat.NotebookNode, max_width: int = 1000, colors: int = 256) -> dict[str, int]:
    """Shrink ``nb`` for the repository, in place: PNGs at most ``max_width`` px wide, palette-quantised.

    Also drops execution timestamps and widget state (a stored notebook shows the static figures; sliders need a
    live kernel anyway). Returns ``{"png": count, "bytes_before": n, "bytes_after": n}`` over the PNG outputs.
    """
    import base64
    import io

    from PIL import Image

    stats = {"png": 0, "bytes_before": 0, "bytes_after": 0}
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            data.pop(WIDGET_MIME, None)
            if "image/png" not in data:
                continue
            raw = base64.b64decode(data["image/png"])
            image = Image.open(io.BytesIO(raw))
            resized = image.width > max_width
            if resized:
                height = round(image.height * max_width / image.width)
                image = image.convert("RGB").resize((max_width, height), Image.Resampling.LANCZOS)
            small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
            packed = buffer.getvalue()
            if not resized and len(packed) >= len(raw):
                packed = raw
            data["image/png"] = base64.b64encode(packed).decode("ascii")
            output.setdefault("metadata", {}).pop("image/png", None)  # the old width/height no longer apply
            stats["png"] += 1
            stats["bytes_before"] += len(raw)
            stats["bytes_after"] += len(packed)
    nb.metadata.pop("widgets", None)
    return stats
