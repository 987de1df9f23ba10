"""``vista_run.json``: the metadata ``vista train`` writes beside every checkpoint, and how tools read it back.

Evaluation, probes and MI must prompt a checkpoint with the conversation template it was trained with (a mismatch
is a known cause of wrong numbers), so they all resolve it here: an explicit name wins, otherwise the run metadata
in the checkpoint folder or its parent names it, otherwise it is an error, never a silent default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

RUN_FILE = "vista_run.json"
METADATA_FILES = (RUN_FILE, "run_metadata.json")
TEMPLATE_KEYS = ("template", "conversation_template")


def _find_key(obj: object, keys: Sequence[str]) -> object | None:
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
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: not valid JSON ({e})") from None
    return {}, None


def resolve_template_name(checkpoint: str | Path, template: str | None = None) -> str:
    """The conversation template of a checkpoint: ``template`` if given, else the one its run metadata names."""
    if template:
        return template
    meta, path = read_run_metadata(checkpoint)
    name = _find_key(meta, TEMPLATE_KEYS)
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
