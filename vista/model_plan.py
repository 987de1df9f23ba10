"""Models planned without weights: the ``LlavaConfig`` a ``model`` config section builds (``vista train --dry-run``,
the memory plan), its parameter counts on the meta device, and random-weight builds of exactly that architecture.

Nothing is downloaded: hub components come from ``vista.presets.KNOWN_COMPONENTS`` / ``KNOWN_IMAGE_PROCESSORS`` /
``KNOWN_TOKENIZER_LENGTHS`` when they are not local folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor

from vista.builder import (
    check_checkpoint_depth,
    ensure_image_token,
    freeze_for_stage,
    llava_config,
    llava_processor,
    parameter_report,
    resolve_source,
    with_depth,
)
from vista.templates import IMAGE_TOKEN
from vista.tiny import TinyLlavaSpec, build_tokenizer, tiny_llava_config


def build_random(
    model_cfg: dict[str, Any], *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The exact architecture :func:`plan_llava_config` plans, with random weights (``transformers`` init).

    Nothing is downloaded: the parts' configs come from local folders or ``vista.presets.KNOWN_COMPONENTS``, the
    image preprocessing from a local folder or ``vista.presets.KNOWN_IMAGE_PROCESSORS``, and the tokenizer from
    ``model.tokenizer`` (else the LM folder). With ``model.text_layers`` / ``model.vision_layers`` this is a
    true-width, reduced-depth model (CPU runs of the paper presets).

    Raises:
        ValueError: no tokenizer folder, or a part whose architecture or preprocessing is unknown offline.
    """
    config, processor = planned_processor(model_cfg)
    kwargs = (
        {"attn_implementation": model_cfg["attn_implementation"]}
        if model_cfg.get("attn_implementation")
        else {}
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, **kwargs)
    return model, processor


def planned_processor(model_cfg: dict[str, Any]) -> tuple[LlavaConfig, LlavaProcessor]:
    """The ``LlavaConfig`` of :func:`plan_llava_config` and the matching processor (real tokenizer and image
    preprocessing of the parts; nothing downloaded). Raises ``ValueError`` like :func:`build_random`."""
    tokenizer = _planning_tokenizer(model_cfg, required=True)
    config, _ = plan_llava_config(model_cfg)
    image_processor = image_processor_for(model_cfg["vision_tower"])
    processor = llava_processor(
        config.vision_config, tokenizer, image_processor, model_cfg.get("select_strategy", "default")
    )
    return config, processor


def image_processor_for(vision_tower: str) -> BaseImageProcessor:
    """The PIL image processor of a vision tower: its local folder's, else the known one (no download)."""
    import transformers

    from vista.presets import KNOWN_IMAGE_PROCESSORS

    if Path(vision_tower).exists() or vision_tower not in KNOWN_IMAGE_PROCESSORS:
        return AutoImageProcessor.from_pretrained(vision_tower, backend="pil")
    fields = dict(KNOWN_IMAGE_PROCESSORS[vision_tower])
    processor_class = getattr(transformers, fields.pop("image_processor_type") + "Pil")
    return processor_class(**fields)


def _planning_tokenizer(
    model_cfg: dict[str, Any], *, required: bool = False
) -> PreTrainedTokenizerBase | None:
    """The run's tokenizer (``model.tokenizer``, else a local LM folder) with ``<image>`` added; None if neither."""
    folder = model_cfg.get("tokenizer") or (
        model_cfg["language_model"] if Path(model_cfg["language_model"]).exists() else None
    )
    if folder is None:
        if required:
            raise ValueError(
                f"model.source=random with language model {model_cfg['language_model']!r} (a hub id) needs "
                f"model.tokenizer=<a tokenizer folder>, e.g. ../shared/tokenizers/llama2-vicuna"
            )
        return None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_image_token(tokenizer)
    return tokenizer


