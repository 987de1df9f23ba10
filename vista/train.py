"""``vista train``: one stage of the LLaVA-1.5 two-stage recipe, with or without VISTA, from a YAML config.

    vista train --config reproduce/configs/<preset>/<stage>.yaml [key.sub=value ...] [--dry-run [--world-size N]]

A config names a ``preset`` (``tiny``, ``llava-1.5-7b``, ``tinyllava-3b``; see :mod:`vista.presets`) and a ``stage``
(``pretrain`` = stage 1, ``finetune`` = stage 2) and overrides what it needs; ``variant`` picks the loss
(``baseline``, ``vista``, ``vista-cosine``). Dotted ``key=value`` arguments override anything
(``variant=baseline training.learning_rate=2e-4 model.vision_tower=/path``). Strings may use ``{preset}``,
``{variant}`` and ``{stage}``. ``training`` holds ``transformers.TrainingArguments`` fields plus
``global_batch_size`` (gradient accumulation is derived from it and the world size) and ``resume_from_checkpoint``
(``auto``: the last checkpoint of ``output_dir`` if there is one; ``true``: it must exist; or a path).

``--dry-run`` prints the resolved plan - model parts, trainable parameters per stage (counted on the meta device,
nothing downloaded), data counts, global batch for ``--world-size``, DeepSpeed stage, the paper's hyperparameters
next to this run's - and exits. Runs under ``deepspeed`` and ``torchrun`` (one or many nodes): the launchers set
``WORLD_SIZE``/``RANK``. Without a launcher, a DeepSpeed config runs as a single process.

Written to ``training.output_dir``: HF-format checkpoints (``checkpoint-N/``, then the final model and processor),
tensorboard logs (``runs/``), and ``vista_run.json`` (git commit, package versions, world size, precision,
effective global batch, the resolved config, the VISTA config and the conversation template name), also copied
into every ``checkpoint-N/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from vista import presets
from vista.config_check import check_config_types, unknown_key_message
from vista.errors import DataError, UsageError, UserError, one_line, positive_float, positive_int
from vista.presets import deep_merge

logger = logging.getLogger("vista.train")
REPO_ROOT = Path(__file__).resolve().parents[1]
from vista.run_metadata import RUN_FILE  # noqa: E402  (written here, read by evaluation, probes, MI)

SECTIONS = ("preset", "stage", "variant", "model", "data", "vista", "lora", "training", "objectives")
# warmup_ratio -> v5 warmup_steps in [0, 1); overwrite_output_dir (gone in v5): allow replacing a finished run
_EXTRA_TRAINING_KEYS = ("global_batch_size", "warmup_ratio", "overwrite_output_dir")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")  # YAML 1.1 reads "1e-3" as a string
PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "peft", "tokenizers", "vista-mllm")


class ConfigError(UsageError):
    """A config file or override is invalid; the message names the file and the key (a ``ValueError``)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (``save_strategy: no`` stays "no"), ``1e-3`` is a float."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    return _coerce_floats(yaml.load(text, Loader=_Loader))


# ------------------------------------------------------------------------------------------------ configuration


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. training.learning_rate=2e-5)")
        key, _, text = item.partition("=")
        value = _load_yaml(text) if text else None
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The fully resolved config: preset defaults <- YAML file <- overrides, variant applied, placeholders filled."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    user = _load_yaml(path.read_text()) or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(user).__name__}")
    user = deep_merge(user, parse_overrides(overrides or []))
    for key in ("preset", "stage"):
        if key not in user:
            choices = getattr(presets, key.upper() + "S")
            raise ConfigError(
                f"{path}: missing {key!r}; add e.g. '{key}: {choices[0]}' to the file or {key}={choices[0]} "
                f"to the command (one of {', '.join(choices)})"
            )
    try:
        config = presets.preset_defaults(user["preset"], user["stage"])
        variant = user.get("variant", config["variant"])
        vista = deep_merge(presets.variant_vista(user["preset"], variant), user.get("vista") or {})
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    _check_keys(user, config, path)
    defaults = deep_merge(config, {"vista": vista})
    config = deep_merge(config, {k: v for k, v in user.items() if k != "vista"})
    config["vista"] = vista
    config.setdefault("objectives", {})  # vista.objectives: L2T, VIRAL-style, diagnostics (validated below)
    config = _coerce_floats(config)
    _fill_placeholders(config)
    try:
        check_config_types(config, path, defaults)
    except UsageError as error:
        raise ConfigError(str(error)) from None
    _check_values(config, path)
    _check_variant(config, path)
    return config


