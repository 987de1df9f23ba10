"""Competing objectives beside VISTA, as named loss parts, and the config section that selects them.

- **L2T** ("learning to instruct", arXiv 2503.22215): cross-entropy also on the instruction (user-turn) tokens.
  Implemented as a label mask: :func:`l2t_template` wraps a conversation template so that the text of every user
  turn is supervised too (image tokens, the system prompt and the role tags stay unsupervised). The model's own
  cross-entropy then covers answers and instructions (the logged ``ce_loss``).
- **VIRAL-style alignment** (arXiv 2509.07979): :mod:`vista.viral`, logged as ``viral_loss``.
- **Diagnostics** (:mod:`vista.diagnostics`): logged for every variant.

A training config selects them in an ``objectives`` section, e.g.::

    objectives:
      l2t: {enabled: true}
      viral: {enabled: true, coefficient: 0.5, layer: null, teacher: null}
      diagnostics: true
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vista import viral as viral_mod
from vista.diagnostics import batch_diagnostics
from vista.errors import closest
from vista.loss import IGNORE_INDEX, VistaConfig, build_vista_masks
from vista.model import VistaForwardOutput, _unwrap, capture_vista_states, forward_with_vista, image_token_id
from vista.templates import IMAGE_TOKEN, ConversationTemplate, TokenizedConversation
from vista.viral import ViralConfig

LabelMask = Literal["answers", "instructions_and_answers"]


@dataclass(frozen=True)
class L2TConfig:
    """Which tokens carry cross-entropy.

    Attributes:
        enabled: supervise the user turns' text as well (L2T); False: answers only (LLaVA's default).
    """

    enabled: bool = False

    @property
    def label_mask(self) -> LabelMask:
        return "instructions_and_answers" if self.enabled else "answers"


@dataclass(frozen=True)
class ObjectivesConfig:
    """The ``objectives`` config section (see the module docstring)."""

    l2t: L2TConfig = field(default_factory=L2TConfig)
    viral: ViralConfig = field(default_factory=ViralConfig)
    diagnostics: bool = True


def objectives_config_from(section: Mapping[str, Any] | None) -> ObjectivesConfig:
    """Parse an ``objectives`` section; raises ``ValueError`` naming the unknown or ill-typed key."""
    section = dict(section or {})
    known = {"l2t": L2TConfig, "viral": ViralConfig, "diagnostics": bool}
    unknown = sorted(set(section) - set(known))
    if unknown:
        hint = closest(f"objectives.{unknown[0]}", [f"objectives.{k}" for k in known])
        raise ValueError(
            f"objectives.{unknown[0]} is not a known key{hint} (one of {', '.join(sorted(known))})"
        )
    diagnostics = section.get("diagnostics", True)
    if not isinstance(diagnostics, bool):
        raise ValueError(f"objectives.diagnostics={diagnostics!r}; expected true or false")
    parts: dict[str, Any] = {"diagnostics": diagnostics}
    for name in ("l2t", "viral"):
        values = section.get(name) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"objectives.{name} must be a mapping, got {values!r}")
        fields = {f.name for f in dataclasses.fields(known[name])}
        bad = sorted(set(values) - fields)
        if bad:
            hint = closest(f"objectives.{name}.{bad[0]}", [f"objectives.{name}.{f}" for f in fields])
            raise ValueError(
                f"objectives.{name}.{bad[0]} is not a known key{hint} (one of {', '.join(sorted(fields))})"
            )
        if "enabled" in values and not isinstance(values["enabled"], bool):
            raise ValueError(f"objectives.{name}.enabled={values['enabled']!r}; expected true or false")
        parts[name] = known[name](**values)
    return ObjectivesConfig(**parts)


# ---------------------------------------------------------------------------------------------------------- L2T


@dataclass(frozen=True)
class L2TTemplate(ConversationTemplate):
    """A template whose user-turn text is supervised as well as the answers (image tokens excluded).

    The whitespace ending ``user_prefix`` is supervised with the text (as ``assistant_gap`` is for answers),
    because BPE tokenizers merge it into the instruction's first token.
    """

    def _user_parts(self, content: str) -> list[tuple[str, bool, bool]]:
        prefix = self.user_prefix.rstrip()
        return [(prefix, False, False), (self.user_prefix[len(prefix) :], True, False),
                (self._user_text(content), True, True),
                (self.user_suffix + self.assistant_prefix, False, False)]  # fmt: skip

    def tokenize_batch(self, conversations, tokenizer, num_image_tokens: int = 1):
        results = super().tokenize_batch(conversations, tokenizer, num_image_tokens)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        for result in results:
            if isinstance(result, TokenizedConversation):
                result.labels[np.asarray(result.input_ids) == image_id] = IGNORE_INDEX
        return results


def l2t_template(
    template: ConversationTemplate, config: L2TConfig = L2TConfig(enabled=True)
) -> ConversationTemplate:
    """``template`` with L2T's label mask when ``config.enabled`` (the same rendered text and prompts).

    Raises:
        ValueError: L2T is enabled with a template whose user turns render only the image (``plain``, LLaVA's
            stage 1): there is no instruction text to supervise, so the objective would silently equal the
            baseline's.
    """
    if not config.enabled:
        return template
    if template.images_only_user:
        raise ValueError(
            f"objectives.l2t is enabled but template {template.name!r} renders no instruction text (its user turns "
            "are the image only), so L2T would equal plain cross-entropy; enable it for the instruction-tuning "
            "stage only (e.g. the finetune config), not for stage 1"
        )
    values = {f.name: getattr(template, f.name) for f in dataclasses.fields(template)}
    return L2TTemplate(**values)


# ------------------------------------------------------------------------------------------- the combined forward


@dataclass
class ObjectivesOutput:
    """One forward with every objective.

    Attributes:
        loss: ``ce_loss + vista.loss + viral_loss`` (parts that are disabled are absent from the sum).
        base: the :class:`vista.model.VistaForwardOutput` (``ce_loss``, the VISTA parts, the model outputs).
        viral_loss: the VIRAL-style term (0 when disabled).
        diagnostics: (5,) float32 :data:`vista.diagnostics.NAMES` values, or None when not requested.
    """

    loss: Tensor
    base: VistaForwardOutput
    viral_loss: Tensor
    diagnostics: Tensor | None


class ObjectivesRuntime:
    """What a model needs at run time for the objectives: the VIRAL projector, teacher and layer.

    Construct before the Trainer wraps the model (the projector must be a submodule for the optimizer and ZeRO-3);
    ``seed`` fixes the projector's initial weights.
    """

    def __init__(self, model: nn.Module, config: ObjectivesConfig, seed: int = 0) -> None:
        self.config = config
        self.teacher: nn.Module | None = None
        self.layer = 0
        self.tokens_per_image = 0
        self.teacher_dim = 0
        if config.viral.enabled:
            base = _unwrap(model)
            self.layer = viral_mod.resolve_layer(base, config.viral)
            if config.viral.teacher:
                self.teacher = viral_mod.load_teacher(config.viral.teacher)
                teacher_config = self.teacher.config
            else:
                teacher_config = base.config.vision_config
            teacher_dim = teacher_config.hidden_size
            if getattr(teacher_config, "num_hidden_layers", None) is not None:
                viral_mod.check_teacher_layer(config.viral.teacher_layer, teacher_config.num_hidden_layers)
            self.teacher_dim = int(teacher_dim)
            self.tokens_per_image = int(base.config.image_seq_length)
            viral_mod.attach_projector(base, teacher_dim, seed)

    def teacher_module(self, model: nn.Module) -> nn.Module:
        """The configured teacher, or the model's own (frozen) vision tower."""
        if self.teacher is not None:
            return self.teacher
        base = _unwrap(model)
        return getattr(base.model, "vision_tower", None) or base.vision_tower