def _component_config(name_or_path: str, known: dict[str, dict[str, Any]]) -> PretrainedConfig:
    """A component's config from a local folder, the known-architecture table, or the local HF cache."""
    if name_or_path in known and not Path(name_or_path).exists():
        fields = dict(known[name_or_path])
        model_type = fields.pop("model_type")
        return AutoConfig.for_model(model_type, **fields)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        raise ValueError(
            f"cannot plan {name_or_path!r}: not a local folder, not in vista.presets.KNOWN_COMPONENTS and not in "
            f"the local cache ({error.__class__.__name__})"
        ) from None
    return getattr(config, "vision_config", config)


def planning_model_cfg(model_cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The ``model`` section to plan from, and a note: a checkpoint not written yet (the previous stage's output)
    is planned from the stage-1 parts."""
    model_cfg = dict(model_cfg)
    if (
        resolve_source(model_cfg) == "checkpoint"
        and not (Path(model_cfg["checkpoint"]) / "config.json").is_file()
    ):
        note = f"checkpoint {model_cfg['checkpoint']} not written yet; planned from the stage-1 parts"
        model_cfg["checkpoint"] = None
        return model_cfg, note
    return model_cfg, ""


def plan_llava_config(model_cfg: dict[str, Any]) -> tuple[LlavaConfig, str]:
    """The ``LlavaConfig`` a ``model`` config section would build, and a description, without loading weights.

    Hub components not available locally are described by ``vista.presets.KNOWN_COMPONENTS``. ``<image>`` takes
    the id after the tokenizer's last token (``model.tokenizer``, a local LM folder, else
    ``vista.presets.KNOWN_TOKENIZER_LENGTHS``); the vocabulary grows only if the embedding table has no room
    (Vicuna: 32000 -> 32001; Phi-2's table of 51200 already has room). Depth overrides (``model.text_layers``,
    ``model.vision_layers``) apply to the parts' configs.
    """
    from vista.presets import KNOWN_COMPONENTS, KNOWN_TOKENIZER_LENGTHS

    source = resolve_source(model_cfg)
    if source == "checkpoint":
        path = Path(model_cfg["checkpoint"])
        if (path / "config.json").is_file():
            config = AutoConfig.from_pretrained(path)
            check_checkpoint_depth(config, model_cfg, str(path))
            return config, f"checkpoint {path}"
        raise FileNotFoundError(f"{path}: no config.json yet (it is the previous stage's output)")
    if source == "tiny":
        spec = TinyLlavaSpec(**model_cfg.get("tiny", {}))
        return tiny_llava_config(build_tokenizer(), spec), f"tiny spec {spec}"
    vision = _component_config(model_cfg["vision_tower"], KNOWN_COMPONENTS)
    text = _component_config(model_cfg["language_model"], KNOWN_COMPONENTS)
    with_depth(vision, model_cfg.get("vision_layers"), "vision_layers")
    with_depth(text, model_cfg.get("text_layers"), "text_layers")
    tokenizer = _planning_tokenizer(model_cfg)
    if tokenizer is not None:  # <image> already added: it takes the next id, inside a padded table if any
        image_token_id, pad_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id
        text.vocab_size = max(text.vocab_size, len(tokenizer))
    else:
        image_token_id = KNOWN_TOKENIZER_LENGTHS.get(model_cfg["language_model"], text.vocab_size)
        pad_token_id = None
        text.vocab_size = max(text.vocab_size, image_token_id + 1)
    config = llava_config(
        vision,
        text,
        image_token_id=image_token_id,
        pad_token_id=pad_token_id,
        feature_layer=model_cfg.get("feature_layer", -2),
        select_strategy=model_cfg.get("select_strategy", "default"),
    )
    return config, f"vision {model_cfg['vision_tower']} + LM {model_cfg['language_model']}"


def planned_parameter_report(
    config: LlavaConfig, stage: str, top_layers: int | None = None
) -> dict[str, dict[str, int]]:
    """:func:`parameter_report` of the model ``config`` describes, frozen for ``stage`` (and ``top_layers``, see
    :func:`freeze_for_stage`), built on the meta device."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration._from_config(config)
    freeze_for_stage(model, stage, top_layers)
    return parameter_report(model)
