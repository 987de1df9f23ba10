"""The per-GPU memory plan (``vista.memory_plan``) and the depth overrides of the paper presets (meta device only)."""

from __future__ import annotations

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from train_helpers import REPO

from vista import memory_plan
from vista.builder import plan_llava_config
from vista.train_config import ConfigError, load_config
from vista.train_plan import plan

LLAVA_FINETUNE = REPO / "reproduce/configs/llava-1.5-7b/finetune.yaml"
LLAVA_PRETRAIN = REPO / "reproduce/configs/llava-1.5-7b/pretrain.yaml"
TINYLLAVA_PRETRAIN = REPO / "reproduce/configs/tinyllava-3b/pretrain.yaml"


def test_depth_overrides_cut_depth_and_keep_the_width():
    config = load_config(LLAVA_FINETUNE, ["model.text_layers=2", "model.vision_layers=1"])
    llava, _ = plan_llava_config(config["model"] | {"checkpoint": None})
    text, vision = llava.text_config, llava.vision_config
    assert (text.num_hidden_layers, vision.num_hidden_layers) == (2, 1)
    assert (text.hidden_size, text.num_attention_heads, text.intermediate_size) == (4096, 32, 11008)
    assert (vision.hidden_size, vision.image_size, llava.image_seq_length) == (1024, 336, 576)
    assert (llava.image_token_id, text.vocab_size) == (32000, 32001)

    config = load_config(TINYLLAVA_PRETRAIN, ["model.text_layers=1", "model.vision_layers=1"])
    llava, _ = plan_llava_config(config["model"])
    text = llava.text_config
    assert (text.num_hidden_layers, llava.vision_config.num_hidden_layers) == (1, 1)
    assert (text.hidden_size, text.rope_parameters["partial_rotary_factor"], llava.image_seq_length) == (
        2560,
        0.4,
        729,
    )
    assert (text.bos_token_id, text.eos_token_id, text.resid_pdrop) == (
        50256,
        50256,
        0.1,
    )  # Phi-2's config.json
    # Phi-2's tokenizer has 50,295 tokens in a table of 51,200: <image> takes 50295, the table does not grow.
    assert (llava.image_token_id, text.vocab_size) == (50295, 51200)


@pytest.mark.parametrize("override", ["model.text_layers=0", "model.vision_layers=x", "model.text_layers=33"])
def test_bad_depth_overrides_are_config_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        plan(load_config(LLAVA_PRETRAIN, [override]), 8)


