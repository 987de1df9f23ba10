"""Training presets: the paper's LLaVA-1.5-7B and TinyLLaVA-3B recipes, and a tiny CPU recipe.

A preset gives the defaults of a run for one stage (``pretrain`` = stage 1, ``finetune`` = stage 2); a YAML config
names a preset and a stage and overrides what it needs (data paths, output folder, ...). A *variant* picks the loss:
``baseline`` (cross-entropy only; the VISTA similarity is still logged), ``vista`` (L2, the paper's "VISTA" rows)
or ``vista-cosine`` (the "VISTA(cosine)" rows; raw-position weights in the official LLaVA copy, ``t/T`` in the
TinyLLaVA copy, see REFERENCE section 1).

Numbers come from REFERENCE section 5 (LLaVA-1.5 scripts, TinyLLaVA-VISTA scripts). Architectures of the public
components are recorded in :data:`KNOWN_COMPONENTS` so that ``vista train --dry-run`` can count parameters on the
meta device without downloading anything.
"""

from __future__ import annotations

import copy
from typing import Any

from vista.errors import closest
from vista.train_schema import common_defaults

STAGES = ("pretrain", "finetune")
VARIANTS = ("baseline", "vista", "vista-cosine")
PRESETS = ("tiny", "llava-1.5-7b", "tinyllava-3b")

# Architectures (config.json fields) of the public checkpoints the paper presets use.
KNOWN_COMPONENTS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {
        "model_type": "clip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
    "google/siglip-so400m-patch14-384": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
    },
    "lmsys/vicuna-7b-v1.5": {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    "microsoft/phi-2": {
        "model_type": "phi",
        "vocab_size": 51200,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.4,  # transformers v5 keeps it in rope_parameters (PhiConfig's default is 0.5)
        "layer_norm_eps": 1e-5,
        "resid_pdrop": 0.1,
        "hidden_act": "gelu_new",
        "bos_token_id": 50256,  # <|endoftext|> (PhiConfig's defaults 1 and 2 are wrong for Phi-2's vocabulary)
        "eos_token_id": 50256,
        "tie_word_embeddings": False,
    },
}

# Tokens in the real tokenizers of the paper's LMs (the model's embedding table may be larger: Phi-2 pads to 51,200).
# ``<image>`` is added after them, so it takes this id (Vicuna: 32000, growing the vocabulary to 32001; Phi-2: 50295,
# inside the padded table).
KNOWN_TOKENIZER_LENGTHS: dict[str, int] = {"lmsys/vicuna-7b-v1.5": 32000, "microsoft/phi-2": 50295}

# Image preprocessing of the public vision towers (their ``preprocessor_config.json``), for building without a download.
KNOWN_IMAGE_PROCESSORS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 336},
        "crop_size": {"height": 336, "width": 336},
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    },
    "google/siglip-so400m-patch14-384": {
        "image_processor_type": "SiglipImageProcessor",
        "size": {"height": 384, "width": 384},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    },
}

# The paper's optimisation hyperparameters per stage (LLaVA-1.5 scripts; TinyLLaVA-VISTA uses the same numbers).
PAPER_STAGES: dict[str, dict[str, Any]] = {
    "pretrain": {
        "data": {"template": "plain"},
        "training": {
            "global_batch_size": 256,
            "per_device_train_batch_size": 32,
            "learning_rate": 1e-3,
            "deepspeed": "reproduce/configs/deepspeed/zero2.json",
            "save_steps": 24000,
        },
    },
    "finetune": {
        "model": {"checkpoint": "runs/{preset}/{variant}/pretrain"},
        "training": {
            "global_batch_size": 128,
            "per_device_train_batch_size": 16,
            "learning_rate": 2e-5,
            "deepspeed": "reproduce/configs/deepspeed/zero3.json",
            "save_steps": 50000,
        },
    },
}
PAPER_COMMON: dict[str, Any] = {
    "data": {"max_length": 2048},
    "training": {
        "num_train_epochs": 1,
        "weight_decay": 0.0,
        "warmup_ratio": 0.03,
        "lr_scheduler_type": "cosine",
        "gradient_checkpointing": True,
        "dataloader_num_workers": 4,
    },
}

