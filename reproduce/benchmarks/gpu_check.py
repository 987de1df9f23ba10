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
   (``forward_with_vista``), interleaved. Reported: step times, tokens/s, overhead ratio (median of per-round
   ratios), peak memory, and the ratio of the measured peak to ``vista.memory_plan.plan_memory`` for the same
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
import gc
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the sibling benchmark owning the official-style loop
from loss_overhead import loss_arms, make_batch  # noqa: E402

from vista import builder  # noqa: E402
from vista.model import forward_with_vista  # noqa: E402
from vista.train_config import load_config, precision, vista_config_from  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GB = 1024**3
PRESETS = ("llava-1.5-7b", "tinyllava-3b")
# Stage 2: the whole LLM trains, so VISTA's gradient reaches every layer and the embedding table.
STAGE = "finetune"
PLAN_UNAVAILABLE = "memory plan not available"


@dataclass(frozen=True)
class Sizes:
    """What each part runs at on a device (the GPU sizes are the issue's; the CPU ones only check the code)."""

    loss_batch: int
    loss_image_tokens: int
    loss_text_tokens: int
    loss_hidden: int
    loss_rounds: int  # at most; fewer if the part's time runs out (never fewer than 3)
    narrow: bool  # shrink the presets' widths (CPU); then 2 LLM and 2 vision layers
    micro_batch: int | None  # None: the preset's per_device_train_batch_size
    text_tokens: int | None  # sets data.max_length to image tokens + this; None: the preset's data.max_length
    max_rounds: int  # interleaved training-step rounds, at most
    min_rounds: int  # fewer than this and the part is skipped
    min_part_s: float  # a training part is not started with less time than this


SIZES = {
    "cuda": Sizes(16, 576, 128, 4096, 200, False, None, None, 20, 3, 60.0),
    "cpu": Sizes(16, 576, 128, 256, 6, True, 2, 64, 3, 2, 5.0),
}


class SkipPart(Exception):
    """A part (or sub-part) cannot run in the time or memory left; the message says why."""


class TooSlow(SkipPart):
    """The warm-up steps show that too few interleaved rounds fit the time left (fewer layers may fit)."""


# --------------------------------------------------------------------------------------------------- measuring


