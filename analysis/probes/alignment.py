"""The VISTA alignment itself: distance and cosine between ``h_v`` and each text embedding ``e_t``.

``h_v`` is the final hidden state (after the final norm) at the sample's last image token and ``e_t`` the input
embedding of the text token at position t, exactly the two quantities the VISTA loss aligns
(:func:`vista.loss.anchor_states`, :func:`vista.loss.alignment_terms`). Variants: ``l2`` = ``(1/d) ||h_v - e_t||^2`` (the VISTA L2 term before position weighting)
and ``cosine`` = ``cos(h_v, e_t)``. Rows cover the scored text positions (every text token but the first).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.probes.scoring import OWN, HFScorer, ProbeSample, concat, tidy
from vista.loss import alignment_terms, anchor_states
from vista.model import capture_vista_states


def alignment_probe(scorer: HFScorer, samples: Sequence[ProbeSample], progress: bool = False) -> pd.DataFrame:
    """Per text position, the mean squared distance and the cosine between ``h_v`` and ``e_t``.

    Args:
        scorer: an :class:`HFScorer`.
        samples: the sequences (each with one image).
        progress: show a tqdm bar.

    Returns:
        Tidy frame (probe ``"alignment"``, variants ``l2`` and ``cosine``); ``l2`` is in squared hidden units.
    """
    if not isinstance(scorer, HFScorer):
        raise TypeError("alignment_probe needs an HFScorer (a transformers model with hidden states)")
    frames = []
    starts = range(0, len(samples), scorer.batch_size)
    for start in tqdm(starts, desc="alignment", disable=not progress):
        chunk = samples[start : start + scorer.batch_size]
        with torch.no_grad(), capture_vista_states(scorer.model) as capture:
            scorer.forward(chunk, OWN)
        hidden, embeds = capture.states()
        for i, sample in enumerate(chunk):
            mask = scorer.image_mask(sample).to(hidden.device)  # (S_i,) the sample's unpadded positions
            h_v = anchor_states(hidden[i : i + 1, : mask.numel()], mask[None])[0].double().cpu()
            e_t = embeds[i, scorer.scored_positions(sample)].double().cpu()  # (T, d)
            terms = alignment_terms(h_v, e_t)  # the VISTA loss's own definitions, before position weighting
            table = scorer.text_positions(sample)
            frames.append(tidy(table, "alignment", "l2", terms["l2"]))
            frames.append(tidy(table, "alignment", "cosine", terms["cosine"]))
    return concat(frames)
