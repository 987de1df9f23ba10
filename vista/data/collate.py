"""Batches for ``LlavaForConditionalGeneration`` from :class:`vista.data.LlavaJsonDataset` samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vista.data.dataset import image_tokens_per_image
from vista.templates import IGNORE_INDEX, IMAGE_TOKEN


class DataCollatorForVista:
    """Pads samples of :class:`LlavaJsonDataset` into a batch for ``LlavaForConditionalGeneration``.

    Returns ``input_ids`` (B, S) int64 (padded with the pad id), ``attention_mask`` (B, S) int64 (1 = real token,
    on the left or right as ``padding_side`` says), ``labels`` (B, S) int64 (-100 on padding) and, if any sample
    has images, ``pixel_values`` (N, 3, H, W): all images of the batch in sample order (text-only samples add
    none). Each sample's image-token count is checked against its images, so the model's image features and
    placeholders always line up and ``vista.loss.build_vista_masks`` sees exactly the image positions.
    """

    def __init__(
        self,
        processor: Any,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        num_image_tokens: int | None = None,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set one (LLaVA uses the unk token) before collating"
            )
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_image_tokens = (
            num_image_tokens if num_image_tokens is not None else image_tokens_per_image(processor)
        )

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        for position, feature in enumerate(features):
            self._check(position, feature)
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(features)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            span = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            input_ids[row, span] = feature["input_ids"]
            labels[row, span] = feature["labels"]
            attention_mask[row, span] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        pixels = [f["pixel_values"] for f in features if f.get("pixel_values") is not None]
        if pixels:
            out["pixel_values"] = torch.cat(pixels, dim=0)
        return out

    def _check(self, position: int, feature: dict[str, Any]) -> None:
        where = f"batch position {position}" + (
            f" (dataset index {feature['index']})" if "index" in feature else ""
        )
        ids, labels = feature["input_ids"], feature["labels"]
        if ids.shape != labels.shape or ids.dim() != 1:
            raise ValueError(
                f"{where}: input_ids {tuple(ids.shape)} and labels {tuple(labels.shape)} must be (L,)"
            )
        pixels = feature.get("pixel_values")
        num_images = 0 if pixels is None else int(pixels.shape[0])
        is_image = ids == self.image_token_id
        if int(is_image.sum()) != num_images * self.num_image_tokens:
            raise ValueError(
                f"{where}: {int(is_image.sum())} image-token ids for {num_images} images x "
                f"{self.num_image_tokens} tokens"
            )
        if (labels[is_image] != IGNORE_INDEX).any():
            raise ValueError(f"{where}: image-token positions carry labels")
