"""Tiny random checkpoints of every family in :mod:`vista.families` (``vista tiny-model``), built offline.

Each checkpoint is the family's own transformers classes (config, ``AutoModelForImageTextToText`` weights,
``AutoProcessor`` with the PIL image processor; the six families whose processor also holds a video processor,
LLaVA-OneVision, Qwen2/2.5/3-VL, InternVL and SmolVLM, need torchvision: the families environment) at a few thousand
parameters per layer, with either a small byte-level BPE tokenizer trained locally or, for the Qwen families and InternVL, the real
Qwen2 vocabulary from ``shared/tokenizers/qwen2`` plus the family's special tokens. Images are kept small
(32-64 px) so one image is 4-16 image tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer, PreTrainedTokenizerBase

from vista.errors import MissingInputError, UsageError, UserError, one_line
from vista.families import FAMILIES, FAMILIES_ENV_HINT, Family, family_of, missing_requirements
from vista.tiny import CLIP_MEAN, CLIP_STD, build_tokenizer

_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
# Sentences the local BPE tokenizer is trained on (templates' fixed text and the synthetic world's words).
_CORPUS = [
    "user assistant system User Assistant model USER: ASSISTANT: Describe the image. What colour is the shape? "
    "How many shapes are there? Answer the question using a single word or phrase. A red square above a blue "
    "circle. Two green triangles and a yellow star. left right top bottom yes no one two three four",
]


class MissingDependencyError(UserError):
    """A family's processor needs a package this environment lacks (torchvision, num2words)."""


def _tokenizer(family: Family, qwen_folder: Path | None) -> PreTrainedTokenizerBase:
    """The family's tokenizer: real Qwen2 vocabulary (+ special tokens) or a local BPE, image token registered."""
    if family.qwen_vocabulary:
        if qwen_folder is None or not (qwen_folder / "tokenizer.json").is_file():
            raise MissingInputError(
                f"{family.model_type} uses the real Qwen2 vocabulary: pass --qwen-tokenizer <folder with "
                f"tokenizer.json> (e.g. shared/tokenizers/qwen2); got {qwen_folder}"
            )
        tokenizer = AutoTokenizer.from_pretrained(qwen_folder)
        tokenizer.add_special_tokens({"additional_special_tokens": list(family.special_tokens)})
        tokenizer.pad_token = "<|endoftext|>"
    else:
        tokenizer = build_tokenizer(_CORPUS, vocab_size=600)
        tokenizer.add_special_tokens({"additional_special_tokens": list(family.special_tokens)})
    tokenizer.chat_template = family.chat_template
    return tokenizer


def _name_tokens(tokenizer: PreTrainedTokenizerBase, **named: str) -> None:
    """Register named special tokens (``tokenizer.boi_token``, ...; saved in ``tokenizer_config.json``)."""
    tokenizer._set_model_specific_special_tokens(
        special_tokens=named
    )  # the public ``extra_special_tokens`` path


