"""The VISTA objective inside transformers' VLMs, with hooks instead of a forked modeling file.

One forward pass of an unmodified ``LlavaForConditionalGeneration`` (or LLaVA-NeXT, Qwen2-VL, ... any model whose
``get_input_embeddings()`` embeds the token ids and whose ``get_output_embeddings()`` is the LM head) yields:

- the cross-entropy, computed by the model itself from ``labels``;
- the final hidden states after the final norm, captured as the LM head's input (a forward pre-hook);
- the token embeddings, captured as the token-embedding layer's output (a forward hook).

Only these two (B, S, H) tensors are kept (``output_hidden_states`` stays off). Both hooked modules sit outside the
decoder layers, so gradient checkpointing never re-runs them, and the hooks only read activations inside forward,
so DeepSpeed ZeRO-3 (which gathers partitioned weights around each module call) is unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vista.loss import VistaConfig, VistaLossOutput, build_vista_masks, vista_loss


@dataclass
class VistaForwardOutput:
    """What one forward with the VISTA objective produces.

    Attributes:
        loss: scalar to backpropagate: ``ce_loss + vista.loss`` (``ce_loss`` alone when the config is disabled).
        ce_loss: the model's own cross-entropy (scalar).
        vista: the VISTA term and its logged parts (computed without a graph when the config is disabled).
        outputs: the model's output object (logits, ...).
    """

    loss: Tensor
    ce_loss: Tensor
    vista: VistaLossOutput
    outputs: Any


class VistaCapture:
    """Activations recorded by :func:`capture_vista_states` during exactly one forward pass."""

    def __init__(self) -> None:
        self._hidden: list[Tensor] = []
        self._embeds: list[Tensor] = []

    def _on_lm_head(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._hidden.append(args[0] if args else next(iter(kwargs.values())))

    def _on_embeddings(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self._embeds.append(output)

    @property
    def hidden_states(self) -> Tensor:
        """(B, S, H) final hidden states after the final norm (the LM head's input)."""
        return self.states()[0]

    @property
    def input_embeds(self) -> Tensor:
        """(B, S, H) token-embedding outputs at every position (before image features are scattered in)."""
        return self.states()[1]

    def states(self) -> tuple[Tensor, Tensor]:
        """``(hidden_states, input_embeds)``, after checking that each hook fired once and the shapes agree."""
        for what, seen in (
            ("LM head (final hidden states)", self._hidden),
            ("token embeddings", self._embeds),
        ):
            if len(seen) != 1:
                raise RuntimeError(
                    f"capture_vista_states: the {what} hook fired {len(seen)} times; expected exactly one model "
                    "forward inside the context (the model must embed input_ids itself: pass input_ids, not "
                    "inputs_embeds, and do not call generate())"
                )
        hidden, embeds = self._hidden[0], self._embeds[0]
        if hidden.dim() != 3 or hidden.shape != embeds.shape:
            raise RuntimeError(
                f"capture_vista_states: LM-head input {tuple(hidden.shape)} does not match the token embeddings "
                f"{tuple(embeds.shape)}; the hidden states were sliced (logits_to_keep != 0?) or the model is "
                "not a decoder whose LM head sees every position"
            )
        return hidden, embeds


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a DeepSpeed engine or DDP wrapper (which expose it as ``.module``)."""
    while isinstance(getattr(model, "module", None), nn.Module):  # attribute access, not a submodule lookup
        model = model.module
    return model


@contextmanager
def capture_vista_states(model: nn.Module) -> Iterator[VistaCapture]:
    """Capture the final hidden states and the token embeddings of one forward pass of ``model``.

    Usage::

        with capture_vista_states(model) as capture:
            outputs = model(**batch)
        hidden_states, input_embeds = capture.states()  # both (B, S, H); raises if a hook misfired

    The hooks are removed when the context exits, even on error.
    """
    base = _unwrap(model)
    lm_head, embeddings = base.get_output_embeddings(), base.get_input_embeddings()
    if lm_head is None or embeddings is None:
        raise TypeError(f"{type(base).__name__} has no output/input embeddings to hook")
    capture = VistaCapture()
    handles = [
        lm_head.register_forward_pre_hook(capture._on_lm_head, with_kwargs=True),
        embeddings.register_forward_hook(capture._on_embeddings),
    ]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def image_token_id(model: nn.Module) -> int:
    """The image placeholder id of a transformers VLM (``config.image_token_id``, or the older ``image_token_index``)."""
    config = _unwrap(model).config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"{type(config).__name__} defines no image_token_id; is this a vision-language model?")


def forward_with_vista(
    model: nn.Module, batch: Mapping[str, Tensor], config: VistaConfig, **forward_kwargs: Any
) -> VistaForwardOutput:
    """One forward pass giving cross-entropy, the VISTA term and their sum.

    Args:
        model: a transformers VLM (or a DeepSpeed/DDP wrapper around one), called as ``model(**batch, **kwargs)``.
        batch: model inputs; must hold ``input_ids`` (B, S) and ``labels`` (B, S); ``attention_mask`` (B, S) is
            used for the masks when present. Image positions are where ``input_ids == config.image_token_id``.
        config: how the VISTA term is computed and whether it is added.
        forward_kwargs: passed to the model (e.g. ``num_items_in_batch``).

    Returns:
        :class:`VistaForwardOutput`.
    """
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise KeyError(f"forward_with_vista: batch has no {key!r} (keys: {sorted(batch)})")
    keep = forward_kwargs.get("logits_to_keep", batch.get("logits_to_keep"))
    if keep is not None and not (isinstance(keep, int) and keep == 0):
        raise ValueError(
            f"forward_with_vista: logits_to_keep={keep!r}; must be 0 (VISTA needs every position)"
        )
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"],
        batch.get("attention_mask"),
        image_token_id(model),
        batch["labels"],
        config.targets,
    )
    with capture_vista_states(model) as capture:
        outputs = model(**batch, **forward_kwargs)
    hidden_states, input_embeds = capture.states()
    if outputs.loss is None:
        raise RuntimeError(f"{type(_unwrap(model)).__name__} returned no loss although labels were given")

    if config.enabled:
        vista = vista_loss(hidden_states, input_embeds, image_mask, text_mask, config)
        loss = outputs.loss + vista.loss
    else:
        with torch.no_grad():
            vista = vista_loss(hidden_states, input_embeds, image_mask, text_mask, config)
        loss = outputs.loss
    return VistaForwardOutput(loss=loss, ce_loss=outputs.loss, vista=vista, outputs=outputs)