_PRESETS: dict[str, dict[str, Any]] = {
    "llava-1.5-7b": {
        "model": {
            "vision_tower": "openai/clip-vit-large-patch14-336",
            "language_model": "lmsys/vicuna-7b-v1.5",
            "feature_layer": -2,
            "select_strategy": "default",  # CLS dropped: 576 image tokens
        },
        "training": {"bf16": True},
        "stage_template": {"pretrain": "plain", "finetune": "vicuna_v1"},
        "cosine_weighting": "position",  # the official LLaVA copy weights cosine terms by the raw position t
    },
    "tinyllava-3b": {
        "model": {
            "vision_tower": "google/siglip-so400m-patch14-384",
            "language_model": "microsoft/phi-2",
            "feature_layer": -2,
            "select_strategy": "full",  # SigLIP has no CLS token: all 729 patches
        },
        "data": {
            "max_length": 3072,  # the official TinyLLaVA-VISTA scripts
            "image_aspect": "resize",
        },
        "training": {"fp16": True},
        "stage_template": {"pretrain": "plain", "finetune": "phi"},
        "cosine_weighting": "linear",  # the TinyLLaVA copy weights cosine terms by t/T
    },
    # The tiny recipe (data, max length, learning rate, epochs, checkpoints) is stated once, in
    # reproduce/configs/tiny/{pretrain,finetune}.yaml; the preset holds only what makes a model "tiny".
    "tiny": {
        # SDPA trains 16% faster than eager here (measured on the tiny stage 2); the attention probe loads its
        # checkpoints with eager attention itself (analysis/probes/cli.py)
        "model": {"attn_implementation": "sdpa", "dtype": "float32"},
        "stage_template": {"pretrain": "plain", "finetune": "vicuna_v1"},
        "cosine_weighting": "linear",
    },
}

# The LLaVA-1.5 data layout (REFERENCE section 5; LLaVA's ``playground/data``), relative to the working directory.
_PAPER_DATA = {
    "pretrain": {
        "json": "data/llava/blip_laion_cc_sbu_558k.json",
        "image_folder": "data/llava/LLaVA-Pretrain/images",
    },
    "finetune": {
        "json": "data/llava/llava_v1_5_mix665k.json",
        "image_folder": "data/llava",
    },  # coco/, gqa/, ...
}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in recursively (dicts merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_defaults(preset: str, stage: str) -> dict[str, Any]:
    """The nested default config of ``preset`` for ``stage`` (before the YAML file and overrides apply)."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    spec = _PRESETS[preset]
    own = {k: v for k, v in spec.items() if k in ("model", "data", "training")}
    if preset == "tiny":
        config = deep_merge(common_defaults(), own)
    else:
        config = deep_merge(deep_merge(common_defaults(), PAPER_COMMON), PAPER_STAGES[stage])
        config = deep_merge(config, own)  # preset specifics (e.g. TinyLLaVA's max length 3072) win
        config["data"].update(_PAPER_DATA[stage])
        config["data"]["group_by_modality_length"] = stage == "finetune"  # LLaVA-1.5 finetune script
    config["data"]["template"] = spec["stage_template"][stage]
    config["preset"], config["stage"] = preset, stage
    return config


def variant_vista(preset: str, variant: str) -> dict[str, Any]:
    """``VistaConfig`` fields for a loss variant of a preset."""
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}{closest(str(variant), VARIANTS)} (one of {', '.join(VARIANTS)})"
        )
    if variant == "baseline":
        return {"enabled": False}
    if variant == "vista":
        return {"enabled": True, "distance": "l2", "weighting": "linear"}
    return {"enabled": True, "distance": "cosine", "weighting": _PRESETS[preset]["cosine_weighting"]}
