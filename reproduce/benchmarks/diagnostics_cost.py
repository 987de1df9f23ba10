"""What the collapse diagnostics cost at the paper's width (H = 4096), in units of one decoder layer's training step.

    python reproduce/benchmarks/diagnostics_cost.py [--batch 2] [--text-tokens 448] [--rounds 3]

The diagnostics (``vista.diagnostics.batch_diagnostics``) run once per micro-batch of a logging step; the paper
recipe logs every step. Their cost is one (H, H) float64 Gram of the batch's embedding rows and its
eigendecomposition (for ``diag_text_erank``), which does not shrink with the model's depth. Measured side by side in
one process, interleaved (A B B A ...), on the same token count:

- **layer**: forward + backward of one LLaVA-1.5-7B decoder layer (Vicuna-7B width: H 4096, MLP 11008, 32 heads;
  float32, random weights) on ``batch x (576 image + text-tokens)`` positions;
- **diagnostics**: ``batch_diagnostics`` on hidden states and embedding rows of the same shape (576 image positions
  per sample, the text positions its targets, ids from a 32,000-token vocabulary).

Printed: median CPU seconds of each arm, the median per-round ratio ``diagnostics / layer`` (process CPU time, one
torch thread), and what it implies for the whole 32-layer language model at this token count
(``ratio / 32``; an extrapolation that leaves out the vision tower, the LM head and the optimizer, so it
overstates the share). The last line: ``layers_equivalent=<ratio> share_of_32_layer_lm=<ratio / 32>``. On GPUs the
eigendecomposition is relatively slower than matrix products, so measure there too
(``objectives.diagnostics=false`` turns the diagnostics off).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_overhead import interleaved  # noqa: E402

from vista.diagnostics import batch_diagnostics  # noqa: E402

WIDTH, MLP, HEADS, VOCAB, IMAGE_TOKENS, LM_LAYERS = 4096, 11008, 32, 32000, 576, 32  # Vicuna-7B / LLaVA-1.5


def layer_step(batch: int, seq: int):
    """A closure: forward + backward of one Vicuna-7B-width decoder layer on (batch, seq, 4096) inputs."""
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(hidden_size=WIDTH, intermediate_size=MLP, num_attention_heads=HEADS,
                         num_key_value_heads=HEADS, num_hidden_layers=1, vocab_size=8)  # fmt: skip
    model = LlamaModel(config).train()
    inputs = torch.randn(batch, seq, WIDTH, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model(inputs_embeds=inputs).last_hidden_state.square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def diagnostics_call(batch: int, text_tokens: int):
    """A closure: :func:`batch_diagnostics` on one micro-batch of the same shape."""
    gen = torch.Generator().manual_seed(1)
    seq = IMAGE_TOKENS + text_tokens
    table = torch.randn(VOCAB, WIDTH, generator=gen) * 0.02
    ids = torch.randint(0, VOCAB, (batch, seq), generator=gen)
    image = torch.zeros(batch, seq, dtype=torch.bool)
    image[:, :IMAGE_TOKENS] = True
    text = ~image
    hidden, embeds = torch.randn(batch, seq, WIDTH, generator=gen), table[ids]
    return lambda: batch_diagnostics(hidden, embeds, image, text, ids, VOCAB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="samples per micro-batch (default 2)")
    parser.add_argument(
        "--text-tokens", type=int, default=448, help="text positions per sample (default 448)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seq = IMAGE_TOKENS + args.text_tokens
    print(f"micro-batch {args.batch} x {seq} positions ({IMAGE_TOKENS} image), H = {WIDTH}, one torch thread")
    times = interleaved(
        {"layer": layer_step(args.batch, seq), "diagnostics": diagnostics_call(args.batch, args.text_tokens)},
        args.rounds,
        "rounds",
    )
    for name, clocks in times.items():
        print(f"  {name:12s} median cpu {statistics.median(clocks['cpu']):7.2f} s")
    ratios = [d / layer for d, layer in zip(times["diagnostics"]["cpu"], times["layer"]["cpu"])]
    print("  per-round ratios diagnostics / layer: " + " ".join(f"{r:.3f}" for r in ratios))
    ratio = statistics.median(ratios)
    print(f"layers_equivalent={ratio:.3f} share_of_32_layer_lm={ratio / LM_LAYERS:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
