"""Training data for any family through the model's own chat template (``processor.apply_chat_template``).

Records: LLaVA JSON (``conversations`` of ``{"from": "human"|"gpt", "value"}`` with ``<image>`` placeholders and
``image``/``images``) or ``messages`` of ``{"role", "content"}`` (content a string with ``<image>`` placeholders or a
list of ``{"type": "image"}`` / ``{"type": "text", "text"}`` items) with ``images``. Both become role/content-list
messages; the processor expands each image item into the family's image tokens (tiles, variable resolution,
several images).

Labels (assistant turns only) are found by rendering the conversation turn by turn and diffing, as nanoVLM and
LLaMA-Factory do, never by guessing separators: for assistant turn ``k``, the tokens of
``render(messages[:k], add_generation_prompt=True)`` are the prompt and those of ``render(messages[:k+1])`` end the
answer; everything between (the answer and the template's end-of-turn text) is supervised. Each rendered prefix must
tokenise to a prefix of the whole conversation's ids, else the record raises :class:`LabelAlignmentError`. The ids
are compared with each run of image tokens counted as one token (:func:`_collapse_image_runs`): a prefix holds fewer
images, and some processors expand an image differently by the number of images in the sample (LLaVA-OneVision
tiles a single image with AnyRes but gives each of several images its base resolution only).

A record whose image placeholders and images disagree raises :class:`PlaceholderMismatchError`; with
``on_bad_sample="skip"`` bad records are counted by reason in :class:`vista.data.SkipReport` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from vista.data import BadSampleError, SkipReport, load_records
from vista.loss import IGNORE_INDEX

PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class ChatRecordError(BadSampleError):
    """A record that cannot be used (the reason is :attr:`reason`)."""


class PlaceholderMismatchError(ChatRecordError):
    """The record's image placeholders and its images disagree in number."""


class LabelAlignmentError(ChatRecordError):
    """A turn-by-turn rendering is not a prefix of the whole conversation, so labels cannot be placed."""


def _content_items(content: Any) -> list[dict]:
    """A turn's content as a list of ``{"type": "image"}`` / ``{"type": "text", "text"}`` items."""
    if isinstance(content, list):
        return [dict(item) for item in content]
    if not isinstance(content, str):
        raise ValueError(f"content must be a string or a list of items, got {type(content).__name__}")
    items: list[dict] = []
    for i, piece in enumerate(content.split(PLACEHOLDER)):
        if i:
            items.append({"type": "image"})
        piece = piece.strip("\n") if len(content.split(PLACEHOLDER)) > 1 else piece
        if piece:
            items.append({"type": "text", "text": piece})
    return items


def to_messages(record: dict) -> tuple[list[dict], list[str]]:
    """``(messages, image_paths)`` of a LLaVA-JSON or messages record; messages have list content.

    Raises:
        ValueError: no turn list, unknown role. PlaceholderMismatchError is raised by :func:`check_images`.
    """
    if "conversations" in record:
        turns, role_key, text_key = record["conversations"], "from", "value"
    elif "messages" in record:
        turns, role_key, text_key = record["messages"], "role", "content"
    else:
        raise ValueError(f"no 'conversations' or 'messages' list; keys: {sorted(record)[:8]}")
    messages = []
    for i, turn in enumerate(turns):
        role = _ROLES.get(turn.get(role_key))
        if role is None:
            raise ValueError(f"turn {i} has role {turn.get(role_key)!r}; expected one of {sorted(_ROLES)}")
        messages.append({"role": role, "content": _content_items(turn[text_key])})
    images = record.get("images", record.get("image")) or []
    return messages, [images] if isinstance(images, str) else list(images)


def user_turn(context: str, num_images: int) -> list[dict]:
    """One user message holding ``context`` and ``num_images`` images (an evaluation prompt): the images go where
    ``context`` has ``<image>`` placeholders, else first (as LLaVA puts them).

    Raises:
        ValueError: ``context`` has placeholders, but not ``num_images`` of them.
    """
    found = context.count(PLACEHOLDER)
    if found and found != num_images:
        raise ValueError(f"the prompt has {found} {PLACEHOLDER} but the document has {num_images} images")
    items = (
        _content_items(context)
        if found
        else [{"type": "image"}] * num_images + [{"type": "text", "text": context}]
    )
    return [{"role": "user", "content": items}]


_SENTINEL = "VISTA_ANSWER_SENTINEL"


