"""Execute the notebooks against a results folder: the ``notebook-NN`` stages of ``reproduce/run_all.sh``.

    .venv/bin/python reproduce/notebooks/run_notebooks.py --results results/tiny [--out results/tiny/notebooks]
        [--only 02] [--timeout 1800]

Without ``--only`` every notebook runs, one after the other; the pipeline runs one per stage (``--only <name>``), each
as soon as the stages it reads are done (``reproduce/pipeline.py:NOTEBOOK_INPUTS``).

Each notebook in ``notebooks/`` runs from top to bottom with ``$VISTA_RESULTS`` pointing at ``--results`` (its
sources are not changed). Writes ``<name>.ipynb`` (with outputs) and ``<name>.html`` per notebook to ``--out``
(default ``<results>/notebooks``). A failing cell stops the run with the notebook and the cell's error named.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError
from nbtools import NOTEBOOKS, execute_notebook, shipped_notebooks, write_html


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="a run_all.sh results folder")
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/notebooks")
    parser.add_argument(
        "--only", action="append", default=None, help="notebook name prefix, e.g. 02 (repeat)"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the notebooks to run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.results.is_dir():
        raise SystemExit(f"--results {args.results}: no such folder (run reproduce/run_all.sh first)")
    out = args.out or args.results / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    for path in shipped_notebooks(args.only, args.notebooks):
        start = time.perf_counter()
        try:
            nb = execute_notebook(path, args.results, timeout=args.timeout)
        except CellExecutionError as error:
            raise SystemExit(f"notebook {path.name} failed against {args.results}:\n{error}") from error
        nbformat.write(nb, out / path.name)
        write_html(nb, out / f"{path.stem}.html")
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s -> {out / path.name}, .html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
