"""The MI estimators that need no training: KSG and the Gaussian estimate, their input checks and preprocessing,
and :class:`MIEstimate`, the result every estimator returns (the critic-based ones: :mod:`analysis.mi.critics`;
the entry point: :func:`analysis.mi.estimate.estimate_mi`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

METHODS = ("ksg", "gaussian", "infonce", "mine", "nwj", "smile")
CRITIC_METHODS = ("infonce", "mine", "nwj", "smile")

DEFAULT_JITTER = 1e-6
"""Default relative noise :func:`analysis.mi.estimate.estimate_mi` (and ``vista mi --jitter``) adds to every
column (``jitter x`` the column's std; constant columns stay constant) to break exact ties. KSG needs continuous
data: duplicated samples (a repeated image, say) make neighbour counts meaningless; with a constant ``y`` and 20
pairs of duplicated 8-D ``x``, unjittered KSG gave 0.5 nats instead of 0. On continuous data the noise is
negligible: measured on correlated Gaussians (N = 5000, d = 1, 2, 5, I = 1 nat, 10 seeds) it moved KSG by at most
2e-5 nats and the Gaussian estimate by 1e-7. It is drawn in row order, so permuting rows changes KSG by as much."""


@dataclass
class MIEstimate:
    """One MI estimate. ``value`` and ``stderr`` are in nats.

    ``stderr`` is an approximation, not a calibrated interval (see ``details["stderr_note"]``; measured against
    the spread over seeds on correlated Gaussians, N = 5000: KSG's is ~2x too large at d = 1 and ~2x too small
    at d = 5; the Gaussian's is right at d <= 2 and ~0.8x at d = 5). Repeat over seeds or subsamples when the
    spread matters. ``cap`` is an upper bound the estimator cannot exceed by construction (InfoNCE: mean of
    ``log B`` over evaluation batches); ``train_curve`` is the critic's training objective per step (nats, on
    training batches) and ``eval_curve`` the ``(step, value)`` pairs on the evaluation split when ``eval_every``
    is set.
    """

    value: float
    method: str
    n_samples: int
    dim_x: int
    dim_y: int
    stderr: float | None = None
    cap: float | None = None
    n_train: int | None = None
    n_eval: int | None = None
    train_curve: np.ndarray | None = None
    eval_curve: list[tuple[int, float]] | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a results table (curves and arrays left out)."""
        row = {
            "method": self.method,
            "mi": self.value,
            "stderr": self.stderr,
            "cap": self.cap,
            "n_samples": self.n_samples,
            "dim_x": self.dim_x,
            "dim_y": self.dim_y,
            "n_train": self.n_train,
            "n_eval": self.n_eval,
            "seconds": self.seconds,
        }
        row.update({k: v for k, v in self.details.items() if np.isscalar(v)})
        return row


# ----------------------------------------------------------------------------- input checks and preprocessing


def _as_2d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N,) or (N, d), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite values (NaN/inf) in {rows.size} rows, first rows: "
            f"{rows[:5].tolist()}"
        )
    return arr


def check_pair(x: Any, y: Any, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    x2, y2 = _as_2d(x, "x"), _as_2d(y, "y")
    if x2.shape[0] != y2.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x2.shape[0]} and {y2.shape[0]}")
    if x2.shape[0] < min_samples:
        raise ValueError(f"too few samples: got {x2.shape[0]}, this method needs at least {min_samples}")
    return x2, y2


def zscore(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column; constant columns are centred only (they carry no information)."""
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


def pca_reduce(a: np.ndarray, n_components: int, rtol: float = 1e-10) -> tuple[np.ndarray, float]:
    """Project ``a`` (N, d) on its top principal axes: at most ``n_components``, and only directions with
    non-zero variance (singular value > ``rtol`` x the largest; the others carry no information).

    Returns ``(scores (N, r), explained variance fraction)``. Not invertible when it drops informative
    components, so MI after PCA is at most the MI before (data processing inequality).
    """
    centred = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    keep = max(1, min(n_components, rank))
    total = float(np.sum(s**2))
    kept = float(np.sum(s[:keep] ** 2))
    return centred @ vt[:keep].T, (kept / total if total > 0 else 1.0)


# ----------------------------------------------------------------------------- KSG


def check_k(k: Any) -> int:
    """``k`` if it is a valid KSG neighbour count (an integer >= 1); else ValueError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"KSG needs k >= 1 neighbours (an integer), got k={k!r}")
    return int(k)


