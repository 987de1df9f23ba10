"""The states MI is measured between, from a checkpoint: ``h_v`` (the final hidden state, after the final norm,
at the last image token), ``e_t`` (the input embedding) and ``h_t`` (the final hidden state) of each text token.

Text tokens are those of the VISTA loss (:func:`vista.loss.build_vista_masks`), in the sample's order.
``states.npz`` (``vista mi checkpoint --save-states``) stores them for later analysis.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vista.layout import default_image_folder


@dataclass
class SampleStates:
    """One sample's representations: ``h_v`` (H,), ``e_t`` and ``h_t`` (T, H), ``supervised`` (T,) bool.

    ``before_image``: how many of the T text tokens precede the last image token (a system prompt, say); their
    states cannot depend on the image under causal attention.
    """

    index: int
    h_v: np.ndarray
    e_t: np.ndarray
    h_t: np.ndarray
    supervised: np.ndarray
    before_image: int = 0


@torch.no_grad()
def extract_states(model: Any, batch: dict[str, torch.Tensor], indices: list[int]) -> list[SampleStates]:
    """Run one forward pass of ``batch`` and split out ``h_v``, ``e_t``, ``h_t`` per sample (float32 numpy).

    Samples without image tokens have no ``h_v`` and are not returned (the caller counts them).
    """
    from vista.loss import IGNORE_INDEX, anchor_states, build_vista_masks, last_image_positions
    from vista.model import capture_vista_states, image_token_id

    with capture_vista_states(model) as capture:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    hidden, embeds = (t.float() for t in capture.states())
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"], batch.get("attention_mask"), image_token_id(model)
    )
    has_image = image_mask.any(dim=1)
    h_v = anchor_states(hidden, image_mask, "last")  # (B, H) VISTA's anchor: the last image token's state
    last_image = last_image_positions(image_mask)
    out = []
    for row, index in enumerate(indices):
        if not has_image[row]:
            continue
        text_pos = text_mask[row].nonzero().flatten()
        out.append(
            SampleStates(
                index=index,
                h_v=h_v[row].numpy(),
                e_t=embeds[row, text_pos].numpy(),
                h_t=hidden[row, text_pos].numpy(),
                supervised=(batch["labels"][row, text_pos] != IGNORE_INDEX).numpy(),
                before_image=int((text_pos < last_image[row]).sum()),
            )
        )
    return out


def collect_states(
    checkpoint: str | Path,
    data: str | Path,
    *,
    image_folder: str | Path | None = None,
    template: str | None = None,
    max_length: int = 512,
    max_samples: int | None = None,
    batch_size: int = 8,
) -> tuple[list[SampleStates], dict[str, int]]:
    """Load a checkpoint and collect states: a LLaVA-recipe checkpoint with ``AutoProcessor`` /
    ``LlavaForConditionalGeneration`` and its recorded template; a checkpoint of any family trained with
    ``model.pretrained`` (template ``chat_template``) with the Auto classes and the model's own chat template
    (:class:`vista.chat_data.ChatDataset`, the training encoding; ``max_length`` does not apply: it does not truncate).

    Returns ``(states, counts)`` with ``counts`` = {"samples", "no_image", ...skip reasons from the dataset}.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vista.data import DataCollatorForVista, LlavaJsonDataset
    from vista.images import resolve_image_aspect
    from vista.run_metadata import CHAT_TEMPLATE, read_run_metadata, resolve_template_name

    template = resolve_template_name(checkpoint, template)
    if image_folder is None:
        image_folder = default_image_folder(data, read_run_metadata(checkpoint)[0])
    if template == CHAT_TEMPLATE:
        return _collect_chat_states(checkpoint, data, image_folder, max_samples, batch_size)
    image_aspect = resolve_image_aspect(checkpoint)  # the training preprocessing, as probes and evaluation
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint).eval()
    dataset = LlavaJsonDataset(
        data,
        image_folder,
        processor,
        template,
        max_length,
        on_bad_sample="skip",
        image_aspect=image_aspect,
        show_progress=False,
    )
    collate = DataCollatorForVista(processor)
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    states: list[SampleStates] = []
    for start in tqdm(range(0, n, batch_size), desc="forward", unit="batch"):
        indices = list(range(start, min(n, start + batch_size)))
        states += extract_states(model, collate([dataset[i] for i in indices]), indices)
    counts = {"samples": n, "no_image": n - len(states)}
    counts.update({f"skipped_{k}": v for k, v in dataset.skip_report().to_dict().get("counts", {}).items()})
    return states, counts


