"""A training step of a paper preset at true width, for ``gpu_check.py`` parts 2 and 3.

The preset's stage-2 config as the check runs it (random weights, N LLM layers, no DeepSpeed), its memory plan,
the model (narrowed on a CPU), one CE and one CE + VISTA optimizer step as the Trainer does them, and
:func:`measure_step`, which times both arms interleaved and reports step times, tokens/s, the overhead ratio and
peak memory.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the sibling benchmarks: the batch maker and the timing helpers
from gpu_timing import GB, device_seconds, free_memory, interleaved, medians_ms, ratios  # noqa: E402
from loss_overhead import make_batch  # noqa: E402

from vista import builder, model_plan  # noqa: E402
from vista.model import causal_lm_forward, forward_with_vista  # noqa: E402
from vista.objectives import ObjectivesConfig, ObjectivesRuntime, forward_with_objectives  # noqa: E402
from vista.train_config import load_config, precision, vista_config_from  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
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


class SkipPart(Exception):
    """A part (or sub-part) cannot run in the time or memory left; the message says why."""


class TooSlow(SkipPart):
    """The warm-up steps show that too few interleaved rounds fit the time left (fewer layers may fit)."""


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

    The architecture is :func:`vista.model_plan.plan_llava_config`'s, the one the memory plan counts and
    :func:`vista.model_plan.build_random` builds; that function also needs a tokenizer folder, which this check does
    without (it draws token ids), so the model is made from the planned config here, as ``build_random`` does.
    """
    from transformers import LlavaForConditionalGeneration

    llava_config, _ = model_plan.plan_llava_config(config["model"])
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
    """``({"ce": ..., "ce+vista": ..., "ce+vista+diagnostics": ...}, scaler)``: one optimizer step each (forward,
    backward, clip, AdamW; the last also computes :mod:`vista.diagnostics`, as a logging step of vista train), as
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

    runtime = ObjectivesRuntime(model, ObjectivesConfig())  # VISTA + the collapse diagnostics, as vista train

    def step(with_vista: bool, diagnostics: bool = False) -> None:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if diagnostics:
                loss = forward_with_objectives(model, batch, vista, runtime, diagnostics=True).loss
            elif with_vista:
                loss = forward_with_vista(model, batch, vista).loss
            else:
                loss = causal_lm_forward(model, batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, float(training["max_grad_norm"]))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    arms = {"ce": lambda: step(False), "ce+vista": lambda: step(True)}
    return arms | {"ce+vista+diagnostics": lambda: step(True, diagnostics=True)}, scaler


def size_overrides(preset: str, sizes: Sizes) -> list[str]:
    """Config overrides for ``sizes`` (CPU: 2 vision layers, micro-batch, sequence length); none on a GPU."""
    extra = ["model.vision_layers=2"] if sizes.narrow else []
    if sizes.micro_batch:
        extra.append(f"training.per_device_train_batch_size={sizes.micro_batch}")
    if sizes.text_tokens:
        llava_config, _ = model_plan.plan_llava_config(preset_config(preset, 1)["model"])
        extra.append(f"data.max_length={llava_config.image_seq_length + sizes.text_tokens}")
    return extra


def micro_batch_of(config: dict[str, Any]) -> int:
    """The run's micro-batch (``training.per_device_train_batch_size``)."""
    return int(config["training"]["per_device_train_batch_size"])


def measure_step(
    config: dict[str, Any], device: torch.device, sizes: Sizes, deadline: float
) -> dict[str, Any]:
    """CE vs CE + VISTA (vs CE + VISTA + the collapse diagnostics) steps of ``config``'s model, interleaved until
    ``deadline`` (``time.monotonic()``).

    Raises :class:`SkipPart` if the budget runs out during warm-up, :class:`TooSlow` if fewer than
    ``sizes.min_rounds`` rounds fit the time left; a CUDA out-of-memory error propagates (the caller retries smaller).
    """
    started = time.monotonic()
    model = build_preset_model(config, narrow_widths=sizes.narrow, device=device)
    image_tokens = model.config.image_seq_length
    seq_len = int(config["data"]["max_length"])  # every sample full: the worst case the memory plan covers
    micro_batch = micro_batch_of(config)
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
            f"a round of the {len(steps)} arms takes {round_s:.1f} s; {sizes.min_rounds} rounds need "
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
    diagnostics = ratios(times, "ce+vista+diagnostics", "ce+vista")
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
        # a logging step's extra cost; at fewer layers than the preset's it overstates the full model's share
        "diagnostics_ratio": diagnostics["median_of_paired_ratios"],
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