def forward_with_objectives(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    vista_config: VistaConfig,
    runtime: ObjectivesRuntime,
    *,
    diagnostics: bool,
) -> ObjectivesOutput:
    """:func:`vista.model.forward_with_vista` plus the VIRAL-style term and the diagnostics, in one model forward.

    The extra hooks (final states, token embeddings, layer ``l``) sit beside VISTA's own; all fire once.
    """
    viral_config = runtime.config.viral
    with capture_vista_states(model) as capture:
        if viral_config.enabled:
            with viral_mod.capture_layer_output(model, runtime.layer) as layer_seen:
                base = forward_with_vista(model, batch, vista_config)
        else:
            layer_seen = []
            base = forward_with_vista(model, batch, vista_config)
    image_id = image_token_id(model)
    image_mask = (batch["input_ids"] == image_id) & (
        batch["attention_mask"].bool() if batch.get("attention_mask") is not None else True
    )
    loss = base.loss
    viral_loss = torch.zeros((), device=loss.device)
    if viral_config.enabled:
        if len(layer_seen) != 1:
            raise RuntimeError(f"VIRAL layer hook fired {len(layer_seen)} times; expected one model forward")
        if batch.get("pixel_values") is not None:
            features = viral_mod.teacher_features(
                runtime.teacher_module(model),
                batch["pixel_values"],
                runtime.tokens_per_image,
                viral_config.teacher_layer,
            )
        else:  # a text-only micro-batch: the term is 0, but the projector still runs (every rank, every step)
            features = layer_seen[0].new_zeros(0, runtime.teacher_dim)
        projector = getattr(_unwrap(model), viral_mod.ATTRIBUTE)
        viral_loss = viral_mod.viral_loss(
            layer_seen[0], features, image_mask, projector, viral_config.coefficient
        )
        loss = loss + viral_loss
    diag = None
    if diagnostics:
        hidden, embeds = capture.states()
        _, text_mask = build_vista_masks(
            batch["input_ids"], batch.get("attention_mask"), image_id, batch["labels"], vista_config.targets
        )
        vocab = _unwrap(model).get_input_embeddings().num_embeddings
        diag = batch_diagnostics(
            hidden, embeds, image_mask, text_mask, batch["input_ids"], vocab, vista_config.anchor
        )
    return ObjectivesOutput(loss=loss, base=base, viral_loss=viral_loss, diagnostics=diag)
