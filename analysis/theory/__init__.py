"""The paper's theory, computed exactly: a generative source of an image and text, its information profile per
text position, and the paper's quantities derived from it.

- :mod:`analysis.theory.source`: :class:`VisualMarkovSource` (the image latent ``V`` and the text ``Y_1..Y_T``);
- :mod:`analysis.theory.profile`: :func:`information_profile` (exact or Monte Carlo entropies and MIs, nats);
- :mod:`analysis.theory.quantities`: shares, chain-rule residuals, VISTA's weighted signal, the lemmas;
- :mod:`analysis.theory.bridge`: tiny models trained on the source, measured against the exact curve;
- :mod:`analysis.theory.plots`: the figures; :mod:`analysis.theory.cli`: ``vista theory``.
"""

from analysis.theory.profile import METHODS, PROFILE_COLUMNS, Method, information_profile
from analysis.theory.quantities import (
    WEIGHTINGS,
    Weighting,
    alignment_shares,
    chain_rule_residuals,
    lemma_checks,
    objective_by_length,
    vista_weighted_signal,
    vista_weights,
)
from analysis.theory.source import VisualMarkovSource

__all__ = [
    "METHODS",
    "PROFILE_COLUMNS",
    "WEIGHTINGS",
    "Method",
    "VisualMarkovSource",
    "Weighting",
    "alignment_shares",
    "chain_rule_residuals",
    "information_profile",
    "lemma_checks",
    "objective_by_length",
    "vista_weighted_signal",
    "vista_weights",
]
