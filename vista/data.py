"""LLaVA-JSON data: dataset with up-front validation, image preprocessing, collator, modality/length sampler.

Format (``blip_laion_cc_sbu_558k.json``, ``llava_v1_5_mix665k.json``): a JSON list (or JSON Lines) of records
``{"id": ..., "image": "rel/path.jpg" | ["a.jpg", "b.jpg"] (absent for text-only), "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}``; image paths are
relative to ``image_folder``. Each ``<image>`` becomes the processor's image-token count of image-token ids.
Also read: ``images`` instead of ``image``; LLaMA-Factory/ShareGPT ``messages`` (``role``/``content``) +
``images``; Mantis ``conversation`` (``role``/``content``) + ``images``. Refused with a reason: video records
(``unsupported_video``), per-record system prompts (``unsupported_system_prompt``), other layouts, roles or
placeholders (``unsupported_format``, naming the layouts read). Files must be UTF-8 (or carry a byte-order mark);
unreadable files raise :class:`DataFileError` with file, line and reason (:func:`load_records`).

Bad data never passes silently. Every problem has a reason key (:data:`REASONS`). With ``on_bad_sample="raise"``
(default) it is a :class:`BadSampleError` naming the JSON file, the record index and id, the reason and the detail;
with ``on_bad_sample="skip"`` the record is left out and counted per reason in :meth:`LlavaJsonDataset.skip_report`
(also logged as a summary when the dataset is built).

What is checked when:
- Up front, when the dataset is built (so counts are known before training): JSON structure, roles and their
  order, empty turns, ``<image>`` count vs the record's images, image files existing and readable
  (``check_images="exists"``; ``"decode"`` decodes every image too; ``"none"`` defers even existence to loading),
  the template/tokenizer match, and the tokenized length (a record whose truncation to ``max_length`` would cut
  image tokens or leave no supervised token is bad; other truncations are counted in the report).
- Lazily, in ``__getitem__``: image decoding (corrupt or truncated files). In raise mode this raises
  :class:`BadSampleError`. In skip mode the record is marked in a shared-memory table (so marks made in DataLoader
  worker processes reach the main process's report), a warning is logged, and the next unmarked record of the same
  modality is returned in its place: batch shapes stay fixed (DeepSpeed, gradient accumulation), the bad record
  is counted once however many epochs see it, and the substitute is seen one extra time in that epoch. Under
  DDP each rank counts the records it loaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from vista.images import IMAGE_ASPECTS, expand2square, load_image, pixel_values  # noqa: F401 (re-exported)
from vista.templates import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    ConversationError,
    ConversationTemplate,
    get_template,
)

logger = logging.getLogger(__name__)

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
CHECK_IMAGES = ("exists", "decode", "none")
OnBadSample = Literal["raise", "skip"]
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
class DataFileError(ValueError):
    """A data file that cannot be read at all; the message names the file, the line (or record) and the reason."""


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


# ---- images -------------------------------------------------------------------------------------------------
def check_image_file(path: str) -> None:
    """Raise :class:`ConversationError` ("image_missing"/"image_unreadable") unless ``path`` is a readable file."""
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise ConversationError("image_unreadable", f"{path} is not a regular file")
        raise ConversationError("image_missing", f"{path} does not exist")
    if not os.access(path, os.R_OK):
        raise ConversationError("image_unreadable", f"{path} is not readable (permission denied)")


def process_images(
    images: Sequence[Image.Image], image_processor: Any, image_aspect: str = "pad"
) -> torch.Tensor:
    """(N, 3, H, W) float pixel values of ``images``: :func:`vista.images.pixel_values` (the one preprocessing
    shared by training, evaluation, probes and MI)."""
    return pixel_values(images, image_processor, image_aspect)


def image_tokens_per_image(processor: Any) -> int:
    """Image-token ids the processor puts in the sequence for one image (what the model's projector emits)."""
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    out = processor(text=IMAGE_TOKEN, images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    return int((out["input_ids"] == image_id).sum())


# ---- dataset ------------------------------------------------------------------------------------------------
class LlavaJsonDataset(Dataset):
    """A LLaVA JSON file as training samples (see the module docstring for the format and the bad-data policy).

    Each item is a dict: ``input_ids`` (L,) int64, ``labels`` (L,) int64 (``-100`` where not supervised),
    ``pixel_values`` (N_images, 3, H, W) float32 for samples with images (absent for text-only ones) and
    ``index`` (the dataset index). ``L <= max_length``; each image occupies :attr:`num_image_tokens` positions.

    Args:
        json_path: the LLaVA JSON (or JSON Lines) file.
        image_folder: root of the relative image paths (None: the JSON file's folder).
        processor: a ``LlavaProcessor`` (tokenizer + image processor).
        template: a :class:`ConversationTemplate` or its name.
        max_length: longest sequence in tokens, image tokens included; longer samples are cut at the end.
        on_bad_sample: "raise" or "skip" (counted, see :meth:`skip_report`).
        image_aspect: "pad" (LLaVA-1.5) or "resize" (TinyLLaVA), see :func:`process_images`.
        check_images: "exists" (default), "decode" (decode every image up front) or "none".
        show_progress: tqdm bars for the validation passes.
        check_threads: threads for the up-front image checks (file systems and decoders release the GIL).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_folder: str | Path | None,
        processor: Any,
        template: ConversationTemplate | str,
        max_length: int,
        on_bad_sample: OnBadSample = "raise",
        image_aspect: str = "pad",
        check_images: str = "exists",
        show_progress: bool = True,
        check_threads: int = 8,
    ) -> None:
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample={on_bad_sample!r}; expected 'raise' or 'skip'")
        if image_aspect not in IMAGE_ASPECTS:
            raise ValueError(f"image_aspect={image_aspect!r}; expected one of {IMAGE_ASPECTS}")
        if check_images not in CHECK_IMAGES:
            raise ValueError(f"check_images={check_images!r}; expected one of {CHECK_IMAGES}")
        self.json_path = Path(json_path)
        self.image_folder = Path(image_folder) if image_folder is not None else self.json_path.parent
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.template.check_tokenizer(self.tokenizer)
        self.max_length = int(max_length)
        self.on_bad_sample = on_bad_sample
        self.image_aspect = image_aspect
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if getattr(processor, "image_token_id", self.image_token_id) != self.image_token_id:
            raise ValueError(
                f"the processor's image token id {processor.image_token_id} is not the id of {IMAGE_TOKEN!r} "
                f"({self.image_token_id}); LLaVA JSON data uses {IMAGE_TOKEN!r}"
            )
        self.num_image_tokens = image_tokens_per_image(processor)
        if self.num_image_tokens < 1:
            raise ValueError(f"the processor expands {IMAGE_TOKEN!r} into {self.num_image_tokens} tokens")
        self._show_progress = show_progress
        records = load_records(self.json_path)
        self.num_records = len(records)
        self._validate(records, check_images, check_threads)
        self._pack([records[i] for i in self._indices])
        # Lazily found bad records, 1 + reason code per dataset index; shared with DataLoader workers.
        self._lazy = torch.zeros(len(self._indices), dtype=torch.int8).share_memory_()

    # -- up-front validation --
    def _validate(self, records: list, check_images: str, check_threads: int) -> None:
        n = len(records)
        self._problems: dict[int, ConversationError] = {}
        parsed: dict[int, tuple[list[dict], list[str]]] = {}
        for i, record in enumerate(tqdm(records, desc="checking records", disable=not self._show_progress)):
            try:
                parsed[i] = parse_record(record, self.template)
            except ConversationError as problem:
                self._problems[i] = problem
        if check_images != "none":
            self._check_images(parsed, decode=check_images == "decode", threads=check_threads)
        lengths, num_images, truncated, cut = self._check_tokens(parsed)
        self._indices = np.array(sorted(lengths), dtype=np.int64)
        self._lengths = np.array([lengths[i] for i in self._indices], dtype=np.int64)
        self._num_images = np.array([num_images[i] for i in self._indices], dtype=np.int64)
        self._num_truncated, self._truncated_supervised = truncated, cut
        assert len(self._indices) + len(self._problems) == n
        self._problem_ids = {i: _id_of(records[i]) for i in self._problems}
        if self._problems and self.on_bad_sample == "raise":
            first = min(self._problems)
            counts = Counter(p.reason for p in self._problems.values())
            note = (
                f"{len(self._problems)} of {n} records have problems ({dict(counts)}); fix the data or leave "
                "them out, counted and reported: data.on_bad_sample=skip (vista train) or LlavaJsonDataset(..., on_bad_sample='skip')"
            )
            raise self._error(first, self._problems[first], note)
        report = self.skip_report()
        if report.num_skipped or report.num_truncated:
            logger.warning("%s", report)

    def _check_images(self, parsed: dict, decode: bool, threads: int) -> None:
        jobs = [(i, self._image_path(p)) for i, (_, paths) in parsed.items() for p in paths]
        check = (lambda path: load_image(path).close()) if decode else check_image_file
        chunk = 16 if decode else 1024

        def run(chunk_jobs: list[tuple[int, str]]) -> list[tuple[int, ConversationError]]:
            problems = []
            for i, path in chunk_jobs:
                try:
                    check(path)
                except ConversationError as problem:
                    problems.append((i, problem))
            return problems

        chunks = [jobs[k : k + chunk] for k in range(0, len(jobs), chunk)]
        bar = tqdm(total=len(jobs), desc="checking images", disable=not self._show_progress)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for chunk_jobs, problems in zip(chunks, pool.map(run, chunks)):
                for i, problem in problems:
                    if i in parsed:  # a record's first bad image is its problem
                        self._problems[i] = problem
                        del parsed[i]
                bar.update(len(chunk_jobs))
        bar.close()

    def _check_tokens(self, parsed: dict) -> tuple[dict[int, int], dict[int, int], int, int]:
        lengths: dict[int, int] = {}
        num_images: dict[int, int] = {}
        truncated = cut = 0
        order = sorted(parsed)
        chunk = 512
        bar = tqdm(total=len(order), desc="tokenizing", disable=not self._show_progress)
        for start in range(0, len(order), chunk):
            ids = order[start : start + chunk]
            results = self.template.tokenize_batch(
                [parsed[i][0] for i in ids], self.tokenizer, self.num_image_tokens
            )
            for i, result in zip(ids, results):
                try:
                    if isinstance(result, ConversationError):
                        raise result
                    kept, dropped = self._check_truncation(result.input_ids, result.labels)
                except ConversationError as problem:
                    self._problems[i] = problem
                    continue
                lengths[i], num_images[i] = kept, result.num_images
                truncated += dropped is not None
                cut += dropped or 0
            bar.update(len(ids))
        bar.close()
        return lengths, num_images, truncated, cut

    def _check_truncation(self, input_ids: np.ndarray, labels: np.ndarray) -> tuple[int, int | None]:
        """(kept length, supervised tokens cut or None if not truncated); raises for unusable truncations."""
        supervised = labels != IGNORE_INDEX
        if not supervised.any():
            raise ConversationError("no_supervised_tokens", "the conversation has no supervised token")
        if len(input_ids) <= self.max_length:
            return len(input_ids), None
        image_positions = np.flatnonzero(input_ids == self.image_token_id)
        if len(image_positions) and image_positions[-1] >= self.max_length:
            raise ConversationError(
                "truncation_cuts_image",
                f"{len(input_ids)} tokens > max_length={self.max_length} and image tokens reach position "
                f"{int(image_positions[-1])}: truncation would cut an image",
            )
        kept = int(supervised[: self.max_length].sum())
        if kept == 0:
            raise ConversationError(
                "no_supervised_tokens",
                f"{len(input_ids)} tokens > max_length={self.max_length}: truncation leaves no supervised token",
            )
        return self.max_length, int(supervised.sum()) - kept

    # -- reporting --
    def _pack(self, records: list) -> None:
        """Keep the usable records as one UTF-8 JSON buffer + offsets: DataLoader workers forked from this
        process share it (a list of dicts would be copied page by page as reference counts change)."""
        encoded = [json.dumps(record, ensure_ascii=False).encode() for record in records]
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def _record(self, index: int) -> dict:
        start, end = self._offsets[index], self._offsets[index + 1]
        return json.loads(self._blob[start:end].tobytes())

    def record(self, index: int) -> dict:
        """The JSON record behind dataset item ``index`` (a fresh copy)."""
        return self._record(index)

    def raw_index(self, index: int) -> int:
        """Position in the JSON file of dataset item ``index``."""
        return int(self._indices[index])

    @property
    def records(self) -> _KeptRecords:
        """The usable records, indexed by position in the JSON file (prefer :meth:`record`)."""
        return _KeptRecords(self)

    def _record_id(self, raw_index: int) -> Any:
        if raw_index in self._problem_ids:
            return self._problem_ids[raw_index]
        return self._record(int(np.searchsorted(self._indices, raw_index))).get("id")

    def record_id(self, index: int) -> Any:
        """The JSON ``id`` of dataset item ``index``."""
        return self._record(index).get("id")

    def _error(self, raw_index: int, problem: ConversationError, note: str = "") -> BadSampleError:
        return BadSampleError.for_record(
            self.json_path, raw_index, self._record_id(raw_index), problem.reason, problem.detail, note
        )

    def skip_report(self) -> SkipReport:
        """Skipped records per reason (up front and lazily found in this process and its workers)."""
        report = SkipReport(
            json_path=str(self.json_path),
            num_records=self.num_records,
            num_truncated=self._num_truncated,
            truncated_supervised_tokens=self._truncated_supervised,
        )
        entries = [(i, p.reason, p.detail) for i, p in sorted(self._problems.items())]
        lazy = getattr(self, "_lazy", None)
        lazy_entries = []
        if lazy is not None:
            for index in torch.nonzero(lazy).flatten().tolist():
                reason = REASONS[int(lazy[index]) - 1]
                lazy_entries.append((int(self._indices[index]), reason, "found while loading"))
        for raw, reason, detail in entries + lazy_entries:
            report.counts[reason] = report.counts.get(reason, 0) + 1
            examples = report.examples.setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"record {raw} (id={self._record_id(raw)!r}): {detail}")
        for _, reason, _ in lazy_entries:
            report.lazy_counts[reason] = report.lazy_counts.get(reason, 0) + 1
        return report

    # -- samples --
    def __len__(self) -> int:
        return len(self._indices)

    @property
    def lengths(self) -> list[int]:
        """Sequence length in tokens (image tokens included, after truncation) of every sample."""
        return self._lengths.tolist()

    @property
    def modality_lengths(self) -> list[int]:
        """Lengths signed by modality: positive for samples with images, negative for text-only ones."""
        return np.where(self._num_images > 0, self._lengths, -self._lengths).tolist()

    @property
    def num_images(self) -> list[int]:
        """Images per sample."""
        return self._num_images.tolist()

    def _image_path(self, relative: str) -> str:
        return str(self.image_folder / relative)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for _ in range(len(self)):
            try:
                return self._build(index)
            except ConversationError as problem:
                raw = int(self._indices[index])
                if self.on_bad_sample == "raise":
                    raise self._error(raw, problem) from None
                self._lazy[index] = REASONS.index(problem.reason) + 1
                replacement = self._substitute(index)
                logger.warning(
                    "%s; skipped (counted), using record %d instead", self._error(raw, problem), replacement
                )
                index = replacement
        raise RuntimeError(f"{self.json_path}: no loadable sample left")

    def _substitute(self, index: int) -> int:
        """The next record after ``index`` with the same modality that has not failed to load."""
        has_image = self._num_images[index] > 0
        n = len(self)
        for step in range(1, n):
            j = (index + step) % n
            if (self._num_images[j] > 0) == has_image and not self._lazy[j]:
                return j
        raise RuntimeError(f"{self.json_path}: every record of this modality failed to load")

    def _build(self, index: int) -> dict[str, Any]:
        turns, paths = parse_record(self._record(index), self.template)  # validated up front
        sample: dict[str, Any] = {"index": index}
        if paths:
            images = [load_image(self._image_path(p)) for p in paths]
            sample["pixel_values"] = process_images(images, self.processor.image_processor, self.image_aspect)
        tokens = self.template.tokenize(turns, self.tokenizer, self.num_image_tokens)
        sample["input_ids"] = torch.from_numpy(tokens.input_ids[: self.max_length].copy())
        sample["labels"] = torch.from_numpy(tokens.labels[: self.max_length].copy())
        return sample


class _KeptRecords:
    """``records[raw_index]`` for records the dataset kept (skipped ones raise ``KeyError``)."""

    def __init__(self, dataset: LlavaJsonDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return self._dataset.num_records

    def __getitem__(self, raw_index: int) -> dict:
        indices = self._dataset._indices
        index = int(np.searchsorted(indices, raw_index))
        if index >= len(indices) or indices[index] != raw_index:
            raise KeyError(f"record {raw_index} was skipped: {self._dataset.skip_report().examples}")
        return self._dataset.record(index)


# ---- collator -----------------------------------------------------------------------------------------------
class DataCollatorForVista:
    """Pads samples of :class:`LlavaJsonDataset` into a batch for ``LlavaForConditionalGeneration``.

    Returns ``input_ids`` (B, S) int64 (padded with the pad id), ``attention_mask`` (B, S) int64 (1 = real token,
    on the left or right as ``padding_side`` says), ``labels`` (B, S) int64 (-100 on padding) and, if any sample
    has images, ``pixel_values`` (N, 3, H, W): all images of the batch in sample order (text-only samples add
    none). Each sample's image-token count is checked against its images, so the model's image features and
    placeholders always line up and ``vista.loss.build_vista_masks`` sees exactly the image positions.
    """

    def __init__(
        self,
        processor: Any,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        num_image_tokens: int | None = None,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set one (LLaVA uses the unk token) before collating"
            )
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_image_tokens = (
            num_image_tokens if num_image_tokens is not None else image_tokens_per_image(processor)
        )

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        for position, feature in enumerate(features):
            self._check(position, feature)
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(features)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            span = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            input_ids[row, span] = feature["input_ids"]
            labels[row, span] = feature["labels"]
            attention_mask[row, span] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        pixels = [f["pixel_values"] for f in features if f.get("pixel_values") is not None]
        if pixels:
            out["pixel_values"] = torch.cat(pixels, dim=0)
        return out

    def _check(self, position: int, feature: dict[str, Any]) -> None:
        where = f"batch position {position}" + (
            f" (dataset index {feature['index']})" if "index" in feature else ""
        )
        ids, labels = feature["input_ids"], feature["labels"]
        if ids.shape != labels.shape or ids.dim() != 1:
            raise ValueError(
                f"{where}: input_ids {tuple(ids.shape)} and labels {tuple(labels.shape)} must be (L,)"
            )
        pixels = feature.get("pixel_values")
        num_images = 0 if pixels is None else int(pixels.shape[0])
        is_image = ids == self.image_token_id
        if int(is_image.sum()) != num_images * self.num_image_tokens:
            raise ValueError(
                f"{where}: {int(is_image.sum())} image-token ids for {num_images} images x "
                f"{self.num_image_tokens} tokens"
            )
        if (labels[is_image] != IGNORE_INDEX).any():
            raise ValueError(f"{where}: image-token positions carry labels")


# ---- sampler ------------------------------------------------------------------------------------------------
def _length_grouped_megabatches(
    indices: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    world_size: int,
    megabatch_mult: int,
    generator: torch.Generator,
) -> list[np.ndarray]:
    """Shuffle ``indices``, sort pools of ``megabatch_mult`` megabatches by length (longest first) and cut them
    into megabatches of ``world_size * batch_size``, each balanced across ranks. Only the last may be short."""
    megabatch = batch_size * world_size
    shuffled = indices[torch.randperm(len(indices), generator=generator).numpy()]
    pool = megabatch * megabatch_mult
    out = []
    for start in range(0, len(shuffled), pool):
        chunk = shuffled[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out.extend(
            _balance(chunk[i : i + megabatch], lengths, batch_size, world_size)
            for i in range(0, len(chunk), megabatch)
        )
    return out


def _balance(megabatch: np.ndarray, lengths: np.ndarray, batch_size: int, world_size: int) -> np.ndarray:
    """Reorder a length-sorted megabatch rank-major so each rank's batch has a similar total length."""
    if world_size == 1 or len(megabatch) != batch_size * world_size:
        return megabatch
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for index in megabatch:  # longest first, to the lightest rank with room
        rank = min((r for r in range(world_size) if len(ranks[r]) < batch_size), key=lambda r: totals[r])
        ranks[rank].append(int(index))
        totals[rank] += int(lengths[index])
    return np.array([i for r in ranks for i in r], dtype=np.int64)


def modality_length_grouped_indices(
    modality_lengths: Sequence[int],
    batch_size: int,
    world_size: int = 1,
    megabatch_mult: int = 1,
    generator: torch.Generator | None = None,
    group_by_modality: bool = True,
) -> list[int]:
    """A permutation of ``range(len(modality_lengths))`` grouped like LLaVA's ``group_by_modality_length``.

    ``modality_lengths[i]`` is +length for samples with images, -length for text-only ones. Every megabatch of
    ``world_size * batch_size`` consecutive indices holds one modality, except a final mixed tail made of each
    modality's incomplete last megabatch. Within a megabatch, indices are grouped by length and balanced across
    ranks (rank ``r`` takes the ``r``-th block of ``batch_size``). ``megabatch_mult`` > 1 sorts pools of that many
    megabatches by length, which also cuts padding (LLaVA: 1). Megabatch order is shuffled.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    signed = np.asarray(modality_lengths, dtype=np.int64)
    if (signed == 0).any():
        raise ValueError("modality_lengths must be non-zero (+length with images, -length text-only)")
    lengths = np.abs(signed)
    megabatch = batch_size * world_size
    groups = (
        [np.flatnonzero(signed > 0), np.flatnonzero(signed < 0)]
        if group_by_modality
        else [np.arange(len(signed))]
    )
    full, tail = [], []
    for group in groups:
        if len(group) == 0:
            continue
        megabatches = _length_grouped_megabatches(
            group, lengths, batch_size, world_size, megabatch_mult, generator
        )
        if len(megabatches[-1]) < megabatch:
            tail.append(megabatches.pop())
        full.extend(megabatches)
    order = torch.randperm(len(full), generator=generator).tolist()
    ordered = [full[i] for i in order] + tail
    return np.concatenate(ordered).tolist() if ordered else []


class ModalityLengthGroupedSampler(Sampler[int]):
    """Sampler for ``group_by_modality_length`` training (see :func:`modality_length_grouped_indices`).

    In a ``transformers.Trainer`` subclass, return it from ``_get_train_sampler`` with
    ``batch_size=args.train_batch_size`` and ``world_size=args.world_size * args.gradient_accumulation_steps``
    (LLaVA's choice: all micro-batches of one optimizer step share a modality). The order depends only on
    ``seed`` and the epoch (``set_epoch``), so a resumed run sees the same order.
    """

    def __init__(
        self,
        modality_lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        megabatch_mult: int = 1,
        seed: int = 0,
        group_by_modality: bool = True,
    ) -> None:
        if batch_size < 1 or world_size < 1 or megabatch_mult < 1:
            raise ValueError("batch_size, world_size and megabatch_mult must be >= 1")
        self.modality_lengths = list(modality_lengths)
        self.batch_size, self.world_size, self.megabatch_mult = batch_size, world_size, megabatch_mult
        self.seed, self.epoch, self.group_by_modality = seed, 0, group_by_modality

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(
            modality_length_grouped_indices(
                self.modality_lengths,
                self.batch_size,
                self.world_size,
                self.megabatch_mult,
                generator,
                self.group_by_modality,
            )
        )