def _ids(tokenizer: PreTrainedTokenizerBase, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _text_config(tokenizer: PreTrainedTokenizerBase, **extra: Any) -> dict[str, Any]:
    return dict(
        _TEXT,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _build(model_type: str, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, Any]:
    """``(config, processor)`` of a tiny ``model_type`` (one branch per family: their configs differ)."""
    import transformers as tf

    image_id = tokenizer.convert_tokens_to_ids(family_of(model_type).image_token)
    if model_type in ("llava", "llava_next", "llava_onevision"):
        vision = (  # LLaVA-OneVision: SigLIP (no class token: its "full" feature strategy keeps every patch)
            tf.SiglipVisionConfig(image_size=32, patch_size=8, **_VISION)
            if model_type == "llava_onevision"
            else tf.CLIPVisionConfig(image_size=32, patch_size=8, projection_dim=32, **_VISION)
        )
        common = dict(
            vision_config=vision,
            text_config=tf.Qwen2Config(**_text_config(tokenizer))
            if model_type == "llava_onevision"
            else tf.LlamaConfig(**_text_config(tokenizer)),
            image_token_index=image_id,
            vision_feature_layer=-1,
        )
        mean_std = dict(image_mean=CLIP_MEAN, image_std=CLIP_STD)
        if model_type == "llava":
            config = tf.LlavaConfig(**common, image_seq_length=16)
            image_processor = tf.CLIPImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, **mean_std
            )
            return config, tf.LlavaProcessor(
                image_processor=image_processor,
                tokenizer=tokenizer,
                patch_size=8,
                vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
                chat_template=tokenizer.chat_template,
            )
        pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
        if model_type == "llava_next":
            config = tf.LlavaNextConfig(**common, image_grid_pinpoints=pinpoints, image_seq_length=16)
            image_processor = tf.LlavaNextImageProcessorPil(
                size={"shortest_edge": 32},
                crop_size={"height": 32, "width": 32},
                image_grid_pinpoints=pinpoints,
                **mean_std,
            )
            return config, tf.LlavaNextProcessor(
                image_processor=image_processor,
                tokenizer=tokenizer,
                patch_size=8,
                vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
                chat_template=tokenizer.chat_template,
            )
        video_id = tokenizer.convert_tokens_to_ids("<video>")
        config = tf.LlavaOnevisionConfig(
            **common,
            image_grid_pinpoints=pinpoints,
            video_token_index=video_id,
            vision_feature_select_strategy="full",
        )
        image_processor = tf.LlavaOnevisionImageProcessorPil(
            size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints, **mean_std
        )
        return config, tf.LlavaOnevisionProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=tf.LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}, **mean_std),
            num_image_tokens=16,
            vision_feature_select_strategy="full",
            chat_template=tokenizer.chat_template,
        )
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        start, end, video = _ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
        ids = dict(
            image_token_id=image_id,
            video_token_id=video,
            vision_start_token_id=start,
            vision_end_token_id=end,
        )
        pixels = dict(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4)
        mrope = {
            "rope_type": "default",
            "mrope_section": [2, 1, 1],
            "rope_theta": 1e6,
        }  # Qwen3-VL: interleaved
        if model_type == "qwen2_vl":
            config = tf.Qwen2VLConfig(
                text_config=_text_config(tokenizer, rope_parameters=mrope),
                vision_config=dict(
                    depth=2,
                    embed_dim=32,
                    hidden_size=32,
                    num_heads=2,
                    mlp_ratio=2,
                    patch_size=14,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                ),
                **ids,
            )
        elif model_type == "qwen2_5_vl":
            config = tf.Qwen2_5_VLConfig(
                text_config=_text_config(tokenizer, rope_parameters=mrope),
                vision_config=dict(
                    depth=2,
                    hidden_size=32,
                    out_hidden_size=32,
                    intermediate_size=64,
                    num_heads=2,
                    patch_size=14,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                    window_size=56,
                    fullatt_block_indexes=[1],
                ),
                **ids,
            )
        else:
            config = tf.Qwen3VLConfig(
                text_config=_text_config(
                    tokenizer,
                    head_dim=8,
                    rope_parameters={**mrope, "mrope_interleaved": True},
                ),
                vision_config=dict(
                    depth=2,
                    hidden_size=32,
                    out_hidden_size=32,
                    intermediate_size=64,
                    num_heads=2,
                    patch_size=16,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                    num_position_embeddings=16,
                    deepstack_visual_indexes=[1],
                ),
                **ids,
            )
            pixels = dict(min_pixels=32 * 32 * 4, max_pixels=64 * 64 * 4)
        patch = 16 if model_type == "qwen3_vl" else 14
        image_processor = tf.Qwen2VLImageProcessorPil(
            patch_size=patch,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]},
        )
        processor_class = {
            "qwen2_vl": tf.Qwen2VLProcessor,
            "qwen2_5_vl": tf.Qwen2_5_VLProcessor,
            "qwen3_vl": tf.Qwen3VLProcessor,
        }[model_type]
        video_class = tf.Qwen3VLVideoProcessor if model_type == "qwen3_vl" else tf.Qwen2VLVideoProcessor
        video_processor = video_class(
            patch_size=patch, merge_size=2, temporal_patch_size=2, size=dict(image_processor.size)
        )
        return config, processor_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=tokenizer.chat_template,
        )
    if model_type in ("idefics3", "smolvlm"):
        vision = dict(_VISION, image_size=32, patch_size=8)
        text = tf.LlamaConfig(**_text_config(tokenizer))
        config_class, processor_class, image_class = (
            (tf.Idefics3Config, tf.Idefics3Processor, tf.Idefics3ImageProcessorPil)
            if model_type == "idefics3"
            else (tf.SmolVLMConfig, tf.SmolVLMProcessor, tf.SmolVLMImageProcessorPil)
        )
        config = config_class(vision_config=vision, text_config=text, image_token_id=image_id, scale_factor=2)
        image_processor = image_class(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
        )
        kwargs = dict(image_seq_len=4)
        if model_type == "smolvlm":
            kwargs["video_processor"] = tf.SmolVLMVideoProcessor(
                size={"longest_edge": 64}, max_image_size={"longest_edge": 32}
            )
        return config, processor_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
            **kwargs,
        )
    if model_type == "gemma3":
        boi, eoi = _ids(tokenizer, "<start_of_image>", "<end_of_image>")
        text = tf.Gemma3TextConfig(**_text_config(tokenizer, head_dim=8, sliding_window=64))
        vision = tf.SiglipVisionConfig(image_size=32, patch_size=8, **_VISION)
        config = tf.Gemma3Config(
            text_config=text,
            vision_config=vision,
            mm_tokens_per_image=4,
            boi_token_index=boi,
            eoi_token_index=eoi,
            image_token_index=image_id,
        )
        image_processor = tf.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
        _name_tokens(
            tokenizer,
            boi_token="<start_of_image>",
            eoi_token="<end_of_image>",
            image_token="<image_soft_token>",
        )
        return config, tf.Gemma3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_length=4,
            chat_template=tokenizer.chat_template,
        )
    if model_type == "internvl":
        text = tf.Qwen2Config(**_text_config(tokenizer))
        vision = dict(_VISION, image_size=[32, 32], patch_size=[8, 8])
        config = tf.InternVLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=image_id,
            image_seq_length=4,
            downsample_ratio=0.5,
            # untied: with InternVL's default tied LM head a random 2-layer model only repeats its last input token
            # (its final hidden state is still mostly that token's embedding), so greedy answers say nothing
            tie_word_embeddings=False,
        )
        image_processor = tf.GotOcr2ImageProcessorPil(
            size={"height": 32, "width": 32}, crop_to_patches=True, max_patches=4
        )
        _name_tokens(
            tokenizer,
            start_image_token="<img>",
            end_image_token="</img>",
            context_image_token="<IMG_CONTEXT>",
            video_token="<video>",
        )
        return config, tf.InternVLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=tf.InternVLVideoProcessor(size={"height": 32, "width": 32}),
            image_seq_length=4,
            chat_template=tokenizer.chat_template,
        )
    raise KeyError(f"no tiny configuration for {model_type!r}; supported: {sorted(FAMILIES)}")