def test_model_states_follow_deepspeeds_estimators_plus_frozen_weights():
    config = load_config(LLAVA_FINETUNE)  # ZeRO-3, stage 2: projector + LM train, vision tower frozen
    result = memory_plan.plan_memory(config, world_size=8)
    trainable = sum(result.trainable_by_part.values())
    frozen = sum(result.params_by_part.values()) - trainable
    assert frozen == result.params_by_part["vision_tower"] > 300e6
    _, gpu, _ = estimate_zero3_model_states_mem_needs(
        trainable,
        result.largest_layer_params,
        num_gpus_per_node=8,
        cpu_offload=False,
        cpu_offload_params=False,
    )
    assert result.model_states_gb_per_gpu * 2**30 == pytest.approx(gpu + 2 * frozen / 8, rel=1e-9)
    assert result.largest_layer_params == 32001 * 4096  # the embedding table (or lm_head)

    config = load_config(LLAVA_PRETRAIN)  # ZeRO-2, stage 1: only the projector trains
    result = memory_plan.plan_memory(config, world_size=8)
    trainable = sum(result.trainable_by_part.values())
    assert trainable == result.params_by_part["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    _, gpu = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=8, cpu_offload=False)
    frozen = sum(result.params_by_part.values()) - trainable
    assert result.model_states_gb_per_gpu * 2**30 == pytest.approx(gpu + 2 * frozen, rel=1e-9)


def test_without_deepspeed_states_use_the_dtype_training_loads():
    """fp16 AMP loads float32 weights (gradients and AdamW moments follow them); bf16 loads bfloat16 weights."""
    fp16 = load_config(REPO / "reproduce/configs/tinyllava-3b/finetune.yaml", ["training.deepspeed=null"])
    result = memory_plan.plan_memory(fp16, world_size=1)
    total, trainable = sum(result.params_by_part.values()), sum(result.trainable_by_part.values())
    assert result.model_states_gb_per_gpu * 2**30 == pytest.approx(4 * total + 12 * trainable, rel=1e-9)
    bf16 = load_config(LLAVA_FINETUNE, ["training.deepspeed=null"])
    result = memory_plan.plan_memory(bf16, world_size=1)
    total, trainable = sum(result.params_by_part.values()), sum(result.trainable_by_part.values())
    assert result.model_states_gb_per_gpu * 2**30 == pytest.approx(2 * total + 6 * trainable, rel=1e-9)


def test_activation_formula_by_hand():
    counts = memory_plan.ModelCounts(
        params_by_part={"language_model": 1},
        trainable_by_part={"language_model": 1},
        largest_layer_params=1,
        hidden=8,
        intermediate=20,
        layers=3,
        heads=2,
        vocab=50,
        gated_mlp=True,
        lora_trainable=0,
    )
    s, b = 10, 2
    layer = s * b * (18 * 8 + 8 * 20)
    head, vista = 10 * s * b * 50, 8 * s * b * 8
    kwargs = {"seq_len": s, "micro_batch": b}
    assert memory_plan.activation_bytes(counts, checkpointing=False, **kwargs) == 3 * layer + head + vista
    assert (
        memory_plan.activation_bytes(counts, checkpointing=True, **kwargs)
        == 3 * 2 * s * b * 8 + layer + head + vista
    )
    eager = memory_plan.activation_bytes(
        counts, checkpointing=False, eager_attention=True, vista=False, **kwargs
    )
    assert eager == 3 * (layer + 5 * 2 * s * s * b) + head


def test_verdict_and_nearest_setting():
    config = load_config(LLAVA_FINETUNE)
    roomy = memory_plan.plan_memory(config, 8, gpu_memory_gb=80)
    assert roomy.fits is True and roomy.suggestions == []
    assert memory_plan.plan_memory(config, 8).fits is None
    tight = memory_plan.plan_memory(config, 8, gpu_memory_gb=24)
    assert tight.fits is False and tight.total_gb_per_gpu > 0.9 * 24
    assert tight.suggestions and "per_device_train_batch_size" in tight.suggestions[0]
    assert any(line.startswith("LoRA on one 24 GB GPU") for line in tight.suggestions)
    assert set(tight.to_dict()) >= {"params_by_part", "model_states_gb_per_gpu", "fits", "suggestions"}


def test_dry_run_prints_the_memory_plan(capsys):
    from vista.cli import main

    code = main(
        ["train", "--config", str(LLAVA_FINETUNE), "--dry-run", "--world-size", "8", "--gpu-memory", "24"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "memory per GPU (8 GPUs, ZeRO-3" in out and "does NOT fit in 24.0 GB" in out and "try:" in out


def test_a_checkpoint_keeps_its_depth(tmp_path):
    config = load_config(LLAVA_FINETUNE, ["model.text_layers=1", "model.vision_layers=1"])
    planned, _ = plan_llava_config(config["model"] | {"checkpoint": None})
    planned.save_pretrained(tmp_path)  # stands for stage 1's output (config.json is what planning reads)
    same, _ = plan_llava_config(config["model"] | {"checkpoint": str(tmp_path)})
    assert same.text_config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="model.text_layers=2 but the checkpoint .* has 1 layers"):
        plan_llava_config(config["model"] | {"checkpoint": str(tmp_path), "text_layers": 2})
