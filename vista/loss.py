"""The VISTA objective: an explicit, position-weighted vision-text alignment term added to cross-entropy.

For each sample with at least one image, let ``h_v`` be the final-layer hidden state (after the final norm) at the
last image-token position and ``e_1 .. e_T`` the input embeddings of the sample's text tokens in sequence order
(every non-image, non-padding token by default). With ``d`` the hidden size and weights ``w_t``:

    l2     (default):  L = (1/T) * sum_t w_t * (1/d) * ||h_v - e_t||^2
    cosine          :  L = -(1/T) * sum_t w_t * cos(h_v, e_t)

``w_t = t/T`` ("linear", the paper's default), ``t`` ("position", the official LLaVA cosine copy) or ``1``
("uniform"). The batch value is the mean over samples that have an image and at least one text token, times a
coefficient (1.0 in the paper). The whole computation is vectorised over the batch; nothing here syncs the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vista.errors import closest

Distance = Literal["l2", "cosine"]
Weighting = Literal["linear", "position", "uniform"]
Anchor = Literal["last", "mean"]
Targets = Literal["text", "supervised"]

DISTANCES = ("l2", "cosine")
WEIGHTINGS = ("linear", "position", "uniform")
ANCHORS = ("last", "mean")
TARGETS = ("text", "supervised")
IGNORE_INDEX = -100  # label of unsupervised positions (torch cross-entropy's ignore_index default)
_COSINE_EPS = 1e-8  # F.cosine_similarity's default


@dataclass(frozen=True)
class VistaConfig:
    """How the VISTA term is computed and weighted. Defaults reproduce the paper ("VISTA" rows, L2).

    Attributes:
        enabled: add the term at all (False gives the cross-entropy baseline; the term and the similarity are
            still computed without gradient and logged as diagnostics, not added to the loss).
        distance: "l2" (MSE over the hidden dim) or "cosine" (the "VISTA(cosine)" rows).
        weighting: "linear" (t/T), "position" (raw t; the official LLaVA cosine copy) or "uniform".
        coefficient: lambda in ``CE + lambda * L`` (the official code uses 1.0).
        anchor: "last" (hidden state at the sample's last image token, as the paper) or "mean" of image tokens.
        targets: "text" (every non-image, non-padding token, as the paper) or "supervised" (tokens with a label).
        detach_targets: stop the gradient into the text embeddings.
    """

    enabled: bool = True
    distance: Distance = "l2"
    weighting: Weighting = "linear"
    coefficient: float = 1.0
    anchor: Anchor = "last"
    targets: Targets = "text"
    detach_targets: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("distance", self.distance, DISTANCES),
            ("weighting", self.weighting, WEIGHTINGS),
            ("anchor", self.anchor, ANCHORS),
            ("targets", self.targets, TARGETS),
        ):
            if value not in allowed:
                raise ValueError(
                    f"vista.{name}={value!r}{closest(str(value), allowed)} (one of {', '.join(allowed)})"
                )
        for name in ("enabled", "detach_targets"):  # a string such as "false" would be truthy
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"VistaConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.coefficient, bool) or not isinstance(self.coefficient, int | float):
            raise ValueError(f"VistaConfig.coefficient must be a number, got {self.coefficient!r}")
        if not 0.0 <= self.coefficient < math.inf:
            raise ValueError(f"VistaConfig.coefficient must be finite and >= 0, got {self.coefficient!r}")


DEFAULT_CONFIG = VistaConfig()


@dataclass
class VistaLossOutput:
    """Named parts of the VISTA term for one batch.

    Attributes:
        loss: scalar to add to cross-entropy (coefficient and sign applied; 0 with the graph intact if no sample
            has an image).
        similarity: the official "similarity score", detached: mean over samples of ``(1/T) sum_t MSE(h_v, e_t)``
            for l2, of ``(1/T) sum_t cos(h_v, e_t)`` for cosine (unweighted, no coefficient).
        num_samples: int64 scalar tensor, samples that had an image and at least one target token.
    """

    loss: Tensor
    similarity: Tensor
    num_samples: Tensor


def build_vista_masks(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    image_token_id: int,
    labels: Tensor | None = None,
    targets: Targets = "text",
) -> tuple[Tensor, Tensor]:
    """Image and target masks from a batch, explicitly (never from feature values).

    Args:
        input_ids: (B, S) token ids with one ``image_token_id`` per image feature.
        attention_mask: (B, S) 1 for real tokens, 0 for padding; None means no padding.
        image_token_id: the model's image placeholder id (``config.image_token_id``).
        labels: (B, S) with ``IGNORE_INDEX`` on unsupervised positions; required for ``targets="supervised"``.
        targets: "text" (every non-image, non-padding token) or "supervised" (text tokens with a label).

    Returns:
        ``(image_mask, text_mask)``, both (B, S) bool.

    Raises:
        ValueError: ``input_ids`` not 2-D, ``attention_mask`` or ``labels`` of another shape, an unknown
            ``targets``, or ``targets="supervised"`` without ``labels``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, S), got shape {tuple(input_ids.shape)}")
    for name, other in (("attention_mask", attention_mask), ("labels", labels)):
        if other is not None and other.shape != input_ids.shape:
            raise ValueError(
                f"{name} must have input_ids' shape (B, S) = {tuple(input_ids.shape)}, got {tuple(other.shape)}"
            )
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    image_mask = (input_ids == image_token_id) & real
    text_mask = real & ~image_mask
    if targets == "supervised":
        if labels is None:
            raise ValueError("targets='supervised' needs labels (B, S) with -100 on unsupervised positions")
        text_mask = text_mask & (labels != IGNORE_INDEX)
    elif targets != "text":
        raise ValueError(f"targets={targets!r}; expected one of {TARGETS}")
    return image_mask, text_mask


