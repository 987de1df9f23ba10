"""What VISTA costs: training-step overhead on the tiny LLaVA, and the loss alone vs the official per-sample loop.

Measured side by side in one run, interleaved (A B B A ...) so that load changes on a shared machine hit both arms:

1. a training step (forward + backward + AdamW step; vision tower frozen, projector + LLM trained, i.e. stage 2)
   with cross-entropy only (``causal_lm_forward``, as ``vista train`` computes it) and with cross-entropy + VISTA
   (``forward_with_vista``), on the tiny LLaVA with realistic shapes: 576 image tokens (96 px images, 4 px patches)
   + 128 text tokens, batch 8;
2. the loss alone (forward + backward) at batch 16: ``vista_loss`` against a per-sample Python loop written in the
   shape of the official code (image positions found from non-zero feature sums, a loop over samples, a
   ``.item()`` for the logged similarity; its prints are left out). The loop gets its per-sample text embeddings
   pre-split for free, which favours it.

    python reproduce/benchmarks/loss_overhead.py [--rounds 30] [--loss-rounds 200]

Both wall-clock and process CPU time are recorded, and two estimators of each ratio are printed: the ratio of the
medians and the median of per-round ratios (the two arms of a round run back to back, so slow load changes cancel).
The last line uses the median of per-round ratios of process CPU time (one torch thread by default), which other
jobs on a shared machine disturb far less than wall time:
``overhead_ratio=<step with VISTA / without> loop_speedup=<loop / vectorised>``.
Targets: overhead_ratio <= 1.02, loop_speedup >= 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vista.loss import VistaConfig, build_vista_masks, vista_loss
from vista.model import capture_vista_states, causal_lm_forward, forward_with_vista
from vista.tiny import TinyLlavaSpec, build_tiny_llava

SPEC = TinyLlavaSpec(image_size=96, patch_size=4)  # (96 / 4)^2 = 576 image tokens, as LLaVA-1.5
PROMPT_TOKENS = 16  # text before the image (system prompt, "USER:"); the rest of the text comes after it


def make_batch(
    model,
    batch_size: int,
    text_tokens: int,
    seed: int = 0,
    *,
    image_tokens: int = SPEC.image_tokens,
    image_size: int = SPEC.image_size,
) -> dict[str, Tensor]:
    """Token ids ``[prompt][image_tokens x <image>][answer]`` with random text ids and pixels; labels on the answer.

    Text ids are drawn from ``[5, vocab)`` minus the image token id (no special tokens); pixels are
    (batch_size, 3, image_size, image_size) float32 noise. Tensors are on the CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    image_id = model.config.image_token_id
    vocab = model.config.text_config.vocab_size
    inside = image_id >= 5  # real presets: the image id lies inside the drawn range and is skipped over
    text = torch.randint(5, vocab - int(inside), (batch_size, text_tokens), generator=gen)
    if inside:
        text[text >= image_id] += 1
    image = torch.full((batch_size, image_tokens), image_id)
    input_ids = torch.cat([text[:, :PROMPT_TOKENS], image, text[:, PROMPT_TOKENS:]], dim=1)
    labels = input_ids.clone()
    labels[:, : PROMPT_TOKENS + image_tokens] = -100
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixels,
        "labels": labels,
    }


def official_loop_loss(
    hidden_states: Tensor, label_embeddings: Tensor, text_embeddings: list[Tensor]
) -> Tensor:
    """The L2 term computed per sample, in the shape of the official code (one image of fixed size per sample).

    label_embeddings: (B, S, H), image features at image positions and zeros elsewhere (how the official code marks
    image tokens); text_embeddings: per sample (T_i, H), the non-image token embeddings.
    """
    mask = label_embeddings.sum(dim=-1) != 0
    image_states = hidden_states[mask].reshape(len(text_embeddings), -1, hidden_states.shape[-1])
    loss = hidden_states.new_zeros(())
    similarity = hidden_states.new_zeros(())
    for i, text in enumerate(text_embeddings):
        anchor = image_states[i][-1].unsqueeze(0).expand_as(text)
        per_token = torch.nn.functional.mse_loss(anchor, text, reduction="none").mean(dim=1)
        similarity = similarity + per_token.sum() / text.shape[0]
        weights = torch.arange(1, text.shape[0] + 1, dtype=torch.float32, device=text.device) / text.shape[0]
        loss = loss + (per_token * weights).mean()
    _ = (similarity / len(text_embeddings)).item()  # the logged "similarity score"
    return loss / len(text_embeddings)


