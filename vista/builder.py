"""Build LLaVA-style models: from separately pretrained parts (a vision tower and a causal LM), from a tiny spec,
or from an existing LLaVA checkpoint; freeze them per training stage; count what trains.

The result is always a transformers ``LlavaForConditionalGeneration`` plus a ``LlavaProcessor``, so it saves in HF
format and reloads with ``AutoModelForImageTextToText`` / ``AutoProcessor``. The projector is LLaVA-1.5's
``mlp2x_gelu`` (Linear-GELU-Linear), freshly initialised with PyTorch's default ``nn.Linear`` init (as LLaVA does).

Assembling never holds two copies of the large parts: the LLaVA shell is created on the meta device and the loaded
vision tower and LM modules are moved into it (their tensors are shared, not copied); only the projector is
allocated. Stages (REFERENCE section 1): ``pretrain`` trains the projector only; ``finetune`` trains the projector
and the whole LM (embeddings and ``lm_head`` included); the vision tower is always frozen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    MODEL_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor

from vista.errors import MissingInputError, UsageError
from vista.images import image_token_count
from vista.templates import IMAGE_TOKEN
from vista.tiny import (
    TinyLlavaSpec,
    build_processor,
    build_tiny_llava,
)

PARTS = ("vision_tower", "projector", "language_model")
SOURCES = ("checkpoint", "components", "random", "tiny", "pretrained")
STAGE_TRAINS = {"pretrain": ("projector",), "finetune": ("projector", "language_model")}
DTYPES = {  # model.dtype / the lmms-eval plugin's dtype= names
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# Parameters of a dual encoder that are not part of its image tower.
_NON_VISION_PREFIXES = ("text_model.", "text_projection", "visual_projection", "logit_scale", "logit_bias")
# Vision model types whose sequence starts with a CLS token.
_HAS_CLS = ("clip_vision_model",)


def vision_tokens_per_image(vision_config: PretrainedConfig, select_strategy: str) -> int:
    """Image tokens one image contributes to the LM sequence.

    transformers' LLaVA drops the first position for ``"default"`` whatever the tower, so ``"default"`` suits CLIP
    (the CLS token goes) and ``"full"`` suits SigLIP (no CLS; every patch is kept).
    """
    has_cls = 1 if vision_config.model_type in _HAS_CLS else 0
    return image_token_count(vision_config.image_size, vision_config.patch_size, has_cls, select_strategy)


# Phi-2's tokenizer (CodeGen's): the GPT-2 vocabulary (50,257 tokens) plus 38 whitespace runs added as ordinary
# (non-special) tokens: 31..2 spaces (ids 50257-50286), then 9..2 tabs (ids 50287-50294); 50,295 tokens in all.
PHI2_ADDED_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def phi2_tokenizer(gpt2_folder: str | Path) -> PreTrainedTokenizerBase:
    """Phi-2's tokenizer rebuilt from a GPT-2 tokenizer folder: GPT-2 + :data:`PHI2_ADDED_TOKENS`.

    ``<|endoftext|>`` (50256) is bos, eos and unk, as in Phi-2's ``tokenizer_config.json``; no BOS is prepended.
    What may differ from the published file: added-token flags other than ``special=False`` (e.g. ``normalized``),
    and ``model_max_length`` (2048 here).

    Raises:
        ValueError: the folder is not the GPT-2 vocabulary (length 50,257, ``<|endoftext|>`` = 50256).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_folder))
    if len(tokenizer) != 50257 or tokenizer.convert_tokens_to_ids("<|endoftext|>") != 50256:
        raise ValueError(f"{gpt2_folder}: not the GPT-2 vocabulary (50,257 tokens, <|endoftext|> = 50256)")
    tokenizer.add_tokens(PHI2_ADDED_TOKENS, special_tokens=False)
    tokenizer.bos_token = tokenizer.eos_token = tokenizer.unk_token = "<|endoftext|>"
    tokenizer.model_max_length = 2048
    return tokenizer


