"""LLaVA's modality- and length-grouped sampler (``vista.data.sampler``), on planted signed lengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vista.data import ModalityLengthGroupedSampler, modality_length_grouped_indices


def _signed_lengths(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 500, n)
    return np.where(rng.random(n) < 0.7, lengths, -lengths).tolist()


@pytest.mark.parametrize(
    "n, batch_size, world_size, mult", [(103, 4, 1, 1), (257, 3, 4, 1), (500, 8, 2, 5), (7, 4, 2, 1)]
)
def test_sampler_covers_every_index_once_and_groups_modalities(n, batch_size, world_size, mult):
    signed = _signed_lengths(n)
    order = list(ModalityLengthGroupedSampler(signed, batch_size, world_size, megabatch_mult=mult, seed=1))
    assert sorted(order) == list(range(n))
    megabatch = batch_size * world_size
    has_image = np.array(signed) > 0
    n_image = int(has_image.sum())
    tail = n_image % megabatch + (n - n_image) % megabatch
    for start in range(0, n - tail, megabatch):
        block = has_image[order[start : start + megabatch]]
        assert block.all() or not block.any(), f"megabatch at {start} mixes modalities"


def test_sampler_groups_lengths_and_balances_ranks():
    signed = _signed_lengths(4000, seed=2)
    lengths = np.abs(signed)
    batch_size, world_size = 8, 2

    def padding(order: list[int]) -> float:
        batches = np.array(order[: len(order) // batch_size * batch_size]).reshape(-1, batch_size)
        return float((lengths[batches].max(1, keepdims=True) - lengths[batches]).mean())

    grouped = modality_length_grouped_indices(signed, batch_size, world_size, megabatch_mult=50)
    random_order = torch.randperm(len(signed), generator=torch.Generator().manual_seed(0)).tolist()
    assert padding(grouped) < 0.2 * padding(random_order)
    # Within a megabatch the two ranks' batches carry nearly equal total length (LLaVA's split_to_even_chunks).
    mb = batch_size * world_size
    imbalance = [
        abs(lengths[grouped[s : s + batch_size]].sum() - lengths[grouped[s + batch_size : s + mb]].sum())
        / lengths[grouped[s : s + mb]].sum()
        for s in range(0, len(grouped) - 2 * mb, mb)
    ]
    assert np.median(imbalance) < 0.05


def test_sampler_is_deterministic_per_seed_and_epoch():
    signed = _signed_lengths(200)
    sampler = ModalityLengthGroupedSampler(signed, batch_size=4, seed=3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(ModalityLengthGroupedSampler(signed, batch_size=4, seed=3)) == first
