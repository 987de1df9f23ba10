"""Where the project's own commands put things, so that the next command finds them without extra flags.

``vista data synth --out W`` writes ``W/{pretrain,finetune,heldout}.json`` with image paths relative to
``W/images``; ``vista train`` records its ``data.image_folder`` in ``vista_run.json``; the classic LLaVA layout keeps
image paths relative to the JSON's folder. :func:`default_image_folder` picks among these by checking that the
first image record's file exists there. The ``require_*`` helpers turn a wrong path into one
:class:`~vista.errors.MissingInputError` line that names the flag and the path.
"""

from __future__ import annotations

import json
from pathlib import Path

from vista.errors import MissingInputError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]  # the source checkout (configs, DeepSpeed JSONs, git)
EXAMPLE_CHECKPOINT = "results/tiny/runs/tiny__vista__seed1/finetune"


def require_checkpoint(path: str | Path, flag: str = "--checkpoint") -> Path:
    """``path`` if it is a saved model folder (has ``config.json``); else :class:`MissingInputError`."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(
            f"{flag} {path}: no such folder; give a folder `vista train` wrote, e.g. {EXAMPLE_CHECKPOINT}"
        )
    if not (path / "config.json").is_file():
        raise MissingInputError(
            f"{flag} {path}: not a saved model folder (no config.json); e.g. {EXAMPLE_CHECKPOINT}"
        )
    return path


def find_json(data: Path) -> Path:
    """The LLaVA JSON file named by ``--data`` (a file, or a folder with exactly one .json/.jsonl).

    Raises:
        MissingInputError: no such file or folder. UsageError: a folder without exactly one JSON file.
    """
    from vista.run_metadata import RUN_FILE  # run_metadata imports this module

    if data.is_file():
        return data
    if not data.is_dir():
        raise MissingInputError(
            f"--data {data}: no such file or folder (a LLaVA JSON, e.g. results/tiny/data/heldout.json)"
        )
    found = sorted(p for p in data.iterdir() if p.suffix in (".json", ".jsonl") and p.name != RUN_FILE)
    if len(found) != 1:
        raise UsageError(
            f"--data {data}: expected exactly one .json/.jsonl file in the folder, found {[p.name for p in found]}; "
            "name the file, e.g. --data results/tiny/data/heldout.json"
        )
    return found[0]


def require_file(path: str | Path, flag: str, what: str) -> Path:
    """``path`` if it is an existing file; else :class:`MissingInputError` naming ``flag`` and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{flag} {path}: no such file ({what})")
    return path


def _first_image(json_path: Path) -> str | None:
    """The image path of the first record that has one (None for text-only data or an unreadable file)."""
    try:
        if json_path.suffix == ".jsonl":
            records = (
                json.loads(line)
                for line in json_path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            )
        else:
            records = json.loads(json_path.read_text(encoding="utf-8"))
        for record in records:
            image = record.get("image") if isinstance(record, dict) else None
            if isinstance(image, list):
                image = image[0] if image else None
            if isinstance(image, str):
                return image
    except (OSError, ValueError, TypeError):
        return None
    return None


def default_image_folder(json_path: str | Path, run: dict | None = None) -> Path:
    """The root of a LLaVA JSON's relative image paths when the user gave none.

    Candidates, in order: the JSON's folder (LLaVA's layout), ``<json folder>/images`` (``vista data synth``'s),
    the training run's ``config.data.image_folder`` (from ``vista_run.json``). The first one holding the file of the
    first image record wins; if none does, the JSON's folder (the dataset then reports the missing images).
    """
    json_path = Path(json_path)
    candidates = [json_path.parent, json_path.parent / "images"]
    trained = ((run or {}).get("config") or {}).get("data", {}).get("image_folder")
    if trained:
        candidates.append(Path(trained))
    first = _first_image(json_path)
    if first is not None:
        for folder in candidates:
            if (folder / first).is_file():
                return folder
    return json_path.parent


# The two foundations `vista foundations --only <part>` builds, and the command-line options (FoundationSpec fields)
# that change only that part; any other option (--seed) changes both. Torch-free, so reproduce/pipeline.py reads it.
FOUNDATION_PARTS: tuple[str, ...] = ("vision", "language")
FOUNDATION_PART_OPTIONS: dict[str, tuple[str, ...]] = {
    "vision": ("clip_steps", "dense_weight"),
    "language": ("lm_steps",),
}


def foundations_log_path(out: str | Path, parts: tuple[str, ...] = FOUNDATION_PARTS) -> Path:
    """Where ``vista foundations`` writes its log: ``OUT/foundations_log.json`` for both parts, else
    ``OUT/foundations_log.<part>.json`` (so two processes building one part each never write the same file)."""
    both = set(parts) == set(FOUNDATION_PARTS)
    return Path(out) / ("foundations_log.json" if both else f"foundations_log.{parts[0]}.json")