def _check_variant(config: dict[str, Any], path: Path | str) -> None:
    """``vista.enabled`` must agree with ``variant``: run names, evaluation and tables are labelled by the variant."""
    enabled = bool(config["vista"].get("enabled"))
    if enabled != presets.variant_vista(config["preset"], config["variant"])["enabled"]:
        instead = "variant=vista (or vista-cosine)" if enabled else "variant=baseline"
        raise ConfigError(
            f"{path}: vista.enabled={str(enabled).lower()} contradicts variant={config['variant']} (the run would be "
            f"named and tabulated as {config['variant']}); use {instead}"
        )


def vista_config_from(config: dict[str, Any]):
    """The :class:`vista.loss.VistaConfig` of a resolved config."""
    from vista.loss import VistaConfig

    return VistaConfig(**config["vista"])


def _check_keys(user: dict[str, Any], defaults: dict[str, Any], path: Path) -> None:
    from transformers import TrainingArguments

    from vista.loss import VistaConfig
    from vista.tiny import TinyLlavaSpec

    allowed = {
        "model": set(defaults["model"]),
        "data": set(defaults["data"]),
        "lora": set(defaults["lora"]),
        "vista": {f.name for f in dataclasses.fields(VistaConfig)},
        "training": {f.name for f in dataclasses.fields(TrainingArguments)} | set(_EXTRA_TRAINING_KEYS),
    }
    for key, value in user.items():
        if key not in SECTIONS:
            raise ConfigError(unknown_key_message(path, None, key, SECTIONS))
        if key in allowed:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key!r} must be a mapping")
            unknown = sorted(set(value) - allowed[key])
            if unknown:
                raise ConfigError(unknown_key_message(path, key, unknown[0], allowed[key]))
    tiny = (user.get("model") or {}).get("tiny") or {}
    unknown = sorted(set(tiny) - {f.name for f in dataclasses.fields(TinyLlavaSpec)})
    if unknown:
        raise ConfigError(
            unknown_key_message(
                path, "model.tiny", unknown[0], [f.name for f in dataclasses.fields(TinyLlavaSpec)]
            )
        )


def _check_values(config: dict[str, Any], path: Path) -> None:
    from vista.builder import resolve_dtype, resolve_source
    from vista.objectives import objectives_config_from

    try:
        vista_config_from(config)
        objectives_config_from(config["objectives"])
        resolve_source(config["model"])
        resolve_dtype(config["model"]["dtype"])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from None
    for key in ("text_layers", "vision_layers"):
        layers = config["model"][key]
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise ConfigError(
                f"{path}: model.{key}={layers!r}; expected a positive integer (a depth override)"
            )
    if config["model"]["projector"] != "mlp2x_gelu":
        raise ConfigError(
            f"{path}: model.projector={config['model']['projector']!r}; only mlp2x_gelu is supported"
        )
    if config["data"]["on_bad_sample"] not in ("raise", "skip"):
        raise ConfigError(f"{path}: data.on_bad_sample must be 'raise' or 'skip'")
    if config["lora"]["enabled"] and config["stage"] == "pretrain":
        raise ConfigError(
            f"{path}: lora.enabled with stage pretrain (stage 1 trains the projector only; no LM)"
        )
    training = config["training"]
    if training["bf16"] and training["fp16"]:
        raise ConfigError(f"{path}: training.bf16 and training.fp16 are both true")


def _coerce_floats(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _coerce_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_coerce_floats(v) for v in node]
    if isinstance(node, str) and _FLOAT.match(node):
        return float(node)
    return node


def _fill_placeholders(config: dict[str, Any]) -> None:
    names = {"preset": config["preset"], "stage": config["stage"], "variant": config["variant"]}
    for section, key in (
        ("model", "checkpoint"),
        ("training", "output_dir"),
        ("data", "json"),
        ("data", "image_folder"),
    ):
        if isinstance(config[section].get(key), str):
            config[section][key] = config[section][key].format(**names)