def interleaved(
    fns: dict[str, Callable[[], None]], rounds: int, desc: str
) -> dict[str, dict[str, list[float]]]:
    """Per-call wall-clock and process CPU seconds of each function, alternating the order every round.

    Process CPU time counts only this process's work, so it is far less disturbed than wall time by other jobs on
    a shared machine (with one torch thread it equals wall time on an idle machine).
    """
    times = {name: {"wall": [], "cpu": []} for name in fns}
    names = list(fns)
    for name in names:  # warm-up
        fns[name]()
    for r in tqdm(range(rounds), desc=desc, leave=False):
        for name in names if r % 2 == 0 else reversed(names):
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def step_times(rounds: int, batch_size: int, text_tokens: int) -> dict[str, list[float]]:
    model, _ = build_tiny_llava(SPEC, seed=0)
    model.train()
    model.model.vision_tower.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = make_batch(model, batch_size, text_tokens)
    print(f"step: batch {batch_size} x {batch['input_ids'].shape[1]} tokens ({SPEC.image_tokens} image)")
    config = VistaConfig()

    def step(loss: Tensor) -> None:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # The VISTA work alone on this batch's shapes (masks + loss forward/backward), for a low-noise cross-check.
    with torch.no_grad(), capture_vista_states(model) as capture:
        model(**batch)
    states, embeds = (t.detach().requires_grad_() for t in capture.states())

    def term_only() -> None:
        masks = build_vista_masks(batch["input_ids"], batch["attention_mask"], model.config.image_token_id)
        vista_loss(states, embeds, *masks).loss.backward()
        states.grad = embeds.grad = None

    return interleaved(
        {
            "ce": lambda: step(causal_lm_forward(model, batch).loss),
            "ce+vista": lambda: step(forward_with_vista(model, batch, config).loss),
            "term": term_only,
        },
        rounds,
        "training steps",
    )


def loss_arms(
    batch_size: int,
    text_tokens: int,
    hidden: int,
    *,
    image_tokens: int = SPEC.image_tokens,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, Callable[[], None]]:
    """The two arms of the loss-alone comparison (forward + backward each) on shared random inputs.

    Inputs: ``[PROMPT_TOKENS text][image_tokens][rest of the text]`` per sample, hidden states and embeddings
    (batch_size, image_tokens + text_tokens, hidden) in ``dtype`` on ``device``. Both arms' values are checked equal
    (within ``dtype``'s rounding) before anything is timed.

    Returns:
        ``{"loop": ..., "vectorised": ...}``: callables that run forward + backward and clear the gradients.
    """
    gen = torch.Generator().manual_seed(1)
    seq = text_tokens + image_tokens
    input_ids = torch.ones(batch_size, seq, dtype=torch.long)
    input_ids[:, PROMPT_TOKENS : PROMPT_TOKENS + image_tokens] = 4
    image_mask, text_mask = (m.to(device) for m in build_vista_masks(input_ids, None, image_token_id=4))

    def new_leaf() -> Tensor:
        return torch.randn(batch_size, seq, hidden, generator=gen).to(device, dtype).requires_grad_()

    states, embeds = new_leaf(), new_leaf()
    label_embeddings = (
        torch.randn(batch_size, seq, hidden, generator=gen).to(device, dtype) * image_mask[..., None]
    )
    texts = [embeds[i][text_mask[i]].detach().requires_grad_() for i in range(batch_size)]
    tolerance = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(  # same value before timing anything
        official_loop_loss(states, label_embeddings, texts),
        vista_loss(states, embeds, image_mask, text_mask).loss,
        check_dtype=False,
        **tolerance,
    )
    leaves = [states, embeds, *texts]

    def run(loss: Callable[[], Tensor]) -> None:
        loss().backward()
        for leaf in leaves:  # as zero_grad(set_to_none=True): no gradient accumulation pass in either arm
            leaf.grad = None

    return {
        "loop": lambda: run(lambda: official_loop_loss(states, label_embeddings, texts)),
        "vectorised": lambda: run(lambda: vista_loss(states, embeds, image_mask, text_mask).loss),
    }


def loss_times(
    rounds: int, batch_size: int, text_tokens: int, hidden: int
) -> dict[str, dict[str, list[float]]]:
    arms = loss_arms(batch_size, text_tokens, hidden)
    seq = text_tokens + SPEC.image_tokens
    print(f"loss alone: batch {batch_size} x {seq} tokens x {hidden} hidden, forward + backward")
    return interleaved(arms, rounds, "loss alone")