def vista_loss(
    hidden_states: Tensor,
    input_embeds: Tensor,
    image_mask: Tensor,
    text_mask: Tensor,
    config: VistaConfig = DEFAULT_CONFIG,
) -> VistaLossOutput:
    """The VISTA alignment term for a batch (see the module docstring for the formula).

    Args:
        hidden_states: (B, S, H) final-layer hidden states after the final norm.
        input_embeds: (B, S, H) token-embedding outputs at every position (values at image positions are unused).
        image_mask: (B, S) bool, image-token positions (any number per sample, several images allowed).
        text_mask: (B, S) bool, positions whose embeddings are alignment targets; must not overlap image_mask.
        config: distance, weighting, coefficient, anchor and detach_targets (validated by :class:`VistaConfig`);
            ``enabled`` and ``targets`` are the caller's business (whether to add the term, which ``text_mask``).

    Returns:
        :class:`VistaLossOutput`. Samples without an image, or with no target token, are excluded and not counted.

    Raises:
        TypeError: ``config`` is not a :class:`VistaConfig`; non-float states or non-bool masks.
        ValueError: shapes disagree, an empty dimension, or ``text_mask`` overlapping ``image_mask``.
    """
    if not isinstance(config, VistaConfig):
        raise TypeError(f"vista_loss: config must be a VistaConfig, got {type(config).__name__}")
    distance, weighting, coefficient = config.distance, config.weighting, config.coefficient
    _check_inputs(hidden_states, input_embeds, image_mask, text_mask)
    # Accumulate in float32 at least (bf16/fp16 inputs), and in float64 when given float64.
    dtype = torch.promote_types(torch.promote_types(hidden_states.dtype, input_embeds.dtype), torch.float32)
    anchors = anchor_states(hidden_states, image_mask, config.anchor)  # (B, H)
    targets = input_embeds.detach() if config.detach_targets else input_embeds

    text_mask = text_mask.bool()
    num_text = text_mask.sum(dim=1)  # (B,)
    valid = image_mask.any(dim=1) & (num_text > 0)  # (B,)
    num_text_f = num_text.clamp(min=1).to(dtype)
    rank = torch.cumsum(text_mask, dim=1).to(dtype)  # t = 1..T at text positions

    if weighting == "linear":
        weights = rank / num_text_f[:, None]
    elif weighting == "position":
        weights = rank
    else:
        weights = torch.ones_like(rank)
    weights = weights * text_mask  # (B, S), zero off-target

    # Distances from dot products and squared norms, (B, S) each: no (B, S, H) temporary in forward.
    anchors = anchors.to(dtype)
    dot, target_sq = _TargetProducts.apply(targets.to(dtype), anchors)
    anchor_sq = anchors.square().sum(dim=-1, keepdim=True)  # (B, 1)
    if distance == "l2":
        # ||h - e||^2 = ||h||^2 - 2 h.e + ||e||^2, clamped at 0 against rounding when h ~ e.
        per_position = (anchor_sq - 2.0 * dot + target_sq).clamp(min=0.0) / hidden_states.shape[-1]
        sign = 1.0
    else:
        # As F.cosine_similarity: each norm clamped at eps (clamping the square keeps sqrt's gradient finite).
        eps_sq = _COSINE_EPS**2
        per_position = dot / (anchor_sq.clamp(min=eps_sq).sqrt() * target_sq.clamp(min=eps_sq).sqrt())
        sign = -1.0
    per_position = per_position * text_mask  # also zeroes whatever sits at image/padding positions

    per_sample = sign * (weights * per_position).sum(dim=1) / num_text_f  # (B,)
    per_sample_similarity = per_position.sum(dim=1) / num_text_f
    num_samples = valid.sum()
    denominator = num_samples.clamp(min=1).to(dtype)
    loss = torch.where(valid, per_sample, torch.zeros_like(per_sample)).sum() / denominator
    similarity = torch.where(valid, per_sample_similarity, torch.zeros_like(per_sample)).sum() / denominator
    return VistaLossOutput(loss=loss * coefficient, similarity=similarity.detach(), num_samples=num_samples)


