"""``vista train --dry-run``: the resolved plan of a run (no weights loaded, nothing downloaded) and the paper's
hyperparameters beside this run's (REFERENCE section 5)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from vista import presets
from vista.presets import deep_merge
from vista.train_config import ConfigError, batch_plan, deepspeed_stage, precision


def data_counts(data: dict[str, Any]) -> dict[str, Any]:
    """Sample counts of the data file as the dataset will see them, or why they are unavailable.

    Records are read by the dataset's reader and classified by its own parser (:func:`vista.data.parse_record`
    with the configured template): usable with images, usable text-only, refused per reason; image files that do
    not exist under ``data.image_folder`` are counted. Tokenisation limits are checked when training starts.
    """
    json_path = data["json"]
    if not json_path or not Path(json_path).is_file():
        return {"json": json_path, "found": False}
    from vista.data import load_records, parse_record
    from vista.templates import ConversationError, get_template

    records = load_records(json_path)  # DataFileError (exit code 3), as in the real run
    template = get_template(data["template"])
    folder = Path(data["image_folder"]) if data.get("image_folder") else None
    with_image, refused, missing_images = 0, Counter(), 0
    for record in records:
        try:
            _, images = parse_record(record, template)
        except ConversationError as error:
            refused[error.reason] += 1
            continue
        problems = [_image_problem(folder / image) for image in images] if folder is not None else []
        if any(problems):  # the dataset refuses the record for its first bad image file
            refused[next(p for p in problems if p)] += 1
            missing_images += problems.count("image_missing")
            continue
        with_image += bool(images)
    usable = len(records) - sum(refused.values())
    return {
        "json": json_path,
        "found": True,
        "samples": len(records),
        "with_image": with_image,
        "text_only": usable - with_image,
        "refused": dict(refused),
        "missing_images": missing_images if folder is not None else None,
    }


def _image_problem(path: Path) -> str | None:
    """The reason the dataset would refuse this image file (its own check), or None."""
    from vista.data.records import check_image_file
    from vista.templates import ConversationError

    try:
        check_image_file(str(path))
    except ConversationError as error:
        return error.reason
    return None


def data_verdict(data: dict[str, Any]) -> str | None:
    """Why the run would stop on this data (:func:`data_counts` plus ``on_bad_sample``), or None."""
    if not data.get("found"):
        return None  # a plan may be made before the data is in place (the paper presets on a laptop)
    refused = sum(data["refused"].values())
    if refused == data["samples"]:
        return f"no usable records: all {refused:,} are refused"
    image_tokens = data.get("image_tokens_per_image")
    if data["with_image"] and image_tokens and data["max_length"] <= image_tokens:
        cut = (
            f"data.max_length={data['max_length']} leaves no room after an image's {image_tokens} tokens: "
            f"the {data['with_image']:,} records with an image would be refused (truncation_cuts_image)"
        )
        if data["on_bad_sample"] == "raise" or not data["text_only"]:
            return cut
    if refused and data["on_bad_sample"] == "raise":
        return (
            f"{refused:,} refused records and data.on_bad_sample=raise: the run stops at the first "
            "(data.on_bad_sample=skip skips and counts them)"
        )
    return None


def plan(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Everything ``--dry-run`` reports, as a dict (no weights loaded, nothing downloaded)."""
    from vista.builder import resolve_source
    from vista.model_plan import plan_llava_config, planned_parameter_report, planning_model_cfg

    source = resolve_source(config["model"])
    model_cfg, note = planning_model_cfg(config["model"])
    try:
        llava_config, description = plan_llava_config(model_cfg)
    except ValueError as error:  # e.g. a depth override beyond the real depth
        raise ConfigError(str(error)) from None
    top = config["model"]["finetune_top_layers"]
    parameters = {
        stage: planned_parameter_report(llava_config, stage, top if stage == "finetune" else None)
        for stage in presets.STAGES
    }
    training = config["training"]
    return {
        "preset": config["preset"],
        "stage": config["stage"],
        "variant": config["variant"],
        "model": {
            "source": source,
            "description": description,
            "note": note,
            "vision": llava_config.vision_config.model_type,
            "language_model": llava_config.text_config.model_type,
            "image_tokens_per_image": llava_config.image_seq_length,
            "feature_layer": llava_config.vision_feature_layer,
            "select_strategy": llava_config.vision_feature_select_strategy,
            "projector": config["model"]["projector"],
        },
        "parameters": parameters,
        "data": {
            **data_counts(config["data"]),
            **{k: v for k, v in config["data"].items() if k != "json"},
            "image_tokens_per_image": llava_config.image_seq_length,
        },
        "batch": batch_plan(training, world_size),
        "optimization": {
            k: training[k]
            for k in (
                "learning_rate",
                "num_train_epochs",
                "weight_decay",
                "warmup_ratio",
                "lr_scheduler_type",
                "optim",
                "max_grad_norm",
            )
        },
        "precision": precision(training),
        "gradient_checkpointing": training["gradient_checkpointing"],
        "deepspeed": training["deepspeed"],
        "zero_stage": deepspeed_stage(training["deepspeed"]),
        "lora": config["lora"] if config["lora"]["enabled"] else None,
        "vista": config["vista"],
        "paper": paper_comparison(config, world_size),
        "output_dir": training["output_dir"],
    }


