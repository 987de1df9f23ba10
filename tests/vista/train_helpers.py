"""Helpers shared by the training tests: a tiny LLaVA-JSON dataset of coloured squares, a small synthetic world
(``vista data synth``), tiny saved foundations (a CLIP vision tower and a Llama LM in HF format, as
``vista foundations`` writes them), and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from vista.tiny import build_image_processor, build_tokenizer

REPO = Path(__file__).resolve().parents[2]
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 40),
    "purple": (140, 40, 170),
    "orange": (240, 140, 20),
}
SHAPES = ("square", "bar")


def _draw(colour: tuple[int, int, int], shape: str, size: int = 40) -> Image.Image:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    box = (6, 6, size - 6, size - 6) if shape == "square" else (4, size // 3, size - 4, 2 * size // 3)
    image.paste(colour, box)
    return image


def make_dataset(folder: Path, *, num_text_only: int = 4) -> dict[str, Path]:
    """Write ``images/``, ``pretrain.json`` (captions, ``plain``) and ``finetune.json`` (Q&A plus text-only)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    pretrain, finetune = [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        for j, shape in enumerate(SHAPES):
            for k in range(4):  # 4 copies of each of the 12 pictures: 48 images
                index = (i * len(SHAPES) + j) * 4 + k
                file = f"{index:03d}.png"
                _draw(rgb, shape, 36 + 2 * k).save(folder / "images" / file)
                pretrain.append(
                    {
                        "id": f"cap-{index}",
                        "image": file,
                        "conversations": [
                            {"from": "human", "value": "<image>\nDescribe the image."},
                            {"from": "gpt", "value": f"A {name} {shape}."},
                        ],
                    }
                )
                finetune.append(
                    {
                        "id": f"qa-{index}",
                        "image": file,
                        "conversations": [
                            {"from": "human", "value": "<image>\nWhat colour is the shape?"},
                            {"from": "gpt", "value": f"It is {name}."},
                            {"from": "human", "value": "What is the shape?"},
                            {"from": "gpt", "value": f"A {shape}."},
                        ],
                    }
                )
    for t in range(num_text_only):
        finetune.append(
            {
                "id": f"text-{t}",
                "conversations": [
                    {"from": "human", "value": f"Name colour number {t}."},
                    {"from": "gpt", "value": f"{list(COLOURS)[t % len(COLOURS)]}."},
                ],
            }
        )
    (folder / "pretrain.json").write_text(json.dumps(pretrain))
    (folder / "finetune.json").write_text(json.dumps(finetune))
    return {
        "pretrain": folder / "pretrain.json",
        "finetune": folder / "finetune.json",
        "images": folder / "images",
    }


def make_world_dataset(folder: Path, *, size: int = 64, seed: int = 0) -> dict[str, Path]:
    """A small synthetic world written as ``vista data synth --size N`` writes it (:func:`vista.world.cli.synth`):
    ``pretrain.json`` (captions, ``plain``), ``finetune.json`` (the instruction mix, text-only about 10%) and
    ``images/``, the data path a user trains on. One benchmark doc per task and no held-out split (unused here).

    Returns ``{"pretrain", "finetune", "images", "manifest"}`` paths; the manifest has the counts by sample type.
    Train on it with :func:`world_tokenizer` and ``max_length`` 512 (the tiny recipe's): the long-context records
    run to ~340 tokens at seed 0.
    """
    from vista.world.cli import synth

    folder = Path(folder)
    synth(folder, seed=seed, size=size, bench_size=1, heldout=0)
    return {
        "pretrain": folder / "pretrain.json",
        "finetune": folder / "finetune.json",
        "images": folder / "images",
        "manifest": folder / "manifest.json",
    }


def world_tokenizer(data: dict[str, Path]):
    """A BPE tokenizer trained on the world's text (its records, ``<image>`` removed) at the foundations' vocabulary
    size (:class:`vista.foundations.FoundationSpec`: about one token per word)."""
    from vista.foundations import FoundationSpec

    records = json.loads(data["pretrain"].read_text()) + json.loads(data["finetune"].read_text())
    texts = [turn["value"].replace("<image>", "") for r in records for turn in r["conversations"]]
    return build_tokenizer(texts, vocab_size=FoundationSpec().vocab_size)


def corpus() -> list[str]:
    words = [f"A {c} {s}. It is {c}." for c in COLOURS for s in SHAPES]
    return words + ["Describe the image. What colour is the shape? What is the shape? Name colour number"]


def make_foundations(folder: Path, *, seed: int = 0, tokenizer=None) -> dict[str, Path]:
    """A tiny CLIP vision tower (with its image processor) and a tiny Llama (with ``tokenizer``, default one trained
    on :func:`corpus`, the colour squares' words), saved."""
    import torch

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = tokenizer or build_tokenizer(corpus(), vocab_size=400)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vision.save_pretrained(folder / "vision")
    build_image_processor(32).save_pretrained(folder / "vision")
    lm.save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")
    return {"vision": folder / "vision", "lm": folder / "lm"}


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def run_train(config: str, *overrides: str, cwd: Path, check: bool = True, env: dict | None = None):
    """``python -m vista.cli train --config <config> <overrides>`` in a subprocess; output captured."""
    command = [sys.executable, "-m", "vista.cli", "train", "--config", str(REPO / config), *overrides]
    result = subprocess.run(
        command, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def log_history(output_dir: Path) -> list[dict]:
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]


def losses(output_dir: Path, key: str = "loss") -> list[float]:
    return [row[key] for row in log_history(output_dir) if key in row and "train_runtime" not in row]


def run_cli(cwd: Path, config: str, *overrides: str) -> int:
    """``vista train`` in this process (the same entry point as the console script), run from ``cwd``."""
    from vista.cli import main

    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return main(["train", "--config", str(REPO / config), *overrides])
    finally:
        os.chdir(previous)