def build_tiny_model(model_type: str, *, qwen_tokenizer: str | Path | None = None, seed: int = 0):
    """A randomly initialised tiny ``model_type`` and its processor: ``(model, processor)``.

    Raises:
        KeyError: unsupported family. MissingInputError: a Qwen-vocabulary family without ``qwen_tokenizer``.
    """
    family = family_of(model_type)
    missing = missing_requirements(family)
    if missing:
        raise MissingDependencyError(
            f"the {model_type} processor needs {' and '.join(missing)} (not installed in this environment): "
            f"transformers 5.23 cannot construct or load it without them; {FAMILIES_ENV_HINT}"
        )
    tokenizer = _tokenizer(family, Path(qwen_tokenizer) if qwen_tokenizer else None)
    config, processor = _build(model_type, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="eager")
    if model_type == "gemma3":
        # transformers initialises Gemma 3's projector weight to zeros, which makes a random model blind to the image
        # (every image feature is 0); a pretrained one is not, so draw it like the other linear layers.
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        torch.nn.init.normal_(weight.data, std=config.text_config.initializer_range)
    return model, processor


def save_tiny_model(model_type: str, out: str | Path, **kwargs: Any) -> Path:
    """Build and save a tiny ``model_type`` checkpoint to ``out`` (reload with ``AutoModelForImageTextToText`` /
    ``AutoProcessor``); returns ``out``."""
    model, processor = build_tiny_model(model_type, **kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES), help="transformers model_type")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument(
        "--qwen-tokenizer",
        default=None,
        help="folder of the real Qwen2 tokenizer (Qwen families, InternVL), e.g. shared/tokenizers/qwen2",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace what a non-empty --out folder holds"
    )


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder (e.g. a trained run) without ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"--out {out}: folder is not empty; choose another or add --overwrite to replace its model"
        )


def run(args: argparse.Namespace) -> int:
    check_out(Path(args.out), args.overwrite)
    try:
        out = save_tiny_model(args.family, args.out, qwen_tokenizer=args.qwen_tokenizer, seed=args.seed)
    except OSError as error:
        raise UsageError(f"--out {args.out}: {one_line(error)}") from None
    print(f"wrote a tiny {args.family} checkpoint to {out}")
    return 0
