"""notebooks/03_mutual_information.ipynb: up to date with its generator; executes and shows what it claims."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_mutual_information.ipynb"
GENERATOR = ROOT / "reproduce" / "notebooks" / "make_03_mi.py"


def _generator():
    spec = importlib.util.spec_from_file_location("make_03_mi", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_matches_generator():
    shipped = [(c.cell_type, c.source) for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    assert shipped == [(c.cell_type, c.source) for c in _generator().build().cells], (
        "run: .venv/bin/python reproduce/notebooks/make_03_mi.py"
    )


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
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source += f"\nFEATURES = {str(_states_file(tmp_path / 'states.npz'))!r}"
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts.append(out.get("data", {}).get("text/plain", ""))
            images += "image/png" in out.get("data", {})
    text = "\n".join(texts)
    checks = {k: float(v) for k, v in re.findall(r"^(.+?): (-?[\d.]+)$", text, flags=re.M)}
    assert checks["KSG/Gaussian worst |bias| at d=1 (nats)"] < 0.05
    assert checks["InfoNCE max(estimate - cap) (must be <= 0)"] <= 0
    assert abs(checks["KSG shift under cubing at d=1 (nats)"]) < 0.06
    assert checks["Gaussian shift under cubing at d=1 (nats)"] < -0.1
    assert images == 3  # bias curves, InfoNCE cap, training curves
    # Section 5 on the planted states: a position table with both targets.
    assert "position" in text and "h_t" in text and "e_t" in text
    assert (tmp_path / "mi_by_position.png").stat().st_size > 1000
