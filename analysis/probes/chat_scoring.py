"""Probe scoring for any HF vision-language family (:mod:`vista.families`), through the family's own processor.

:class:`ChatScorer` is the :class:`~analysis.probes.scoring.HFScorer` of checkpoints trained with
``model.pretrained`` (``vista train`` with ``reproduce/configs/any-vlm/finetune.yaml``). Each sample is one rendered
conversation (:attr:`ProbeSample.text`, the chat template's text with one image placeholder) and its image; every
condition expands the placeholder again with the processor for the image it uses, so a sample may hold any number
of image tokens, and the tiling (LLaVA-NeXT's AnyRes tiles, Idefics3's tiles and row markers) follows that image as
the processor decides.

Text positions are the tokens outside the image's block (:func:`vista.families.image_block_mask`: from the first to
the last token the processor writes for the image, e.g. Idefics3's ``<fake_token_around_image><row_1_col_1>...``),
so they are the same tokens under every image even when another image gives another tiling. Conditions:

- ``own``: the sample's image;
- ``masked``: the whole block masked out of attention, positions unchanged; the first token after the block is
  predicted from the last text position before it (as :class:`HFScorer`);
- ``blank``: an image of the sample's size in the processor's mean colour (``image_processor.image_mean``), i.e.
  pixel values of zero after normalisation up to 8-bit rounding, tiled as the own image. (Exact zeros are not
  used: Idefics3 drops all-zero tiles as padding.)
- ``other``: another image per sample, expanded and tiled as the processor does for it.

The VISTA anchor and the attention probe's image mass use the image tokens proper (``input_ids ==
config.image_token_id``, :meth:`image_mask`), as the VISTA loss does.

Positions are explicit in every condition, so masking the block shifts nothing: ``0..S-1`` for 1-D rotary families;
for the families with multimodal rotary positions (M-RoPE: Qwen2/2.5/3-VL, whose model has ``get_rope_index``) the
model's own ``get_rope_index`` on the unmasked row (text 1-D, image tokens on the image's (t, h, w) grid), so the
text after a masked image keeps the positions it has with the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from analysis.probes.scoring import Condition, HFScorer, ProbeSample, position_table
from vista.families import Family, family_of, image_block_mask
from vista.model import image_token_id


class ChatScorer(HFScorer):
    """Scores a family's ``AutoModelForImageTextToText`` model with inputs built by its processor.

    Each sample holds exactly one image (a PIL image) and its rendered text (``ProbeSample.text``). Rows are
    right-padded into batches of at most ``batch_size``.

    Args:
        model: the VLM (eval mode is set). Use ``attn_implementation="eager"`` for the attention probe.
        processor: its processor (with the tokenizer and image processor saved with the checkpoint).
        batch_size: rows per forward pass.
        family: the family's table (default: from ``model.config.model_type``).

    Raises:
        KeyError: the model type is not a supported family. ValueError: a block token is not in the vocabulary.
    """

    conditions = ("own", "masked", "blank", "other")

    def __init__(
        self, model: torch.nn.Module, processor: Any, batch_size: int = 16, family: Family | None = None
    ):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.family = family or family_of(model.config.model_type)
        # M-RoPE families (Qwen2/2.5/3-VL): positions come from the model's own get_rope_index (see _positions)
        self.rope_index = getattr(getattr(model, "model", None), "get_rope_index", None)
        self.image_token_id = image_token_id(model)
        tokenizer = processor.tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id or 0)
        self.block_ids = [tokenizer.convert_tokens_to_ids(t) for t in self.family.block_tokens()]
        unknown = [
            t
            for t, i in zip(self.family.block_tokens(), self.block_ids)
            if i is None or i == tokenizer.unk_token_id
        ]
        if unknown:
            raise ValueError(
                f"{self.family.model_type}: image block tokens {unknown} are not in the vocabulary"
            )
        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        self.blank_colour = tuple(round(255 * float(m)) for m in mean)

    # --- positions --------------------------------------------------------------------------------------------
    def block_mask(self, sample: ProbeSample) -> Tensor:
        """(S,) bool: the sample's image block (image tokens and the processor's markers around and between tiles)."""
        return image_block_mask(sample.input_ids, self.block_ids)

    def _text_index(self, ids: Tensor) -> Tensor:
        """Absolute indices of the text tokens (outside the image block) of one unpadded row."""
        return (~image_block_mask(ids, self.block_ids)).nonzero().squeeze(1)

    def scored_positions(self, sample: ProbeSample) -> Tensor:
        """(T,) absolute indices of the scored tokens: every text token but the first."""
        return self._text_index(sample.input_ids)[1:]

    def predictor_positions(self, sample: ProbeSample, skip_image: bool = False) -> Tensor:
        """(T,) positions whose logits predict each scored token (see :meth:`HFScorer.predictor_positions`)."""
        return self._predictors(sample.input_ids, skip_image)

    def _predictors(self, ids: Tensor, skip_image: bool) -> Tensor:
        text = self._text_index(ids)
        return text[:-1] if skip_image else text[1:] - 1

    def text_positions(self, sample: ProbeSample) -> dict[str, np.ndarray]:
        """The position table of the sample's scored tokens; ranks count the tokens outside the image block."""
        tokenizer = self.processor.tokenizer
        decode = lambda ids: [tokenizer.decode([i]) for i in ids]  # noqa: E731
        return position_table(sample, self.scored_positions(sample), self.block_mask(sample), decode)

    def pixels(self, image: Any) -> Tensor:
        """Not defined here: the processor decides the pixel layout per image (tiles, sizes); see :meth:`_encode`."""
        raise TypeError("ChatScorer has no fixed pixel layout: images go through the family's processor")

    # --- inputs ---------------------------------------------------------------------------------------------
    def condition_images(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Image.Image]:
        """The image each sample is scored with under ``condition`` (PIL)."""
        if condition.kind == "other" and len(condition.images) != len(samples):
            raise ValueError(f"Condition.other has {len(condition.images)} images for {len(samples)} samples")
        images = []
        for i, sample in enumerate(samples):
            if not isinstance(sample.image, Image.Image) or sample.text is None:
                raise TypeError(
                    f"sample {sample.sample_id}: ChatScorer needs a PIL image and the rendered text (ProbeSample.text)"
                )
            if condition.kind == "other":
                images.append(condition.images[i])
            elif condition.kind == "blank":
                images.append(Image.new("RGB", sample.image.size, self.blank_colour))
            else:
                images.append(sample.image)
        return images

    def _encode(
        self, samples: Sequence[ProbeSample], condition: Condition
    ) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Padded processor inputs for ``samples`` under ``condition`` and, per row, the positions whose logits
        predict the sample's scored tokens (row-specific: another image may have another block length).

        Raises:
            ValueError: a row's text tokens differ from the sample's (the processor tokenised the text differently).
        """
        images = self.condition_images(samples, condition)
        batch = dict(
            self.processor(
                text=[s.text for s in samples],
                images=[[image] for image in images],
                return_tensors="pt",
                padding=True,
                padding_side="right",
            )
        )
        ids, attention = batch["input_ids"], batch["attention_mask"]
        unmasked = attention.clone()
        predictors = []
        for row, sample in enumerate(samples):
            n = int(attention[row].sum())
            row_ids = ids[row, :n]
            text = self._text_index(row_ids)
            own_text = sample.input_ids[self._text_index(sample.input_ids)]
            if not torch.equal(row_ids[text], own_text):
                raise ValueError(
                    f"sample {sample.sample_id}: the processor's tokens outside the image differ from the sample's "
                    f"under condition {condition.kind!r} (text and input_ids of the sample disagree?)"
                )
            if condition.kind == "masked":
                attention[row, :n] &= ~image_block_mask(row_ids, self.block_ids)
            predictors.append(self._predictors(row_ids, condition.kind == "masked"))
        # explicit positions: masking the image block must not shift the positions of the text after it
        batch["position_ids"] = self._positions(batch, unmasked)
        dtype = next(self.model.parameters()).dtype
        batch = {
            k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in batch.items()
        }
        return batch, predictors

    def _positions(self, batch: dict[str, Tensor], attention: Tensor) -> Tensor:
        """Position ids of a right-padded batch as the model computes them without any masking: ``(B, S)``
        ``0..S-1``, or for an M-RoPE model ``(3, B, S)`` from its ``get_rope_index`` with the unmasked attention
        (padding excluded), which gives text tokens 1-D positions and image tokens their grid positions."""
        ids = batch["input_ids"]
        if self.rope_index is None:
            return torch.arange(ids.shape[1]).expand(len(ids), -1)
        extra = {k: batch[k] for k in ("mm_token_type_ids", "image_grid_thw") if k in batch}
        with torch.no_grad():
            positions, _ = self.rope_index(ids.to(self.device), attention_mask=attention.to(self.device),
                                           **{k: v.to(self.device) for k, v in extra.items()})  # fmt: skip
        return positions.cpu()

    def batch_inputs(self, samples: Sequence[ProbeSample], condition: Condition) -> dict[str, Tensor]:
        """Padded model inputs for ``samples`` under ``condition`` (the processor's keys plus ``position_ids``)."""
        return self._encode(samples, condition)[0]

    # --- scoring ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _log_softmax_chunks(self, samples: Sequence[ProbeSample], condition: Condition, gold_only: bool):
        out = []
        for chunk, sub in self.condition_chunks(samples, condition):
            inputs, predictors = self._encode(chunk, sub)
            logits = self.model(**inputs, use_cache=False).logits
            for i, sample in enumerate(chunk):
                logp = torch.log_softmax(logits[i, predictors[i].to(logits.device)].double(), dim=-1)
                if gold_only:
                    gold = sample.input_ids[self.scored_positions(sample)]
                    logp = logp.gather(1, gold[:, None].to(logits.device)).squeeze(1)
                out.append(logp.cpu())
        return out


def chat_samples(dataset: Any) -> list[ProbeSample]:
    """One :class:`ProbeSample` per sample of a :class:`vista.chat_data.ChatDataset` (built with ``num_images=1``):
    ids and labels as training encodes them, the rendered text and the PIL image.

    Raises:
        ValueError: a sample does not hold exactly one image.
    """
    from vista.loss import IGNORE_INDEX

    samples = []
    for sample_id, sample in zip(dataset.record_ids, dataset.samples):
        if len(sample["images"]) != 1:
            raise ValueError(f"sample {sample_id}: {len(sample['images'])} images; probes need exactly one")
        labels = torch.tensor(sample["labels"])
        samples.append(
            ProbeSample(
                sample_id,
                sample["input_ids"],
                labels != IGNORE_INDEX,
                sample["images"][0],
                text=sample["text"],
            )
        )
    return samples