def device_seconds(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds ``fn`` takes: CUDA-event time on a GPU (queue drained first), wall time on a CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def peak_gb(fn: Callable[[], None], device: torch.device) -> tuple[float, float] | None:
    """``(peak allocated during fn, the part of it above what was allocated before)`` in GiB; None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak / GB, (peak - before) / GB


def interleaved(
    fns: dict[str, Callable[[], None]],
    device: torch.device,
    *,
    max_rounds: int,
    min_rounds: int,
    deadline: float,
    memory: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, the order alternating every round (A B, B A, ...).

    Stops after ``max_rounds``, or once ``time.monotonic()`` passes ``deadline`` with at least ``min_rounds`` done.
    With ``memory`` (CUDA), also records each function's peak allocated GiB (max over its calls) into it.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(max_rounds):
        if r >= min_rounds and time.monotonic() > deadline:
            break
        for name in names if r % 2 == 0 else reversed(names):
            if memory is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(device_seconds(fns[name], device))
            if memory is not None and device.type == "cuda":
                memory[name] = max(memory.get(name, 0.0), torch.cuda.max_memory_allocated(device) / GB)
    return times


def ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """Median of per-round ratios (the headline: both calls of a round see the same machine state) and the ratio
    of medians."""
    paired = [a / b for a, b in zip(times[numerator], times[denominator])]
    return {
        "median_of_paired_ratios": statistics.median(paired),
        "ratio_of_medians": statistics.median(times[numerator]) / statistics.median(times[denominator]),
    }


def medians_ms(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"median_ms": 1e3 * statistics.median(values), "min_ms": 1e3 * min(values), "n": len(values)}
        for name, values in times.items()
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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


def preset_config(preset: str, text_layers: int, extra: list[str] | None = None) -> dict[str, Any]:
    """The resolved ``vista train`` config of ``preset`` stage 2 as this check runs it.

    Random weights at the real architecture, ``text_layers`` LLM layers, the VISTA variant, no DeepSpeed (one
    process, a plain PyTorch step); ``extra`` are further ``key=value`` overrides (CPU sizes).
    """
    overrides = [
        "variant=vista",
        "model.checkpoint=null",  # stage 2 normally starts from stage 1's output: the architecture is the same
        "model.source=random",
        f"model.text_layers={text_layers}",
        "training.deepspeed=null",
        *(extra or []),
    ]
    return load_config(REPO / "reproduce" / "configs" / preset / f"{STAGE}.yaml", overrides)


def plan_for(config: dict[str, Any], gpu_memory_gb: float | None) -> tuple[Any | None, str | None]:
    """``(MemoryPlan, None)`` from ``vista.memory_plan.plan_memory`` for one process, or ``(None, reason)``."""
    try:
        from vista.memory_plan import plan_memory
    except ImportError:
        return None, PLAN_UNAVAILABLE
    return plan_memory(config, world_size=1, gpu_memory_gb=gpu_memory_gb), None


def narrow(llava_config) -> None:
    """Shrink the widths of a LLaVA config in place (CPU mode): same model types, image size, patch size,
    depths, feature layer and select strategy; hidden 64 (text) / 32 (vision), vocabulary 512."""
    text, vision = llava_config.text_config, llava_config.vision_config
    ratio = text.intermediate_size / text.hidden_size
    text.hidden_size, text.num_attention_heads = 64, 4
    text.intermediate_size = int(64 * ratio)
    if getattr(text, "num_key_value_heads", None):
        text.num_key_value_heads = 4
    if getattr(text, "head_dim", None):
        text.head_dim = 16
    vision.hidden_size, vision.intermediate_size, vision.num_attention_heads = 32, 128, 2
    text.vocab_size, llava_config.image_token_id = 512, 511  # the LM head dominates a narrow model's step


def build_preset_model(config: dict[str, Any], *, narrow_widths: bool, device: torch.device):
    """The preset's LLaVA with random weights on ``device`` in the run's dtype, frozen for stage 2, ready to train.

    The architecture is :func:`vista.builder.plan_llava_config`'s, the one the memory plan counts and
    :func:`vista.builder.build_random` builds; that function also needs a tokenizer folder, which this check does
    without (it draws token ids), so the model is made from the planned config here, as ``build_random`` does.
    """
    from transformers import LlavaForConditionalGeneration

    llava_config, _ = builder.plan_llava_config(config["model"])
    if narrow_widths:
        narrow(llava_config)
    dtype = builder.resolve_dtype(config["model"]["dtype"], bf16=config["training"]["bf16"])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(
            llava_config, dtype=dtype, attn_implementation=config["model"]["attn_implementation"]
        )
    model.config.use_cache = model.config.text_config.use_cache = False
    builder.freeze_for_stage(model, config["stage"])
    if config["training"]["gradient_checkpointing"]:  # as vista train: non-reentrant checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def run_autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run's precision (``bf16``/``fp16``/``fp32``); fp16 becomes bf16 on a CPU, whose
    float16 matrix products are an order of magnitude slower than float32 (measured: 15x)."""
    if mode == "fp16" and device.type == "cpu":
        return torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)


def step_functions(model, batch: dict[str, torch.Tensor], config: dict[str, Any], device: torch.device):
    """``({"ce": ..., "ce+vista": ...}, scaler)``: one optimizer step each (forward, backward, clip, AdamW), as
    the Trainer does it for the run's precision (autocast; fp16 adds the gradient scaler, which skips the
    optimizer step of a batch with non-finite gradients and halves its scale: its final scale shows whether that
    happened)."""
    training = config["training"]
    autocast_dtype = run_autocast_dtype(precision(training), device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=float(training["learning_rate"]), weight_decay=float(training["weight_decay"])
    )
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    vista = vista_config_from(config)
    if not vista.enabled:
        raise ValueError("the CE + VISTA arm needs an enabled VISTA config (variant vista)")

    def step(with_vista: bool) -> None:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if with_vista:
                loss = forward_with_vista(model, batch, vista).loss
            else:
                loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, float(training["max_grad_norm"]))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return {"ce": lambda: step(False), "ce+vista": lambda: step(True)}, scaler


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
            result = _measure_step(config, device, sizes, deadline)
            break
        except TooSlow as slow:  # fewer layers: shorter steps
            attempts.append({"text_layers": layers, "micro_batch": _micro_batch(config), "error": str(slow)})
            if layers == 1:
                raise
        except torch.OutOfMemoryError as error:  # a CUDA OOM: fewer layers, then a smaller micro-batch
            attempts.append(
                {"text_layers": layers, "micro_batch": _micro_batch(config), "error": str(error)[:300]}
            )
            if layers == 1:
                if _micro_batch(config) == 1:
                    raise SkipPart("out of memory even at 1 layer and micro-batch 1") from None
                extra = [*extra, f"training.per_device_train_batch_size={_micro_batch(config) // 2}"]
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
        f"overhead {result['overhead_ratio']:.4f}, mem_plan_ratio {result['mem_plan_ratio']:.3f}"
        + (f" ({result['mem_plan_reason']})" if result["mem_plan_reason"] else "")
    )
    return result


