"""Ground truth for the MI estimators: correlated Gaussian pairs, whose mutual information is known exactly.

If ``x_i, y_i`` are standard normal pairs with correlation ``rho_i`` (independent across ``i``),
``I(X; Y) = -1/2 sum_i log(1 - rho_i^2)`` nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def gaussian_mi(rhos: float | Sequence[float]) -> float:
    """True MI in nats of independent correlated Gaussian pairs: ``-1/2 sum_i log(1 - rho_i^2)``."""
    r = np.atleast_1d(np.asarray(rhos, dtype=np.float64))
    if np.any(np.abs(r) >= 1):
        raise ValueError(f"correlations must be in (-1, 1), got {r.tolist()}")
    return float(-0.5 * np.sum(np.log1p(-(r**2))))


def rho_for_mi(mi: float, dim: int) -> float:
    """The per-coordinate correlation giving total MI ``mi`` nats spread evenly over ``dim`` pairs."""
    if mi < 0 or dim < 1:
        raise ValueError(f"need mi >= 0 and dim >= 1, got mi={mi}, dim={dim}")
    return float(math.sqrt(-math.expm1(-2.0 * mi / dim)))


def sample_correlated_gaussians(
    n: int, rhos: float | Sequence[float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` samples of ``(x, y)``, each ``(n, d)`` with ``d = len(rhos)``; ``corr(x_i, y_i) = rho_i``.

    Returns ``(x, y, true_mi_nats)``.
    """
    r = np.atleast_1d(np.asarray(rhos, dtype=np.float64))
    true_mi = gaussian_mi(r)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, r.size))
    noise = rng.standard_normal((n, r.size))
    y = r * x + np.sqrt(1.0 - r**2) * noise
    return x, y, true_mi
