"""Mutual-information estimators, validated on correlated Gaussians with known MI.

``estimate_mi(x, y, method=...)`` takes paired samples ``x`` of shape ``(N, d_x)`` and ``y`` of shape ``(N, d_y)``
(1-D arrays are treated as one column) and returns an :class:`MIEstimate` whose ``value`` is in nats.

Methods:
- ``"ksg"``: Kraskov-Stoegbauer-Grassberger estimator 1 (k nearest neighbours in the joint space under the
  max-norm, marginal counts within that radius; scipy ``cKDTree``). Consistent, invariant to invertible
  per-variable transforms in the large-sample limit; biased low at high MI and high dimension.
- ``"gaussian"``: ``1/2 (log|S_x| + log|S_y| - log|S_xy|)`` from sample covariances, optionally corrected for
  the exact small-sample bias of Gaussian log-determinants. Exact for jointly Gaussian data; for other data it is
  the MI of the Gaussian with the same covariance (a lower bound on the true MI when the marginals are Gaussian).
- ``"infonce"``, ``"mine"`` (Donsker-Varadhan with MINE's moving-average gradient correction), ``"nwj"``,
  ``"smile"`` (DV with the partition term clipped to ``[-tau, tau]``, critic trained with the JS objective):
  variational lower bounds with a small torch MLP critic, trained on a train split and evaluated on a held-out
  split. InfoNCE can never exceed ``log B`` for evaluation batch size ``B`` (reported as ``cap``). A held-out
  bound is negative when the critic overfits (measured: about -0.19 nats at I = 0 with d = 5, 2,500 training
  samples, 500 steps; with tens of training samples it memorises them and the held-out bound falls to -3 to -130
  nats, lower the more steps: see :mod:`analysis.mi.critics`) and far below the truth when it is undertrained
  (MINE/NWJ at I = 2 nats: -0.3). A constant critic scores 0, so a held-out value below -0.25 nats beyond its 95%
  interval is flagged (``details["below_floor"]``; ``vista mi`` warns): it says nothing about the MI.

Every method first adds ``jitter`` (default :data:`DEFAULT_JITTER`) relative noise to break exact ties.

Ground truth: if ``x_i, y_i`` are standard normal pairs with correlation ``rho_i`` (independent across ``i``),
``I(X; Y) = -1/2 sum_i log(1 - rho_i^2)`` (:func:`gaussian_mi`, :func:`sample_correlated_gaussians`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from analysis.mi.critics import critic_mi
from analysis.mi.estimators import (
    CRITIC_METHODS,
    DEFAULT_JITTER,
    METHODS,
    MIEstimate,
    check_k,
    check_pair,
    gaussian_mi_estimate,
    ksg_mi,
    pca_reduce,
    zscore,
)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (1 is fastest for small critics on a shared CPU)."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def estimate_mi(
    x: Any,
    y: Any,
    method: str = "ksg",
    *,
    standardize: bool = True,
    pca_dim: int | None = None,
    jitter: float = DEFAULT_JITTER,
    seed: int = 0,
    **options: Any,
) -> MIEstimate:
    """Estimate ``I(X; Y)`` in nats from paired samples ``x`` (N, d_x) and ``y`` (N, d_y).

    Args:
        method: one of ``METHODS``.
        standardize: z-score every column first (KSG's max-norm is scale dependent; harmless otherwise).
        pca_dim: if set, reduce each of x and y separately to at most this many principal components
            (a non-invertible map: the result estimates the MI of the projections, a lower bound).
        jitter: add Gaussian noise of this size (relative to each column's std; constant columns stay constant)
            to break exact ties, before standardising. Default :data:`DEFAULT_JITTER` (1e-6): without it KSG
            is wrong on duplicated samples (0.5 nats for a constant ``y``, see there); 0 turns it off, and KSG
            then raises on duplicates or ties.
        seed: seeds the jitter and the critic methods (split, batches, initialisation).
        options: method options: ``ksg``: ``k`` (3), ``workers`` (1); ``gaussian``: ``bias_correct`` (True),
            ``ridge`` (0); critic methods: see :func:`critic_mi`, plus ``threads`` (1).

    Returns:
        an :class:`MIEstimate` (``value``, ``stderr`` in nats; preprocessing in ``details``: ``jitter``,
        ``pca_explained_x``/``_y``).

    Raises:
        ValueError: unknown ``method``; ``x``/``y`` of the wrong shape, with NaN/inf, of different lengths or with
            too few samples; ``k < 1``; ``jitter < 0``; ``pca_dim < 1``; KSG on duplicates with ``jitter=0``; a
            singular covariance (Gaussian); a train/eval split too small (critics).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    start = time.perf_counter()
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0 (relative noise), got {jitter}")
    k = check_k(options.get("k", 3)) if method == "ksg" else 0
    min_samples = {"ksg": k + 2, "gaussian": 4}.get(method, 8)
    x, y = check_pair(x, y, min_samples)
    pre: dict[str, Any] = {}
    if jitter:
        rng = np.random.default_rng(seed + 7919)
        x = x + jitter * x.std(axis=0) * rng.standard_normal(x.shape)
        y = y + jitter * y.std(axis=0) * rng.standard_normal(y.shape)
        pre["jitter"] = jitter
    if standardize:
        x, y = zscore(x), zscore(y)
    if pca_dim is not None:
        if pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {pca_dim}")
        x, pre["pca_explained_x"] = pca_reduce(x, pca_dim)
        y, pre["pca_explained_y"] = pca_reduce(y, pca_dim)

    if method in CRITIC_METHODS:
        with _torch_threads(options.pop("threads", 1)):
            est = critic_mi(x, y, method, seed=seed, **options)
    else:
        fn = ksg_mi if method == "ksg" else gaussian_mi_estimate
        value, stderr, details = fn(x, y, **options)
        est = MIEstimate(value, method, x.shape[0], x.shape[1], y.shape[1], stderr=stderr, details=details)
    est.details.update(pre)
    est.seconds = time.perf_counter() - start
    return est
