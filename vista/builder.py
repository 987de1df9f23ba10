"""Build LLaVA-style models: from separately pretrained parts (a vision tower and a causal LM) or from configs.

The result is always a transformers ``LlavaForConditionalGeneration`` plus a ``LlavaProcessor``, so it saves in HF
format and reloads with ``AutoModelForImageTextToText`` / ``AutoProcessor``. The projector is LLaVA-1.5's
``mlp2x_gelu`` (Linear-GELU-Linear), freshly initialised.
"""

from __future__ import annotations

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor

from vista.tiny import IMAGE_TOKEN

# Parameters of a dual encoder that are not part of its image tower.
_NON_VISION_PREFIXES = ("text_model.", "text_projection", "visual_projection", "logit_scale", "logit_bias")


def vision_tokens_per_image(vision_config, select_strategy: str) -> int:
    """Image tokens one image contributes to the LM sequence (CLS dropped for ``"default"``)."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    has_cls = vision_config.model_type in ("clip_vision_model",)
    return patches + (1 if has_cls and select_strategy == "full" else 0)


def ensure_image_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add ``<image>`` as a special token if the tokenizer lacks it; return its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def assemble_llava(
    vision_model: PreTrainedModel,
    language_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    *,
    feature_layer: int = -2,
    select_strategy: str = "default",
    attn_implementation: str | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Put a pretrained vision encoder and causal LM together with a new ``mlp2x_gelu`` projector.

    Args:
        vision_model: a vision encoder (e.g. ``CLIPVisionModel``, or a ``CLIPModel`` whose ``vision_model`` is used).
        language_model: a causal LM (e.g. ``LlamaForCausalLM``); its embeddings grow if ``<image>`` is added.
        tokenizer: the LM's tokenizer; ``<image>`` is added as a special token when missing.
        image_processor: the vision encoder's preprocessing.
        feature_layer: which vision hidden layer feeds the projector (LLaVA-1.5: -2).
        select_strategy: ``"default"`` drops CLIP's CLS token, ``"full"`` keeps it.

    Returns:
        ``(model, processor)``; the vision and LM weights are copied exactly, the projector is new.
    """
    if hasattr(vision_model.config, "vision_config"):  # a dual encoder such as CLIPModel: keep the image side
        vision_config = vision_model.config.vision_config
    else:
        vision_config = vision_model.config
    vision_state = {k.removeprefix("vision_model."): v for k, v in vision_model.state_dict().items()}
    vision_state = {k: v for k, v in vision_state.items() if not k.startswith(_NON_VISION_PREFIXES)}
    image_token_id = ensure_image_token(tokenizer)
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer))
    text_config = language_model.config
    num_image_tokens = vision_tokens_per_image(vision_config, select_strategy)
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=num_image_tokens,
        projector_hidden_act="gelu",
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=select_strategy,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = LlavaForConditionalGeneration._from_config(config, dtype=language_model.dtype, **kwargs)
    with torch.no_grad():
        tower = model.model.vision_tower
        if any(k.startswith("vision_model.") for k in tower.state_dict()):
            vision_state = {f"vision_model.{k}": v for k, v in vision_state.items()}
        _load_exact(tower, vision_state, "vision tower")
        base_lm = (
            language_model.get_decoder() if hasattr(language_model, "get_decoder") else language_model.model
        )
        _load_exact(model.model.language_model, base_lm.state_dict(), "language model")
        _load_exact(model.lm_head, language_model.get_output_embeddings().state_dict(), "lm_head")
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=select_strategy,
        num_additional_image_tokens=1 if vision_config.model_type == "clip_vision_model" else 0,
    )
    return model, processor


def _load_exact(module: torch.nn.Module, state: dict, what: str) -> None:
    """load_state_dict that fails loudly on any missing or unexpected key."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("rotary_emb.inv_freq")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"assembling the {what}: missing keys {missing[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )
