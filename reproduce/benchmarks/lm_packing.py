"""The LM foundation's training step on packed rows against the same batch padded: time and loss, side by side.

    .venv/bin/python reproduce/benchmarks/lm_packing.py --results results/tiny [--steps 60] [--batch 16]

Reads the world (``<results>/data``) and the trained tokenizer (``<results>/foundations/language``), tokenizes the
LM's documents as ``vista foundations`` does (:func:`vista.foundations.lm_documents`), and for ``--steps`` random
batches of ``--batch`` documents (the foundation's own batch size by default) runs one forward and backward pass of
a freshly initialised foundation LM (:func:`vista.foundations.lm_config`) on

- ``padded``: one document per row, right-padded to the longest, with an attention mask (what ``train_lm`` did
  until 2026-12-02);
- ``packed``: :func:`vista.foundations.packed_batch` (what ``train_lm`` does).

The two alternate step by step in one process, one thread, so machine noise hits both alike. Prints the share of
token slots that are real tokens in each layout, the summed seconds and their ratio, and the largest difference
between the two losses of a step (float rounding only: the packed layout masks attention across documents).
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

from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: E402

from vista.foundations import (  # noqa: E402
    IGNORE_INDEX,
    FoundationSpec,
    lm_config,
    lm_corpus,
    lm_documents,
    load_world,
    packed_batch,
)


def padded_batch(docs: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One document per row, right-padded, pads masked out of attention and of the loss."""
    ids = torch.full((len(docs), max(map(len, docs))), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, doc in enumerate(docs):
        ids[i, : len(doc)], mask[i, : len(doc)] = torch.tensor(doc), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}


def timed_step(model: LlamaForCausalLM, batch: dict) -> tuple[float, float]:
    """(seconds, loss) of one forward and backward pass."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    return time.perf_counter() - start, loss.item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, required=True, help="a run_all.sh results folder (tiny profile)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=FoundationSpec().lm_batch)
    args = parser.parse_args(argv)
    language = args.results / "foundations" / "language"
    if not (language / "tokenizer.json").is_file():
        raise SystemExit(
            f"--results {args.results}: no {language}/tokenizer.json (run the foundation-language stage)"
        )
    torch.set_num_threads(1)
    spec = FoundationSpec()
    _, pretrain, finetune, scenes = load_world(args.results / "data")
    tokenizer = AutoTokenizer.from_pretrained(language)
    docs, _ = lm_documents(tokenizer, lm_corpus(pretrain, finetune, scenes, spec.seed), spec.lm_max_length)
    torch.manual_seed(0)
    model = LlamaForCausalLM(lm_config(spec, tokenizer)).train()
    rng = random.Random(0)
    seconds = {"padded": 0.0, "packed": 0.0}
    slots = {"padded": 0, "packed": 0}
    tokens, worst = 0, 0.0
    for _ in range(args.steps):
        batch = rng.sample(docs, args.batch)
        layouts = {"padded": padded_batch(batch, tokenizer.pad_token_id),
                   "packed": packed_batch(batch, tokenizer.pad_token_id)}  # fmt: skip
        losses = {}
        for name, inputs in layouts.items():
            took, losses[name] = timed_step(model, inputs)
            seconds[name] += took
            slots[name] += inputs["input_ids"].numel()
        tokens += sum(map(len, batch))
        worst = max(worst, abs(losses["padded"] - losses["packed"]))
    for name in seconds:
        print(
            f"{name}: {seconds[name]:.1f} s for {args.steps} steps; real tokens {tokens / slots[name]:.0%} of slots"
        )
    print(f"packed_over_padded = {seconds['packed'] / seconds['padded']:.3f}")
    print(f"largest |loss difference| of a step = {worst:.2e} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