def ensure_image_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add ``<image>`` as a special token if the tokenizer lacks it; return its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def llava_config(
    vision_config: PretrainedConfig,
    text_config: PretrainedConfig,
    *,
    image_token_id: int,
    pad_token_id: int | None,
    feature_layer: int = -2,
    select_strategy: str = "default",
) -> LlavaConfig:
    """A ``LlavaConfig`` joining the two parts with an ``mlp2x_gelu`` projector (sub-configs are shared objects)."""
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=vision_tokens_per_image(vision_config, select_strategy),
        projector_hidden_act="gelu",
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=select_strategy,
        pad_token_id=pad_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


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
        vision_model: a vision encoder (e.g. ``CLIPVisionModel``, or a ``CLIPModel`` whose image side is used).
        language_model: a causal LM (e.g. ``LlamaForCausalLM``); its embeddings grow if ``<image>`` is added.
        tokenizer: the LM's tokenizer; ``<image>`` is added as a special token when missing.
        image_processor: the vision encoder's preprocessing.
        feature_layer: which vision hidden layer feeds the projector (LLaVA-1.5: -2).
        select_strategy: ``"default"`` drops the first (CLS) position, ``"full"`` keeps every position.

    Returns:
        ``(model, processor)``. The vision and LM modules are moved into the LLaVA model (the same tensors, so the
        inputs must not be used separately afterwards); a dual encoder's image side is copied. The projector is new.
    """
    vision_config = getattr(vision_model.config, "vision_config", vision_model.config)
    tower = _as_vision_tower(vision_model, vision_config)
    image_token_id = ensure_image_token(tokenizer)
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = llava_config(
        tower.config,
        language_model.config,
        image_token_id=image_token_id,
        pad_token_id=tokenizer.pad_token_id,
        feature_layer=feature_layer,
        select_strategy=select_strategy,
    )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):  # a shell: its vision tower and LM are replaced below, nothing is allocated
        model = LlavaForConditionalGeneration._from_config(config, dtype=language_model.dtype, **kwargs)
    model.model.vision_tower = tower
    model.model.language_model = language_model.get_decoder()
    model.lm_head = language_model.get_output_embeddings()
    device = next(language_model.parameters()).device
    projector = model.model.multi_modal_projector.to_empty(device=device)
    for module in projector.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    _check_materialised(model)
    return model, llava_processor(vision_config, tokenizer, image_processor, select_strategy)


def llava_processor(
    vision_config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    select_strategy: str = "default",
) -> LlavaProcessor:
    """A ``LlavaProcessor`` that expands one ``<image>`` into :func:`vision_tokens_per_image` tokens."""
    return build_processor(
        tokenizer,
        image_processor,
        patch_size=vision_config.patch_size,
        select_strategy=select_strategy,
        num_additional_image_tokens=1 if vision_config.model_type in _HAS_CLS else 0,
    )


def with_depth(config: PretrainedConfig, layers: int | None, what: str) -> PretrainedConfig:
    """``config`` with ``num_hidden_layers = layers`` (unchanged for None); everything else keeps its value.

    Raises:
        ValueError: ``layers`` is not a positive integer or exceeds the real depth (a cut, never a growth).
    """
    if layers is None:
        return config
    real = config.num_hidden_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= real:
        raise ValueError(
            f"model.{what}={layers!r}: expected an integer in [1, {real}] (the real depth is {real})"
        )
    config.num_hidden_layers = layers
    return config


def load_vision_tower(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, layers: int | None = None
) -> tuple[PreTrainedModel, Any]:
    """The image tower of a checkpoint (a dual encoder such as CLIP, or a vision model) and its PIL preprocessing.

    ``layers`` keeps only the first ``layers`` encoder layers (a depth override; the rest are not loaded).
    """
    config = AutoConfig.from_pretrained(name_or_path)
    vision_config = with_depth(getattr(config, "vision_config", config), layers, "vision_layers")
    tower_class = MODEL_MAPPING[type(vision_config)]  # e.g. CLIPVisionModel, SiglipVisionModel
    kwargs = {"config": vision_config} if layers is not None else {}
    tower = tower_class.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil")
    return tower, image_processor


def build_from_components(
    vision_tower: str,
    language_model: str,
    *,
    feature_layer: int = -2,
    select_strategy: str = "default",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    text_layers: int | None = None,
    vision_layers: int | None = None,
    tokenizer: str | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA from a vision tower id/path and a causal LM id/path (hub ids need a cache or network).

    ``text_layers`` / ``vision_layers`` cut the depth (the first layers are loaded); ``tokenizer`` is a tokenizer
    folder other than the LM's. Peak memory is one copy of each part plus the projector (see :func:`assemble_llava`).
    """
    tower, image_processor = load_vision_tower(vision_tower, dtype=dtype, layers=vision_layers)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if text_layers is not None:
        kwargs["config"] = with_depth(AutoConfig.from_pretrained(language_model), text_layers, "text_layers")
    lm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer or language_model)
    return assemble_llava(
        tower,
        lm,
        tokenizer,
        image_processor,
        feature_layer=feature_layer,
        select_strategy=select_strategy,
        attn_implementation=attn_implementation,
    )


