"""``vista train`` configs: YAML loading, dotted overrides, preset defaults, checks, and the derived settings.

The resolved config is ``preset defaults <- YAML file <- key=value overrides`` (:func:`load_config`); its keys are
declared in :mod:`vista.train_schema`, their types and ranges checked by :mod:`vista.config_check`, and the
VISTA section becomes a :class:`vista.loss.VistaConfig` (:func:`vista_config_from`). Also derived from a config:
the batch plan for a world size, the DeepSpeed config file and ZeRO stage, the precision.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from vista import presets
from vista.config_check import check_config_types, unknown_key_message
from vista.errors import UsageError
from vista.layout import REPO_ROOT
from vista.presets import deep_merge
from vista.train_schema import EXTRA_TRAINING_KEYS, SECTIONS, section_keys

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")  # YAML 1.1 reads "1e-3" as a string


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
    from_file = _load_yaml(path.read_text()) or {}
    if not isinstance(from_file, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(from_file).__name__}")
    from_command_line = parse_overrides(overrides or [])
    override = f"command-line override (config {path})"  # a mistake typed there is not the file's
    _check_keys(from_command_line, path, source=override)
    user = deep_merge(from_file, from_command_line)
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
    _check_keys(from_file, path)  # the overrides' keys were checked above
    defaults = deep_merge(config, {"vista": vista})
    config = deep_merge(config, {k: v for k, v in user.items() if k != "vista"})
    config["vista"] = vista
    config.setdefault("objectives", {})  # vista.objectives: L2T, VIRAL-style, diagnostics (validated below)
    config = _coerce_floats(config)
    _fill_placeholders(config)
    try:
        check_config_types(config, path, defaults, overrides=from_command_line, override_source=override)
    except UsageError as error:
        raise ConfigError(str(error)) from None
    _check_values(config, path, _blame_objectives(from_file, from_command_line, path, override))
    _check_variant(config, path)
    return config


def _blame_objectives(from_file: dict, from_command_line: dict, path: Path, override: str) -> str:
    """Who to name for a bad ``objectives`` section: the command line if the file's section alone parses."""
    from vista.objectives import objectives_config_from

    if not from_command_line.get("objectives"):
        return str(path)
    try:
        objectives_config_from(from_file.get("objectives"))
    except (TypeError, ValueError):
        return str(path)
    return override


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


def _check_keys(user: dict[str, Any], path: Path, source: str | None = None) -> None:
    """Refuse sections and keys the schema (:mod:`vista.train_schema`) does not declare, with a suggestion; the
    message names ``source`` (e.g. "override") instead of the file when given."""
    from transformers import TrainingArguments

    from vista.loss import VistaConfig
    from vista.tiny import TinyLlavaSpec

    allowed = {
        "model": set(section_keys("model")),
        "data": set(section_keys("data")),
        "lora": set(section_keys("lora")),
        "vista": {f.name for f in dataclasses.fields(VistaConfig)},
        "training": {f.name for f in dataclasses.fields(TrainingArguments)} | set(EXTRA_TRAINING_KEYS),
    }
    for key, value in user.items():
        if key not in SECTIONS:
            raise ConfigError(unknown_key_message(path, None, key, SECTIONS, source))
        if key in allowed:
            if not isinstance(value, dict):
                raise ConfigError(f"{source or path}: {key!r} must be a mapping")
            unknown = sorted(set(value) - allowed[key])
            if unknown:
                raise ConfigError(unknown_key_message(path, key, unknown[0], allowed[key], source))
    tiny = (user.get("model") or {}).get("tiny") or {}
    unknown = sorted(set(tiny) - {f.name for f in dataclasses.fields(TinyLlavaSpec)})
    if unknown:
        raise ConfigError(
            unknown_key_message(
                path, "model.tiny", unknown[0], [f.name for f in dataclasses.fields(TinyLlavaSpec)], source
            )
        )


def _check_values(config: dict[str, Any], path: Path, objectives_source: str | None = None) -> None:
    from vista.builder import resolve_dtype, resolve_source
    from vista.objectives import objectives_config_from

    try:
        viral = objectives_config_from(config["objectives"]).viral
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{objectives_source or path}: {error}") from None
    if viral.enabled and viral.teacher and not Path(viral.teacher).is_dir():
        raise ConfigError(
            f"{objectives_source or path}: objectives.viral.teacher={viral.teacher}: no such folder (a vision "
            "encoder's save_pretrained folder; unset: the model's own vision tower)"
        )
    try:
        vista_config_from(config)
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
    if config["model"]["finetune_top_layers"] is not None and (
        config["stage"] != "finetune" or config["lora"]["enabled"]
    ):
        raise ConfigError(
            f"{path}: model.finetune_top_layers needs stage finetune without lora (it chooses which LM layers train)"
        )
    if config["data"]["length_group_megabatches"] > 1 and not config["data"]["group_by_modality_length"]:
        raise ConfigError(
            f"{path}: data.length_group_megabatches > 1 needs data.group_by_modality_length=true (it sizes that "
            "sampler's length pools; without it the setting would do nothing)"
        )
    if config["data"]["sorted_micro_batches"] and not config["data"]["group_by_modality_length"]:
        raise ConfigError(
            f"{path}: data.sorted_micro_batches needs data.group_by_modality_length=true (it orders that sampler's "
            "megabatches; without it the setting would do nothing)"
        )
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
