"""A tiny-LLaVA stage-2 step on one micro-batch of 8 against two length-sorted micro-batches of 4: time and padding.

    .venv/bin/python reproduce/benchmarks/sorted_micro_batches.py --results results/tiny [--steps 40]
        [--run tiny__baseline__seed1]

Loads the run's stage-1 checkpoint (where stage 2 starts) and the world's stage-2 records as ``vista train`` does
(:func:`vista.train.build_dataset` with the tiny finetune config's resolved data section, :class:`vista.data.DataCollatorForVista`),
and for ``--steps`` random batches of 8 records with an image times one forward and backward pass of

- ``one_of_8``: the 8 records in one micro-batch, padded to the longest (the tiny recipe until 2026-12-02);
- ``sorted_2x4``: the same 8 records sorted by length and cut into two micro-batches of 4
  (``data.sorted_micro_batches=true`` with ``gradient_accumulation_steps: 2``, the tiny recipe now),

alternating step by step in one process, one thread. Prints the share of token slots that are real tokens, the
summed seconds and their ratio. The optimizer step, data loading and logging, the same in both, are not timed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from vista.data import DataCollatorForVista  # noqa: E402
from vista.train import build_dataset  # noqa: E402
from vista.train_config import load_config  # noqa: E402


def timed(model, collate, dataset, items: list[int]) -> tuple[float, int, int]:
    """(seconds of forward + backward, real tokens, token slots) of one micro-batch of ``items``."""
    batch = collate([dataset[i] for i in items])
    start = time.perf_counter()
    model(**batch).loss.backward()
    took = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return took, int(batch["attention_mask"].sum()), batch["attention_mask"].numel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, required=True, help="a run_all.sh results folder (tiny profile)"
    )
    parser.add_argument("--run", default="tiny__baseline__seed1")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    checkpoint = args.results / "runs" / args.run / "pretrain"
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"--results/--run: no stage-1 checkpoint at {checkpoint}")
    torch.set_num_threads(1)
    data = load_config(
        ROOT / "reproduce/configs/tiny/finetune.yaml",
        [
            f"data.json={args.results / 'data/finetune.json'}",
            f"data.image_folder={args.results / 'data/images'}",
        ],
    )["data"]
    processor = AutoProcessor.from_pretrained(checkpoint)
    dataset = build_dataset(data, processor)
    collate = DataCollatorForVista(processor, num_image_tokens=dataset.num_image_tokens)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).train()
    lengths = [abs(n) for n in dataset.modality_lengths]
    with_image = [i for i, n in enumerate(dataset.modality_lengths) if n > 0]
    rng = random.Random(0)
    seconds, tokens, slots = {"one_of_8": 0.0, "sorted_2x4": 0.0}, 0, {"one_of_8": 0, "sorted_2x4": 0}
    for _ in range(args.steps):
        items = rng.sample(with_image, 8)
        ordered = sorted(items, key=lambda i: lengths[i], reverse=True)
        for name, micro_batches in (("one_of_8", [items]), ("sorted_2x4", [ordered[:4], ordered[4:]])):
            for part in micro_batches:
                took, real, total = timed(model, collate, dataset, part)
                seconds[name] += took
                slots[name] += total
                tokens += real if name == "one_of_8" else 0
    for name in seconds:
        print(
            f"{name}: {seconds[name]:.1f} s for {args.steps} steps; real tokens {tokens / slots[name]:.0%} of slots"
        )
    print(f"sorted_2x4_over_one_of_8 = {seconds['sorted_2x4'] / seconds['one_of_8']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
