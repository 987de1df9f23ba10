"""The scoring interface every probe works through: per-position next-token log-probabilities under an image
condition, for a trained transformers VLM (:class:`HFScorer`) or the exact theory source (:class:`ExactScorer`).

A :class:`ProbeSample` is one sequence: token ids (image placeholders already expanded for a VLM), which tokens are
supervised, and its own image (a PIL image or a ``(C, H, W)`` pixel tensor for a VLM; an integer latent ``v`` for
the exact source). A scorer scores the sample's *text positions*: every token that has a prefix to predict it from
(a VLM: every non-image, non-first token; the exact source: every token ``y_1 .. y_T``).

Conditions (:class:`Condition`):

- ``own``: the sample's own image;
- ``masked``: no image. For a VLM, the image tokens are masked out of attention (CAL); positions are unchanged,
  and the first token after the image is predicted from the last text position before the image (the last image
  position would carry the image in its own residual stream), so no scored prediction can see the image.
  For the exact source, the Bayes-optimal text-only predictive ``p(y_t | y_<t)`` (exact mixture over ``V``);
- ``blank``: a blank image (VLM only): pixel values of zero after normalisation, i.e. the processor's mean colour;
- ``other``: another image per sample (``Condition.other(images)``, one image per sample of the batch).

All log-probabilities are natural logs (nats), float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vista.images import check_image_aspect, pixel_values

ConditionKind = Literal["own", "masked", "blank", "other"]
CONDITION_KINDS = ("own", "masked", "blank", "other")


@dataclass(frozen=True)
class Condition:
    """An image condition. ``images`` (one per sample of the batch) only for ``kind="other"``."""

    kind: ConditionKind
    images: tuple | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONDITION_KINDS:
            raise ValueError(f"Condition kind={self.kind!r}; expected one of {CONDITION_KINDS}")
        if (self.kind == "other") != (self.images is not None):
            raise ValueError("Condition: images are required for kind='other' and only for it")

    @classmethod
    def other(cls, images: Sequence[Any]) -> Condition:
        """Each sample of the batch scored with the corresponding image of ``images``."""
        return cls("other", tuple(images))


OWN, MASKED, BLANK = Condition("own"), Condition("masked"), Condition("blank")


@dataclass
class ProbeSample:
    """One sequence to probe.

    Attributes:
        sample_id: identifier carried into every result row.
        input_ids: (S,) int64 token ids (a VLM: image placeholders expanded, one per image feature).
        supervised: (S,) bool, tokens that carry a training label (the answer tokens).
        image: a PIL image or (C, H, W) pixel tensor (VLM), or an int latent (exact source).
        meta: free-form extra columns copied into result rows (e.g. ``{"source": "gqa"}``).
        text: the rendered conversation with its image placeholder unexpanded, for scorers that expand it again
            for another image through the family's processor (:class:`analysis.probes.chat_scoring.ChatScorer`).
    """

    sample_id: str
    input_ids: Tensor
    supervised: Tensor
    image: Any
    meta: dict = field(default_factory=dict)
    text: str | None = None

    def __post_init__(self) -> None:
        self.input_ids = torch.as_tensor(self.input_ids, dtype=torch.long)
        self.supervised = torch.as_tensor(self.supervised, dtype=torch.bool)
        if self.input_ids.dim() != 1 or self.supervised.shape != self.input_ids.shape:
            raise ValueError(
                f"sample {self.sample_id}: input_ids {tuple(self.input_ids.shape)} and supervised "
                f"{tuple(self.supervised.shape)} must be 1-D of equal length"
            )


@runtime_checkable
class Scorer(Protocol):
    """What probes need from a model. ``T_i`` is the number of text positions of sample ``i``."""

    conditions: tuple[str, ...]

    def text_positions(self, sample: ProbeSample) -> dict[str, np.ndarray]:
        """Columns for the scored text positions: ``abs_position``, ``position``, ``token_id``, ``token``,
        ``supervised``, ``after_image``, ``text_len``, ``n_supervised`` (see :func:`position_table`)."""
        ...

    def token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        """Gold-token log-probabilities, one (T_i,) float64 tensor per sample (nats)."""
        ...

    def next_token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        """Full next-token log-distributions at the text positions, one (T_i, V) float64 tensor per sample."""
        ...


def position_table(
    sample: ProbeSample, scored: Tensor, image_mask: Tensor, decode: Any = None
) -> dict[str, np.ndarray]:
    """The per-position description of a sample that every probe row starts from (columns as arrays).

    Args:
        sample: the sample.
        scored: (T,) int64 absolute indices of the scored tokens in ``sample.input_ids``.
        image_mask: (S,) bool, image-token positions.
        decode: optional callable list of ids -> list of strings for the ``token`` column.

    Columns (each (T,)): ``sample_id``, ``abs_position`` (index in the sequence), ``position`` (1-based rank
    among the text tokens, VISTA's t), ``token_id``, ``token``, ``supervised``, ``answer_position`` (1-based rank
    among the supervised tokens, 0 if unsupervised), ``after_image`` (an image token
    precedes it), ``text_len`` (number of text tokens of the sample), ``n_supervised``, plus ``sample.meta``.
    """
    n = len(scored)
    text_rank = torch.cumsum((~image_mask).long(), 0)
    first_image = int(image_mask.nonzero()[0]) if image_mask.any() else len(image_mask)
    ids = sample.input_ids[scored].numpy()
    table = {
        "sample_id": np.full(n, sample.sample_id, dtype=object),
        "abs_position": scored.numpy(),
        "position": text_rank[scored].numpy(),
        "token_id": ids,
        "token": np.asarray(decode(ids.tolist()) if decode else ids.astype(str), dtype=object),
        "supervised": sample.supervised[scored].numpy(),
        "answer_position": (torch.cumsum(sample.supervised.long(), 0) * sample.supervised)[scored].numpy(),
        "after_image": (scored > first_image).numpy(),
        "text_len": np.full(n, int((~image_mask).sum())),
        "n_supervised": np.full(n, int((sample.supervised & ~image_mask).sum())),
    }
    for key, value in sample.meta.items():
        table[key] = np.full(n, value, dtype=object)
    return table


class HFScorer:
    """Scores a transformers LLaVA-style VLM (``LlavaForConditionalGeneration`` or compatible) on CPU/GPU.

    Each sample must hold exactly one image (``image_tokens`` placeholder ids). Sequences are right-padded into
    batches of at most ``batch_size`` rows; one row costs one forward pass of that sequence.

    Args:
        model: the VLM; put in eval mode. Use ``attn_implementation="eager"`` for the attention probe.
        processor: its processor (``image_processor`` turns PIL images into pixel values; ``tokenizer`` decodes).
        batch_size: rows per forward pass.
        image_aspect: how PIL images are preprocessed (:func:`vista.images.pixel_values`): the checkpoint's
            training setting, see :func:`vista.images.resolve_image_aspect`.
    """

    conditions = ("own", "masked", "blank", "other")

    def __init__(
        self, model: torch.nn.Module, processor: Any, batch_size: int = 16, image_aspect: str = "pad"
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.image_aspect = check_image_aspect(image_aspect)
        self.device = next(model.parameters()).device
        config = model.config
        self.image_token_id = int(getattr(config, "image_token_id", None) or config.image_token_index)
        self.pad_token_id = int(processor.tokenizer.pad_token_id or 0)
        self.image_tokens = getattr(config, "image_seq_length", None)  # per image; None: not checked
        vision = config.vision_config
        self.pixel_shape = (getattr(vision, "num_channels", 3), vision.image_size, vision.image_size)

    # --- inputs ---------------------------------------------------------------------------------------------
    def pixels(self, image: Any) -> Tensor:
        """(C, H, W) float pixel values of a PIL image (the training preprocessing) or a pixel tensor."""
        if isinstance(image, Tensor):
            pixels = image
        else:
            pixels = pixel_values([image], self.processor.image_processor, self.image_aspect)[0]
        if tuple(pixels.shape) != self.pixel_shape:
            raise ValueError(
                f"image pixels have shape {tuple(pixels.shape)}, the model expects {self.pixel_shape}"
            )
        return pixels.float()

    def image_mask(self, sample: ProbeSample) -> Tensor:
        return sample.input_ids == self.image_token_id

    def scored_positions(self, sample: ProbeSample) -> Tensor:
        """(T,) absolute indices of the text tokens that have a prefix (all non-image tokens but the first)."""
        keep = ~self.image_mask(sample)
        keep[0] = False
        return keep.nonzero().squeeze(1)

    def predictor_positions(self, sample: ProbeSample, skip_image: bool = False) -> Tensor:
        """(T,) positions whose logits predict each scored token: ``s - 1``, or with ``skip_image`` the last text
        position before ``s`` (the first token after the image is otherwise predicted from the last image token,
        whose own residual stream carries the image even when image tokens are masked out of attention)."""
        scored = self.scored_positions(sample)
        if not skip_image:
            return scored - 1
        text = (~self.image_mask(sample)).nonzero().squeeze(1)
        return text[:-1]  # scored = text[1:], each predicted from the previous text position

    def text_positions(self, sample: ProbeSample) -> dict[str, np.ndarray]:
        tokenizer = self.processor.tokenizer

        def decode(
            ids: list[int],
        ) -> list[str]:  # each token as text (byte-level markers such as "Ġ" resolved)
            return [tokenizer.decode([i]) for i in ids]

        return position_table(sample, self.scored_positions(sample), self.image_mask(sample), decode)

    def batch_inputs(self, samples: Sequence[ProbeSample], condition: Condition) -> dict[str, Tensor]:
        """Padded model inputs for ``samples`` under ``condition``: input_ids, attention_mask, pixel_values."""
        if condition.kind == "other" and len(condition.images) != len(samples):
            raise ValueError(f"Condition.other has {len(condition.images)} images for {len(samples)} samples")
        length = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(samples), length), dtype=torch.long)
        pixels = []
        for i, sample in enumerate(samples):
            n = len(sample.input_ids)
            input_ids[i, :n] = sample.input_ids
            attention[i, :n] = 1
            n_image = int(self.image_mask(sample).sum())
            if n_image == 0 or (self.image_tokens and n_image != self.image_tokens):
                raise ValueError(
                    f"sample {sample.sample_id}: {n_image} image tokens; probes need exactly one image "
                    f"({self.image_tokens or 'some'} image tokens)"
                )
            if condition.kind == "masked":
                attention[i, :n][self.image_mask(sample)] = 0
            if condition.kind == "blank":
                pixels.append(torch.zeros(self.pixel_shape))
            elif condition.kind == "other":
                pixels.append(self.pixels(condition.images[i]))
            else:
                pixels.append(self.pixels(sample.image))
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention.to(self.device),
            # explicit positions: masking image tokens must not shift the positions of the text after them
            "position_ids": torch.arange(length, device=self.device).expand(len(samples), -1),
            "pixel_values": torch.stack(pixels).to(self.device, self._dtype()),
        }

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # --- scoring --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, samples: Sequence[ProbeSample], condition: Condition, **kwargs: Any) -> Any:
        """One model call on the padded batch (at most ``batch_size`` rows); returns the model output."""
        return self.model(**self.batch_inputs(samples, condition), use_cache=False, **kwargs)

    def condition_chunks(self, samples: Sequence[ProbeSample], condition: Condition):
        """``(chunk, condition)`` pairs of at most ``batch_size`` samples; an ``other`` condition's contrast images
        are split with their samples."""
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            if condition.kind == "other":
                yield chunk, Condition.other(condition.images[start : start + self.batch_size])
            else:
                yield chunk, condition

    def _log_softmax_chunks(self, samples: Sequence[ProbeSample], condition: Condition, gold_only: bool):
        out = []
        for chunk, sub in self.condition_chunks(samples, condition):
            logits = self.forward(chunk, sub).logits
            for i, sample in enumerate(chunk):
                scored = self.scored_positions(sample)
                predictors = self.predictor_positions(sample, condition.kind == "masked")
                logp = torch.log_softmax(logits[i, predictors.to(logits.device)].double(), dim=-1)
                if gold_only:
                    logp = logp.gather(1, sample.input_ids[scored, None].to(logits.device)).squeeze(1)
                out.append(logp.cpu())
        return out

    def token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        return self._log_softmax_chunks(samples, condition, gold_only=True)

    def next_token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        return self._log_softmax_chunks(samples, condition, gold_only=False)


class ExactScorer:
    """Exact conditionals of the theory's :class:`~analysis.theory.VisualMarkovSource`.

    Samples are ``ProbeSample(input_ids=y (T,), image=v)``; every token is scored (``position`` = t = 1..T).
    ``own``/``other`` give ``p(y_t | v, y_<t)``; ``masked`` gives the exact text-only ``p(y_t | y_<t)``.
    """

    conditions = ("own", "masked", "other")

    def __init__(self, source: Any) -> None:
        self.source = source

    def samples(self, n: int, T: int, seed: int = 0, id_prefix: str = "s") -> list[ProbeSample]:
        """``n`` samples of length ``T`` drawn from the source (all tokens supervised), ids ``{id_prefix}{i}``."""
        v, y = self.source.sample(n, T, seed)
        return [
            ProbeSample(f"{id_prefix}{i}", torch.from_numpy(y[i]), torch.ones(T, dtype=torch.bool), int(v[i]))
            for i in range(n)
        ]

    def text_positions(self, sample: ProbeSample) -> dict[str, np.ndarray]:
        T = len(sample.input_ids)
        return position_table(sample, torch.arange(T), torch.zeros(T, dtype=torch.bool))

    def _log_predictive(
        self, samples: Sequence[ProbeSample], condition: Condition, gold_only: bool
    ) -> list[Tensor]:
        if condition.kind not in self.conditions:
            raise ValueError(f"ExactScorer supports conditions {self.conditions}, not {condition.kind!r}")
        out: list[Tensor | None] = [None] * len(samples)
        by_length: dict[int, list[int]] = {}
        for i, sample in enumerate(samples):
            by_length.setdefault(len(sample.input_ids), []).append(i)
        for idx in by_length.values():
            y = np.stack([samples[i].input_ids.numpy() for i in idx])
            if condition.kind == "masked":
                v = None
            elif condition.kind == "own":
                v = np.array([int(samples[i].image) for i in idx])
            else:
                v = np.array([int(condition.images[i]) for i in idx])
            probs = self.source.predictive(y, v)  # (n, T, M)
            if gold_only:
                probs = np.take_along_axis(probs, y[:, :, None], axis=2)[:, :, 0]
            with np.errstate(divide="ignore"):
                logp = np.log(probs)
            for row, i in enumerate(idx):
                out[i] = torch.from_numpy(logp[row])
        return out

    def next_token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        return self._log_predictive(samples, condition, gold_only=False)

    def token_log_probs(self, samples: Sequence[ProbeSample], condition: Condition) -> list[Tensor]:
        return self._log_predictive(samples, condition, gold_only=True)


def tidy(table: dict[str, np.ndarray], probe: str, variant: str, value: Any, **columns: Any) -> dict:
    """Probe rows as columns: the position table plus ``probe``, ``variant``, ``value`` (float64) and extras."""
    n = len(table["position"])
    out = dict(table)
    out["probe"] = np.full(n, probe, dtype=object)
    out["variant"] = np.full(n, variant, dtype=object)
    out["value"] = np.asarray(value, dtype=np.float64).reshape(n)
    for key, col in columns.items():
        out[key] = np.broadcast_to(np.asarray(col), (n,))
    return out


def concat(parts: Sequence[dict]) -> pd.DataFrame:
    """One DataFrame from :func:`tidy` parts (missing columns filled with NaN/None; empty list: empty frame)."""
    parts = [p for p in parts if len(p["value"])]
    if not parts:
        return pd.DataFrame()
    keys = list(dict.fromkeys(k for p in parts for k in p))
    columns = {}
    for key in keys:
        pieces = [p[key] if key in p else np.full(len(p["value"]), None, dtype=object) for p in parts]
        columns[key] = np.concatenate(pieces)
    frame = pd.DataFrame(columns)
    return frame.infer_objects()
