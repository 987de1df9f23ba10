"""The sections of a ``vista train`` config, as typed dataclasses: every key, its type and its default.

A resolved config is a nested dict (``preset``, ``stage``, ``variant`` and the sections below); this module is
where its keys are declared. Presets (:mod:`vista.presets`) start from :func:`common_defaults` and override
values, YAML files and ``key=value`` overrides come on top (:func:`vista.train_config.load_config`), and unknown
keys are refused with a suggestion. ``vista`` is :class:`vista.loss.VistaConfig`; ``training`` is
``transformers.TrainingArguments`` fields plus :data:`EXTRA_TRAINING_KEYS` (only the defaults vista chooses are
declared in :class:`TrainingSection`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("preset", "stage", "variant", "model", "data", "vista", "lora", "training", "objectives")
# warmup_ratio -> v5 warmup_steps in [0, 1); overwrite_output_dir (gone in v5): allow replacing a finished run
EXTRA_TRAINING_KEYS = ("global_batch_size", "warmup_ratio", "overwrite_output_dir")
DEFAULT_VARIANT = "vista"


@dataclass
class ModelSection:
    """Where the model comes from and how it is built (:func:`vista.builder.build_model`)."""

    source: str = (
        "auto"  # auto: checkpoint if given, else components if both ids given, else tiny; or "random"
    )
    vision_tower: str | None = None
    language_model: str | None = None
    checkpoint: str | None = None
    projector: str = "mlp2x_gelu"
    feature_layer: int = -2
    select_strategy: str = "default"
    dtype: str = (
        "auto"  # auto: bfloat16 with training.bf16, else float32 (fp16 AMP keeps fp32 master weights)
    )
    attn_implementation: str = "sdpa"
    tiny: dict[str, Any] = field(default_factory=dict)  # vista.tiny.TinyLlavaSpec fields
    # A checkpoint of any family in vista.families (hub id or folder): AutoModelForImageTextToText, its processor
    # and chat template (vista.any_vlm); the LLaVA-recipe keys above are then unused.
    pretrained: str | None = None
    # Depth overrides (None: the real depth). Everything else keeps the real architecture: a true-width,
    # reduced-depth model for CPU checks and memory measurements (e.g. model.text_layers=1 model.vision_layers=1).
    text_layers: int | None = None
    vision_layers: int | None = None
    # A tokenizer folder (None: the language model's own); needed by source "random" when the LM is a hub id.
    tokenizer: str | None = None
    # Stage 2 only (None: LLaVA-1.5's stage 2, the projector and the whole LM). N: only the LM's last N decoder
    # layers and its final norm train; the projector, the other layers, the embeddings and the LM head keep what
    # stage 1 and pretraining left, so the backward pass stops N layers below the top (a CPU budget recipe).
    finetune_top_layers: int | None = None


@dataclass
class DataSection:
    """The LLaVA-JSON training data (:class:`vista.data.LlavaJsonDataset`)."""

    json: str | None = None
    image_folder: str | None = None
    template: str | None = None  # None: the preset's template for the stage
    max_length: int = 2048  # tokens
    on_bad_sample: str = "raise"
    group_by_modality_length: bool = False
    # With group_by_modality_length: sort pools of this many megabatches by length, so batches hold records of
    # similar length and pad less (LLaVA: 1, which on one process only separates the modalities).
    length_group_megabatches: int = 1
    # With group_by_modality_length, gradient accumulation and one process: cut each optimizer step's records (the
    # same records either way) into micro-batches by length, longest first, so short records are not padded to the
    # longest (LLaVA balances the micro-batches' total lengths, which only matters across processes).
    sorted_micro_batches: bool = False
    image_aspect: str = "pad"  # LLaVA-1.5 pads images to a square with the mean colour
    check_images: str = "exists"  # "decode" decodes every image up front; "none" defers to loading


@dataclass
class LoraSection:
    """LoRA on the language model (stage 2 only; PEFT)."""

    enabled: bool = False
    r: int = 128
    alpha: float = 256
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TrainingSection:
    """vista's defaults for ``transformers.TrainingArguments`` fields (any other field may be set too)."""

    output_dir: str = "runs/{preset}/{variant}/{stage}"
    global_batch_size: int | None = (
        None  # if set, gradient_accumulation_steps = global / (per_device * world_size)
    )
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float | None = 0.03
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    logging_steps: float = 1
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = 1
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    seed: int = 42
    dataloader_num_workers: int = 0
    remove_unused_columns: bool = False


SECTION_TYPES: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "lora": LoraSection,
    "training": TrainingSection,
}


def section_keys(section: str) -> tuple[str, ...]:
    """The declared keys of ``model``, ``data``, ``lora`` or ``training`` (in declaration order)."""
    return tuple(f.name for f in dataclasses.fields(SECTION_TYPES[section]))


def common_defaults() -> dict[str, Any]:
    """The defaults every preset starts from, as the nested dict a resolved config is (``vista`` left empty)."""
    return {
        "variant": DEFAULT_VARIANT,
        "model": dataclasses.asdict(ModelSection()),
        "data": dataclasses.asdict(DataSection()),
        "vista": {},
        "lora": dataclasses.asdict(LoraSection()),
        "training": dataclasses.asdict(TrainingSection()),
    }
