"""``vista train`` for any family of :mod:`vista.families`: ``model.pretrained=<hub id or folder>``.

The model and processor load with ``AutoModelForImageTextToText`` / ``AutoProcessor``; data go through the
model's own chat template (:mod:`vista.chat_data`); stage freezing comes from the family's table
(:func:`vista.families.freeze_for_stage`) and is reported at start-up; the loss is :class:`vista.trainer.VistaTrainer`
(CE + VISTA, anchor = last image token of the last image, or ``vista.anchor=mean``). Everything else (training
arguments, DeepSpeed, run file) is shared with the LLaVA recipe in :mod:`vista.train`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vista.errors import MissingInputError, UsageError, one_line

logger = logging.getLogger("vista.train")


def load_pretrained(name_or_path: str, *, dtype: Any = None, attn_implementation: str | None = None):
    """``(model, processor, family)`` of a supported family's checkpoint (hub id or local folder).

    Raises:
        UsageError: the checkpoint's ``model_type`` is not a supported family, its processor needs a missing
            package, or it has no chat template. MissingInputError: a local-looking path that does not exist.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from vista.families import FAMILIES_ENV_HINT, family_of, missing_requirements

    if _looks_local(name_or_path) and not Path(name_or_path).exists():
        raise MissingInputError(f"model.pretrained={name_or_path}: folder not found")
    try:
        model_type = AutoConfig.from_pretrained(name_or_path).model_type
    except (OSError, ValueError) as error:  # no config.json, no model_type, or the hub is unreachable
        raise MissingInputError(f"model.pretrained={name_or_path}: {one_line(error)}") from None
    try:
        family = family_of(model_type)
    except KeyError as error:
        raise UsageError(f"model.pretrained={name_or_path}: {error.args[0]}") from None
    missing = missing_requirements(family)
    if missing:
        raise UsageError(
            f"model.pretrained={name_or_path}: the {model_type} processor needs {', '.join(missing)}; "
            + FAMILIES_ENV_HINT
        )
    processor = AutoProcessor.from_pretrained(name_or_path)
    if getattr(processor, "chat_template", None) is None:
        raise UsageError(
            f"model.pretrained={name_or_path}: its processor has no chat template (processor.chat_template); a "
            "LLaVA-recipe checkpoint takes its conversation template instead, e.g. --template vicuna_v1"
        )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    return model, processor, family


def _looks_local(name: str) -> bool:
    """A folder rather than a hub id (``org/name``; hub names may hold dots: ``Qwen/Qwen2.5-VL-3B-Instruct``)."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


TEXT_KEYS = frozenset({"input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids"})


def dummy_image_inputs(processor: Any, family: Any) -> dict[str, Any]:
    """The image tensors (``pixel_values``, ``image_sizes``, ``pixel_attention_mask``, ...) the processor gives for
    one blank 32x32 image: what :class:`AnyVlmTrainer` feeds the vision tower on batches without images."""
    from PIL import Image

    batch = processor(text=[family.placeholder], images=[[Image.new("RGB", (32, 32))]], return_tensors="pt")
    return {k: v for k, v in batch.items() if k not in TEXT_KEYS}


def _tensors(value: Any) -> list:
    """Every tensor inside ``value`` (a tensor, a ModelOutput, or nested tuples/lists)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


