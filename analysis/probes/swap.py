"""Image swap: how much more likely the gold token is under the sample's own image than under other images.

For a sample with image ``v``, K contrast images ``v_1 .. v_K`` and ``p_k = p(x_t | v_k, x_<t)`` (``p_0`` = own):

- ``uniform`` (the usual image-swap contrast, with the own image included in the mean so it is bounded):
  ``log p_0 - log( (p_0 + sum_k p_k) / (K + 1) )``.
  With contrast images drawn from the data (i.e. from the marginal of ``V``) it converges, as K grows, to
  ``E log p(x_t | v, x_<t) / sum_v' p(v') p(x_t | v', x_<t)``, which is ``I(V; X_t | X_<t)`` plus the expected
  KL between the text-only predictive and the prior mixture: it overestimates the conditional MI whenever the
  prefix already says something about the image (measured on the theory source in the tests).
- ``posterior`` (the default estimate of ``I(V; X_t | X_<t)``): the contrast images are reweighted by how well
  they explain the (supervised) prefix, ``w_k = p(x_<t | v_k)`` (self-normalised importance sampling of ``p(v | x_<t)``,
  from the same forward passes):
  ``log p_0 - log( p_0 / (K + 1) + K / (K + 1) * sum_k w_k p_k / sum_k w_k )``.
  Consistent for ``I(V; X_t | X_<t)`` (under the scored model's distribution) as K grows.

Both are at most ``log(K + 1)`` per token (the own image keeps weight ``1/(K + 1)`` in the mixture) and exactly 0
when every contrast image is the own image or when the model ignores the image content.

Cost: each sample is scored under its K+1 images as K+1 rows of the same text (one batched forward pass per
``batch_size`` rows), so the probe costs K+1 sequence forwards per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from analysis.probes.scoring import Condition, ProbeSample, Scorer, concat, tidy

SWAP_VARIANTS = ("posterior", "uniform")


def draw_contrast_indices(n: int, num_swaps: int, seed: int = 0, pool_size: int | None = None) -> np.ndarray:
    """(n, K) indices of contrast images, drawn without replacement per row.

    With ``pool_size=None`` the pool is the n samples themselves and row i never contains i; otherwise indices
    range over ``[0, pool_size)``.
    """
    exclude_own = pool_size is None
    limit = n - 1 if exclude_own else pool_size
    if not 1 <= num_swaps <= limit:
        raise ValueError(f"num_swaps={num_swaps}: need 1 <= K <= {limit} (pool of {pool_size or n} images)")
    rng = np.random.default_rng(seed)
    out = np.empty((n, num_swaps), dtype=np.int64)
    for i in range(n):
        picks = rng.choice(limit, size=num_swaps, replace=False)
        if exclude_own:
            picks[picks >= i] += 1  # skip the sample's own entry
        out[i] = picks
    return out


def draw_contrast_images(
    samples: Sequence[ProbeSample], num_swaps: int, seed: int = 0, pool: Sequence[Any] | None = None
) -> list[list[Any]]:
    """K contrast images per sample, drawn without replacement from the *other* samples' images (or ``pool``).

    Args:
        samples: the sequences; sample i never gets its own image as a contrast (when ``pool`` is None).
        num_swaps: K >= 1; at most the pool size (minus one without ``pool``).
        seed: random seed (see :func:`draw_contrast_indices` for the indices drawn).
        pool: images to draw from (default: the samples' own images).

    Returns:
        ``contrast[i]`` = list of K images for sample i.
    """
    if pool is None:
        pool, pool_size = [s.image for s in samples], None
    else:
        pool = list(pool)
        pool_size = len(pool)
    indices = draw_contrast_indices(len(samples), num_swaps, seed, pool_size)
    return [[pool[j] for j in row] for row in indices]


def swap_scores(logp: Tensor, weight_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Swap estimates from gold log-probabilities under the own and K contrast images.

    Args:
        logp: (K+1, T) float64; row 0 under the own image, rows 1..K under the contrast images.
        weight_mask: (T,) bool, prefix positions whose likelihood enters the posterior weights (default: all).

    Returns:
        ``{"uniform": (T,), "posterior": (T,)}`` in nats, each <= log(K+1).
    """
    k1 = logp.shape[0]
    if k1 < 2:
        raise ValueError(f"swap_scores needs the own image and at least one contrast image, got {k1} rows")
    own, others = logp[0], logp[1:]
    uniform = own - (torch.logsumexp(logp, dim=0) - math.log(k1))
    terms = others if weight_mask is None else torch.where(weight_mask, others, torch.zeros_like(others))
    log_w = torch.cumsum(terms, dim=1) - terms  # log p(x_<t | v_k), exclusive prefix sums
    log_w = log_w - torch.logsumexp(log_w, dim=0, keepdim=True)
    mixture = torch.logsumexp(log_w + others, dim=0)  # log sum_k w_k p_k (weights normalised)
    log_m = torch.logaddexp(own - math.log(k1), mixture + math.log((k1 - 1) / k1))
    return {"uniform": uniform, "posterior": own - log_m}


def swap_probe(
    scorer: Scorer,
    samples: Sequence[ProbeSample],
    num_swaps: int = 8,
    contrast: Sequence[Sequence[Any]] | None = None,
    seed: int = 0,
    samples_per_call: int = 8,
    weight_tokens: str = "supervised",
    progress: bool = False,
) -> pd.DataFrame:
    """The image-swap probe for every text position.

    Args:
        scorer: any scorer supporting the ``other`` condition.
        samples: the sequences.
        num_swaps: K, the number of contrast images per sample (ignored when ``contrast`` is given).
        contrast: explicit contrast images per sample (K each); default :func:`draw_contrast_images`.
        seed: seed for drawing contrast images.
        samples_per_call: samples whose K+1 rows are sent to the scorer together.
        weight_tokens: prefix tokens whose likelihood weights the contrast images in the ``posterior`` variant:
            ``"supervised"`` (default; a VLM's likelihood of unsupervised prompt tokens is not trained as a
            function of the image, so it would only add noise) or ``"all"``.
        progress: show a tqdm bar.

    Returns:
        Tidy frame (probe ``"swap"``, variants ``posterior`` and ``uniform``) with extra columns ``num_swaps``
        (K) and ``bound`` (log(K+1)), plus ``logp_image`` (own-image gold log-probability).
    """
    if contrast is None:
        contrast = draw_contrast_images(samples, num_swaps, seed)
    if len(contrast) != len(samples) or len({len(c) for c in contrast}) != 1:
        raise ValueError("contrast must hold the same number K >= 1 of images for every sample")
    k = len(contrast[0])
    if weight_tokens not in ("supervised", "all"):
        raise ValueError(f"weight_tokens={weight_tokens!r}; expected 'supervised' or 'all'")
    frames = []
    for start in tqdm(range(0, len(samples), samples_per_call), desc="swap", disable=not progress):
        chunk = samples[start : start + samples_per_call]
        rows = [s for s in chunk for _ in range(k + 1)]
        images = [img for s, c in zip(chunk, contrast[start:]) for img in [s.image, *c]]
        logp = scorer.token_log_probs(rows, Condition.other(images))
        for i, sample in enumerate(chunk):
            table = scorer.text_positions(sample)
            mask = torch.from_numpy(table["supervised"]) if weight_tokens == "supervised" else None
            scores = swap_scores(torch.stack(logp[i * (k + 1) : (i + 1) * (k + 1)]), mask)
            for variant in SWAP_VARIANTS:
                frames.append(
                    tidy(
                        table,
                        "swap",
                        variant,
                        scores[variant],
                        num_swaps=k,
                        bound=math.log(k + 1),
                        logp_image=logp[i * (k + 1)],
                    )
                )
    return concat(frames)
