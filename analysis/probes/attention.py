"""Attention mass on image tokens per layer and text position (needs ``attn_implementation="eager"``).

For the text token at absolute position s, the row is read at the query that predicts it (position s-1), averaged
over heads. Variants: ``image`` (mass on image tokens), ``text`` (mass on every other real token; ``image + text``
= 1) and ``first`` (mass on the first token alone, part of ``text``: the usual attention sink, which biases raw
attention mass, so treat it as a complementary signal only; FastV).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from analysis.probes.scoring import OWN, HFScorer, ProbeSample, concat, tidy


def attention_probe(scorer: HFScorer, samples: Sequence[ProbeSample], progress: bool = False) -> pd.DataFrame:
    """Attention mass (a fraction in [0, 1]) on image tokens, other tokens and the first token, per layer.

    Args:
        scorer: an :class:`HFScorer` whose model runs eager attention.
        samples: the sequences.
        progress: show a tqdm bar.

    Returns:
        Tidy frame (probe ``"attention"``, variants ``image``/``text``/``first``) with an extra ``layer`` column
        (0-based decoder layer).
    """
    if not isinstance(scorer, HFScorer):
        raise TypeError("attention_probe needs an HFScorer (a transformers model with attention weights)")
    frames = []
    starts = range(0, len(samples), scorer.batch_size)
    for start in tqdm(starts, desc="attention", disable=not progress):
        chunk = samples[start : start + scorer.batch_size]
        out = scorer.forward(chunk, OWN, output_attentions=True)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError(
                "the model returned no attention weights: load it with attn_implementation='eager'"
            )
        for i, sample in enumerate(chunk):
            table = scorer.text_positions(sample)
            queries = scorer.scored_positions(sample) - 1
            image = scorer.image_mask(sample)
            n = len(sample.input_ids)
            for layer, attn in enumerate(out.attentions):
                rows = attn[i, :, queries, :n].double().mean(dim=0).cpu()  # (T, n) head-averaged
                masses = {
                    "image": rows[:, image].sum(dim=1),
                    "text": rows[:, ~image].sum(dim=1),
                    "first": rows[:, 0],
                }
                for variant, value in masses.items():
                    frames.append(tidy(table, "attention", variant, value, layer=layer))
    return concat(frames)
