"""``vista_run.json``: the metadata ``vista train`` writes beside every checkpoint, and how tools read it back.

This module owns the schema: :func:`run_metadata` / :func:`write_run_file` write it, :func:`provenance` is the git
and package-version record (also in ``vista_eval.json``), the ``recorded_*`` functions read one setting each (older
and hand-written files too), and :func:`format_run_name` / :func:`parse_run_name` own ``<family>__<variant>__seed<N>``.
Evaluation, probes and MI must prompt a checkpoint with the conversation template it was trained with (a mismatch
is a known cause of wrong numbers), so they all resolve it here: an explicit name wins, otherwise the run metadata
in the checkpoint folder or its parent names it, otherwise it is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vista.layout import REPO_ROOT

RUN_FILE = "vista_run.json"
METADATA_FILES = (RUN_FILE, "run_metadata.json")
TEMPLATE_KEYS = ("template", "conversation_template")
# Where each recorded setting lives, first match wins: the resolved config of ``vista train``, then the top-level
# keys of older or hand-written files (``image_aspect_ratio``: LLaVA's name).
_TEMPLATE_PATHS = (("template",), ("conversation_template",), ("config", "data", "template"))
_ASPECT_PATHS = (("config", "data", "image_aspect"), ("image_aspect",), ("image_aspect_ratio",))
_MAX_LENGTH_PATHS = (("config", "data", "max_length"), ("max_length",), ("model_max_length",))
TRAIN_PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "peft", "tokenizers", "vista-mllm")
RUN_NAME_SEP = "__"
_NAME_PART = re.compile(r"^[^_/\\](?:[^/\\]*[^_/\\])?$")  # non-empty, no path separator, no "_" at either end


class TemplateMismatchWarning(UserWarning):
    """An explicit setting contradicts the one recorded with the checkpoint (a known cause of wrong scores)."""


# ---- run names ------------------------------------------------------------------------------------------------
def format_run_name(family: str, variant: str, seed: int) -> str:
    """``<family>__<variant>__seed<N>``: the folder name of one training/evaluation run (``reproduce/run_all``).

    Raises ``ValueError`` if ``family`` or ``variant`` contains ``__`` or a path separator, or starts/ends with
    ``_`` (the name would not parse back), or ``seed`` is negative.
    """
    for what, part in (("family", family), ("variant", variant)):
        if RUN_NAME_SEP in part or not _NAME_PART.match(part):
            raise ValueError(
                f"run {what} {part!r} cannot be part of a run name: it must be non-empty, without "
                f"{RUN_NAME_SEP!r} or '/', and not start or end with '_'"
            )
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return f"{family}{RUN_NAME_SEP}{variant}{RUN_NAME_SEP}seed{int(seed)}"


def parse_run_name(name: str) -> dict | None:
    """``{"family", "variant", "seed"}`` of a name made by :func:`format_run_name`, else None.

    Exactly three ``__``-separated parts: lmms-eval's model subfolders (``ckpts__llava-1.5-7b__vista__seed1``, the
    checkpoint path with ``/`` turned into ``__``) have more and are not run names.
    """
    parts = name.split(RUN_NAME_SEP)
    if len(parts) != 3 or not parts[2].startswith("seed") or not parts[2][4:].isdigit():
        return None
    if not all(_NAME_PART.match(p) for p in parts[:2]):
        return None
    return {"family": parts[0], "variant": parts[1], "seed": int(parts[2][4:])}


# ---- provenance and writing -----------------------------------------------------------------------------------
def provenance(packages: Iterable[str] = TRAIN_PACKAGES) -> dict[str, Any]:
    """``{"git": {"commit", "dirty"}, "packages": {name: version or None, ..., "python"}}`` of this process.

    The one provenance record of ``vista_run.json`` (training) and ``vista_eval.json`` (evaluation); read a
    recorded one back with :func:`recorded_git_commit` / :func:`recorded_package_version`.
    """
    return {"git": _git_state(), "packages": _package_versions(packages)}


def _git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = sys.version.split()[0]
    return versions


def run_metadata(config: dict[str, Any], args: Any, parameters: dict, num_samples: int) -> dict[str, Any]:
    """What ``vista_run.json`` records about a training run.

    Args:
        config: the resolved ``vista train`` config (:func:`vista.train_config.load_config`).
        args: its ``transformers.TrainingArguments``.
        parameters: :func:`vista.builder.parameter_report` of the model.
        num_samples: usable training records.
    """
    from vista.train_config import deepspeed_stage, precision, vista_config_from

    world_size = args.world_size
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        **provenance(),
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
    """Write ``metadata`` as ``<folder>/vista_run.json`` (creating the folder); returns the path."""
    path = Path(folder) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    return path


# ---- reading ----------------------------------------------------------------------------------------------------
def _first(meta: dict, paths: Sequence[tuple[str, ...]], kind: type) -> Any:
    for path in paths:
        node: Any = meta
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, kind) and not isinstance(node, bool):
            return node
    return None


def recorded_template(meta: dict) -> str | None:
    """The conversation template name a run was trained with (``template``; ``config.data.template``), or None."""
    return _first(meta, _TEMPLATE_PATHS, str)


def recorded_image_aspect(meta: dict) -> str | None:
    """The image preprocessing (``pad``/``resize``) a run was trained with (``config.data.image_aspect``), or None."""
    return _first(meta, _ASPECT_PATHS, str)


def recorded_max_length(meta: dict) -> int | None:
    """The maximum sequence length (tokens) a run was trained with (``config.data.max_length``), or None."""
    return _first(meta, _MAX_LENGTH_PATHS, int)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: lmms_eval == lmms-eval


def recorded_package_version(meta: dict, name: str) -> str | None:
    """The recorded version of package ``name``: ``packages`` (:func:`provenance`), else the ``versions`` mapping of
    ``vista_eval.json`` files written before it."""
    for key in ("packages", "versions"):
        table = meta.get(key)
        if isinstance(table, dict):
            found = {_normalise(k): v for k, v in table.items()}.get(_normalise(name))
            if isinstance(found, str):
                return found
    return None


def recorded_git_commit(meta: dict) -> str | None:
    """The recorded git commit: ``git.commit`` (:func:`provenance`), else the older ``versions.git_commit``."""
    return _first(meta, (("git", "commit"), ("versions", "git_commit")), str)


def read_run_metadata(checkpoint: str | Path) -> tuple[dict, Path | None]:
    """The first run metadata file found in the checkpoint folder or its parent, and its path ({} if none)."""
    folder = Path(checkpoint)
    for where in (folder, folder.parent):
        for name in METADATA_FILES:
            path = where / name
            if path.is_file():
                try:
                    return json.loads(path.read_text(encoding="utf-8")), path
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ValueError(f"{path}: not a readable UTF-8 JSON file ({e})") from None
    return {}, None


# The template name vista.any_vlm records for a checkpoint trained with model.pretrained: the model's own chat
# template (processor.apply_chat_template), which vista eval, probe and mi then use.
CHAT_TEMPLATE = "chat_template"


def resolve_template_name(checkpoint: str | Path, template: str | None = None) -> str:
    """The conversation template of a checkpoint: ``template`` if given, else the one its run metadata names.

    An explicit ``template`` that contradicts the run metadata is used, with a loud
    :class:`TemplateMismatchWarning` (prompting with another template than training is a known cause of wrong
    scores). Returns :data:`CHAT_TEMPLATE` for a checkpoint trained with ``model.pretrained`` (the processor's
    own chat template). Raises ``ValueError`` when neither names one.
    """
    meta, path = read_run_metadata(checkpoint)
    name = recorded_template(meta)
    if template:
        if name and name != template:
            warnings.warn(
                f"template {template!r} given explicitly contradicts the template {name!r} checkpoint {checkpoint} "
                f"was trained with ({path}): prompts will not match training, a known cause of wrong scores",
                TemplateMismatchWarning,
                stacklevel=2,
            )
        return template
    if not name:
        where = (
            f"{path} has no key {' / '.join(TEMPLATE_KEYS)}" if path else f"no {' / '.join(METADATA_FILES)}"
        )
        from vista.errors import UsageError

        raise UsageError(
            f"cannot tell the conversation template of checkpoint {checkpoint}: {where}; pass the one it was "
            "trained with, e.g. --template vicuna_v1 (one of plain, vicuna_v1, phi; chat_template for the "
            "model's own chat template)"
        )
    return str(name)