def paper_hyperparameters(preset: str, stage: str) -> dict[str, Any]:
    """The paper's hyperparameters for a stage (REFERENCE section 5), flattened to ``section.key``.

    Paper presets compare against their own defaults (TinyLLaVA-VISTA: max length 3072); ``tiny`` against LLaVA-1.5.
    """
    merged = deep_merge(presets.PAPER_COMMON, presets.PAPER_STAGES[stage])
    defaults = presets.preset_defaults(preset if preset != "tiny" else "llava-1.5-7b", stage)
    flat = {f"training.{k}": defaults["training"][k] for k in merged["training"] if k != "save_steps"}
    flat["data.max_length"] = defaults["data"]["max_length"]
    return flat


def paper_comparison(config: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    """Rows ``{key, paper, run}`` comparing this run's values with the paper's for the same stage."""
    rows = []
    for key, paper_value in paper_hyperparameters(config["preset"], config["stage"]).items():
        section, name = key.split(".")
        run_value = config[section].get(name)
        if key == "training.global_batch_size":
            run_value = batch_plan(config["training"], world_size)["global_batch_size"]
        if key == "training.deepspeed":
            key, paper_value = "zero_stage", deepspeed_stage(paper_value)
            run_value = deepspeed_stage(config["training"]["deepspeed"])
        rows.append({"key": key, "paper": paper_value, "run": run_value})
    return rows


def format_plan(info: dict[str, Any]) -> str:
    """The human-readable plan ``--dry-run`` prints."""
    from vista.builder import format_parameter_report

    model, data, batch = info["model"], info["data"], info["batch"]
    lines = [
        f"vista train plan: preset {info['preset']}, stage {info['stage']}, variant {info['variant']}",
        "",
        f"model ({model['source']}): {model['description']}",
        f"  vision {model['vision']} -> projector {model['projector']} -> LM {model['language_model']}; "
        f"feature layer {model['feature_layer']}, select {model['select_strategy']}, "
        f"{model['image_tokens_per_image']} image tokens per image",
    ]
    if model["note"]:
        lines.append(f"  note: {model['note']}")
    for stage, report in info["parameters"].items():
        marker = "  <- this run" if stage == info["stage"] else ""
        trains = " + ".join(presets_trains(stage))
        lines += ["", f"parameters, stage {stage} (trains {trains}; vision tower frozen){marker}:"]
        lines += ["  " + line for line in format_parameter_report(report).splitlines()]
    lines.append("")
    if data["found"]:
        lines.append(
            f"data: {data['json']}: {data['samples']:,} records: {data['with_image']:,} with an image, "
            f"{data['text_only']:,} text-only, {sum(data['refused'].values()):,} refused"
            + "".join(f"; {reason}: {n:,}" for reason, n in sorted(data["refused"].items()))
        )
        if data["missing_images"]:
            lines.append(
                f"  WARNING: {data['missing_images']:,} image files not found under {data['image_folder']}"
            )
        if verdict := data_verdict(data):
            lines.append(f"  THE RUN WOULD STOP: {verdict}")
    else:
        lines.append(
            f"data: {data['json']}: not found (counts unavailable; the run stops unless it exists by then)"
        )
    lines.append(
        f"  token limits (max length {data['max_length']}: records cut, images that no longer fit) are checked "
        "when training starts"
    )
    lines.append(
        f"  image folder {data['image_folder']}; template {data['template']}; max length {data['max_length']}; "
        f"group_by_modality_length {data['group_by_modality_length']} (length pools of "
        f"{data['length_group_megabatches']} megabatches; micro-batches sorted by length "
        f"{data['sorted_micro_batches']}); on_bad_sample {data['on_bad_sample']}"
    )
    lines += [
        f"batch: world size {batch['world_size']} x per-device {batch['per_device_train_batch_size']} x "
        f"grad accumulation {batch['gradient_accumulation_steps']} = global batch {batch['global_batch_size']}",
        "optimization: " + ", ".join(f"{k} {v}" for k, v in info["optimization"].items()),
        f"precision: {info['precision']}; gradient checkpointing {info['gradient_checkpointing']}; "
        + (
            f"DeepSpeed ZeRO-{info['zero_stage']} ({info['deepspeed']})"
            if info["deepspeed"]
            else "no DeepSpeed"
        ),
        f"LoRA: {info['lora']}" if info["lora"] else "LoRA: off (full training of the stage's parts)",
        f"vista: {info['vista']}",
        f"output: {info['output_dir']}",
        "",
        "paper hyperparameters (REFERENCE section 5) vs this run:",
    ]
    for row in info["paper"]:
        flag = "" if row["paper"] == row["run"] else "   <- differs"
        lines.append(f"  {row['key']:<40} paper {row['paper']!s:<12} run {row['run']!s}{flag}")
    return "\n".join(lines)


def memory_section(config: dict[str, Any], world_size: int, gpu_memory_gb: float | None) -> str:
    from vista.memory_plan import format_memory_plan, plan_memory

    return "\n" + format_memory_plan(plan_memory(config, world_size, gpu_memory_gb))


def presets_trains(stage: str) -> tuple[str, ...]:
    from vista.builder import STAGE_TRAINS

    return STAGE_TRAINS[stage]
