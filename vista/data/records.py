"""LLaVA-JSON records: reading data files, parsing one record into turns and image paths, and the errors.

Format (``blip_laion_cc_sbu_558k.json``, ``llava_v1_5_mix665k.json``): a JSON list (or JSON Lines) of records
``{"id": ..., "image": "rel/path.jpg" | ["a.jpg", "b.jpg"] (absent for text-only), "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}``; image paths are
relative to ``image_folder``. Also read: ``images`` instead of ``image``; LLaMA-Factory/ShareGPT ``messages``
(``role``/``content``) + ``images``; Mantis ``conversation`` (``role``/``content``) + ``images``. Refused with a
reason: video records (``unsupported_video``), per-record system prompts (``unsupported_system_prompt``), other
layouts, roles or placeholders (``unsupported_format``, naming the layouts read). Files must be UTF-8 (or carry a
byte-order mark); unreadable files raise :class:`DataFileError` with file, line and reason (:func:`load_records`).
Every problem with a record has a reason key (:data:`REASONS`); :class:`BadSampleError` names file, record and
reason, :class:`SkipReport` counts what a dataset left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vista.errors import DataError
from vista.templates import IMAGE_TOKEN, ConversationError, ConversationTemplate

REASONS = (
    "malformed",
    "empty_conversation",
    "role_order",
    "image_count_mismatch",
    "image_missing",
    "image_unreadable",
    "image_corrupt",
    "truncation_cuts_image",
    "no_supervised_tokens",
    "template_mismatch",
    "unsupported_format",
    "unsupported_video",
    "unsupported_system_prompt",
)
JSON_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
RECORD_FORMATS = (
    "LLaVA 'conversations' (from: human/gpt, value) + 'image'/'images', "
    "LLaMA-Factory/ShareGPT 'messages' (role: user/assistant, content) + 'images', "
    "or Mantis 'conversation' (role, content) + 'images'"
)
VIDEO_KEYS = ("video", "videos")
FOREIGN_PLACEHOLDERS = {"<ImageHere>": "InternLM-XComposer", "<video>": "video data"}
FOREIGN_ROLES = {"bot": "InternLM-XComposer"}
MAX_EXAMPLES = 5  # example records listed per reason in the report


class BadSampleError(ValueError):
    """A record of a LLaVA JSON file that cannot be used; the message names file, record, reason and detail.

    Build it with :meth:`for_record`; the plain ``BadSampleError(message)`` form exists so that DataLoader
    workers can re-raise it in the main process with its type intact.
    """

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.json_path: str | None = fields.get("json_path")
        self.index: int | None = fields.get("index")
        self.record_id: Any = fields.get("record_id")
        self.reason: str | None = fields.get("reason")
        self.detail: str | None = fields.get("detail")

    @classmethod
    def for_record(
        cls, json_path: str | Path, index: int, record_id: Any, reason: str, detail: str, note: str = ""
    ) -> BadSampleError:
        message = f"{json_path}: record {index} (id={record_id!r}): {reason}: {detail}"
        return cls(
            message + (f"\n{note}" if note else ""),
            json_path=str(json_path),
            index=index,
            record_id=record_id,
            reason=reason,
            detail=detail,
        )


@dataclass
class SkipReport:
    """What a dataset left out, per reason, and what truncation cut.

    Attributes:
        json_path: the data file.
        num_records: records in the file.
        counts: reason -> skipped records (up-front and lazily found together).
        lazy_counts: reason -> records skipped when their images failed to decode during loading (this process).
        examples: reason -> up to 5 ``"record <index> (id=<id>): <detail>"`` strings.
        num_truncated: kept records cut to ``max_length``.
        truncated_supervised_tokens: supervised tokens those cuts removed from the loss.
    """

    json_path: str
    num_records: int
    counts: dict[str, int] = field(default_factory=dict)
    lazy_counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    num_truncated: int = 0
    truncated_supervised_tokens: int = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        """Plain dict (for run metadata / JSON)."""
        return {
            "json_path": self.json_path,
            "num_records": self.num_records,
            "num_skipped": self.num_skipped,
            "counts": dict(self.counts),
            "lazy_counts": dict(self.lazy_counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "num_truncated": self.num_truncated,
            "truncated_supervised_tokens": self.truncated_supervised_tokens,
        }

    def __str__(self) -> str:
        lines = [f"{self.json_path}: skipped {self.num_skipped} of {self.num_records} records"]
        for reason, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            lazy = self.lazy_counts.get(reason, 0)
            where = f" ({lazy} found while loading)" if lazy else ""
            lines.append(f"  {reason}: {count}{where}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(reason, [])[:3])
        if self.num_truncated:
            lines.append(
                f"  truncated to max_length (kept): {self.num_truncated} records, "
                f"{self.truncated_supervised_tokens} supervised tokens cut"
            )
        return "\n".join(lines)


# ---- records ------------------------------------------------------------------------------------------------
class DataFileError(DataError):
    """A data file that cannot be read at all; the message names the file, the line (or record) and the reason.

    A :class:`vista.errors.DataError` (so a ``ValueError``): the ``vista`` command prints it as one line, exit code 3.
    """


JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def read_text(path: str | Path) -> str:
    """The text of a data file: UTF-8 (RFC 8259's JSON encoding), or UTF-8/16/32 with a byte-order mark.

    Raises :class:`DataFileError` naming the file, line and column of the first byte that is not UTF-8 (e.g. a
    file saved in Latin-1 or Windows-1252), or ``FileNotFoundError``.
    """
    path = Path(path)
    data = path.read_bytes()
    encoding, start = "utf-8", 0
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, start = name, len(bom)
            break
    try:
        return data[start:].decode(encoding)
    except UnicodeDecodeError as error:
        where = data[: start + error.start]
        line = where.count(b"\n") + 1
        column = len(where) - (where.rfind(b"\n") + 1) + 1
        bad = data[start + error.start : start + error.end]
        raise DataFileError(
            f"{path}: line {line}, column {column} (byte {start + error.start}): bytes {bad.hex(' ')} are not "
            f"valid {encoding.upper()}; data files must be UTF-8. Re-save it as UTF-8 (e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name}` for a Latin-1 file)"
        ) from None


def _json_lines(path: Path, text: str) -> list:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid in a string
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataFileError(
                f"{path}: line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                "JSON Lines files hold one complete JSON record per line"
            ) from None
    return records


def load_records(json_path: str | Path) -> list:
    """The records of a data file: a JSON list (``.json``) or JSON Lines (``.jsonl``/``.ndjson``, or a ``.json``
    file holding one object per line).

    Every consumer of training data reads it here (the dataset, ``vista train --dry-run``, benchmarks). Raises
    :class:`DataFileError` naming the file, the line (JSON Lines) or line and column (JSON) and the reason, for
    broken JSON, encodings that are not UTF-8 (see :func:`read_text`) and top levels that are not a list.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    text = read_text(path)
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return _json_lines(path, text)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            return _json_lines(path, text)  # JSON Lines saved as .json
        raise DataFileError(
            f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
        ) from None
    if not isinstance(records, list):
        detail = f" with keys {sorted(records)[:6]}" if isinstance(records, dict) else ""
        raise DataFileError(
            f"{path}: expected a JSON list of records (or JSON Lines), got a {type(records).__name__}{detail}"
        )
    return records


def _turn_list(record: dict) -> tuple[list, str, str, str]:
    """(turns, role key, text key, layout key) of a record in one of :data:`RECORD_FORMATS`."""
    for key, role_key, text_key in (
        ("conversations", "from", "value"),
        ("messages", "role", "content"),
        ("conversation", "role", "content"),
    ):
        if key in record:
            if not isinstance(record[key], list):
                raise ConversationError("malformed", f"{key!r} is {type(record[key]).__name__}, not a list")
            return record[key], role_key, text_key, key
    raise ConversationError(
        "malformed", f"no turn list: expected {RECORD_FORMATS}; the record has keys {sorted(record)[:8]}"
    )


def _turns_from(record: dict) -> list[dict]:
    """The record's turns as ``{"role", "content"}`` dicts, from any of the three accepted layouts."""
    layout, role_key, text_key, key = _turn_list(record)
    turns = []
    for i, turn in enumerate(layout):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise ConversationError(
                "malformed", f"turn {i} is not a dict with {role_key!r} and {text_key!r}: {turn!r:.80}"
            )
        role, content = turn[role_key], turn[text_key]
        if role == "system":
            raise ConversationError(
                "unsupported_system_prompt",
                f"turn {i} is a system turn; the template's system prompt is fixed (it must match evaluation)",
            )
        if role in FOREIGN_ROLES:
            raise ConversationError(
                "unsupported_format",
                f"turn {i} has role {role!r} ({FOREIGN_ROLES[role]}); read: {RECORD_FORMATS}",
            )
        if role not in JSON_ROLES:
            raise ConversationError(
                "malformed", f"turn {i} has unknown role {role!r}; {key!r} roles are {sorted(JSON_ROLES)}"
            )
        for placeholder, owner in FOREIGN_PLACEHOLDERS.items():
            if isinstance(content, str) and placeholder in content:
                raise ConversationError(
                    "unsupported_format", f"turn {i} uses {placeholder} ({owner}); vista's is {IMAGE_TOKEN}"
                )
        turns.append({"role": JSON_ROLES[role], "content": content})
    return turns


def _images_from(record: dict) -> list[str]:
    """Image paths of a record: ``image`` or ``images``, a path or a list of paths (absent: text-only)."""
    if "image" in record and "images" in record:
        raise ConversationError("malformed", "the record has both 'image' and 'images'; keep one")
    key = "images" if "images" in record else "image"
    images = record.get(key)
    images = [] if images is None else [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ConversationError(
            "malformed", f"{key!r} must be a path or a list of paths, got {record[key]!r:.80}"
        )
    return images


def parse_record(record: Any, template: ConversationTemplate) -> tuple[list[dict], list[str]]:
    """``(turns, image_paths)`` of a record in one of :data:`RECORD_FORMATS`; raises :class:`ConversationError`
    with a reason key (:data:`REASONS`) for records that cannot be used.

    ``<image>`` may stand anywhere in a user turn: with one image per turn the template moves it first
    (``"<image>\\n" + text``, LLaVA's ``preprocess_multimodal``), so LLaVA-Instruct records ending in ``<image>``
    train exactly like those starting with it.
    """
    if not isinstance(record, dict):
        raise ConversationError("malformed", f"record is {type(record).__name__}, not a dict")
    for key in VIDEO_KEYS:
        if key in record:
            raise ConversationError("unsupported_video", f"key {key!r}: video records are not supported")
    if "system_prompt" in record or "system" in record:
        key = "system_prompt" if "system_prompt" in record else "system"
        raise ConversationError(
            "unsupported_system_prompt",
            f"key {key!r}: per-record system prompts are not supported; the template's system prompt is fixed "
            "(it must match evaluation)",
        )
    turns = _turns_from(record)
    images = _images_from(record)
    template.validate_turns(turns)
    placeholders = sum(t["content"].count(IMAGE_TOKEN) for t in turns)
    if placeholders != len(images):
        raise ConversationError(
            "image_count_mismatch", f"{placeholders} {IMAGE_TOKEN} placeholders for {len(images)} images"
        )
    return turns, images


def _id_of(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None


def check_image_file(path: str) -> None:
    """Raise :class:`ConversationError` ("image_missing"/"image_unreadable") unless ``path`` is a readable file."""
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise ConversationError("image_unreadable", f"{path} is not a regular file")
        raise ConversationError("image_missing", f"{path} does not exist")
    if not os.access(path, os.R_OK):
        raise ConversationError("image_unreadable", f"{path} is not readable (permission denied)")
