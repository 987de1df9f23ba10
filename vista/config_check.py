"""Types and ranges of a resolved ``vista train`` config, checked when the config loads (so ``--dry-run`` finds them).

Each problem is one :class:`vista.train_config.ConfigError`-compatible message that names the file, the dotted key, the
value, what is expected and an override to type instead, e.g.::

    cfg.yaml: training.learning_rate='abc' is not a number; expected a number > 0, e.g. training.learning_rate=2e-05

Keys not listed here but known to ``transformers.TrainingArguments`` are checked against the field's type (a
field typed ``bool``, ``int`` or ``float`` must get one).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from vista.errors import UsageError, closest


class Rule(NamedTuple):
    """A numeric key: ``kind`` int or float, bounds (None: unbounded), ``none_ok``: null is allowed."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low excluded
    high_open: bool = True  # high excluded
    none_ok: bool = False


NUMBERS: dict[str, Rule] = {
    "training.learning_rate": Rule(float, 0, low_open=True),
    "training.num_train_epochs": Rule(float, 0, low_open=True),
    "training.weight_decay": Rule(float, 0),
    "training.warmup_ratio": Rule(float, 0, 1, none_ok=True),
    "training.max_grad_norm": Rule(float, 0),
    "training.per_device_train_batch_size": Rule(int, 1),
    "training.gradient_accumulation_steps": Rule(int, 1),
    "training.global_batch_size": Rule(int, 1, none_ok=True),
    "training.logging_steps": Rule(float, 0, low_open=True),
    "training.save_steps": Rule(float, 0, low_open=True),
    "training.save_total_limit": Rule(int, 1, none_ok=True),
    "training.seed": Rule(int),
    "training.dataloader_num_workers": Rule(int, 0),
    "data.max_length": Rule(int, 1),
    "data.length_group_megabatches": Rule(int, 1),
    "model.finetune_top_layers": Rule(int, 1, none_ok=True),
    "vista.coefficient": Rule(float, 0),
    "lora.r": Rule(int, 1),
    "lora.alpha": Rule(float, 0, low_open=True),
    "lora.dropout": Rule(float, 0, 1),
}
BOOLEANS = (
    "data.sorted_micro_batches",
    "training.bf16",
    "training.fp16",
    "training.gradient_checkpointing",
    "training.remove_unused_columns",
    "training.overwrite_output_dir",
    "data.group_by_modality_length",
    "lora.enabled",
    "vista.enabled",
    "vista.detach_targets",
)


