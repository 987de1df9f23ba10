"""The inputs of ``paper_presets_cpu.py``: real LLaVA-Instruct records with stand-in photos, and the presets'
real tokenizers (files under the shared folder: ``realdata/`` and ``tokenizers/``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

RECORDS = "realdata/llava_data/LLaMA-Factory__llava_instruct_100.json"
TOKENIZERS = {"llava-1.5-7b": "tokenizers/llama2-vicuna", "tinyllava-3b": "tokenizers/gpt-2"}


def stand_in_photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A non-square RGB picture (width x height) with smooth structure and noise, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    channels = [
        np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    pixels = (np.stack(channels, -1) * 0.4 + 0.5 + rng.normal(0, 0.05, (h, w, 3))).clip(0, 1)
    return Image.fromarray((pixels * 255).astype(np.uint8))


def write_data(shared: Path, folder: Path, count: int) -> dict[str, Path]:
    """``finetune.json`` (real multi-turn records), ``pretrain.json`` (their first exchange) and stand-in photos."""
    records = json.loads((shared / RECORDS).read_text())[:count]
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, record in enumerate(records):
        stand_in_photo(i).save(images / record["image"], quality=90)
    pretrain = [
        {
            "id": r["id"],
            "image": r["image"],
            "conversations": [{"from": "human", "value": "<image>"}, r["conversations"][1]],
        }
        for r in records
    ]
    paths = {"finetune": folder / "finetune.json", "pretrain": folder / "pretrain.json", "images": images}
    paths["finetune"].write_text(json.dumps(records, indent=1))
    paths["pretrain"].write_text(json.dumps(pretrain, indent=1))
    return paths


def tokenizer_folder(preset: str, shared: Path, folder: Path) -> Path:
    """The real tokenizer of the preset's LM as a folder (Phi-2's rebuilt from GPT-2 and saved there)."""
    if preset == "llava-1.5-7b":
        return shared / TOKENIZERS[preset]
    from vista.builder import phi2_tokenizer

    target = folder / "phi2-tokenizer"
    phi2_tokenizer(shared / TOKENIZERS[preset]).save_pretrained(target)
    return target
