"""Paired samples from a features file for ``vista mi features``: an ``.npz`` with arrays ``x`` (N, d_x) and
``y`` (N, d_y), or a parquet file with columns ``x`` and ``y`` holding equal-length vectors (or numeric columns
``x_0, x_1, ...`` and ``y_0, ...``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vista.errors import MissingInputError, UsageError


def _stack_column(df: pd.DataFrame, key: str, path: Path) -> np.ndarray:
    if key in df.columns:
        col = df[key]
        if col.dtype != object:
            return col.to_numpy(dtype=np.float64)
        lengths = col.map(len)
        if lengths.nunique() != 1:
            bad = int((lengths != lengths.iloc[0]).to_numpy().nonzero()[0][0])
            raise ValueError(
                f"{path}: column {key!r} row {bad} has {lengths.iloc[bad]} values, row 0 has {lengths.iloc[0]}"
            )
        return np.stack([np.asarray(v, dtype=np.float64) for v in col])
    prefixed = [c for c in df.columns if str(c).startswith(f"{key}_") and str(c)[len(key) + 1 :].isdigit()]
    if not prefixed:
        raise ValueError(
            f"{path}: no column {key!r} (vectors) nor {key}_0, {key}_1, ...; columns are {list(df.columns)[:20]}"
        )
    prefixed.sort(key=lambda c: int(str(c)[len(key) + 1 :]))
    return df[prefixed].to_numpy(dtype=np.float64)


def load_features(path: str | Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Paired samples ``(x (N, d_x), y (N, d_y))`` from an ``.npz`` or parquet file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"--features {path}: no such file (an .npz with arrays x, y or a parquet file)"
        )
    if path.suffix == ".npz":
        with np.load(path) as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise UsageError(
                    f"{path}: no array {', '.join(missing)}; it has {', '.join(data.files)} "
                    f"(choose with --x-key/--y-key, e.g. --x-key {data.files[0]})"
                )
            return np.asarray(data[x_key]), np.asarray(data[y_key])
    if path.suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        return _stack_column(df, x_key, path), _stack_column(df, y_key, path)
    raise UsageError(f"{path}: unsupported features file type {path.suffix!r}; use .npz or .parquet")