def load_llava_checkpoint(
    path: str | Path, *, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A saved LLaVA (e.g. stage 1's output, the starting point of stage 2) and its processor.

    Raises:
        MissingInputError: (a ``FileNotFoundError``) ``path`` holds no ``config.json``.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingInputError(
            f"{path}: not a saved LLaVA checkpoint (no config.json); run the previous stage first"
        )
    require_llava_config(AutoConfig.from_pretrained(path), str(path))
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, **kwargs)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def require_llava_config(config: Any, where: str) -> None:
    """Raise :class:`vista.errors.UsageError` (a ``ValueError``) unless ``config``, read from the folder ``where``,
    is a LLaVA checkpoint's."""
    if not isinstance(config, LlavaConfig):
        raise UsageError(
            f"model.checkpoint={where} is a {config.model_type!r} checkpoint, not a LLaVA one: model.checkpoint is a "
            "previous stage's output; a language model alone goes in model.language_model (with model.vision_tower)"
        )


def check_checkpoint_depth(config: LlavaConfig, model_cfg: dict[str, Any], where: str) -> None:
    """A depth override given with a checkpoint must equal the checkpoint's depth (a saved model is not cut).

    Raises:
        ValueError: ``config`` is not a LLaVA config; an override that differs from the checkpoint's depth (naming
            the override, the checkpoint's depth and ``where``, the checkpoint folder).
    """
    require_llava_config(config, where)
    for key, sub in (("text_layers", config.text_config), ("vision_layers", config.vision_config)):
        wanted = model_cfg.get(key)
        if wanted is not None and wanted != sub.num_hidden_layers:
            raise ValueError(
                f"model.{key}={wanted} but the checkpoint {where} has {sub.num_hidden_layers} layers; a saved "
                f"model keeps its depth (drop the override or give the same value as in the stage that wrote it)"
            )


def resolve_source(model_cfg: dict[str, Any]) -> str:
    """``pretrained``, ``checkpoint``, ``components``, ``random`` or ``tiny`` for a ``model`` config section.

    ``auto`` picks ``pretrained`` (any HF VLM family, :mod:`vista.any_vlm`) if given, else ``checkpoint`` if one is
    given, else ``components`` if both parts are given, else ``tiny``;
    ``random`` (never picked by ``auto``) builds the architecture of ``vision_tower`` + ``language_model`` with
    random weights, downloading nothing (CPU shape checks, memory measurements; see :func:`vista.model_plan.build_random`).
    """
    source = model_cfg.get("source", "auto")
    if source == "pretrained" and not model_cfg.get("pretrained"):
        raise ValueError(
            "model.source=pretrained needs model.pretrained=<hub id or folder> (any HF VLM family)"
        )
    if source == "auto":
        if model_cfg.get("pretrained"):
            return "pretrained"
        if model_cfg.get("checkpoint"):
            return "checkpoint"
        if model_cfg.get("vision_tower") and model_cfg.get("language_model"):
            return "components"
        if model_cfg.get("vision_tower") or model_cfg.get("language_model"):
            raise ValueError("model.vision_tower and model.language_model must be given together")
        return "tiny"
    if source not in SOURCES:
        raise ValueError(f"model.source={source!r}; expected auto or one of {SOURCES}")
    if source in ("components", "random") and not (
        model_cfg.get("vision_tower") and model_cfg.get("language_model")
    ):
        raise ValueError(f"model.source={source} needs model.vision_tower and model.language_model")
    return source


def resolve_dtype(name: str, *, bf16: bool = False) -> torch.dtype:
    """``auto`` (bfloat16 when training in bf16, else float32) or an explicit dtype name."""
    if name == "auto":
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}; expected auto or one of {tuple(DTYPES)}")
    return DTYPES[name]


