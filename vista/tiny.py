"""Tiny LLaVA models built from configs: a CLIP vision tower + a Llama LM + an ``mlp2x_gelu`` projector.

They are ordinary transformers ``LlavaForConditionalGeneration`` models with a locally trained tokenizer and a
``LlavaProcessor``, so everything that works on them (training, saving, ``from_pretrained``, lmms-eval's
``llava_hf``) works on the paper-scale models too. Used by the tests and the CPU profile; nothing is downloaded.

Image tokens per image = (image_size / patch_size)^2 (the CLS token is dropped, ``select_strategy="default"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.image_processing_utils import BaseImageProcessor

from vista.images import image_token_count
from vista.templates import IMAGE_TOKEN

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
# Strings every tokenizer must encode without unknowns: the conversation templates' fixed text.
TEMPLATE_TEXT = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: ASSISTANT: Describe the image. What is in the picture? Answer the question using a single word or phrase.",
]
# CLIP's normalisation constants (the tiny vision tower is trained with the same preprocessing).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of a tiny LLaVA. Defaults train at ~20 ms/step (batch 8, seq 64) on 2 CPU cores."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 128
    max_position_embeddings: int = 1024
    feature_layer: int = -2
    select_strategy: str = "default"

    @property
    def image_tokens(self) -> int:
        """Image tokens per image in the LM sequence."""
        return image_token_count(
            self.image_size, self.patch_size, 1, self.select_strategy
        )  # CLIP: a CLS token


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (plus the templates' text); never produces ``<unk>``.

    Special tokens: ``<s>`` (bos), ``</s>`` (eos), ``<pad>``, ``<unk>`` and ``<image>`` (one id, never split).
    """
    texts = list(TEMPLATE_TEXT) + list(corpus or [])
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="right",
        model_max_length=2048,
    )
    return fast


def build_image_processor(image_size: int) -> CLIPImageProcessorPil:
    """CLIP preprocessing (resize shortest edge, centre crop, CLIP mean/std) at ``image_size`` pixels."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    *,
    patch_size: int,
    select_strategy: str = "default",
    num_additional_image_tokens: int = 1,
) -> LlavaProcessor:
    """The one ``LlavaProcessor`` constructor: it expands one ``<image>`` into the model's image-token count
    ((side / patch_size)^2, plus ``num_additional_image_tokens`` (a CLS token) under ``select_strategy="full"``)."""
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=select_strategy,
        num_additional_image_tokens=num_additional_image_tokens,
    )


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    max_positions: int,
) -> LlamaConfig:
    """A small ``LlamaConfig`` sized for ``tokenizer`` (untied embeddings, the tokenizer's special ids)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def tiny_llava_config(
    tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec = TinyLlavaSpec()
) -> LlavaConfig:
    """A ``LlavaConfig`` with a tiny CLIP vision tower and a tiny Llama LM sized for ``tokenizer``."""
    vision = CLIPVisionConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        projection_dim=spec.vision_hidden,
    )
    text = tiny_llama_config(
        tokenizer,
        hidden=spec.text_hidden,
        intermediate=spec.text_intermediate,
        layers=spec.text_layers,
        heads=spec.text_heads,
        max_positions=spec.max_position_embeddings,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=spec.image_tokens,
        projector_hidden_act="gelu",  # Linear-GELU-Linear: LLaVA-1.5's mlp2x_gelu
        vision_feature_layer=spec.feature_layer,
        vision_feature_select_strategy=spec.select_strategy,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llava(
    spec: TinyLlavaSpec = TinyLlavaSpec(),
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    attn_implementation: str = "eager",
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A randomly initialised tiny LLaVA and its processor (tokenizer trained on the templates if not given)."""
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    config = tiny_llava_config(tokenizer, spec)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    processor = build_processor(
        tokenizer,
        build_image_processor(spec.image_size),
        patch_size=spec.patch_size,
        select_strategy=spec.select_strategy,
    )
    return model, processor


def save_tiny_llava(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, path: str | Path
) -> Path:
    """Save model and processor in HF format (reload with ``AutoModelForImageTextToText``/``AutoProcessor``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def spec_dict(spec: TinyLlavaSpec) -> dict:
    """The spec as a plain dict (for run metadata)."""
    return asdict(spec)