def world_size_from_env() -> int:
    """The launcher's world size (``torchrun``/``deepspeed`` set ``WORLD_SIZE``), 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_plan(training: dict[str, Any], world_size: int) -> dict[str, int]:
    """Per-device batch, gradient accumulation and the effective global batch for ``world_size`` processes."""
    per_device = int(training["per_device_train_batch_size"])
    accumulation = int(training["gradient_accumulation_steps"])
    target = training.get("global_batch_size")
    if target:
        per_step = per_device * world_size
        if target % per_step:
            raise ConfigError(
                f"training.global_batch_size={target} is not a multiple of per_device_train_batch_size x world size "
                f"= {per_device} x {world_size}; change one of them"
            )
        accumulation = target // per_step
    return {
        "world_size": world_size,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "global_batch_size": per_device * accumulation * world_size,
    }


def deepspeed_path(value: str | None) -> Path | None:
    """A DeepSpeed JSON path, relative to the working directory or else to the repository root."""
    if not value:
        return None
    path = Path(value)
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"training.deepspeed: {value} not found (relative to {Path.cwd()} or {REPO_ROOT})")


def deepspeed_stage(value: str | None) -> int | None:
    """The ZeRO stage of a DeepSpeed config (None without DeepSpeed)."""
    path = deepspeed_path(value)
    if path is None:
        return None
    return int(json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0))


def precision(training: dict[str, Any]) -> str:
    return "bf16" if training["bf16"] else "fp16" if training["fp16"] else "fp32"


# ---------------------------------------------------------------------------------------------------- dry run


def data_counts(data: dict[str, Any]) -> dict[str, Any]:
    """Sample counts of the data file as the dataset will see them, or why they are unavailable.

    Records are read by the dataset's reader and classified by its own parser (:func:`vista.data.parse_record`
    with the configured template): usable with images, usable text-only, refused per reason; image files that do
    not exist under ``data.image_folder`` are counted. Tokenisation limits are checked when training starts.
    """
    json_path = data["json"]
    if not json_path or not Path(json_path).is_file():
        return {"json": json_path, "found": False}
    from vista.data import DataFileError, load_records, parse_record
    from vista.templates import ConversationError, get_template

    try:
        records = load_records(json_path)
    except DataFileError as error:
        raise ConfigError(f"data.json: {error}") from None
    template = get_template(data["template"])
    folder = Path(data["image_folder"]) if data.get("image_folder") else None
    with_image, refused, missing_images = 0, Counter(), 0
    for record in records:
        try:
            _, images = parse_record(record, template)
        except ConversationError as error:
            refused[error.reason] += 1
            continue
        with_image += bool(images)
        if folder is not None:
            missing_images += sum(not (folder / image).is_file() for image in images)
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


def plan(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Everything ``--dry-run`` reports, as a dict (no weights loaded, nothing downloaded)."""
    from vista.builder import plan_llava_config, planned_parameter_report, planning_model_cfg, resolve_source

    source = resolve_source(config["model"])
    model_cfg, note = planning_model_cfg(config["model"])
    try:
        llava_config, description = plan_llava_config(model_cfg)
    except ValueError as error:  # e.g. a depth override beyond the real depth
        raise ConfigError(str(error)) from None
    parameters = {stage: planned_parameter_report(llava_config, stage) for stage in presets.STAGES}
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
    merged = deep_merge(presets._PAPER_COMMON, presets.PAPER_STAGES[stage])
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
    else:
        lines.append(f"data: {data['json']}: not found (counts unavailable)")
    lines.append(
        f"  image folder {data['image_folder']}; template {data['template']}; max length {data['max_length']}; "
        f"group_by_modality_length {data['group_by_modality_length']}; on_bad_sample {data['on_bad_sample']}"
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


def _memory_section(config: dict[str, Any], world_size: int, gpu_memory_gb: float | None) -> str:
    from vista.memory_plan import format_memory_plan, plan_memory

    return "\n" + format_memory_plan(plan_memory(config, world_size, gpu_memory_gb))


def presets_trains(stage: str) -> tuple[str, ...]:
    from vista.builder import STAGE_TRAINS

    return STAGE_TRAINS[stage]


# ------------------------------------------------------------------------------------------------------ training


def _ensure_distributed_env(uses_deepspeed: bool) -> None:
    """Without a launcher, DeepSpeed still needs a (single-process) rendezvous."""
    if not uses_deepspeed or "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def training_arguments(config: dict[str, Any], world_size: int):
    """``transformers.TrainingArguments`` for a resolved config (create before the model: ZeRO-3 needs it)."""
    import torch
    from transformers import TrainingArguments

    training = dict(config["training"])
    for key in (*_EXTRA_TRAINING_KEYS, "resume_from_checkpoint"):  # not TrainingArguments fields
        training.pop(key, None)
    training.update(batch_plan(config["training"], world_size))
    training.pop("world_size")
    training.pop("global_batch_size")
    ratio = config["training"].get("warmup_ratio")
    if ratio:
        if training.get("warmup_steps"):
            raise ConfigError("training.warmup_ratio and training.warmup_steps are both set; keep one")
        if not 0 <= ratio < 1:
            raise ConfigError(f"training.warmup_ratio={ratio} must be in [0, 1)")
        training["warmup_steps"] = float(ratio)  # transformers v5: a float in [0, 1) is a ratio of the steps
    path = deepspeed_path(training.get("deepspeed"))
    training["deepspeed"] = str(path) if path else None
    # transformers v5 renamed gradient checkpointing to activation checkpointing; the config keeps the usual name.
    checkpointing = training.pop("gradient_checkpointing", None)
    checkpointing_kwargs = training.pop("gradient_checkpointing_kwargs", None)
    if checkpointing is not None and training.get("activation_checkpointing") is None:
        training["activation_checkpointing"] = checkpointing
    if training.get("activation_checkpointing") and not training.get("activation_checkpointing_kwargs"):
        training["activation_checkpointing_kwargs"] = checkpointing_kwargs or {"use_reentrant": False}
    training["logging_nan_inf_filter"] = False  # a non-finite loss stops the run (VistaTrainer)
    training["average_tokens_across_devices"] = False  # the loss is a per-micro-batch mean
    if not torch.cuda.is_available():
        if not training["deepspeed"]:
            training["use_cpu"] = True  # accelerate's CPU mode: bf16 autocast, multi-CPU over gloo
        else:
            _configure_cpu_deepspeed_state()
            training["accelerator_config"] = {"use_configured_state": True}
            # With the configured DeepSpeed state, use_cpu only lifts transformers' GPU-only bf16 check (the CPU
            # runs then use DeepSpeed's bf16 path, as on GPUs); without it bf16 + DeepSpeed is refused on CPU.
            training["use_cpu"] = True
    return TrainingArguments(**training)


def _configure_cpu_deepspeed_state() -> None:
    """Several CPU processes under DeepSpeed (tests, CPU clusters).

    accelerate only knows DeepSpeed with an accelerator backend (nccl, ...): on CPU it finds no backend and
    reports a single process, so DeepSpeed's batch arithmetic fails. Initialise DeepSpeed's communication over gloo
    and record the real world size in accelerate's shared state; TrainingArguments then reuses that state.
    """
    import deepspeed
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    deepspeed.init_distributed(dist_backend="gloo")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        state = PartialState()
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    state.backend = "gloo"
    state.num_processes = torch.distributed.get_world_size()
    state.process_index = torch.distributed.get_rank()
    state.local_process_index = int(os.environ.get("LOCAL_RANK", "0"))
    state.distributed_type = DistributedType.DEEPSPEED


def run_metadata(config: dict[str, Any], args, parameters: dict, num_samples: int) -> dict[str, Any]:
    """What ``vista_run.json`` records about a run."""
    world_size = args.world_size
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "git": _git_state(),
        "packages": _package_versions(),
        "preset": config["preset"],
        "stage": config["stage"],
        "variant": config["variant"],
        "template": config["data"]["template"],
        "vista": dataclasses.asdict(vista_config_from(config)),
        "world_size": world_size,
        "precision": precision(config["training"]),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size,
        "deepspeed_zero_stage": deepspeed_stage(args.deepspeed),
        "seed": args.seed,
        "num_train_samples": num_samples,
        "parameters": parameters,
        "config": config,
    }


