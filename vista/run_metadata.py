"""``vista_run.json``: the metadata ``vista train`` writes beside every checkpoint, and how tools read it back.

Evaluation, probes and MI must prompt a checkpoint with the conversation template it was trained with (a mismatch
is a known cause of wrong numbers), so they all resolve it here: an explicit name wins, otherwise the run metadata
in the checkpoint folder or its parent names it, otherwise it is an error, never a silent default.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

RUN_FILE = "vista_run.json"
METADATA_FILES = (RUN_FILE, "run_metadata.json")
TEMPLATE_KEYS = ("template", "conversation_template")
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


# ---- metadata -------------------------------------------------------------------------------------------------
def find_key(obj: object, keys: Sequence[str]) -> str | None:
    """Breadth-first search of nested dicts for the first of ``keys`` with a string value."""
    queue = [obj]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            for key in keys:
                if isinstance(node.get(key), str):
                    return node[key]
            queue += [v for v in node.values() if isinstance(v, dict)]
    return None


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


def resolve_template_name(checkpoint: str | Path, template: str | None = None) -> str:
    """The conversation template of a checkpoint: ``template`` if given, else the one its run metadata names.

    An explicit ``template`` that contradicts the run metadata is used, with a loud
    :class:`TemplateMismatchWarning` (prompting with another template than training is a known cause of wrong
    scores). Raises ``ValueError`` when neither names one.
    """
    meta, path = read_run_metadata(checkpoint)
    name = find_key(meta, TEMPLATE_KEYS)
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
            "trained with, e.g. --template vicuna_v1 (one of plain, vicuna_v1, phi)"
        )
    return str(name)
