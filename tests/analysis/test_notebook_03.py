"""notebooks/03_mutual_information.ipynb: up to date with its generator; executes and shows what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
from notebook_utils import NOTEBOOKS, execute, outputs, parameters_cell

NOTEBOOK = NOTEBOOKS / "03_mutual_information.ipynb"


def _states_file(path: Path) -> Path:
    """A states.npz like `vista mi checkpoint --save-states` writes: h_t carries h_v, e_t is constant."""
    rng = np.random.default_rng(0)
    n, t, h = 60, 4, 6
    h_v = rng.standard_normal((n, h))
    h_t = np.repeat(h_v, t, axis=0) + 0.3 * rng.standard_normal((n * t, h))
    np.savez(
        path,
        index=np.arange(n),
        h_v=h_v,
        e_t=np.tile(np.eye(t, h), (n, 1)),
        h_t=h_t,
        supervised=np.ones(n * t, dtype=bool),
        offsets=np.arange(0, n * t + 1, t),
    )
    return path


def test_notebook_executes_and_checks_hold(monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters_cell(nb).source += f"\nFEATURES = {str(_states_file(tmp_path / 'states.npz'))!r}"
    text, images = outputs(execute(nb, tmp_path))
    checks = {k: float(v) for k, v in re.findall(r"^(.+?): (-?[\d.]+)$", text, flags=re.M)}
    assert checks["KSG/Gaussian worst |bias| at d=1 (nats)"] < 0.05
    assert checks["InfoNCE max(estimate - cap) (must be <= 0)"] <= 0
    assert abs(checks["KSG shift under cubing at d=1 (nats)"]) < 0.06
    assert checks["Gaussian shift under cubing at d=1 (nats)"] < -0.1
    assert images == 3  # bias curves, InfoNCE cap, training curves
    # Section 5 on the planted states: a position table with both targets.
    assert "position" in text and "h_t" in text and "e_t" in text
    assert (tmp_path / "mi_by_position.png").stat().st_size > 1000
