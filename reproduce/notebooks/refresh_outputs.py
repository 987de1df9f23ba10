"""Refresh the outputs stored in ``notebooks/*.ipynb`` from a results folder (sources untouched).

    .venv/bin/python reproduce/notebooks/refresh_outputs.py --results results/tiny [--only 02] [--execute]

Takes the executed copies that the ``notebooks`` stage wrote to ``<results>/notebooks/`` (or, with ``--execute``
or when a copy is missing, executes the notebook against ``--results`` now), checks that its cells are exactly the
shipped notebook's cells, shrinks its figures (PNG, at most 1000 px wide, 256 colours) and writes it over the
shipped notebook. Run it after regenerating a notebook (``reproduce/notebooks/make_*.py`` writes sources only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError
from nbtools import compact_outputs, execute_notebook, shipped_notebooks


def cell_sources(nb: nbformat.NotebookNode) -> list[tuple]:
    return [(c.cell_type, c.source, c.metadata.get("tags")) for c in nb.cells]


def executed_copy(path: Path, results: Path, execute: bool, timeout: int) -> nbformat.NotebookNode:
    """The executed notebook for ``path``: the stage's copy if current, else a fresh execution."""
    copy = results / "notebooks" / path.name
    shipped = nbformat.read(path, as_version=4)
    if not execute and copy.is_file():
        nb = nbformat.read(copy, as_version=4)
        if cell_sources(nb) == cell_sources(shipped):
            print(f"{path.name}: outputs from {copy}")
            return nb
        print(f"{path.name}: {copy} was executed from older sources; executing again")
    try:
        nb = execute_notebook(path, results, timeout=timeout)
    except CellExecutionError as error:
        raise SystemExit(f"notebook {path.name} failed against {results}:\n{error}") from error
    print(f"{path.name}: executed against {results}")
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="a run_all.sh results folder")
    parser.add_argument(
        "--only", action="append", default=None, help="notebook name prefix, e.g. 02 (repeat)"
    )
    parser.add_argument("--execute", action="store_true", help="execute even if an executed copy exists")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        raise SystemExit(f"--results {args.results}: no such folder (run reproduce/run_all.sh first)")
    for path in shipped_notebooks(args.only):
        nb = executed_copy(path, args.results, args.execute, args.timeout)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            raise SystemExit(
                f"{path.name}: the executed copy holds {len(errors)} error output(s); not stored"
            )
        stats = compact_outputs(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(
            f"{path.name}: {stats['png']} figures, {stats['bytes_before'] / 1e3:.0f} -> "
            f"{stats['bytes_after'] / 1e3:.0f} kB; file {path.stat().st_size / 1e3:.0f} kB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
