"""GPU check: what one lent accelerator can measure that this project's CPU machines cannot, in one budgeted run.

    python reproduce/benchmarks/gpu_check.py [--device cuda] [--budget-s 480] [--out DIR] [--max-text-layers 8]

Self-contained: random weights, random token ids and pixels, nothing downloaded, no data files. Three parts, each
skipped with a printed reason when the time budget (``--budget-s``, counted from the start) runs out:

1. **Loss alone** (``loss``): ``vista_loss`` against the per-sample loop written like the official code
   (``loss_overhead.official_loop_loss``: a Python loop over samples, image positions from non-zero feature sums,
   a ``.item()`` for the logged similarity), forward + backward, batch 16, 576 image + 128 text tokens, hidden 4096,
   in bfloat16 and float32. Times are CUDA-event times, interleaved (A B B A ...), medians of repeats; the
   speed-up is the median of per-round ratios. Peak memory: what each arm allocates above its inputs.
2. **A training step of the ``llava-1.5-7b`` preset** (stage 2, ``finetune``: projector + LLM train, vision tower
   frozen) at true width (CLIP ViT-L/14-336, Vicuna-7B widths, vocabulary 32,001) with as many LLM layers as fit
   (up to ``--max-text-layers``; the memory plan picks the count; out of memory or too slow a step for 3 rounds
   halves it), the preset's precision (bf16), gradient checkpointing, micro-batch (16) and ``data.max_length``
   (2048) tokens per sample, AdamW: cross-entropy only (``model(**batch).loss``) against CE + VISTA
   (``forward_with_vista``) and CE + VISTA + the collapse diagnostics (``vista.diagnostics``: what a logging step of
   ``vista train`` adds, an (H, H) float64 eigendecomposition), interleaved. Reported: step times, tokens/s,
   overhead ratio and ``diagnostics_ratio`` (a logging step over a CE + VISTA step; at fewer layers than the
   preset's 32 it overstates the full model's share) (medians of per-round ratios), peak memory, and the ratio of the measured peak to ``vista.memory_plan.plan_memory`` for the same
   configuration (one process, no DeepSpeed: this script runs a plain PyTorch step, so the plan is asked for
   ``training.deepspeed=null``, world size 1), also split into its two terms: model states (measured: allocated
   between steps + the gradients) and the rest of the peak against the activation estimate.
3. **The same for ``tinyllava-3b``** (SigLIP so400m, Phi-2 widths; the preset's fp16 AMP with float32 weights,
   micro-batch 16 x 3072 tokens) with the time that remains.

Output: a JSON summary printed and written to ``DIR/gpu_check_<UTC time>.json`` (default ``results/gpu_check``),
then, as the last line, ``loop_speedup=<x> overhead_ratio=<y> mem_plan_ratio=<z>`` (bf16 loss speed-up; part 2's
overhead and memory ratios; ``nan`` for a part that was skipped or failed). Exit status 1 if a part failed (its
traceback is printed and stored in the JSON; the other parts still run).

``--device cpu`` runs the same code at small sizes (hidden 256 for the loss; the presets' architectures narrowed to
hidden 64 with 2 layers each, micro-batch 2, 64 text tokens; a few repeats) in well under 2 minutes: a check of
the machinery, not a measurement. Peak memory is read from the CUDA allocator, so on CPU the memory ratio is nan.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the sibling benchmarks: the official-style loop, the timing helpers, the preset step
from gpu_step import (  # noqa: E402
    Sizes,
    SkipPart,
    TooSlow,
    measure_step,
    micro_batch_of,
    plan_for,
    preset_config,
    size_overrides,
)
from gpu_timing import GB, free_memory, interleaved, medians_ms, peak_gb, ratios  # noqa: E402
from loss_overhead import loss_arms  # noqa: E402

PRESETS = ("llava-1.5-7b", "tinyllava-3b")


SIZES = {
    "cuda": Sizes(16, 576, 128, 4096, 200, False, None, None, 20, 3, 60.0),
    "cpu": Sizes(16, 576, 128, 256, 6, True, 2, 64, 3, 2, 5.0),
}


# ------------------------------------------------------------------------------------------- part 1: the loss


def part_loss(device: torch.device, sizes: Sizes, deadline: float) -> dict[str, Any]:
    """``vista_loss`` vs the official-style loop, forward + backward, in bf16 then fp32 (half the time each)."""
    result: dict[str, Any] = {
        "batch": sizes.loss_batch,
        "image_tokens": sizes.loss_image_tokens,
        "text_tokens": sizes.loss_text_tokens,
        "hidden": sizes.loss_hidden,
        "timer": "CUDA events" if device.type == "cuda" else "wall clock",
    }
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    for index, (name, dtype) in enumerate(dtypes.items()):
        now = time.monotonic()
        share = (deadline - now) / (len(dtypes) - index)
        if share <= 0:
            result[name] = {"status": "skipped", "reason": "the loss part's time ran out"}
            print(f"[loss {name}] skipped: the loss part's time ran out")
            continue
        arms = loss_arms(
            sizes.loss_batch,
            sizes.loss_text_tokens,
            sizes.loss_hidden,
            image_tokens=sizes.loss_image_tokens,
            dtype=dtype,
            device=device,
        )
        for fn in arms.values():  # warm-up (kernel selection, allocator)
            fn()
        times = interleaved(arms, device, max_rounds=sizes.loss_rounds, min_rounds=3, deadline=now + share)
        memory = {arm: peak_gb(fn, device) for arm, fn in arms.items()}
        speedup = ratios(times, "loop", "vectorised")
        result[name] = {
            "status": "done",
            "times": medians_ms(times),
            "loop_speedup": speedup["median_of_paired_ratios"],
            "loop_speedup_ratio_of_medians": speedup["ratio_of_medians"],
            "peak_gb_above_inputs": {arm: m[1] if m else None for arm, m in memory.items()},
        }
        loop_ms, vectorised_ms = (result[name]["times"][arm]["median_ms"] for arm in ("loop", "vectorised"))
        print(
            f"[loss {name}] loop {loop_ms:.3f} ms, vectorised {vectorised_ms:.3f} ms: "
            f"speed-up {speedup['median_of_paired_ratios']:.2f}x (median of per-round ratios)"
        )
        del arms
        free_memory(device)
    if all(result[name]["status"] != "done" for name in dtypes):
        raise SkipPart("no time for either dtype")
    result["status"] = "done"
    result["loop_speedup"] = result["bf16"].get("loop_speedup", math.nan)  # the training recipe's dtype
    return result


# ------------------------------------------------------------------------------------ parts 2 and 3: a step


def choose_layers(
    preset: str, max_layers: int, extra: list[str], gpu_memory_gb: float | None
) -> tuple[int, str | None]:
    """The most LLM layers (<= max_layers) whose memory plan fits the device, and why, or max_layers without one."""
    for layers in range(max_layers, 0, -1):
        plan, reason = plan_for(preset_config(preset, layers, extra), gpu_memory_gb)
        if plan is None:
            return max_layers, reason
        if plan.fits is not False:
            return layers, None
    return 1, "the memory plan says even 1 layer does not fit; trying anyway"


def part_train(
    preset: str, device: torch.device, sizes: Sizes, deadline: float, max_layers: int
) -> dict[str, Any]:
    """Parts 2 and 3: CE vs CE + VISTA training steps of ``preset`` stage 2 (see the module docstring)."""
    left = max(0.0, deadline - time.monotonic())
    if left < sizes.min_part_s:
        raise SkipPart(f"{left:.0f} s left for this part, it needs at least {sizes.min_part_s:.0f} s")
    extra = size_overrides(preset, sizes)
    gpu_memory_gb = (
        torch.cuda.get_device_properties(device).total_memory / GB if device.type == "cuda" else None
    )
    layers, note = (2, None) if sizes.narrow else choose_layers(preset, max_layers, extra, gpu_memory_gb)
    attempts: list[dict[str, Any]] = []
    while True:
        config = preset_config(preset, layers, extra)
        try:
            result = measure_step(config, device, sizes, deadline)
            break
        except TooSlow as slow:  # fewer layers: shorter steps
            attempts.append(
                {"text_layers": layers, "micro_batch": micro_batch_of(config), "error": str(slow)}
            )
            if layers == 1:
                raise
        except torch.OutOfMemoryError as error:  # a CUDA OOM: fewer layers, then a smaller micro-batch
            attempts.append(
                {"text_layers": layers, "micro_batch": micro_batch_of(config), "error": str(error)[:300]}
            )
            if layers == 1:
                if micro_batch_of(config) == 1:
                    raise SkipPart("out of memory even at 1 layer and micro-batch 1") from None
                extra = [*extra, f"training.per_device_train_batch_size={micro_batch_of(config) // 2}"]
        free_memory(device)
        print(f"[{preset}] retrying smaller: {attempts[-1]['error'][:200]}", flush=True)
        layers = max(1, layers // 2)
        if deadline - time.monotonic() < sizes.min_part_s:
            raise SkipPart(f"no time left to retry smaller after {attempts}")
    result["smaller_retries"] = attempts  # out of memory or too slow at more layers / a larger micro-batch
    result["layer_choice_note"] = note
    plan, reason = plan_for(config, gpu_memory_gb)
    result["memory_plan"] = plan.to_dict() if plan is not None else None
    measured = result["peak_allocated_gb"].get("ce+vista")
    if plan is None:
        result["mem_plan_ratio"], result["mem_plan_reason"] = math.nan, reason
    elif measured is None:
        result["mem_plan_ratio"] = math.nan
        result["mem_plan_reason"] = "peak memory is read from the CUDA allocator; not measured on this device"
    else:
        result["mem_plan_ratio"] = measured / plan.total_gb_per_gpu
        result["mem_plan_reason"] = None
        # the two terms apart: model states, and the rest of the peak against the activation estimate
        result["model_states_ratio"] = result["model_states_gb"] / plan.model_states_gb_per_gpu
        result["activations_ratio"] = (
            measured - result["model_states_gb"]
        ) / plan.activations_gb_per_micro_batch
    print(
        f"[{preset}] {result['text_layers']} layers, micro-batch {result['micro_batch']} x {result['seq_len']}: "
        f"overhead {result['overhead_ratio']:.4f}, diagnostics {result['diagnostics_ratio']:.4f}, "
        f"mem_plan_ratio {result['mem_plan_ratio']:.3f}"
        + (f" ({result['mem_plan_reason']})" if result["mem_plan_reason"] else "")
    )
    return result


# ------------------------------------------------------------------------------------------------------ main


def run_part(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a part; a skip is reported with its reason, a failure with its traceback (and the run goes on)."""
    print(f"[{name}] starting", flush=True)
    started = time.monotonic()
    try:
        result = fn()
    except SkipPart as skip:
        print(f"[{name}] skipped: {skip}", flush=True)
        result = {"status": "skipped", "reason": str(skip)}
    except Exception:  # reported, stored and turned into a non-zero exit status by main()
        text = traceback.format_exc()
        print(f"[{name}] FAILED:\n{text}", flush=True)
        result = {"status": "failed", "error": text}
    result["elapsed_s"] = time.monotonic() - started
    return result


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": props.total_memory / GB,
            "capability": f"{props.major}.{props.minor}",
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def headline(parts: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The last line's three numbers (nan for a part that did not finish)."""
    loss, step = parts.get("loss", {}), parts.get(PRESETS[0], {})
    return {
        "loop_speedup": loss.get("loop_speedup", math.nan) if loss.get("status") == "done" else math.nan,
        "overhead_ratio": step.get("overhead_ratio", math.nan) if step.get("status") == "done" else math.nan,
        "mem_plan_ratio": step.get("mem_plan_ratio", math.nan) if step.get("status") == "done" else math.nan,
    }


def _finite(node: Any) -> Any:
    """``node`` with nan/inf floats as None (strict JSON has no NaN)."""
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(v) for v in node]
    return node


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda (a GPU run) or cpu (small sizes: a code check)"
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="seconds for all parts, from the start")
    parser.add_argument(
        "--out", type=Path, default=Path("results/gpu_check"), help="folder for the JSON summary"
    )
    parser.add_argument(
        "--max-text-layers", type=int, default=8, help="LLM layers to try first in parts 2-3 (GPU; 1-32)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    end = started + args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device cuda but torch {torch.__version__} sees no CUDA device (CUDA build: "
            f"{torch.version.cuda}); install a CUDA build of this torch version, or run --device cpu",
            file=sys.stderr,
        )
        return 2
    if device.type not in SIZES:
        print(f"error: --device {args.device}: expected cuda or cpu", file=sys.stderr)
        return 2
    if not 1 <= args.max_text_layers <= 32:
        print(f"error: --max-text-layers {args.max_text_layers}: expected 1-32", file=sys.stderr)
        return 2
    sizes = SIZES[device.type]
    info = environment(device)
    print(json.dumps(info), flush=True)

    parts: dict[str, dict[str, Any]] = {}
    loss_deadline = started + min(0.15 * args.budget_s, 60.0)
    parts["loss"] = run_part("loss", lambda: part_loss(device, sizes, loss_deadline))
    for index, preset in enumerate(PRESETS):
        left = end - time.monotonic()
        share = 0.6 * left if index < len(PRESETS) - 1 else left
        deadline = time.monotonic() + share
        parts[preset] = run_part(
            preset, lambda p=preset, d=deadline: part_train(p, device, sizes, d, args.max_text_layers)
        )

    summary = {
        "environment": info,
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "budget_s": args.budget_s,
        "elapsed_s": time.monotonic() - started,
        "sizes": asdict(sizes),
        "parts": parts,
        "headline": headline(parts),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"gpu_check_{device.type}_{stamp}.json"
    text = json.dumps(_finite(summary), indent=2, default=str)
    path.write_text(text)
    print(text)
    print(f"written: {path}")
    numbers = summary["headline"]
    print(
        f"loop_speedup={numbers['loop_speedup']:.2f} overhead_ratio={numbers['overhead_ratio']:.4f} "
        f"mem_plan_ratio={numbers['mem_plan_ratio']:.3f}"
    )
    return 1 if any(part["status"] == "failed" for part in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