def size_overrides(preset: str, sizes: Sizes) -> list[str]:
    """Config overrides for ``sizes`` (CPU: 2 vision layers, micro-batch, sequence length); none on a GPU."""
    extra = ["model.vision_layers=2"] if sizes.narrow else []
    if sizes.micro_batch:
        extra.append(f"training.per_device_train_batch_size={sizes.micro_batch}")
    if sizes.text_tokens:
        llava_config, _ = builder.plan_llava_config(preset_config(preset, 1)["model"])
        extra.append(f"data.max_length={llava_config.image_seq_length + sizes.text_tokens}")
    return extra


def _micro_batch(config: dict[str, Any]) -> int:
    return int(config["training"]["per_device_train_batch_size"])


def _measure_step(
    config: dict[str, Any], device: torch.device, sizes: Sizes, deadline: float
) -> dict[str, Any]:
    started = time.monotonic()
    model = build_preset_model(config, narrow_widths=sizes.narrow, device=device)
    image_tokens = model.config.image_seq_length
    seq_len = int(config["data"]["max_length"])  # every sample full: the worst case the memory plan covers
    micro_batch = _micro_batch(config)
    batch = make_batch(
        model,
        micro_batch,
        seq_len - image_tokens,
        image_tokens=image_tokens,
        image_size=model.config.vision_config.image_size,
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    steps, scaler = step_functions(model, batch, config, device)
    build_s = time.monotonic() - started
    warm: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(2):  # the first step allocates AdamW's moments and picks kernels
        for name, fn in steps.items():
            warm[name].append(device_seconds(fn, device))
            if time.monotonic() > deadline:
                raise SkipPart(f"the budget ran out during warm-up (steps took {warm} s)")
    round_s = sum(values[-1] for values in warm.values())
    left = deadline - time.monotonic()
    rounds_fit = sizes.max_rounds if math.isinf(left) else int(left // round_s)
    if rounds_fit < sizes.min_rounds:
        raise TooSlow(
            f"a CE + CE+VISTA round takes {round_s:.1f} s; {sizes.min_rounds} rounds need "
            f"{sizes.min_rounds * round_s:.0f} s, {deadline - time.monotonic():.0f} s left"
        )
    resting_gb = torch.cuda.memory_allocated(device) / GB if device.type == "cuda" else None
    gradient_gb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / GB
    memory: dict[str, float] = {}
    times = interleaved(
        steps,
        device,
        max_rounds=min(sizes.max_rounds, rounds_fit),
        min_rounds=sizes.min_rounds,
        deadline=deadline,
        memory=memory,
    )
    tokens = micro_batch * seq_len
    overhead = ratios(times, "ce+vista", "ce")
    parameters = builder.parameter_report(model)
    result = {
        "status": "done",
        "stage": config["stage"],
        "precision": precision(config["training"]),
        "autocast": str(run_autocast_dtype(precision(config["training"]), device)).removeprefix("torch."),
        "weights_dtype": str(model.dtype).removeprefix("torch."),
        "gradient_checkpointing": bool(config["training"]["gradient_checkpointing"]),
        "attn_implementation": config["model"]["attn_implementation"],
        "narrowed_for_cpu": sizes.narrow,
        "text_layers": model.config.text_config.num_hidden_layers,
        "text_hidden": model.config.text_config.hidden_size,
        "vision_layers": model.config.vision_config.num_hidden_layers,
        "parameters": {part: counts["total"] for part, counts in parameters.items()},
        "trainable_parameters": parameters["all"]["trainable"],
        "micro_batch": micro_batch,
        "seq_len": seq_len,
        "image_tokens": image_tokens,
        "build_s": build_s,
        "warmup_s": warm,
        "times": medians_ms(times),
        "tokens_per_s": {name: tokens / statistics.median(values) for name, values in times.items()},
        "overhead_ratio": overhead["median_of_paired_ratios"],
        "overhead_ratio_of_medians": overhead["ratio_of_medians"],
        "allocated_between_steps_gb": resting_gb,  # weights + AdamW moments (gradients are freed)
        # + the gradients (the parameters' dtype): the model states the plan's first term predicts
        "model_states_gb": resting_gb + gradient_gb if resting_gb is not None else None,
        "peak_allocated_gb": {name: memory.get(name) for name in steps},
        "peak_reserved_gb_last_step": torch.cuda.max_memory_reserved(device) / GB
        if device.type == "cuda"
        else None,
        "fp16_grad_scale": scaler.get_scale()
        if scaler.is_enabled()
        else None,  # 65536.0: no step was skipped
    }
    del steps, scaler, batch, model
    free_memory(device)
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
