"""The VISTA objective inside transformers' VLMs, with hooks instead of a forked modeling file.

One forward pass of an unmodified ``LlavaForConditionalGeneration`` (or LLaVA-NeXT, Qwen2-VL, ... any model whose
``get_input_embeddings()`` embeds the token ids and whose text decoder is ``model.language_model`` or
``model.text_model``) yields:

- the final hidden states after the final norm, captured as the text decoder's ``last_hidden_state`` (a forward
  hook; the LM head's input before any slicing);
- the token embeddings, captured as the token-embedding layer's output (a forward hook);
- the cross-entropy, from logits computed *only at the positions that predict a supervised token*: the model is
  called with transformers' boolean ``logits_to_keep`` mask (``slice_logits_to_keep``) and no labels, and the loss
  is transformers' own ``fixed_cross_entropy`` on those rows (float32), i.e. exactly the value of the model's
  ``ForCausalLMLoss``. The LM head and its log-softmax skip the image, prompt and padding positions: about 90% of
  a LLaVA-style sequence (0.89x the tiny stage-2 micro-batch, 0.78x SmolLM2-135M's, on host D of the README;
  ``reproduce/benchmarks/supervised_logits.py``), and no ``(B, S, V)`` logits are held for the backward pass.
  Outside training the logits of every position are computed and returned.

Only the two (B, S, H) tensors are kept (``output_hidden_states`` stays off). Both hooked modules sit outside the
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

from vista.loss import IGNORE_INDEX, VistaConfig, VistaLossOutput, build_vista_masks, vista_loss


@dataclass
class VistaForwardOutput:
    """What one forward with the VISTA objective produces.

    Attributes:
        loss: scalar to backpropagate: ``ce_loss + vista.loss`` (``ce_loss`` alone when the config is disabled).
        ce_loss: the cross-entropy of the supervised tokens (scalar; the value of the model's own loss).
        vista: the VISTA term and its logged parts (computed without a graph when the config is disabled).
        outputs: the model's output object (:func:`causal_lm_forward`: in training its ``logits`` are (N, V), one
            row per supervised token in row-major order of ``labels[:, 1:]``, else (B, S, V)).
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

    def _on_decoder(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._hidden.append(output[0])  # last_hidden_state (a ModelOutput or a tuple)

    def _on_embeddings(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self._embeds.append(output)

    @property
    def hidden_states(self) -> Tensor:
        """(B, S, H) final hidden states after the final norm (the text decoder's ``last_hidden_state``)."""
        return self.states()[0]

    @property
    def input_embeds(self) -> Tensor:
        """(B, S, H) token-embedding outputs at every position (before image features are scattered in)."""
        return self.states()[1]

    def states(self) -> tuple[Tensor, Tensor]:
        """``(hidden_states, input_embeds)``, after checking that each hook fired once and the shapes agree."""
        for what, seen in (
            ("text decoder (final hidden states)", self._hidden),
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
                f"capture_vista_states: the text decoder's last_hidden_state {tuple(hidden.shape)} does not match "
                f"the token embeddings {tuple(embeds.shape)}; the model is not a decoder over its embedded tokens"
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
    decoder, embeddings = language_model_of(base), base.get_input_embeddings()
    if embeddings is None:
        raise TypeError(f"{type(base).__name__} has no input embeddings to hook")
    capture = VistaCapture()
    handles = [
        decoder.register_forward_hook(capture._on_decoder),
        embeddings.register_forward_hook(capture._on_embeddings),
    ]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def language_model_of(model: nn.Module) -> nn.Module:
    """The text decoder of a transformers VLM: the stack that receives ``inputs_embeds`` and returns the final
    hidden states (``model.language_model``, or ``model.text_model`` in Idefics3/SmolVLM).

    Raises:
        TypeError: the model has neither.
    """
    base = _unwrap(model)
    if callable(getattr(base, "get_base_model", None)):  # a PEFT (LoRA) wrapper
        base = base.get_base_model()
    inner = getattr(base, "model", None)
    for name in ("language_model", "text_model"):
        if isinstance(getattr(inner, name, None), nn.Module):
            return getattr(inner, name)
    raise TypeError(f"{type(base).__name__} has no model.language_model / model.text_model decoder")


def supervised_positions(labels: Tensor) -> Tensor:
    """(B, S) bool: the positions whose next token is supervised (``labels[:, t + 1] != -100``), i.e. the rows of
    the logits the causal-LM loss uses (transformers' ``ForCausalLMLoss`` shifts labels the same way)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def supervised_cross_entropy(
    logits: Tensor, labels: Tensor, keep: Tensor, num_items_in_batch: Tensor | int | None = None
) -> Tensor:
    """Causal-LM cross-entropy from the logits of the ``keep`` positions (:func:`supervised_positions`).

    Args:
        logits: (N, V) with ``N = keep.sum()`` (the rows ``logits_to_keep=keep`` returns), or (B, S, V).
        labels: (B, S) with ``-100`` where unsupervised.
        num_items_in_batch: as in transformers (sum / this count instead of the mean).

    Returns:
        Scalar float32: transformers' ``fixed_cross_entropy`` (the value of ``ForCausalLMLoss``).

    Raises:
        ValueError: no supervised token and no ``num_items_in_batch`` (the mean would be NaN).
    """
    from transformers.loss.loss_utils import fixed_cross_entropy

    rows = logits[keep] if logits.dim() == 3 else logits
    targets = labels[:, 1:][keep[:, :-1]].to(rows.device)
    if rows.shape[0] != targets.shape[0]:
        raise RuntimeError(f"{rows.shape[0]} logit rows for {targets.shape[0]} supervised tokens")
    if targets.numel() == 0 and num_items_in_batch is None:
        raise ValueError(
            "labels: no supervised token in the batch (every label after the first position is -100), so the mean "
            "cross-entropy is undefined; supervise at least one token (vista's datasets refuse such records)"
        )
    return fixed_cross_entropy(rows.float(), targets, num_items_in_batch)


def causal_lm_forward(model: nn.Module, batch: Mapping[str, Tensor], **forward_kwargs: Any) -> Any:
    """``model(**batch)`` with the cross-entropy as ``vista train`` computes it: in training, logits only at the
    positions that predict a supervised token (``logits_to_keep``, see the module docstring).

    Args:
        batch: model inputs with ``labels`` (B, S) (``-100`` where unsupervised).
        forward_kwargs: passed to the model; ``num_items_in_batch`` goes to the loss as in transformers.

    Returns:
        The model's output object with ``loss`` set (:func:`supervised_cross_entropy`); in training its ``logits``
        are (N, V), one row per supervised token, else (B, S, V).
    """
    labels = batch["labels"]
    keep = supervised_positions(labels)
    num_items = forward_kwargs.pop("num_items_in_batch", None)
    if model.training:
        forward_kwargs["logits_to_keep"] = keep
    outputs = model(**{k: v for k, v in batch.items() if k != "labels"}, **forward_kwargs)
    outputs["loss"] = supervised_cross_entropy(outputs.logits, labels, keep, num_items)
    return outputs


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

    Raises:
        KeyError: ``input_ids`` or ``labels`` missing. TypeError: ``config`` is not a :class:`VistaConfig`.
        ValueError: a ``logits_to_keep`` other than 0; a batch with no supervised token and no
            ``num_items_in_batch`` (:func:`supervised_cross_entropy`; in training and in evaluation).
    """
    if not isinstance(config, VistaConfig):
        raise TypeError(
            f"forward_with_vista: config must be a VistaConfig, got {type(config).__name__} (e.g. VistaConfig(**d))"
        )
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
        outputs = causal_lm_forward(model, batch, **forward_kwargs)
    hidden_states, input_embeds = capture.states()
    ce_loss = outputs.loss

    if config.enabled:
        vista = vista_loss(hidden_states, input_embeds, image_mask, text_mask, config)
        loss = ce_loss + vista.loss
    else:
        with torch.no_grad():
            vista = vista_loss(hidden_states, input_embeds, image_mask, text_mask, config)
        loss = ce_loss
    return VistaForwardOutput(loss=loss, ce_loss=ce_loss, vista=vista, outputs=outputs)
