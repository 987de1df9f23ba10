"""lmms-eval hooks of the synthetic-world benchmarks (copied as ``utils.py`` beside the task YAMLs).

Self-contained on purpose (no ``vista`` import): the benchmark folder works with any lmms-eval install.
Docs carry ``image`` (PIL image, or ``{"bytes": ...}`` when read without HF features), ``question``, ``answer``.
"""

from __future__ import annotations

import io
import re

from PIL import Image

_SIZES = ("small", "large")
_COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
_SHAPES = ("circle", "square", "triangle", "cross")
# longest first, so "top left" wins over "top"
_POSITIONS = (
    "top left",
    "top right",
    "bottom left",
    "bottom right",
    "top",
    "bottom",
    "left",
    "right",
    "centre",
)
_TRIPLE = re.compile(rf"\b({'|'.join(_SIZES)}) ({'|'.join(_COLOURS)}) ({'|'.join(_SHAPES)})\b")
_POSITION = re.compile(rf"\b({'|'.join(_POSITIONS)})\b")


def world_doc_to_visual(doc):
    image = doc["image"]
    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return [image.convert("RGB")]


def world_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def normalise(text: str) -> str:
    """First line, lower case, surrounding spaces and a final full stop removed."""
    text = (text or "").strip().split("\n")[0].strip().lower()
    return re.sub(r"\s+", " ", text).rstrip(".").strip()


def world_process_results(doc, results):
    return {"exact_match": float(normalise(results[0]) == normalise(doc["answer"]))}


def parse_objects(description: str) -> set:
    """(position, size, colour, shape) tuples: one per sentence holding exactly one full triple and one position."""
    found = set()
    for sentence in re.split(r"(?<=\.)\s+", description.lower()):
        triples = _TRIPLE.findall(sentence)
        positions = _POSITION.findall(_TRIPLE.sub(" ", sentence))
        if len(triples) == 1 and len(positions) == 1:
            found.add((positions[0], *triples[0]))
    return found


def object_f1(prediction: str, reference: str) -> float:
    pred, ref = parse_objects(prediction), parse_objects(reference)
    if not pred and not ref:
        return 1.0
    hits = len(pred & ref)
    return 0.0 if hits == 0 else 2 * hits / (len(pred) + len(ref))


def world_describe_process_results(doc, results):
    prediction = results[0] or ""
    return {
        "exact_match": float(normalise(prediction) == normalise(doc["answer"])),
        "object_f1": object_f1(prediction, doc["answer"]),
    }
