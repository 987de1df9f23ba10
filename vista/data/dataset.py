"""The LLaVA-JSON training dataset (records and their errors: :mod:`vista.data.records`).

Each ``<image>`` becomes the processor's image-token count of image-token ids (:func:`image_tokens_per_image`).

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
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vista.console import progress
from vista.data.records import (
    MAX_EXAMPLES,
    REASONS,
    BadSampleError,
    SkipReport,
    _id_of,
    check_image_file,
    load_records,
    parse_record,
)
from vista.images import IMAGE_ASPECTS, load_image, pixel_values
from vista.templates import IGNORE_INDEX, IMAGE_TOKEN, ConversationError, ConversationTemplate, get_template

logger = logging.getLogger(__name__)
CHECK_IMAGES = ("exists", "decode", "none")
OnBadSample = Literal["raise", "skip"]


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
    def _progress(self, iterable: Any = None, **kwargs: Any) -> Any:
        return progress(iterable, show=self._show_progress, **kwargs)

    def _validate(self, records: list, check_images: str, check_threads: int) -> None:
        n = len(records)
        self._problems: dict[int, ConversationError] = {}
        parsed: dict[int, tuple[list[dict], list[str]]] = {}
        for i, record in enumerate(self._progress(records, desc="checking records")):
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
        bar = self._progress(total=len(jobs), desc="checking images")
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
        bar = self._progress(total=len(order), desc="tokenizing")
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
        if problem.reason == "image_missing":
            hint = f"image paths are relative to the image folder {self.image_folder} (data.image_folder)"
            note = f"{note}\n{hint}" if note else hint
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
