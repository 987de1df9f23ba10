"""Image ablation: how much the gold token's log-probability drops when the image is taken away.

``value = log p(x_t | v, x_<t) - log p(x_t | counterfactual, x_<t)`` (nats), one row per text position and
counterfactual. Variants (see :mod:`analysis.probes.scoring`):

- ``masked``: image tokens masked out of attention, as CAL does (exact source: the text-only predictive). For a
  VLM this removes the image *tokens*, not only their content, so it is not zero for a model that ignores the
  image content (the tokens still take attention mass); use ``blank`` or the swap probe for content dependence.
- ``blank``: the image replaced by a blank (mean-colour) image (VLM only).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from analysis.probes.scoring import OWN, Condition, ProbeSample, Scorer, concat, tidy

ABLATIONS = ("masked", "blank")


def ablation_probe(
    scorer: Scorer,
    samples: Sequence[ProbeSample],
    variants: Sequence[str] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Gold log-probability with the image minus without it, per text position.

    Args:
        scorer: any :class:`~analysis.probes.scoring.Scorer`.
        samples: the sequences.
        variants: subset of ``("masked", "blank")``; default: those the scorer supports.
        progress: show a tqdm bar over variants.

    Returns:
        Tidy frame (probe ``"ablation"``) with extra columns ``logp_image`` and ``logp_ablated`` (nats).
    """
    variants = [v for v in ABLATIONS if v in scorer.conditions] if variants is None else list(variants)
    for variant in variants:
        if variant not in ABLATIONS or variant not in scorer.conditions:
            raise ValueError(
                f"ablation variant {variant!r} not available; scorer supports {scorer.conditions}"
            )
    own = scorer.token_log_probs(samples, OWN)
    frames = []
    for variant in tqdm(variants, desc="ablation", disable=not progress):
        ablated = scorer.token_log_probs(samples, Condition(variant))
        for sample, lp, la in zip(samples, own, ablated):
            table = scorer.text_positions(sample)
            frames.append(tidy(table, "ablation", variant, lp - la, logp_image=lp, logp_ablated=la))
    return concat(frames)