def assistant_affixes(processor: Any) -> tuple[str, str]:
    """``(gap, end_of_turn)``: the text the chat template writes between the generation prompt and an assistant
    answer (e.g. ``" "`` after LLaVA's ``ASSISTANT:``), and after the answer (``"</s> "``, ``"<end_of_turn>\n"``),
    found by rendering a one-turn conversation with and without a sentinel answer.

    Raises:
        ValueError: the rendered conversation does not start with the rendered generation prompt, or the
            template drops or alters the answer.
    """
    user = user_turn("Q", 0)
    prompt = processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    answer = [{"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]}]
    full = processor.apply_chat_template(user + answer, tokenize=False)
    if not full.startswith(prompt) or _SENTINEL not in full[len(prompt) :]:
        raise ValueError(
            "the chat template's generation prompt is not a prefix of the rendered conversation (or the answer is "
            f"altered): prompt {prompt!r}, conversation {full!r}"
        )
    gap, end = full[len(prompt) :].split(_SENTINEL, 1)
    return gap, end


def count_image_items(messages: Sequence[dict]) -> int:
    """Image items over all turns."""
    return sum(item.get("type") == "image" for m in messages for item in m["content"])


def _token_ids(processor: Any, text: str, images: list) -> list[int]:
    batch = processor(text=[text], images=[images] if images else None, return_tensors="pt")
    return batch["input_ids"][0].tolist()


def _image_token_id(processor: Any) -> int | None:
    """The id the processor repeats for every image position (``processor.image_token``), or None."""
    token = getattr(processor, "image_token", None)
    return processor.tokenizer.convert_tokens_to_ids(token) if token else None


def _collapse_image_runs(ids: list[int], image_id: int | None) -> tuple[list[int], list[int]]:
    """``ids`` with every run of consecutive ``image_id`` tokens counted once, and for each kept token its index in
    ``ids`` (plus ``len(ids)`` at the end, so a collapsed prefix length maps to a position in ``ids``)."""
    kept, index = [], []
    for i, token in enumerate(ids):
        if token == image_id and i and ids[i - 1] == image_id:
            continue
        kept.append(token)
        index.append(i)
    return kept, index + [len(ids)]


def _answer_end(ids: list[int], upto_ids: list[int]) -> int:
    """Where the answer ends in ``ids``: ``len(upto_ids)``, or one less when only the last token of ``upto_ids``
    differs (a trailing separator such as " " that the tokenizer merges with the next turn's first token).

    Raises:
        LabelAlignmentError: an earlier token differs.
    """
    common = next((i for i, (a, b) in enumerate(zip(ids, upto_ids)) if a != b), min(len(ids), len(upto_ids)))
    if common < len(upto_ids) - 1:
        raise LabelAlignmentError(
            f"the rendering up to an answer differs from the whole conversation at token {common} of "
            f"{len(upto_ids)}",
            reason="label_alignment",
        )
    return common


def encode_chat(processor: Any, messages: list[dict], images: list[Image.Image]) -> dict[str, Any]:
    """Render ``messages`` with the processor's chat template and place labels on assistant turns.

    Returns:
        ``{"text": str, "images": list, "input_ids": list[int] (S,), "labels": list[int] (S,)}``: labels are the
        ids on assistant turns (answer plus the template's end-of-turn text), ``-100`` elsewhere.

    Raises:
        PlaceholderMismatchError: image items != images. LabelAlignmentError: a prefix does not tokenise to a
        prefix of the whole conversation.
    """
    if count_image_items(messages) != len(images):
        raise PlaceholderMismatchError(
            f"{count_image_items(messages)} image placeholders for {len(images)} images",
            reason="image_count_mismatch",
        )
    render = processor.apply_chat_template
    text = render(messages, tokenize=False)
    ids = _token_ids(processor, text, images)
    image_id = _image_token_id(processor)
    collapsed, index = _collapse_image_runs(ids, image_id)
    labels = [IGNORE_INDEX] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        n_images = count_image_items(messages[:k])
        prompt = render(messages[:k], tokenize=False, add_generation_prompt=True)
        prompt_ids = _collapse_image_runs(_token_ids(processor, prompt, images[:n_images]), image_id)[0]
        if collapsed[: len(prompt_ids)] != prompt_ids:
            raise LabelAlignmentError(
                f"assistant turn {k}: the prompt rendered up to it is not a prefix of the whole conversation "
                "(the chat template or tokenizer changes earlier tokens when a turn is added)",
                reason="label_alignment",
            )
        upto_ids = _token_ids(processor, render(messages[: k + 1], tokenize=False), images[:n_images])
        start = index[len(prompt_ids)]
        end = index[_answer_end(collapsed, _collapse_image_runs(upto_ids, image_id)[0])]
        if end <= start:
            raise LabelAlignmentError(
                f"assistant turn {k}: no answer tokens after the prompt", reason="label_alignment"
            )
        labels[start:end] = ids[start:end]
    if all(label == IGNORE_INDEX for label in labels):
        raise LabelAlignmentError("no assistant tokens to supervise", reason="no_supervised_tokens")
    return {"text": text, "images": images, "input_ids": ids, "labels": labels}


class ChatDataset(Dataset):
    """Records of a JSON/JSONL file encoded with :func:`encode_chat` (up front, so bad records are found at start).

    Args:
        json_path: LLaVA JSON or messages records.
        image_folder: image paths are relative to it.
        processor: the family's processor (with a chat template).
        on_bad_sample: "raise" (the record's :class:`ChatRecordError`, naming file and record) or "skip" (counted
            per reason in :attr:`skip_report`).
        max_samples: stop reading records once this many are usable (probes and MI of the first N samples).
        num_images: keep only records with exactly this many images; the others are counted in
            :attr:`skip_report` as ``text_only`` or ``several_images`` (probes score one image per sample).

    Attributes:
        samples: the encoded records (:func:`encode_chat`), in file order.
        record_ids: per sample, the record's ``id`` (else ``record<index>``), unique (``#record<index>`` is
            appended to a repeated id).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_folder: str | Path,
        processor: Any,
        on_bad_sample: str = "raise",
        max_samples: int | None = None,
        num_images: int | None = None,
    ):
        self.processor = processor
        self.image_folder = Path(image_folder)
        records = load_records(json_path)
        self.skip_report = SkipReport(json_path=str(json_path), num_records=len(records))
        self.samples: list[dict] = []
        self.record_ids: list[str] = []
        seen: set[str] = set()
        for index, record in enumerate(records):
            if max_samples is not None and len(self.samples) >= max_samples:
                break
            try:
                messages, paths = to_messages(record)
                if num_images is not None and len(paths) != num_images:
                    reason = "text_only" if not paths else "several_images"
                    self.skip_report.counts[reason] = self.skip_report.counts.get(reason, 0) + 1
                    continue
                images = [Image.open(self.image_folder / p).convert("RGB") for p in paths]
                self.samples.append(encode_chat(processor, messages, images))
                name = f"record{index}" if record.get("id") is None else str(record["id"])
                self.record_ids.append(f"{name}#record{index}" if name in seen else name)
                seen.add(name)
            except (ChatRecordError, ValueError, OSError) as error:
                reason = getattr(error, "reason", None) or (
                    "image_unreadable" if isinstance(error, OSError) else "malformed"
                )
                bad = type(error) if isinstance(error, ChatRecordError) else ChatRecordError
                wrapped = bad.for_record(
                    json_path,
                    index,
                    record.get("id") if isinstance(record, dict) else None,
                    reason,
                    str(error),
                )
                if on_bad_sample != "skip":
                    raise wrapped from error
                self.skip_report.counts[reason] = self.skip_report.counts.get(reason, 0) + 1
                self.skip_report.examples.setdefault(reason, []).append(f"record {index}: {error}")
        if not self.samples:
            raise ChatRecordError(f"{json_path}: no usable records\n{self.skip_report}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]

    @property
    def modality_lengths(self) -> list[int]:
        """Per sample, its length in tokens (the processor's ids, image tokens included), positive with images
        and negative text-only: what ``data.group_by_modality_length``'s sampler groups by."""
        return [len(s["input_ids"]) if s["images"] else -len(s["input_ids"]) for s in self.samples]


class ChatCollator:
    """Batches :class:`ChatDataset` samples by calling the processor on the whole batch (so each family's own
    batching of pixel values, tiles and image sizes applies), right-padded; labels are placed per sample and
    checked against the sample's own ids."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        missing = sorted({"text", "images", "input_ids"} - set(samples[0])) if samples else []
        if missing:
            raise KeyError(
                f"ChatCollator: the samples have no {', '.join(map(repr, missing))} (keys: {sorted(samples[0])}); a "
                "Trainer drops the dataset columns its model's forward does not take unless "
                "TrainingArguments(remove_unused_columns=False) (SFTConfig too)"
            )
        texts = [s["text"] for s in samples]
        images = [s["images"] for s in samples]
        has_images = any(images)
        batch = dict(
            self.processor(
                text=texts,
                images=images if has_images else None,
                return_tensors="pt",
                padding=True,
                padding_side="right",
            )
        )
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            if batch["input_ids"][row, :n].tolist() != sample["input_ids"]:
                raise RuntimeError(
                    f"batch row {row}: the processor tokenised the sample differently in a batch"
                )
            labels[row, :n] = torch.tensor(sample["labels"])
        batch["labels"] = labels
        return batch