def _collect_chat_states(
    checkpoint: str | Path,
    data: str | Path,
    image_folder: str | Path,
    max_samples: int | None,
    batch_size: int,
) -> tuple[list[SampleStates], dict[str, int]]:
    """:func:`collect_states` for a checkpoint of any family of :mod:`vista.families` (its own chat template)."""
    from vista.any_vlm import load_pretrained
    from vista.chat_data import ChatCollator, ChatDataset, ChatRecordError
    from vista.errors import DataError

    model, processor, _ = load_pretrained(str(checkpoint))
    model.eval()
    try:
        dataset = ChatDataset(data, image_folder, processor, on_bad_sample="skip", max_samples=max_samples)
    except ChatRecordError as error:  # no usable record at all
        raise DataError(
            f"no usable sample in {data} ({error}); missing images? pass --image-folder DIR"
        ) from None
    collate = ChatCollator(processor)
    n = len(dataset)
    states: list[SampleStates] = []
    for start in tqdm(range(0, n, batch_size), desc="forward", unit="batch"):
        indices = list(range(start, min(n, start + batch_size)))
        states += extract_states(model, collate([dataset[i] for i in indices]), indices)
    counts = {"samples": n, "no_image": n - len(states)}
    counts.update({f"skipped_{k}": v for k, v in dataset.skip_report.to_dict().get("counts", {}).items()})
    return states, counts


def save_states(states: list[SampleStates], path: Path) -> None:
    """``h_v`` (N, H); ``e_t``/``h_t`` concatenated (sum T, H) with ``offsets`` (N + 1,) into them;
    ``before_image`` (N,): text tokens before each sample's image (positions count from after them)."""
    offsets = np.cumsum([0] + [s.e_t.shape[0] for s in states])
    np.savez(
        path,
        index=np.array([s.index for s in states]),
        h_v=np.stack([s.h_v for s in states]),
        e_t=np.concatenate([s.e_t for s in states]),
        h_t=np.concatenate([s.h_t for s in states]),
        supervised=np.concatenate([s.supervised for s in states]),
        offsets=offsets,
        before_image=np.array([s.before_image for s in states]),
    )


def load_states(path: str | Path) -> list[SampleStates]:
    """The inverse of ``--save-states``: ``states.npz`` back into per-sample :class:`SampleStates`.

    A file written before ``before_image`` was stored loads with ``before_image = 0`` and a warning (positions
    then count from the first text token, as ``positions="all"``).
    """
    with np.load(path) as data:
        missing = {"index", "h_v", "e_t", "h_t", "supervised", "offsets"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path}: not a `vista mi checkpoint --save-states` file, missing {sorted(missing)}"
            )
        off = data["offsets"]
        if "before_image" in data.files:
            before = data["before_image"]
        else:
            warnings.warn(
                f"{path}: no before_image (written by an older vista mi): positions will count from the first text "
                "token, not from the image; rerun `vista mi checkpoint --save-states`",
                stacklevel=2,
            )
            before = np.zeros(len(off) - 1, dtype=int)
        return [
            SampleStates(
                index=int(data["index"][i]),
                h_v=data["h_v"][i],
                e_t=data["e_t"][off[i] : off[i + 1]],
                h_t=data["h_t"][off[i] : off[i + 1]],
                supervised=data["supervised"][off[i] : off[i + 1]],
                before_image=int(before[i]),
            )
            for i in range(len(off) - 1)
        ]