def build_model(
    model_cfg: dict[str, Any], *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The model and processor a ``model`` config section describes (see ``vista.presets``)."""
    source = resolve_source(model_cfg)
    attn = model_cfg.get("attn_implementation")
    if source == "checkpoint":
        model, processor = load_llava_checkpoint(
            model_cfg["checkpoint"], dtype=dtype, attn_implementation=attn
        )
        check_checkpoint_depth(model.config, model_cfg, model_cfg["checkpoint"])
        return model, processor
    if source == "components":
        return build_from_components(
            model_cfg["vision_tower"],
            model_cfg["language_model"],
            feature_layer=model_cfg.get("feature_layer", -2),
            select_strategy=model_cfg.get("select_strategy", "default"),
            dtype=dtype,
            attn_implementation=attn,
            text_layers=model_cfg.get("text_layers"),
            vision_layers=model_cfg.get("vision_layers"),
            tokenizer=model_cfg.get("tokenizer"),
        )
    if source == "random":
        from vista.model_plan import build_random

        return build_random(model_cfg, dtype=dtype, seed=seed)
    spec = TinyLlavaSpec(**model_cfg.get("tiny", {}))
    model, processor = build_tiny_llava(spec, seed=seed, attn_implementation=attn or "eager")
    return model.to(dtype), processor


# ---------------------------------------------------------------------------------------------- stages and counts


def part_of(parameter_name: str) -> str:
    """Which part (``vision_tower``, ``projector``, ``language_model``) a LLaVA parameter belongs to."""
    if "vision_tower" in parameter_name:
        return "vision_tower"
    if "multi_modal_projector" in parameter_name:
        return "projector"
    return "language_model"  # decoder, embeddings, lm_head (and LoRA adapters on them)


_DECODER_LAYER = re.compile(r"language_model\.(?:model\.)?layers\.(\d+)\.")
_FINAL_NORM = re.compile(r"language_model\.(?:model\.)?norm\.")


def freeze_for_stage(model: torch.nn.Module, stage: str, top_layers: int | None = None) -> None:
    """Set ``requires_grad``: ``pretrain`` trains the projector, ``finetune`` the projector and LM; vision frozen.

    ``top_layers`` (``finetune`` only): train just the LM's last ``top_layers`` decoder layers and its final norm.

    Raises:
        ValueError: an unknown stage; :class:`vista.errors.UsageError` (a ``ValueError``) for ``top_layers`` with
            ``pretrain``, below 1, or above the LM's depth.
    """
    if stage not in STAGE_TRAINS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {tuple(STAGE_TRAINS)}")
    trains = STAGE_TRAINS[stage]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(part_of(name) in trains)
    if top_layers is not None:
        _train_top_layers_only(model, stage, top_layers)


def _train_top_layers_only(model: torch.nn.Module, stage: str, top_layers: int) -> None:
    depth = model.config.text_config.num_hidden_layers
    if stage != "finetune" or not 1 <= top_layers <= depth:
        raise UsageError(
            f"model.finetune_top_layers={top_layers} (stage {stage!r}): expected stage finetune and 1..{depth}, the "
            "language model's depth"
        )
    for name, parameter in model.named_parameters():
        layer = _DECODER_LAYER.search(name)
        top = layer is not None and int(layer.group(1)) >= depth - top_layers
        parameter.requires_grad_(top or _FINAL_NORM.search(name) is not None)


def parameter_report(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """``{part: {"trainable": n, "total": n}}`` for each part and ``"all"`` (ZeRO-3 partitioned sizes counted)."""
    report = {part: {"trainable": 0, "total": 0} for part in (*PARTS, "all")}
    for name, parameter in model.named_parameters():
        count = int(getattr(parameter, "ds_numel", 0) or parameter.numel())
        for key in (part_of(name), "all"):
            report[key]["total"] += count
            report[key]["trainable"] += count if parameter.requires_grad else 0
    return report


def format_parameter_report(report: dict[str, dict[str, int]]) -> str:
    """A small table: part, trainable, total, trainable share."""
    lines = [f"{'part':<16}{'trainable':>16}{'total':>16}{'share':>9}"]
    for part, counts in report.items():
        share = counts["trainable"] / counts["total"] if counts["total"] else 0.0
        lines.append(f"{part:<16}{counts['trainable']:>16,}{counts['total']:>16,}{share:>9.1%}")
    return "\n".join(lines)


def _as_vision_tower(vision_model: PreTrainedModel, vision_config: PretrainedConfig) -> PreTrainedModel:
    """The module LLaVA expects as its vision tower; a dual encoder's image side is copied into one."""
    tower_class = MODEL_MAPPING[type(vision_config)]
    if isinstance(vision_model, tower_class):
        return vision_model
    tower = tower_class._from_config(vision_config, dtype=vision_model.dtype)
    state = {k.removeprefix("vision_model."): v for k, v in vision_model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith(_NON_VISION_PREFIXES)}
    if any(k.startswith("vision_model.") for k in tower.state_dict()):
        state = {f"vision_model.{k}": v for k, v in state.items()}
    result = tower.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"assembling the vision tower: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
    return tower


def _check_materialised(model: torch.nn.Module) -> None:
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise RuntimeError(f"assembling LLaVA left tensors on the meta device: {meta[:5]}")