def write_run_file(folder: str | Path, metadata: dict[str, Any]) -> Path:
    path = Path(folder) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    return path


def _git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = sys.version.split()[0]
    return versions


def _resume_target(value: Any, output_dir: str) -> str | bool | None:
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, False, "no"):
        return None
    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if value == "auto":
        return last
    if value is True or value == "last":
        if last is None:
            raise ConfigError(
                f"training.resume_from_checkpoint={value!r} but {output_dir} has no checkpoint-N folder"
            )
        return last
    return str(value)


def check_output_dir(training: dict[str, Any]) -> None:
    """Refuse to train into a folder that holds a finished run, unless told to overwrite or resume it.

    Raises:
        ConfigError: ``training.output_dir`` has a ``vista_run.json`` with status ``finished`` and neither
            ``training.overwrite_output_dir`` (``--overwrite``) nor ``training.resume_from_checkpoint`` is set.
    """
    output_dir = Path(training["output_dir"])
    run_file = output_dir / RUN_FILE
    if training.get("overwrite_output_dir") or training.get("resume_from_checkpoint") not in (
        None,
        False,
        "no",
    ):
        return
    try:
        status = json.loads(run_file.read_text()).get("status") if run_file.is_file() else None
    except (OSError, json.JSONDecodeError):
        status = None
    if status == "finished":
        raise ConfigError(
            f"training.output_dir={output_dir} holds a finished run ({run_file}); pass --overwrite to replace it, "
            f"training.resume_from_checkpoint=auto to continue it, or choose another training.output_dir=..."
        )
    if status is not None:
        logger.warning(
            "%s holds an unfinished run (status %r); starting over. To continue it instead: "
            "training.resume_from_checkpoint=auto",
            output_dir,
            status,
        )