def family_step_times(family: str, rounds: int, batch_size: int, text_tokens: int) -> dict[str, list[float]]:
    """:func:`step_times` for a tiny checkpoint of any family of ``vista.families`` (``--family``): stage-2 freezing
    from the family's table, a batch of ``batch_size`` chat-template records (one 64x48 image each, about
    ``text_tokens`` words of answer) batched by the family's processor."""
    import numpy as np
    from PIL import Image

    from vista.chat_data import ChatCollator, encode_chat, to_messages
    from vista.families import FAMILIES, freeze_for_stage
    from vista.tiny_models import build_tiny_model

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "tokenizers" / "qwen2"
    model, processor = build_tiny_model(family, qwen_tokenizer=os.environ.get("VISTA_QWEN_TOKENIZER", shared))
    model.train()
    freeze_for_stage(model, FAMILIES[family], "finetune")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(0)
    words = "red blue green square circle star left right above below the a one two three".split()
    samples = []
    for _ in range(batch_size):
        answer = " ".join(rng.choice(words, size=text_tokens))
        record = {"messages": [{"role": "user", "content": "<image>\nDescribe the image."},
                               {"role": "assistant", "content": answer}], "images": ["x"]}  # fmt: skip
        image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        samples.append(encode_chat(processor, to_messages(record)[0], [image]))
    batch = ChatCollator(processor)(samples)
    n_image = int((batch["input_ids"] == model.config.image_token_id).sum()) // batch_size
    print(f"step ({family}): batch {batch_size} x {batch['input_ids'].shape[1]} tokens (~{n_image} image)")
    config = VistaConfig()

    def step(loss: Tensor) -> None:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return interleaved(
        {
            "ce": lambda: step(causal_lm_forward(model, batch).loss),
            "ce+vista": lambda: step(forward_with_vista(model, batch, config).loss),
        },
        rounds,
        f"training steps ({family})",
    )


def summary(times: dict[str, dict[str, list[float]]], baseline: str, other: str) -> float:
    """Print medians and ratios per clock; return the median per-round CPU-time ratio ``other / baseline``."""
    for clock in ("wall", "cpu"):
        for name, clocks in times.items():
            values = clocks[clock]
            q = statistics.quantiles(values, n=4)
            print(
                f"  {clock:4s} {name:10s} median {1e3 * statistics.median(values):9.3f} ms"
                f"  (IQR {1e3 * q[0]:.3f}-{1e3 * q[2]:.3f}, n={len(values)})"
            )
    for clock in ("wall", "cpu"):
        ratio = statistics.median(times[other][clock]) / statistics.median(times[baseline][clock])
        paired = statistics.median(o / b for o, b in zip(times[other][clock], times[baseline][clock]))
        print(
            f"  {clock:4s} {other} / {baseline}: ratio of medians {ratio:.4f}, median of paired ratios {paired:.4f}"
        )
    return paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved training-step rounds")
    parser.add_argument("--loss-rounds", type=int, default=200, help="interleaved loss-alone rounds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--loss-batch", type=int, default=16)
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steadier on a shared machine; 0: torch's default)",
    )
    parser.add_argument(
        "--family",
        action="append",
        default=None,
        help="a vista.families model_type (repeatable): step overhead on its tiny checkpoint instead of the LLaVA runs",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.family:
        ratios = {f: summary(family_step_times(f, args.rounds, args.batch, args.text_tokens), "ce", "ce+vista")
                  for f in args.family}  # fmt: skip
        print(" ".join(f"overhead_ratio[{f}]={r:.4f}" for f, r in ratios.items()))
        return

    step_runs = step_times(args.rounds, args.batch, args.text_tokens)
    term = step_runs.pop("term")["cpu"]
    step_cpu = summary(step_runs, "ce", "ce+vista")
    direct = 1 + statistics.median(term) / statistics.median(step_runs["ce"]["cpu"])
    print(f"  cpu  VISTA term alone {1e3 * statistics.median(term):.3f} ms: 1 + term / ce = {direct:.4f}")
    loop_cpu = summary(
        loss_times(args.loss_rounds, args.loss_batch, args.text_tokens, SPEC.text_hidden),
        "vectorised",
        "loop",
    )
    print("(final line: medians of per-round ratios of process CPU time; the other estimators are above)")
    print(f"overhead_ratio={step_cpu:.4f} loop_speedup={loop_cpu:.2f}")


if __name__ == "__main__":
    main()
