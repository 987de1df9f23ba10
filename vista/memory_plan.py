"""Per-GPU memory plan of a training run (``vista train --dry-run --world-size N [--gpu-memory GB]``).

Three parts, each from a named source:

- **Model states** (weights, gradients, optimizer states) from DeepSpeed's own estimators for the configured ZeRO
  stage (``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``; no offload), applied
  to the *trainable* parameters. The estimators assume every parameter trains; frozen parameters (the vision tower,
  and the LM in stage 1) only hold their 16-bit weights: replicated under ZeRO-2 (``2 F`` bytes), partitioned under
  ZeRO-3 (``2 F / N``). Without DeepSpeed (transformers Trainer, AdamW): weights, gradients and both AdamW moments in
  the parameters' dtype.
- **Activations per micro-batch** from Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models" (arXiv 2205.05198), Section 4.1, Eq. 1: a transformer layer stores ``s b h (34 + 5 a s / h)``
  bytes of 16-bit activations (sequence ``s``, micro-batch ``b``, hidden ``h``, heads ``a``) with a 4h GELU MLP.
  Adapted to the real MLPs: the MLP's ``16 s b h`` (two ``s x 4h`` tensors) becomes ``4 s b I`` for a 2-matrix MLP
  of width ``I`` (Phi-2) and ``8 s b I`` for a gated one (Llama: gate, up, activation, product), i.e.
  ``s b (18 h + c I)`` per layer; the ``5 a s^2 b`` attention-score term applies only to eager attention (SDPA /
  flash attention do not store the scores). With gradient (activation) checkpointing a layer keeps only its input,
  ``2 s b h`` (the paper's full-recomputation case), plus one layer's full activations during its recomputation.
  The LM head adds ``10 s b V`` bytes (16-bit logits, their float32 upcast for the loss, float32 log-softmax): an
  upper bound, as training computes logits only at the supervised positions (``vista.model.causal_lm_forward``), VISTA
  ``8 s b h`` (float32 differences ``h_v - e_t`` and their squares). ``s`` is ``data.max_length`` (the worst case).
  The frozen vision tower runs without storing activations and is not counted.
- **Verdict**: ``total = model states + activations`` must stay within 90% of ``--gpu-memory`` (10% headroom for
  the CUDA context, allocator fragmentation and communication buffers: a rule of thumb, not a measurement). If it
  does not, the nearest setting that fits is searched over micro-batch, gradient checkpointing, ZeRO-3 and more
  GPUs (fewest changes first), and for stage 2 LoRA on one 24 GB GPU is reported.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

GB = 1024**3
HEADROOM = 0.9  # usable share of a GPU's memory (see the module docstring)
LORA_GPU_GB = 24.0
ZERO3_CONFIG = "reproduce/configs/deepspeed/zero3.json"
ACTIVATION_SOURCE = (
    "Korthikanti et al. 2022 (arXiv 2205.05198) Eq. 1, MLP term adapted to the real MLP: per layer "
    "s*b*(18h + c*I) bytes (c=8 gated MLP, 4 otherwise) [+ 5*a*s^2*b eager attention]; with checkpointing "
    "2*s*b*h per layer + one layer; + LM head 10*s*b*V; + VISTA 8*s*b*h; s = data.max_length"
)


@dataclass(frozen=True)
class Setting:
    """The knobs the plan varies: GPUs, ZeRO stage, per-device micro-batch, gradient checkpointing, LoRA."""

    world_size: int
    zero_stage: int | None
    micro_batch: int
    checkpointing: bool
    lora: bool = False


@dataclass
class ModelCounts:
    """Parameter counts (by part, trainable) and the shapes the activation estimate needs."""

    params_by_part: dict[str, int]
    trainable_by_part: dict[str, int]
    largest_layer_params: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    gated_mlp: bool
    lora_trainable: (
        int  # trainable parameters with LoRA on the LM (projector fully trained), 0 if not planned
    )

    @property
    def total(self) -> int:
        return sum(self.params_by_part.values())

    @property
    def trainable(self) -> int:
        return sum(self.trainable_by_part.values())


@dataclass
class MemoryPlan:
    """Per-GPU memory of a run; sizes in GiB (2^30 bytes)."""

    world_size: int
    zero_stage: int | None
    precision: str
    micro_batch: int
    seq_len: int
    gradient_checkpointing: bool
    lora: bool
    params_by_part: dict[str, int]
    trainable_by_part: dict[str, int]
    largest_layer_params: int
    model_states_gb_per_gpu: float
    activations_gb_per_micro_batch: float
    total_gb_per_gpu: float
    gpu_memory_gb: float | None
    fits: bool | None
    suggestions: list[str] = field(default_factory=list)
    model_states_source: str = ""
    activation_source: str = ACTIVATION_SOURCE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------ formulas


def model_state_bytes(counts: ModelCounts, setting: Setting, weight_bytes: int = 2) -> int:
    """Weights, gradients and optimizer states per GPU (bytes); see the module docstring for the sources.

    Args:
        counts: parameter counts of the model (trainable as frozen for the stage, or with LoRA if ``setting.lora``).
        setting: world size, ZeRO stage (None: no DeepSpeed).
        weight_bytes: bytes of a stored weight (2 for bf16/fp16 runs, 4 for fp32).
    """
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    trainable = counts.lora_trainable if setting.lora else counts.trainable
    frozen = counts.total - trainable
    n = setting.world_size
    if setting.zero_stage == 3:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            trainable,
            counts.largest_layer_params,
            num_gpus_per_node=n,
            cpu_offload=False,
            cpu_offload_params=False,
        )
        return int(gpu + weight_bytes * frozen / n)
    if setting.zero_stage in (1, 2):
        _, gpu = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=n, cpu_offload=False)
        return int(gpu + weight_bytes * frozen)
    return int(
        weight_bytes * counts.total + 3 * weight_bytes * trainable
    )  # + gradients + AdamW's two moments


def activation_bytes(
    counts: ModelCounts,
    *,
    seq_len: int,
    micro_batch: int,
    checkpointing: bool,
    eager_attention: bool = False,
    vista: bool = True,
    element_bytes: int = 2,
) -> int:
    """Activations of one micro-batch kept for the backward pass (bytes); formula in the module docstring."""
    s, b, h, n_layers = seq_len, micro_batch, counts.hidden, counts.layers
    scale = element_bytes / 2  # the formula counts 16-bit activations
    layer = s * b * (18 * h + (8 if counts.gated_mlp else 4) * counts.intermediate)
    if eager_attention:
        layer += 5 * counts.heads * s * s * b
    stored = (n_layers * 2 * s * b * h + layer) if checkpointing else n_layers * layer
    head = 10 * s * b * counts.vocab
    extra = 8 * s * b * h if vista else 0
    return int(stored * scale + head + extra)


# ------------------------------------------------------------------------------------------------------ the plan


def model_counts(
    llava_config, stage: str, lora: dict[str, Any] | None = None, top_layers: int | None = None
) -> ModelCounts:
    """Counts of the model ``llava_config`` describes (built on the meta device), frozen for ``stage`` (and
    ``top_layers``: :func:`vista.builder.freeze_for_stage`)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from vista.builder import freeze_for_stage, parameter_report

    with torch.device("meta"):
        model = LlavaForConditionalGeneration._from_config(llava_config)
    freeze_for_stage(model, stage, top_layers)
    report = parameter_report(model)
    parts = [p for p in report if p != "all"]
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    text = llava_config.text_config
    lora_trainable = 0
    if stage == "finetune" and lora:
        lora_trainable = report["projector"]["total"] + _lora_parameters(model, lora)
    return ModelCounts(
        params_by_part={p: report[p]["total"] for p in parts},
        trainable_by_part={p: report[p]["trainable"] for p in parts},
        largest_layer_params=largest,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        vocab=text.vocab_size,
        gated_mlp=text.model_type in ("llama", "mistral", "qwen2"),
        lora_trainable=lora_trainable,
    )