def _apply_lora(model, lora: dict[str, Any]):
    from peft import LoraConfig, get_peft_model

    targets = "|".join(re.escape(t) for t in lora["target_modules"])
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=rf".*language_model.*\.({targets})",  # the LM only, never the vision tower
        modules_to_save=["multi_modal_projector"],
    )
    return get_peft_model(model, peft_config)


def build_dataset(data: dict[str, Any], processor, objectives: dict[str, Any] | None = None):
    """The ``LlavaJsonDataset`` a ``data`` config section describes (validated up front, see ``vista.data``)."""
    from vista.data import LlavaJsonDataset
    from vista.objectives import l2t_template, objectives_config_from
    from vista.templates import get_template

    return LlavaJsonDataset(
        data["json"],
        data["image_folder"],
        processor,
        l2t_template(get_template(data["template"]), objectives_config_from(objectives).l2t),
        data["max_length"],
        on_bad_sample=data["on_bad_sample"],
        image_aspect=data["image_aspect"],
        check_images=data["check_images"],
    )


def train(config: dict[str, Any]) -> Path:
    """Run one stage; returns the output folder holding the final HF-format model, processor and run file."""
    from transformers import set_seed
    from transformers.trainer_callback import TrainerCallback

    from vista import builder
    from vista.data import DataCollatorForVista
    from vista.objective_trainer import ObjectivesTrainer
    from vista.objectives import ObjectivesRuntime, objectives_config_from

    training = config["training"]
    if not config["data"]["json"] or not Path(config["data"]["json"]).is_file():
        raise ConfigError(f"data.json: {config['data']['json']} not found (relative to {Path.cwd()})")
    check_output_dir(training)
    _ensure_distributed_env(bool(training["deepspeed"]))
    world_size = world_size_from_env()
    args = training_arguments(config, world_size)  # before the model: sets up ZeRO-3 partitioned loading
    zero_stage = deepspeed_stage(args.deepspeed)
    source = builder.resolve_source(config["model"])
    if zero_stage == 3 and source == "components":
        raise ConfigError(
            "building from separate components under ZeRO-3 is not supported: run stage 1 with ZeRO-2 (the paper's "
            "recipe) and start stage 2 from its checkpoint (model.checkpoint=...)"
        )
    set_seed(args.seed)
    dtype = builder.resolve_dtype(config["model"]["dtype"], bf16=training["bf16"])
    model, processor = builder.build_model(config["model"], dtype=dtype, seed=args.seed)
    processor.tokenizer.model_max_length = config["data"]["max_length"]
    model.config.use_cache = False
    builder.freeze_for_stage(model, config["stage"])
    if config["lora"]["enabled"]:
        model = _apply_lora(model, config["lora"])
    parameters = builder.parameter_report(model)
    trains = " + ".join(builder.STAGE_TRAINS[config["stage"]])
    logger.info(
        "stage %s trains %s (vision tower frozen)%s:\n%s",
        config["stage"],
        trains,
        " with LoRA on the LM" if config["lora"]["enabled"] else "",
        builder.format_parameter_report(parameters),
    )

    dataset = build_dataset(config["data"], processor, config["objectives"])
    if len(dataset) == 0:
        report = dataset.skip_report()
        raise DataError(
            f"no usable records in {config['data']['json']}: all {report.num_records} skipped "
            f"({dict(report.counts)}); fix the data (see the reasons) or point data.json at another file"
        )
    metadata = run_metadata(config, args, parameters, len(dataset))

    class RunFileCallback(TrainerCallback):
        def on_save(self, cb_args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_run_file(Path(cb_args.output_dir) / f"checkpoint-{state.global_step}", metadata)

    runtime = ObjectivesRuntime(
        model, objectives_config_from(config["objectives"]), seed=args.seed
    )  # before Trainer
    trainer = ObjectivesTrainer(
        runtime=runtime,
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForVista(processor),
        processing_class=processor,
        vista_config=vista_config_from(config),
        group_by_modality_length=config["data"]["group_by_modality_length"],
        callbacks=[RunFileCallback()],
    )
    if trainer.is_world_process_zero():
        write_run_file(args.output_dir, {**metadata, "status": "running"})
    result = trainer.train(
        resume_from_checkpoint=_resume_target(training.get("resume_from_checkpoint"), args.output_dir)
    )
    if config["lora"]["enabled"]:
        trainer.model = trainer.model.merge_and_unload()  # save a plain LLaVA that every loader understands
        trainer.model_wrapped = trainer.model
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        trainer.state.save_to_json(str(Path(args.output_dir) / "trainer_state.json"))  # the full log history
        skip_report = dataset.skip_report().to_dict()
        final = {
            **metadata,
            "status": "finished",
            "train_metrics": result.metrics,
            "data_skip_report": skip_report,
        }
        write_run_file(args.output_dir, final)
    return Path(args.output_dir)


# ------------------------------------------------------------------------------------------------------------ CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="YAML config, e.g. reproduce/configs/tiny/pretrain.yaml"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. variant=baseline training.seed=1"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    parser.add_argument(
        "--world-size",
        type=positive_int,
        default=None,
        help="processes to plan the global batch for (--dry-run)",
    )
    parser.add_argument(
        "--gpu-memory",
        type=positive_float,
        default=None,
        metavar="GB",
        help="memory of one GPU (--dry-run): adds a fits / does-not-fit verdict and the nearest setting that fits",
    )
    parser.add_argument("--print-config", action="store_true", help="also print the resolved config as YAML")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in training.output_dir (same as training.overwrite_output_dir=true)",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = [*args.overrides, *(["training.overwrite_output_dir=true"] if args.overwrite else [])]
    try:
        config = load_config(args.config, overrides)
        if args.dry_run:
            world_size = args.world_size or world_size_from_env()
            print(format_plan(plan(config, world_size)))
            print(_memory_section(config, world_size, args.gpu_memory))
            if args.print_config:
                print("\nresolved config:\n" + yaml.safe_dump(config, sort_keys=False))
            return 0
        if args.world_size is not None or args.gpu_memory is not None:
            raise UsageError(
                "--world-size and --gpu-memory plan a run (--dry-run); a training run takes its world size from the "
                "launcher (deepspeed --num_gpus N / torchrun --nproc_per_node N)"
            )
        if args.print_config:
            print(yaml.safe_dump(config, sort_keys=False))
        output = train(config)
    except UserError as error:
        print(f"vista train: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        from vista.data import BadSampleError
        from vista.trainer import NonFiniteLossError

        if isinstance(error, (NonFiniteLossError, BadSampleError)):
            print(f"vista train: stopped: {one_line(error)}", file=sys.stderr)
            return 3
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"vista train: finished; model, processor and {RUN_FILE} in {output}")
    return 0
