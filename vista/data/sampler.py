"""LLaVA's ``group_by_modality_length`` sampling: megabatches of one modality, grouped by length, balanced
across ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _length_grouped_megabatches(
    indices: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    world_size: int,
    megabatch_mult: int,
    generator: torch.Generator,
    balance: bool = True,
) -> list[np.ndarray]:
    """Shuffle ``indices``, sort pools of ``megabatch_mult`` megabatches by length (longest first) and cut them
    into megabatches of ``world_size * batch_size``, each balanced across ranks (``balance``; else left sorted).
    Only the last may be short."""
    megabatch = batch_size * world_size
    shuffled = indices[torch.randperm(len(indices), generator=generator).numpy()]
    pool = megabatch * megabatch_mult
    out = []
    for start in range(0, len(shuffled), pool):
        chunk = shuffled[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out.extend(
            _balance(chunk[i : i + megabatch], lengths, batch_size, world_size)
            if balance
            else chunk[i : i + megabatch]
            for i in range(0, len(chunk), megabatch)
        )
    return out


def _balance(megabatch: np.ndarray, lengths: np.ndarray, batch_size: int, world_size: int) -> np.ndarray:
    """Reorder a length-sorted megabatch rank-major so each rank's batch has a similar total length."""
    if world_size == 1 or len(megabatch) != batch_size * world_size:
        return megabatch
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for index in megabatch:  # longest first, to the lightest rank with room
        rank = min((r for r in range(world_size) if len(ranks[r]) < batch_size), key=lambda r: totals[r])
        ranks[rank].append(int(index))
        totals[rank] += int(lengths[index])
    return np.array([i for r in ranks for i in r], dtype=np.int64)


def modality_length_grouped_indices(
    modality_lengths: Sequence[int],
    batch_size: int,
    world_size: int = 1,
    megabatch_mult: int = 1,
    generator: torch.Generator | None = None,
    group_by_modality: bool = True,
    balance: bool = True,
) -> list[int]:
    """A permutation of ``range(len(modality_lengths))`` grouped like LLaVA's ``group_by_modality_length``.

    ``modality_lengths[i]`` is +length for samples with images, -length for text-only ones. Every megabatch of
    ``world_size * batch_size`` consecutive indices holds one modality, except a final mixed tail made of each
    modality's incomplete last megabatch. Within a megabatch, indices are grouped by length and balanced across
    ranks (rank ``r`` takes the ``r``-th block of ``batch_size``). ``megabatch_mult`` > 1 sorts pools of that many
    megabatches by length, which also cuts padding (LLaVA: 1). Megabatch order is shuffled. ``balance=False`` leaves
    each megabatch sorted longest first: on one process with gradient accumulation (``world_size`` = accumulation
    steps) an optimizer step's micro-batches are then its longest records, then its shortest, instead of two of
    similar total length; the records of each step are the same either way.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    signed = np.asarray(modality_lengths, dtype=np.int64)
    if (signed == 0).any():
        raise ValueError("modality_lengths must be non-zero (+length with images, -length text-only)")
    lengths = np.abs(signed)
    megabatch = batch_size * world_size
    groups = (
        [np.flatnonzero(signed > 0), np.flatnonzero(signed < 0)]
        if group_by_modality
        else [np.arange(len(signed))]
    )
    full, tail = [], []
    for group in groups:
        if len(group) == 0:
            continue
        megabatches = _length_grouped_megabatches(
            group, lengths, batch_size, world_size, megabatch_mult, generator, balance
        )
        if len(megabatches[-1]) < megabatch:
            tail.append(megabatches.pop())
        full.extend(megabatches)
    order = torch.randperm(len(full), generator=generator).tolist()
    ordered = [full[i] for i in order] + tail
    return np.concatenate(ordered).tolist() if ordered else []


class ModalityLengthGroupedSampler(Sampler[int]):
    """Sampler for ``group_by_modality_length`` training (see :func:`modality_length_grouped_indices`).

    In a ``transformers.Trainer`` subclass, return it from ``_get_train_sampler`` with
    ``batch_size=args.train_batch_size`` and ``world_size=args.world_size * args.gradient_accumulation_steps``
    (LLaVA's choice: all micro-batches of one optimizer step share a modality). The order depends only on
    ``seed`` and the epoch (``set_epoch``), so a resumed run sees the same order. ``balance``: see
    :func:`modality_length_grouped_indices`.
    """

    def __init__(
        self,
        modality_lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        megabatch_mult: int = 1,
        seed: int = 0,
        group_by_modality: bool = True,
        balance: bool = True,
    ) -> None:
        if batch_size < 1 or world_size < 1 or megabatch_mult < 1:
            raise ValueError("batch_size, world_size and megabatch_mult must be >= 1")
        self.modality_lengths = list(modality_lengths)
        self.batch_size, self.world_size, self.megabatch_mult = batch_size, world_size, megabatch_mult
        self.seed, self.epoch, self.group_by_modality, self.balance = seed, 0, group_by_modality, balance

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(
            modality_length_grouped_indices(
                self.modality_lengths,
                self.batch_size,
                self.world_size,
                self.megabatch_mult,
                generator,
                self.group_by_modality,
                self.balance,
            )
        )