def _lora_parameters(model, lora: dict[str, Any]) -> int:
    """LoRA adapter parameters ``r (in + out)`` of every targeted ``nn.Linear`` of the LM."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if "language_model" in name and isinstance(module, torch.nn.Linear):
            if name.rsplit(".", 1)[-1] in lora["target_modules"]:
                total += lora["r"] * (module.in_features + module.out_features)
    return total


def plan_memory(config: dict[str, Any], world_size: int, gpu_memory_gb: float | None = None) -> MemoryPlan:
    """The per-GPU memory plan of a resolved training config (as ``vista.train_config.load_config`` returns it).

    Args:
        config: the resolved config.
        world_size: GPUs (processes) of the run.
        gpu_memory_gb: memory of one GPU in GiB; None gives no verdict (``fits`` None, no suggestions).

    Raises:
        ValueError: the model cannot be planned offline (see ``vista.model_plan.plan_llava_config``).
    """
    from vista.model_plan import plan_llava_config, planning_model_cfg
    from vista.train_config import deepspeed_stage, precision

    model_cfg, _ = planning_model_cfg(config["model"])
    llava_config, _ = plan_llava_config(model_cfg)
    training = config["training"]
    counts = model_counts(
        llava_config, config["stage"], config["lora"], config["model"]["finetune_top_layers"]
    )
    setting = Setting(
        world_size=world_size,
        zero_stage=deepspeed_stage(training["deepspeed"]),
        micro_batch=int(training["per_device_train_batch_size"]),
        checkpointing=bool(training["gradient_checkpointing"]),
        lora=bool(config["lora"]["enabled"]),
    )
    estimate = _Estimator(config, counts)
    states, activations = estimate(setting)
    total = states + activations
    fits = None if gpu_memory_gb is None else total <= HEADROOM * gpu_memory_gb * GB
    suggestions = [] if fits is not False else estimate.suggestions(setting, gpu_memory_gb)
    return MemoryPlan(
        world_size=world_size,
        zero_stage=setting.zero_stage,
        precision=precision(training),
        micro_batch=setting.micro_batch,
        seq_len=int(config["data"]["max_length"]),
        gradient_checkpointing=setting.checkpointing,
        lora=setting.lora,
        params_by_part=counts.params_by_part,
        trainable_by_part=(
            {
                **counts.trainable_by_part,
                "language_model": counts.lora_trainable - counts.params_by_part["projector"],
            }
            if setting.lora
            else counts.trainable_by_part
        ),
        largest_layer_params=counts.largest_layer_params,
        model_states_gb_per_gpu=states / GB,
        activations_gb_per_micro_batch=activations / GB,
        total_gb_per_gpu=total / GB,
        gpu_memory_gb=gpu_memory_gb,
        fits=fits,
        suggestions=suggestions,
        model_states_source=_states_source(setting.zero_stage),
    )


def _states_source(zero_stage: int | None) -> str:
    if zero_stage == 3:
        return "deepspeed estimate_zero3_model_states_mem_needs(trainable) + 2*frozen/N"
    if zero_stage in (1, 2):
        return "deepspeed estimate_zero2_model_states_mem_needs(trainable) + 2*frozen"
    return "no DeepSpeed: weights + gradients + 2 AdamW moments in the weights' dtype"


class _Estimator:
    """Memory of a setting for one config and model; searches the nearest setting that fits."""

    def __init__(self, config: dict[str, Any], counts: ModelCounts) -> None:
        self.counts = counts
        self.sixteen_bit = bool(config["training"]["bf16"] or config["training"]["fp16"])
        # Without DeepSpeed the weights keep the dtype `vista train` loads them in (fp16 AMP: float32 master
        # weights); a DeepSpeed engine casts the module to 16 bits for bf16/fp16 runs.
        from vista.builder import resolve_dtype

        loaded = resolve_dtype(config["model"]["dtype"], bf16=bool(config["training"]["bf16"]))
        self.plain_weight_bytes = loaded.itemsize
        self.seq_len = int(config["data"]["max_length"])
        self.eager = config["model"].get("attn_implementation") == "eager"
        self.vista = bool(config["vista"].get("enabled", True))
        self.global_batch = config["training"].get("global_batch_size")
        self.stage = config["stage"]

    def __call__(self, setting: Setting) -> tuple[int, int]:
        width = 2 if self.sixteen_bit else 4
        weight_bytes = self.plain_weight_bytes if setting.zero_stage is None else width
        states = model_state_bytes(self.counts, setting, weight_bytes=weight_bytes)
        activations = activation_bytes(
            self.counts,
            seq_len=self.seq_len,
            micro_batch=setting.micro_batch,
            checkpointing=setting.checkpointing,
            eager_attention=self.eager,
            vista=self.vista,
            element_bytes=width,
        )
        return states, activations

    def total_gb(self, setting: Setting) -> float:
        return sum(self(setting)) / GB

    def _valid(self, setting: Setting) -> bool:
        return not self.global_batch or self.global_batch % (setting.micro_batch * setting.world_size) == 0

    def suggestions(self, current: Setting, gpu_memory_gb: float) -> list[str]:
        """Nearest settings that fit (fewest changed knobs, then the smallest change), as override hints."""
        budget = HEADROOM * gpu_memory_gb
        batches = [b for b in (current.micro_batch >> k for k in range(8)) if b >= 1]
        worlds = [current.world_size * 2**k for k in range(4)]
        zeros = sorted({current.zero_stage, 3}, key=lambda z: z != current.zero_stage)
        checkpoints = sorted({current.checkpointing, True}, key=lambda c: c != current.checkpointing)
        found = []
        for b, ckpt, zero, world in itertools.product(batches, checkpoints, zeros, worlds):
            candidate = Setting(world, zero, b, ckpt)
            if candidate == current or not self._valid(candidate):
                continue
            total = self.total_gb(candidate)
            if total <= budget:
                changed = (
                    b != current.micro_batch,
                    ckpt != current.checkpointing,
                    zero != current.zero_stage,
                )
                changed += (world != current.world_size,)
                cost = (sum(changed), world / current.world_size, current.micro_batch / b)
                found.append((cost, changed, self._describe(candidate, current, total)))
        best: dict[tuple, tuple] = {}  # the best candidate of each set of changed knobs
        for cost, knobs, text in found:
            best[knobs] = min(best.get(knobs, (cost, text)), (cost, text))
        # A set of changes that contains another fitting set is never the nearest: drop it.
        minimal = [k for k in best if not any(o != k and all(a >= b for a, b in zip(k, o)) for o in best)]
        lines = [text for _, text in sorted(best[k] for k in minimal)[:3]]
        if not lines:
            lines.append(
                f"nothing up to 8x the GPUs, ZeRO-3, checkpointing, micro-batch 1 fits {gpu_memory_gb} GB"
            )
        if self.stage == "finetune" and self.counts.lora_trainable:
            lora = Setting(1, current.zero_stage, 1, True, lora=True)
            total = self.total_gb(lora)
            verdict = "fits" if total <= HEADROOM * LORA_GPU_GB else "does not fit"
            lines.append(
                f"LoRA on one {LORA_GPU_GB:.0f} GB GPU (lora.enabled=true, micro-batch 1, gradient checkpointing): "
                f"{total:.1f} GB, {verdict}"
            )
        return lines

    def _describe(self, setting: Setting, current: Setting, total: float) -> str:
        parts = []
        if setting.world_size != current.world_size:
            parts.append(f"--world-size {setting.world_size}")
        if setting.zero_stage != current.zero_stage:
            parts.append(f"training.deepspeed={ZERO3_CONFIG}")
        if setting.checkpointing != current.checkpointing:
            parts.append("training.gradient_checkpointing=true")
        if setting.micro_batch != current.micro_batch:
            parts.append(f"training.per_device_train_batch_size={setting.micro_batch}")
        return f"{' '.join(parts)}: {total:.1f} GB per GPU"


def format_memory_plan(plan: MemoryPlan) -> str:
    """The memory section of ``vista train --dry-run``."""
    zero = f"ZeRO-{plan.zero_stage}" if plan.zero_stage is not None else "no DeepSpeed"
    lines = [
        f"memory per GPU ({plan.world_size} GPUs, {zero}, {plan.precision}, micro-batch {plan.micro_batch} x "
        f"{plan.seq_len} tokens, gradient checkpointing {plan.gradient_checkpointing}"
        + (", LoRA" if plan.lora else "")
        + "):",
        f"  model states  {plan.model_states_gb_per_gpu:8.1f} GB   ({plan.model_states_source}; "
        f"largest layer {plan.largest_layer_params:,} parameters)",
        f"  activations   {plan.activations_gb_per_micro_batch:8.1f} GB   per micro-batch at data.max_length (worst case)",
        f"  total         {plan.total_gb_per_gpu:8.1f} GB",
        f"  activation formula: {plan.activation_source}",
    ]
    if plan.fits is None:
        lines.append("  verdict: give --gpu-memory GB for a fits / does-not-fit verdict")
    else:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"  verdict: {verdict} in {plan.gpu_memory_gb} GB ({HEADROOM:.0%} usable)")
        lines += [f"  try: {s}" for s in plan.suggestions]
    return "\n".join(lines)
