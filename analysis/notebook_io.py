"""Where the notebooks find a run's results: one resolver shared by all four notebooks and the notebook stages.

``reproduce/notebooks/run_notebooks.py`` (the ``notebook-NN`` stages of ``run_all.sh``) executes each notebook with
``$VISTA_RESULTS`` set to the run's results folder; a reader opening a notebook by hand gets ``results/tiny`` of the
repository (the default profile's run) unless they set a notebook's ``RESULTS`` parameter or the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS_ENV = "VISTA_RESULTS"
DEFAULT_RESULTS = Path("results") / "tiny"


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder holding ``pyproject.toml`` above ``start`` (default: the working directory)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def results_folder(value: str | Path | None = None) -> Path:
    """A run's results folder: ``value`` if given, else ``$VISTA_RESULTS``, else ``<repo>/results/tiny``.

    The folder need not exist (a notebook then says how to produce it).
    """
    chosen = value or os.environ.get(RESULTS_ENV) or repo_root() / DEFAULT_RESULTS
    return Path(chosen).expanduser().resolve()


def shown(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (what stored notebook outputs print), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)
