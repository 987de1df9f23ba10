"""Per-position KL divergence between the with-image and a counterfactual next-token distribution.

``value = KL( p(. | v, x_<t) || p(. | counterfactual, x_<t) )`` in nats, over the whole vocabulary. Counterfactuals:
``masked`` and ``blank`` (see :mod:`analysis.probes.ablation`), and ``swap``: the uniform mixture of the
next-token distributions under K contrast images. On the exact source, the mean over samples of the ``masked`` KL at
position t is exactly ``I(V; Y_t | Y_<t)`` (the text-only predictive is the exact mixture over the posterior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from analysis.probes.scoring import OWN, Condition, ProbeSample, Scorer, concat, tidy
from analysis.probes.swap import draw_contrast_images

KL_COUNTERFACTUALS = ("masked", "blank", "swap")


def kl_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """(T,) KL(p || q) in nats from (T, V) log-distributions (0 log 0 = 0; inf where q = 0 < p)."""
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(dim=-1)


def kl_probe(
    scorer: Scorer,
    samples: Sequence[ProbeSample],
    counterfactuals: Sequence[str] | None = None,
    num_swaps: int = 4,
    contrast: Sequence[Sequence[Any]] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """KL from the with-image next-token distribution to each counterfactual, per text position.

    Args:
        scorer: any scorer.
        samples: the sequences.
        counterfactuals: subset of ``("masked", "blank", "swap")``; default: ``masked``/``blank`` where supported,
            plus ``swap``.
        num_swaps, contrast, seed: contrast images for ``swap`` (see :func:`~analysis.probes.swap.swap_probe`).
        progress: show a tqdm bar over counterfactuals.

    Returns:
        Tidy frame (probe ``"kl"``, variant = counterfactual).
    """
    if counterfactuals is None:
        counterfactuals = [c for c in ("masked", "blank") if c in scorer.conditions] + ["swap"]
    for cf in counterfactuals:
        if cf not in KL_COUNTERFACTUALS or (cf != "swap" and cf not in scorer.conditions):
            raise ValueError(f"KL counterfactual {cf!r} not available; scorer supports {scorer.conditions}")
    own = scorer.next_token_log_probs(samples, OWN)
    frames = []
    for cf in tqdm(counterfactuals, desc="kl", disable=not progress):
        if cf == "swap":
            counter = _swap_mixture(scorer, samples, num_swaps, contrast, seed)
        else:
            counter = scorer.next_token_log_probs(samples, Condition(cf))
        for sample, lp, lq in zip(samples, own, counter):
            frames.append(tidy(scorer.text_positions(sample), "kl", cf, kl_divergence(lp, lq)))
    return concat(frames)


def _swap_mixture(
    scorer: Scorer,
    samples: Sequence[ProbeSample],
    num_swaps: int,
    contrast: Sequence[Sequence[Any]] | None,
    seed: int,
) -> list[Tensor]:
    """Per sample, (T, V) log of the uniform mixture of next-token distributions under its contrast images."""
    if contrast is None:
        contrast = draw_contrast_images(samples, num_swaps, seed)
    out = []
    for sample, images in zip(samples, contrast):
        logq = scorer.next_token_log_probs([sample] * len(images), Condition.other(images))
        out.append(torch.logsumexp(torch.stack(logq), dim=0) - math.log(len(images)))
    return out