class _TextOnlyGuardMixin:
    """On a micro-batch without images, run the vision tower and projector on a blank image just before the
    decoder and add 0 x their output to ``inputs_embeds``.

    Why: under ZeRO-3 every rank must join the all-gathers of the vision tower's partitioned weights, in the same
    order; a rank whose batch has no image would skip them while another rank gathers them, and the collectives
    mismatch or hang (LLaMA-Factory inserts a fake image into the batch for the same reason). A forward pre-hook on
    the decoder places the dummy call where image batches call the vision tower (after the token embedding, before
    the decoder), and feeding it into ``inputs_embeds`` gives the backward pass the same order too. Values are
    unchanged (0 x finite features); the cost is one blank-image vision forward on text-only micro-batches.
    """

    dummy_images: dict[str, Any]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if any(key not in TEXT_KEYS for key in inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from vista.model import language_model_of

        handle = language_model_of(model).register_forward_pre_hook(
            self._touch_vision,
            with_kwargs=True,
            prepend=True,  # before DeepSpeed's own pre-hook: same module order
        )
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()

    def _touch_vision(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        from vista.model import _unwrap

        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return None
        base = _unwrap(self.model)
        images = {
            k: v.to(embeds.device, embeds.dtype) if v.is_floating_point() else v.to(embeds.device)
            for k, v in self.dummy_images.items()
        }
        features = _tensors(base.model.get_image_features(**images))
        touch = sum(t.to(embeds.dtype).sum() for t in features if t.is_floating_point()) * 0.0
        return args, {**kwargs, "inputs_embeds": embeds + touch}


def train_any(config: dict[str, Any]) -> Path:
    """Train one stage of ``config`` (``model.pretrained`` set) with CE + VISTA; returns the output folder."""
    from transformers import set_seed

    from vista import builder
    from vista.chat_data import ChatCollator, ChatDataset
    from vista.families import freeze_for_stage
    from vista.objectives import objectives_config_from
    from vista.run_metadata import CHAT_TEMPLATE, run_metadata, write_run_file
    from vista.train import _ensure_distributed_env, check_output_dir, leave_together, training_arguments
    from vista.train_config import ConfigError, vista_config_from, world_size_from_env
    from vista.trainer import VistaTrainer, check_sorted_micro_batches, sampling_options

    objectives = objectives_config_from(config["objectives"])
    if objectives.l2t.enabled or objectives.viral.enabled:
        raise ConfigError(
            "objectives.l2t / objectives.viral are not supported with model.pretrained yet (they train the LLaVA "
            "recipe only); drop them, or train a LLaVA-recipe config"
        )
    if config["model"]["finetune_top_layers"] is not None:
        raise ConfigError(
            "model.finetune_top_layers is not supported with model.pretrained (it freezes the LLaVA recipe's "
            "decoder layers by name); drop it"
        )
    training, data = config["training"], config["data"]
    if not data["json"] or not Path(data["json"]).is_file():
        raise ConfigError(f"data.json: {data['json']} not found (relative to {Path.cwd()})")
    check_output_dir(training)
    _ensure_distributed_env(bool(training["deepspeed"]))
    world_size = world_size_from_env()
    check_sorted_micro_batches(data["sorted_micro_batches"], world_size)  # before loading the model
    args = training_arguments(config, world_size)  # before the model: ZeRO-3 partitioned loading
    set_seed(args.seed)
    dtype = builder.resolve_dtype(config["model"]["dtype"], bf16=training["bf16"])
    model, processor, family = load_pretrained(
        config["model"]["pretrained"], dtype=dtype, attn_implementation=config["model"]["attn_implementation"]
    )
    model.config.use_cache = False
    parameters = freeze_for_stage(model, family, config["stage"])
    logger.info(
        "%s (%s), stage %s:\n%s",
        config["model"]["pretrained"],
        family.model_type,
        config["stage"],
        builder.format_parameter_report(parameters),
    )
    dataset = ChatDataset(data["json"], data["image_folder"], processor, on_bad_sample=data["on_bad_sample"])
    if dataset.skip_report.num_skipped:
        logger.warning("%s", dataset.skip_report)
    metadata = run_metadata(config, args, parameters, len(dataset))
    metadata.update(model_type=family.model_type, template=CHAT_TEMPLATE)
    trainer_class = type("AnyVlmTrainer", (_TextOnlyGuardMixin, VistaTrainer), {})
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ChatCollator(processor),
        processing_class=processor,
        vista_config=vista_config_from(config),
        **sampling_options(data),
    )
    trainer.dummy_images = dummy_image_inputs(processor, family)
    if trainer.is_world_process_zero():
        write_run_file(args.output_dir, {**metadata, "status": "running"})
    result = trainer.train()
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        trainer.state.save_to_json(str(Path(args.output_dir) / "trainer_state.json"))
        write_run_file(
            args.output_dir,
            {
                **metadata,
                "status": "finished",
                "train_metrics": result.metrics,
                "data_skip_report": dataset.skip_report.to_dict(),
            },
        )
    leave_together(trainer)
    return Path(args.output_dir)