class _TargetProducts(torch.autograd.Function):
    """``(h_v . e_t, ||e_t||^2)`` at every position, (B, S) each, from targets (B, S, H) and anchors (B, H).

    Autograd of the equivalent ``bmm`` + ``vector_norm`` works too, but its backward computes an outer product with
    a batched matmul and a masked norm gradient, several times slower on CPU than the one broadcast pass here.
    Runs with autocast off: the caller has already chosen the accumulation dtype.
    """

    @staticmethod
    def forward(ctx, targets: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(targets.device.type, enabled=False):
            ctx.save_for_backward(targets, anchors)
            if targets.device.type == "cpu":  # CPU batched gemv is ~5x slower than multiply-and-sum here
                dot = torch.linalg.vecdot(targets, anchors[:, None, :])
            else:  # no (B, S, H) temporary on accelerators
                dot = torch.bmm(targets, anchors[:, :, None]).squeeze(-1)
            return dot, torch.linalg.vector_norm(targets, dim=-1).square()

    @staticmethod
    def backward(ctx, grad_dot: Tensor, grad_sq: Tensor) -> tuple[Tensor | None, Tensor | None]:
        targets, anchors = ctx.saved_tensors
        grad_targets = grad_anchors = None
        with torch.autocast(targets.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_targets = torch.addcmul(
                    grad_dot[..., None] * anchors[:, None, :], 2.0 * grad_sq[..., None], targets
                )
            if ctx.needs_input_grad[1]:
                grad_anchors = torch.bmm(grad_dot[:, None, :], targets).squeeze(1)
        return grad_targets, grad_anchors


def last_image_positions(image_mask: Tensor) -> Tensor:
    """(B,) int64 position of each sample's last image token (0 for a sample without one; check ``any``)."""
    batch, seq = image_mask.shape
    positions = torch.arange(seq, device=image_mask.device).expand(batch, seq)
    return torch.where(image_mask.bool(), positions, torch.zeros_like(positions)).amax(dim=1)


def anchor_states(hidden_states: Tensor, image_mask: Tensor, anchor: Anchor = "last") -> Tensor:
    """(B, H) the VISTA anchor ``h_v`` of each sample: the hidden state at its last image token, or the mean over
    its image tokens (``anchor="mean"``).

    Args:
        hidden_states: (B, S, H) final-layer hidden states after the final norm.
        image_mask: (B, S) bool image-token positions. A sample without one gets position 0's state ("last") or
            zeros ("mean"): callers exclude such samples (``image_mask.any(dim=1)``).
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor={anchor!r}; expected one of {ANCHORS}")
    batch = hidden_states.shape[0]
    image_mask = image_mask.bool()
    if anchor == "mean":
        counts = image_mask.sum(dim=1, keepdim=True).clamp(min=1).to(hidden_states.dtype)
        return torch.bmm(image_mask.to(hidden_states.dtype)[:, None, :], hidden_states).squeeze(1) / counts
    return hidden_states[torch.arange(batch, device=hidden_states.device), last_image_positions(image_mask)]


def alignment_terms(anchor: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """The unweighted per-position VISTA terms between an anchor ``h_v`` and text embeddings ``e_t``.

    Args:
        anchor: (..., H) anchor states, broadcast against ``targets``.
        targets: (..., T, H) text-token embeddings.

    Returns:
        ``{"l2": (1/H) ||h_v - e_t||^2, "cosine": cos(h_v, e_t)}``, each (..., T), in the inputs' dtype. This is
        the definition :func:`vista_loss` weights and averages (it computes the same values from dot products,
        without a (B, S, H) temporary; ``tests/vista/test_loss.py`` checks they agree).
    """
    anchor = anchor.unsqueeze(-2)
    return {
        "l2": (targets - anchor).pow(2).mean(dim=-1),
        "cosine": torch.nn.functional.cosine_similarity(targets, anchor, dim=-1, eps=_COSINE_EPS),
    }


def _check_inputs(hidden_states: Tensor, input_embeds: Tensor, image_mask: Tensor, text_mask: Tensor) -> None:
    if hidden_states.dim() != 3 or 0 in hidden_states.shape:
        raise ValueError(
            f"hidden_states must be (B, S, H) with B, S, H >= 1, got shape {tuple(hidden_states.shape)}"
        )
    if input_embeds.shape != hidden_states.shape:
        raise ValueError(
            f"input_embeds shape {tuple(input_embeds.shape)} != hidden_states shape {tuple(hidden_states.shape)}"
        )
    if not (hidden_states.is_floating_point() and input_embeds.is_floating_point()):
        raise TypeError(
            f"hidden_states and input_embeds must be floating point, got {hidden_states.dtype}, {input_embeds.dtype}"
        )
    for name, mask in (("image_mask", image_mask), ("text_mask", text_mask)):
        if mask.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"{name} must be (B, S) = {tuple(hidden_states.shape[:2])}, got {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    # An asynchronous assert: raises without a host-device sync on accelerators.
    torch._assert_async(
        ~(image_mask & text_mask).any(),
        "vista_loss: text_mask overlaps image_mask; image-token positions cannot be alignment targets",
    )
