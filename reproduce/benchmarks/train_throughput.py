"""Training throughput of a tiny LLaVA: cross-entropy only vs. VISTA, measured side by side in one run.

    .venv/bin/python reproduce/benchmarks/train_throughput.py [--rounds 15] [--steps 10] [--batch-size 8]
        [--text-hidden 64] [--text-layers 2]

Three variants train the same model on the same pre-collated batches (LLaVA-JSON samples of generated pictures,
``vicuna_v1`` template, AdamW), interleaved round by round so that machine load hits them alike:

- ``ce``: ``vista.model.causal_lm_forward`` - the CE step of `vista train` (logits at supervised positions), no hooks;
- ``baseline``: ``forward_with_vista`` with VISTA disabled (the CE baseline of ``vista train``, which still logs
  the similarity without a graph);
- ``vista``: ``forward_with_vista`` with the L2 VISTA term added.

Each round times ``--steps`` optimizer steps per variant (forward, backward, step) after a warm-up, by wall clock
and by this thread's CPU time (less sensitive to other processes on a shared machine). Ratios are medians of
per-round ratios. Target: vista >= 0.98 x ce. The VISTA term costs O(B*S*H) against the model's O(B*S*H^2*L),
so its relative cost shrinks as the LM grows (``--text-hidden 256 --text-layers 4`` shows the trend).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vista.builder import freeze_for_stage
from vista.data import DataCollatorForVista, LlavaJsonDataset, load_records
from vista.loss import VistaConfig
from vista.model import causal_lm_forward, forward_with_vista
from vista.tiny import TinyLlavaSpec, build_tiny_llava, build_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}


def make_data(folder: Path, copies: int = 8) -> Path:
    """A LLaVA-JSON file of coloured squares with two-turn conversations."""
    (folder / "images").mkdir(parents=True)
    records = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        for k in range(copies):
            image = Image.new("RGB", (40 + k, 40), (255, 255, 255))
            image.paste(rgb, (6, 6, 34, 34))
            file = f"{i}_{k}.png"
            image.save(folder / "images" / file)
            records.append(
                {
                    "id": f"{i}-{k}",
                    "image": file,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat colour is the square?"},
                        {"from": "gpt", "value": f"The square is {name}, on a white background."},
                        {"from": "human", "value": "Is there anything else?"},
                        {"from": "gpt", "value": "No, only one square."},
                    ],
                }
            )
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def step_fn(variant: str, model, optimizer, batch):
    def step() -> None:
        if variant == "ce":
            loss = causal_lm_forward(model, batch).loss
        else:
            loss = forward_with_vista(model, batch, VistaConfig(enabled=variant == "vista")).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-hidden", type=int, default=64, help="LM hidden size (the tiny default is 64)")
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on 2 shared cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        json_path = make_data(Path(tmp))
        texts = [c["value"] for r in load_records(json_path) for c in r["conversations"]]
        spec = TinyLlavaSpec(
            text_hidden=args.text_hidden,
            text_intermediate=2 * args.text_hidden,
            text_layers=args.text_layers,
            text_heads=max(1, args.text_hidden // 16),
        )
        model, processor = build_tiny_llava(spec, tokenizer=build_tokenizer(texts, vocab_size=400), seed=0)
        dataset = LlavaJsonDataset(
            json_path, Path(tmp) / "images", processor, "vicuna_v1", 256, show_progress=False
        )
        collator = DataCollatorForVista(processor)
        batches = [
            collator([dataset[(i * args.batch_size + j) % len(dataset)] for j in range(args.batch_size)])
            for i in range(4)
        ]

    freeze_for_stage(model, "finetune")
    model.train()
    variants = ("ce", "baseline", "vista")
    optimizers = {
        v: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0) for v in variants
    }
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(3):  # warm-up
        for v in variants:
            step_fn(v, model, optimizers[v], batches[0])()
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for v in order:
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            for i in range(args.steps):
                step_fn(v, model, optimizers[v], batches[i % len(batches)])()
            samples = args.steps * args.batch_size
            wall[v].append(samples / (time.perf_counter() - start_wall))
            cpu[v].append(samples / (time.thread_time() - start_cpu))

    seq = batches[0]["input_ids"].shape[1]
    print(
        f"tiny LLaVA (LM hidden {args.text_hidden}, {args.text_layers} layers), batch {args.batch_size} x ~{seq} "
        f"tokens, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.steps} steps per variant, interleaved"
    )
    for name, rates in (("wall clock", wall), ("thread CPU time", cpu)):
        print(f"samples/s by {name} (median over rounds [min, max]):")
        for v in variants:
            print(f"  {v:<9} {statistics.median(rates[v]):8.1f}  [{min(rates[v]):.1f}, {max(rates[v]):.1f}]")
        for a, b in (("vista", "ce"), ("vista", "baseline"), ("baseline", "ce")):
            ratios = [x / y for x, y in zip(rates[a], rates[b])]  # same round: same machine load
            target = "  (target >= 0.98)" if (a, b) == ("vista", "ce") else ""
            print(f"  ratio {a}/{b}: {statistics.median(ratios):.3f} (median of per-round ratios){target}")


if __name__ == "__main__":
    main()