def choices() -> dict[str, tuple[str, ...]]:
    """String keys with a fixed set of values (``data.template`` may also be null: the preset's template)."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from vista.data import CHECK_IMAGES, IMAGE_ASPECTS
    from vista.loss import ANCHORS, DISTANCES, TARGETS, WEIGHTINGS
    from vista.templates import TEMPLATES

    return {
        "data.on_bad_sample": ("raise", "skip"),
        "data.image_aspect": tuple(IMAGE_ASPECTS),
        "data.check_images": tuple(CHECK_IMAGES),
        "data.template": tuple(sorted(TEMPLATES)),
        "training.lr_scheduler_type": tuple(s.value for s in SchedulerType),
        "training.optim": tuple(o.value for o in OptimizerNames),
        "training.save_strategy": ("no", "steps", "epoch", "best"),
        "vista.distance": DISTANCES,
        "vista.weighting": WEIGHTINGS,
        "vista.anchor": ANCHORS,
        "vista.targets": TARGETS,
    }


def unknown_key_message(
    path: Path | str, section: str | None, key: str, allowed: Iterable[str], source: str | None = None
) -> str:
    """``<file>: unknown key 'training.lerning_rate'; did you mean 'training.learning_rate'?`` (``source``, e.g.
    ``"override"``, replaces the file name when the key came from the command line)."""
    dotted = f"{section}.{key}" if section else key
    names = [f"{section}.{a}" if section else a for a in allowed]
    hint = (
        closest(dotted, names)
        or f"; see 'vista train --config {path} --print-config --dry-run' for every key"
    )
    return f"{source or path}: unknown key {dotted!r}{hint}"


def check_config_types(
    config: dict[str, Any],
    path: Path | str,
    defaults: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    override_source: str | None = None,
) -> None:
    """Raise :class:`UsageError` for the first key whose value has the wrong type or is out of range.

    Args:
        config: the resolved config (preset defaults <- file <- overrides).
        path: the config file, for the message.
        defaults: values used as the ``e.g.`` suggestion (default: the preset's defaults in ``config`` itself).
        overrides: the command-line overrides' tree; a key set there is named as ``override_source`` instead of
            ``path`` in the message.
    """
    defaults = defaults or config

    def where(key: str) -> str:
        return override_source if override_source and overrides and _has(overrides, key) else str(path)

    for key, rule in NUMBERS.items():
        if _has(config, key):
            _check_number(
                key, _get(config, key), rule, where(key), _get(defaults, key) if _has(defaults, key) else None
            )
    for key in BOOLEANS:
        if _has(config, key) and not isinstance(_get(config, key), bool):
            raise UsageError(
                f"{where(key)}: {key}={_get(config, key)!r} is not true or false; e.g. {key}=true"
            )
    for key, allowed in choices().items():
        if not _has(config, key):  # unset: the dataclass default (vista.*) or the preset's template
            continue
        value = _get(config, key)
        if value is None and key == "data.template":
            continue
        if value not in allowed:
            raise UsageError(
                f"{where(key)}: {key}={value!r} is not one of {', '.join(map(str, allowed))}"
                f"{closest(str(value), allowed)}"
            )
    _check_training_fields(config.get("training", {}), where)


def _check_number(key: str, value: Any, rule: Rule, path: Path | str, example: Any) -> None:
    if value is None and rule.none_ok:
        return
    expected = _describe(rule)
    suggestion = f", e.g. {key}={example}" if example is not None and _valid(example, rule) else ""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (rule.kind is int and isinstance(value, float) and not value.is_integer()):
        what = "a whole number" if rule.kind is int else "a number"
        raise UsageError(f"{path}: {key}={value!r} is not {what}; expected {expected}{suggestion}")
    if not _valid(value, rule):
        raise UsageError(f"{path}: {key}={value!r} is out of range; expected {expected}{suggestion}")


def _valid(value: Any, rule: Rule) -> bool:
    if value is None:
        return rule.none_ok
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        return False
    return not (rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)))


def _describe(rule: Rule) -> str:
    what = "a whole number" if rule.kind is int else "a number"
    parts = []
    if rule.low is not None:
        parts.append(f"{'>' if rule.low_open else '>='} {rule.low:g}")
    if rule.high is not None:
        parts.append(f"{'<' if rule.high_open else '<='} {rule.high:g}")
    text = f"{what} {' and '.join(parts)}".strip()
    return text + (" (or null)" if rule.none_ok else "")


def _check_training_fields(training: dict[str, Any], where: Callable[[str], str]) -> None:
    """Other ``TrainingArguments`` fields: a field typed ``bool``/``int``/``float`` (or that or None) gets that type."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for key, value in training.items():
        field = fields.get(key)
        if field is None or f"training.{key}" in NUMBERS or f"training.{key}" in BOOLEANS or value is None:
            continue
        default, kind = field.default, _plain_type(field.type)
        if kind is bool:
            ok, what = isinstance(value, bool), "true or false"
        elif kind is int:
            ok, what = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif kind is float:
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not ok:
            raise UsageError(
                f"{where(f'training.{key}')}: training.{key}={value!r} is not {what}; e.g. training.{key}={default}"
            )


def _plain_type(annotation: Any) -> type | None:
    """``bool``/``int``/``float`` for annotations like ``float``, ``float | None`` or ``"int"``; else None."""
    names = {"bool": bool, "int": int, "float": float}
    if isinstance(annotation, str):
        parts = {p.strip() for p in annotation.replace("Optional[", "").rstrip("]").split("|")} - {"None"}
    else:
        args = typing.get_args(annotation) or (annotation,)
        parts = {getattr(a, "__name__", str(a)) for a in args if a is not type(None)}
    return names.get(parts.pop()) if len(parts) == 1 else None


def _has(config: dict[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node
