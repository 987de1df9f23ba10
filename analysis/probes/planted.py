"""A planted task with a known answer to what needs the image: a tiny LLaVA learns to name a square's colour.

Every sample is ``<s>USER: <image>\\nWhat colour is the square? ASSISTANT: The square is <colour>.`` with an
image filled with one of four colours (plus a little pixel noise). Only the colour word depends on the image; the
other answer tokens are fixed template words. Used by the tests and notebook 02 as ground truth for the probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from analysis.probes.scoring import ProbeSample
from vista.tiny import TinyLlavaSpec, build_tiny_llava, build_tokenizer

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
}
PROMPT = "USER: <image>\nWhat colour is the square? ASSISTANT:"
ANSWER = " The square is {colour}."


def planted_image(colour: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A ``size`` x ``size`` RGB image of one colour with +-12 levels of uniform pixel noise."""
    base = np.array(COLOURS[colour], dtype=np.int16)
    pixels = base + rng.integers(-12, 13, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_word(token: str) -> bool:
    """Whether a decoded token is one of the colour words, i.e. a token that needs the image."""
    return token.strip() in COLOURS


def planted_samples(processor, n: int, seed: int = 0, image_size: int = 32) -> list[ProbeSample]:
    """``n`` planted samples with pixel tensors as images; answer tokens supervised; ``meta["colour"]``."""
    rng = np.random.default_rng(seed)
    tokenizer = processor.tokenizer
    names = list(COLOURS)
    samples = []
    for i in range(n):
        colour = names[int(rng.integers(len(names)))]
        image = planted_image(colour, image_size, rng)
        enc = processor(text=tokenizer.bos_token + PROMPT, images=[image], return_tensors="pt")
        answer = tokenizer(ANSWER.format(colour=colour), add_special_tokens=False)["input_ids"]
        ids = torch.cat([enc["input_ids"][0], torch.tensor(answer)])
        supervised = torch.zeros(len(ids), dtype=torch.bool)
        supervised[-len(answer) :] = True
        samples.append(
            ProbeSample(f"planted{i}", ids, supervised, enc["pixel_values"][0], {"colour": colour})
        )
    return samples


def planted_tokenizer():
    """The tiny byte-level BPE tokenizer trained on the templates plus the planted text (colours are one token)."""
    return build_tokenizer([PROMPT + ANSWER.format(colour=c) for c in COLOURS])


def train_planted(
    steps: int = 120,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    spec: TinyLlavaSpec | None = None,
    progress: bool = False,
):
    """Train a tiny LLaVA (eager attention) on the planted task with cross-entropy on the answer tokens.

    Returns:
        ``(model, processor, losses)``: the model in eval mode and the per-step training losses (nats/token).
    """
    spec = spec or TinyLlavaSpec()
    model, processor = build_tiny_llava(spec, tokenizer=planted_tokenizer(), seed=seed)
    data = planted_samples(processor, 256, seed=seed + 1, image_size=spec.image_size)
    batch = _collate(data, processor.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="train planted", disable=not progress):
        idx = torch.from_numpy(rng.choice(len(data), size=batch_size, replace=False))
        out = model(**{k: v[idx] for k, v in batch.items()})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return model.eval(), processor, losses


def _collate(samples: Sequence[ProbeSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch: input_ids, attention_mask, labels (-100 off the answer), pixel_values."""
    length = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n], attention[i, :n] = s.input_ids, 1
        labels[i, :n] = torch.where(s.supervised, s.input_ids, torch.full_like(s.input_ids, -100))
    pixels = torch.stack([s.image for s in samples])
    return {"input_ids": ids, "attention_mask": attention, "labels": labels, "pixel_values": pixels}
