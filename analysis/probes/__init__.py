"""Probes of how much each text position depends on the image, for a LLaVA-recipe model (:class:`HFScorer`), any HF
VLM family of :mod:`vista.families` (:class:`ChatScorer`) or the exact theory source (:class:`ExactScorer`), through
one scoring interface (:mod:`analysis.probes.scoring`).

Every probe returns a tidy ``pandas.DataFrame`` with one row per (sample, text position, probe variant) and the
columns ``sample_id, abs_position, position, token_id, token, supervised, after_image, text_len, n_supervised,
probe, variant, value`` (plus probe-specific columns). Values are in nats unless stated otherwise.
"""

from analysis.probes.ablation import ablation_probe
from analysis.probes.alignment import alignment_probe
from analysis.probes.attention import attention_probe
from analysis.probes.chat_scoring import ChatScorer
from analysis.probes.kl import kl_probe
from analysis.probes.scoring import (
    BLANK,
    MASKED,
    OWN,
    Condition,
    ExactScorer,
    HFScorer,
    ProbeSample,
    Scorer,
)
from analysis.probes.swap import draw_contrast_images, swap_probe, swap_scores

__all__ = [
    "BLANK",
    "MASKED",
    "OWN",
    "ChatScorer",
    "Condition",
    "ExactScorer",
    "HFScorer",
    "ProbeSample",
    "Scorer",
    "ablation_probe",
    "alignment_probe",
    "attention_probe",
    "draw_contrast_images",
    "kl_probe",
    "swap_probe",
    "swap_scores",
]