def ksg_mi(x: np.ndarray, y: np.ndarray, k: int = 3, workers: int = 1) -> tuple[float, float, dict]:
    """KSG estimator 1 (Kraskov, Stoegbauer and Grassberger 2004, Phys. Rev. E 69, 066138, eq. 8), max-norm in
    every space, on ``x`` (N, d_x) and ``y`` (N, d_y). Returns ``(value in nats, stderr in nats, details)``.

    ``I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >`` where ``n_x`` counts the other points strictly
    closer in x than the distance to the k-th joint neighbour.

    Raises:
        ValueError: ``k`` is not a positive integer, ``N <= k``, or the joint sample has exact duplicates or ties
            at a k-th neighbour distance (the counts then depend on tie order; add jitter, see
            :data:`DEFAULT_JITTER`).
    """
    check_k(k)
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"KSG with k={k} needs more than {k} samples, got {n}")
    xy = np.hstack([x, y])
    dist = cKDTree(xy).query(xy, k=min(k + 2, n), p=np.inf, workers=workers)[0]
    eps = dist[:, k]
    duplicated = dist[:, 1] == 0
    tied = (dist[:, k - 1] == eps) | (dist[:, k + 1] == eps if dist.shape[1] > k + 1 else False)
    if duplicated.any() or tied.any():
        raise ValueError(
            f"{int(duplicated.sum())} samples have an exact duplicate and {int((tied & ~duplicated).sum())} a tie "
            f"at the k-th neighbour distance in the joint (x, y) space (KSG needs continuous data); pass "
            f"jitter={DEFAULT_JITTER:g} (the default; relative noise) or use method='gaussian'"
        )
    radius = np.nextafter(eps, 0)  # query_ball_point counts distance <= r; KSG counts distance < eps
    n_x = cKDTree(x).query_ball_point(x, radius, p=np.inf, return_length=True, workers=workers) - 1
    n_y = cKDTree(y).query_ball_point(y, radius, p=np.inf, return_length=True, workers=workers) - 1
    terms = digamma(k) + digamma(n) - digamma(n_x + 1) - digamma(n_y + 1)
    details = {
        "k": k,
        "stderr_note": "std of per-point terms / sqrt(N); ignores neighbour dependence",
    }
    return float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n)), details


# ----------------------------------------------------------------------------- Gaussian


def _logdet_cov(a: np.ndarray, ridge: float, rtol: float = 1e-10) -> float:
    cov = np.atleast_2d(np.cov(a, rowvar=False))
    if ridge:
        cov = cov + ridge * np.eye(cov.shape[0])
    eig = np.linalg.eigvalsh(cov)
    if eig[0] <= rtol * max(eig[-1], 0.0) or not np.all(np.isfinite(eig)):
        raise ValueError(
            f"covariance of a {cov.shape[0]}-dimensional block is singular (N={a.shape[0]}, eigenvalues "
            f"{eig[0]:.3g} .. {eig[-1]:.3g}); reduce dimension with pca_dim=..., drop constant or "
            f"collinear columns, or set ridge > 0"
        )
    return float(np.sum(np.log(eig)))


def _wishart_logdet_bias(d: int, n: int) -> float:
    """``E[log|S|] - log|Sigma|`` for the unbiased sample covariance of ``n`` Gaussian samples in ``d`` dims."""
    i = np.arange(1, d + 1)
    return float(d * math.log(2.0 / (n - 1)) + np.sum(digamma((n - i) / 2.0)))


def gaussian_mi_estimate(
    x: np.ndarray, y: np.ndarray, bias_correct: bool = True, ridge: float = 0.0
) -> tuple[float, float, dict]:
    """MI of the Gaussian with the sample covariance of ``(x, y)``. Returns ``(value, stderr, details)``.

    ``bias_correct`` subtracts the exact expected bias of each sample log-determinant under Gaussianity, so
    the estimate is unbiased for Gaussian data (and may be slightly negative under independence).
    """
    n, dx = x.shape
    dy = y.shape[1]
    if n <= dx + dy + 1:
        raise ValueError(f"gaussian estimator needs more than d_x + d_y + 1 = {dx + dy + 1} samples, got {n}")
    lx, ly, lxy = _logdet_cov(x, ridge), _logdet_cov(y, ridge), _logdet_cov(np.hstack([x, y]), ridge)
    if bias_correct and not ridge:
        lx -= _wishart_logdet_bias(dx, n)
        ly -= _wishart_logdet_bias(dy, n)
        lxy -= _wishart_logdet_bias(dx + dy, n)
    value = 0.5 * (lx + ly - lxy)
    rho = _canonical_correlations(x, y)
    details = {
        "canonical_correlations": rho,
        "bias_corrected": bool(bias_correct and not ridge),
        "stderr_note": "delta method: sqrt(sum rho_i^2 / N) over canonical correlations",
    }
    return float(value), float(math.sqrt(np.sum(rho**2) / n)), details


def _canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations (descending) via QR of the centred blocks."""
    qx = np.linalg.qr(x - x.mean(axis=0))[0]
    qy = np.linalg.qr(y - y.mean(axis=0))[0]
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)
