"""Mutual information between representations: estimators validated on known ground truth, and its measurement
between a checkpoint's image state and each text position.

- :mod:`analysis.mi.estimate`: :func:`estimate_mi`, the one entry point (methods, preprocessing);
- :mod:`analysis.mi.estimators` (KSG, Gaussian, :class:`MIEstimate`), :mod:`analysis.mi.critics` (InfoNCE, MINE,
  NWJ, SMILE), :mod:`analysis.mi.ground_truth` (correlated Gaussians with known MI);
- :mod:`analysis.mi.states` (``h_v``, ``e_t``, ``h_t`` from a checkpoint), :mod:`analysis.mi.features` (a
  features file), :mod:`analysis.mi.by_position` (MI per text position); :mod:`analysis.mi.cli`: ``vista mi``.
"""

from analysis.mi.critics import critic_mi, critic_warning, dv_bound, infonce_bound, js_objective, nwj_bound
from analysis.mi.estimate import estimate_mi
from analysis.mi.estimators import (
    CRITIC_METHODS,
    DEFAULT_JITTER,
    METHODS,
    MIEstimate,
    gaussian_mi_estimate,
    ksg_mi,
    pca_reduce,
    zscore,
)
from analysis.mi.ground_truth import gaussian_mi, rho_for_mi, sample_correlated_gaussians

__all__ = [
    "CRITIC_METHODS",
    "DEFAULT_JITTER",
    "METHODS",
    "MIEstimate",
    "critic_mi",
    "critic_warning",
    "dv_bound",
    "estimate_mi",
    "gaussian_mi",
    "gaussian_mi_estimate",
    "infonce_bound",
    "js_objective",
    "ksg_mi",
    "nwj_bound",
    "pca_reduce",
    "rho_for_mi",
    "sample_correlated_gaussians",
    "zscore",
]
