"""A stage-2 training step with the LM head on every position against on the supervised positions only.

    .venv/bin/python reproduce/benchmarks/supervised_logits.py --results results/tiny [--steps 40]
        [--run tiny__baseline__seed1]
    .venv/bin/python reproduce/benchmarks/supervised_logits.py --results results/small --profile small --steps 4
        [--run smollm2__baseline__seed1]

Loads the run's stage-1 checkpoint (where stage 2 starts) and the world's stage-2 records as ``vista train`` does
(:func:`vista.train.build_dataset` with the profile's finetune config, :class:`vista.data.DataCollatorForVista`) and,
for ``--steps`` random micro-batches of the config's size, times one forward and backward pass of CE + VISTA (L2)
two ways, alternating step by step in one process, one thread:

- ``all_positions``: the model's own loss from ``labels`` (the LM head and log-softmax on every position; how
  :func:`vista.model.forward_with_vista` worked until 2026-12-02), VISTA from the same hooked states;
- ``supervised``: :func:`vista.model.forward_with_vista` (``logits_to_keep`` = the positions that predict a
  supervised token; transformers' ``fixed_cross_entropy`` on those rows).

Prints the share of positions that are supervised, the summed seconds, their ratio, and the largest difference of a
step's loss and of a gradient between the two (they compute the same function). The optimizer step, data loading and
logging, the same in both, are not timed.
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
from vista.loss import VistaConfig, build_vista_masks, vista_loss  # noqa: E402
from vista.model import capture_vista_states, forward_with_vista, image_token_id  # noqa: E402
from vista.train import build_dataset  # noqa: E402
from vista.train_config import load_config  # noqa: E402

CONFIG = VistaConfig()  # the paper's L2 term, coefficient 1


def all_positions_loss(model, batch) -> torch.Tensor:
    """CE + VISTA with the model's own loss on full (B, S, V) logits: the reference."""
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"], batch["attention_mask"], image_token_id(model), batch["labels"], CONFIG.targets
    )
    with capture_vista_states(model) as capture:
        outputs = model(**batch)
    hidden, embeds = capture.states()
    return outputs.loss + vista_loss(hidden, embeds, image_mask, text_mask, CONFIG).loss


def supervised_loss(model, batch) -> torch.Tensor:
    return forward_with_vista(model, batch, CONFIG).loss


def timed(model, batch, loss_fn) -> tuple[float, float, dict[str, torch.Tensor]]:
    """(seconds of forward + backward, loss, gradients) of one micro-batch."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = loss_fn(model, batch)
    loss.backward()
    took = time.perf_counter() - start
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return took, float(loss), grads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a run_all.sh results folder")
    parser.add_argument("--profile", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--run", default=None, help="default: the profile's baseline, seed 1")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    run = args.run or {"tiny": "tiny__baseline__seed1", "small": "smollm2__baseline__seed1"}[args.profile]
    checkpoint = args.results / "runs" / run / "pretrain"
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"--results/--run: no stage-1 checkpoint at {checkpoint}")
    torch.set_num_threads(1)
    config = load_config(
        ROOT / f"reproduce/configs/{args.profile}/finetune.yaml",
        [
            f"data.json={args.results / 'data/finetune.json'}",
            f"data.image_folder={args.results / 'data/images'}",
        ],
    )
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.tokenizer.model_max_length = config["data"]["max_length"]
    dataset = build_dataset(config["data"], processor)
    collate = DataCollatorForVista(processor, num_image_tokens=dataset.num_image_tokens)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).train()
    model.model.vision_tower.requires_grad_(False)  # stage 2: projector + LLM
    size = config["training"]["per_device_train_batch_size"]
    rng = random.Random(0)
    seconds = {"all_positions": 0.0, "supervised": 0.0}
    supervised = positions = 0
    loss_diff = grad_diff = 0.0
    for _ in range(args.steps):
        batch = collate([dataset[i] for i in rng.sample(range(len(dataset)), size)])
        supervised += int((batch["labels"][:, 1:] != -100).sum())
        positions += int(batch["attention_mask"].sum())
        results = {}
        for name, loss_fn in (("all_positions", all_positions_loss), ("supervised", supervised_loss)):
            took, loss, grads = timed(model, batch, loss_fn)
            seconds[name] += took
            results[name] = loss, grads
        (loss_a, grads_a), (loss_s, grads_s) = results["all_positions"], results["supervised"]
        loss_diff = max(loss_diff, abs(loss_a - loss_s))
        grad_diff = max(grad_diff, max(float((grads_a[n] - grads_s[n]).abs().max()) for n in grads_a))
    print(f"supervised positions: {supervised / positions:.1%} of {positions} real positions")
    for name, took in seconds.items():
        print(f"{name}: {took:.1f} s for {args.steps} micro-batches of {size}")
    print(f"largest difference: loss {loss_diff:.2e}, gradient element {grad_diff:.2e}")
    print(f"supervised_over_all_positions = {seconds['supervised'] / seconds['all_positions']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
