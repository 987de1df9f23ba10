"""The notebooks are stored with outputs (a reader sees figures before running anything), kept small, and the
scripts that execute them against a results folder work: ``run_notebooks.py`` (the ``notebooks`` stage) and
``compact_outputs`` (used by ``refresh_outputs.py``)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import nbformat
import pytest
from notebook_utils import GENERATORS, NOTEBOOKS, load_generator
from PIL import Image

STORED = sorted(NOTEBOOKS.glob("*.ipynb"))
MAX_BYTES = 1_500_000  # per notebook: PNG figures at modest resolution, no bulky tables


def pngs(nb: nbformat.NotebookNode) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"])))
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_stored_notebook_shows_its_executed_outputs_and_stays_small(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not executed top to bottom: {counts}"
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: stored with errors"
    images = pngs(nb)
    assert images, f"{path.name}: no figure stored; run reproduce/notebooks/refresh_outputs.py"
    assert max(i.width for i in images) <= 1000
    assert path.stat().st_size <= MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    assert "widgets" not in nb.metadata
    assert not any("execution" in c.metadata for c in nb.cells)  # no timestamps: diffs show only real changes


def test_compact_outputs_shrinks_a_large_figure():
    nbtools = load_generator("nbtools")
    image = Image.new("RGB", (2400, 1200), "white")
    for x in range(0, 2400, 7):
        image.paste((x % 255, 80, 200 - x % 200), (x, 0, x + 3, 1200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buffer.getvalue())
                                                                 .decode()})]  # fmt: skip
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    nb = nbformat.v4.new_notebook(cells=[cell])
    stats = nbtools.compact_outputs(nb)
    (small,) = pngs(nb)
    assert small.size == (1000, 500) and stats["png"] == 1
    assert stats["bytes_after"] < stats["bytes_before"] and "execution" not in cell.metadata


def test_run_notebooks_writes_executed_ipynb_and_html_with_unchanged_sources(tmp_path):
    """The stage's script on a two-cell notebook: the results folder reaches the kernel, the sources stay."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    source = "from analysis.notebook_io import results_folder\nprint('results:', results_folder(None))"
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell(source)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "01_t.ipynb")
    results, out = tmp_path / "results", tmp_path / "executed"
    results.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(GENERATORS / "run_notebooks.py"),
            "--results",
            str(results),
            "--out",
            str(out),
            "--notebooks",
            str(folder),
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    executed = nbformat.read(out / "01_t.ipynb", as_version=4)
    assert [c.source for c in executed.cells] == [c.source for c in nb.cells]
    assert executed.cells[1].outputs[0]["text"] == f"results: {results}\n"
    assert f"results: {results}" in (out / "01_t.html").read_text()


def test_run_notebooks_names_a_missing_results_folder(tmp_path):
    run_notebooks = load_generator("run_notebooks")
    with pytest.raises(SystemExit, match="nope: no such folder"):
        run_notebooks.main(["--results", str(tmp_path / "nope")])
