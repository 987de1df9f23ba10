"""DeepSpeed ZeRO-3 (one CPU process, gloo) gives the same CE, VISTA term and gradients as plain PyTorch.

The DeepSpeed part runs in a subprocess (this file run as a script) so its global process group does not leak into
other tests. The first run compiles DeepSpeed's CPU communication op (~30 s, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vista.train import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_zero3_matches_plain_pytorch(tmp_path):
    pytest.importorskip("deepspeed")
    env = dict(
        os.environ,
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    result_file = tmp_path / "zero3.json"
    proc = subprocess.run(
        [sys.executable, __file__, str(result_file)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"ZeRO-3 worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(result_file.read_text())

    assert result["partitioned_outside_forward"], (
        "lm_head weight was not partitioned: the test would be vacuous"
    )
    assert result["checkpointing"]
    for key in ("ce", "vista", "loss"):
        plain, zero3 = result[key]
        assert abs(plain - zero3) <= 1e-5 * max(1.0, abs(plain)), (key, plain, zero3)
    assert abs(result["vista"][0]) > 1e-4
    assert result["num_grads"] > 20
    assert set(result["missing_grads"]) == set(), result["missing_grads"]
    for name, (diff, scale) in result["grad_diffs"].items():
        assert diff <= 1e-5 * max(scale, 1e-3), (name, diff, scale)
    assert result["projector_grad_norm"] > 0
    assert result["updated_weight_diff"] <= 1e-6


def _worker(result_file: str) -> None:
    import deepspeed
    import torch
    from deepspeed.utils import safe_get_full_grad

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CORPUS, build_tiny_batch

    from vista.loss import VistaConfig
    from vista.model import forward_with_vista
    from vista.tiny import build_tiny_llava, build_tokenizer

    torch.use_deterministic_algorithms(True)
    deepspeed.init_distributed(dist_backend="gloo")
    model, processor = build_tiny_llava(tokenizer=build_tokenizer(CORPUS), seed=0)  # _from_config inside
    model.model.vision_tower.requires_grad_(False)
    texts = [
        "USER: <image>\nDescribe the image. ASSISTANT: A red square.",
        "USER: What is in the picture? ASSISTANT: Two green triangles.",
        "USER: <image> and <image>\nHow many? ASSISTANT: Three.",
    ]
    batch = build_tiny_batch(processor, texts, padding_side="left")
    config = VistaConfig()
    checkpointing = {"activation_checkpointing_kwargs": {"use_reentrant": False}}

    plain = copy.deepcopy(model).train()
    plain.activation_checkpointing_enable(**checkpointing)
    plain_opt = torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.5)
    ref = forward_with_vista(plain, batch, config)
    ref.loss.backward()
    ref_grads = {n: p.grad.detach().clone() for n, p in plain.named_parameters() if p.requires_grad}
    plain_opt.step()

    model.train()
    model.activation_checkpointing_enable(**checkpointing)
    ds_config = {
        "train_micro_batch_size_per_gpu": len(texts),
        "gradient_accumulation_steps": 1,
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,  # partition even the tiny parameters
            "stage3_max_live_parameters": 0,
            "stage3_prefetch_bucket_size": 0,
        },
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    partitioned = engine.module.lm_head.weight.numel() == 0
    out = forward_with_vista(engine, batch, config)
    engine.backward(out.loss)

    grad_diffs, missing = {}, []
    for name, param in engine.module.named_parameters():
        if not param.requires_grad:
            continue
        grad = safe_get_full_grad(param)
        if grad is None:
            missing.append(name)
            continue
        grad_diffs[name] = (float((grad - ref_grads[name]).abs().max()), float(ref_grads[name].abs().max()))
    projector_norm = sum(
        float(safe_get_full_grad(p).norm()) for p in engine.module.model.multi_modal_projector.parameters()
    )
    engine.step()
    weight = engine.module.model.multi_modal_projector.linear_1.weight
    with deepspeed.zero.GatheredParameters([weight]):
        updated_diff = float(
            (weight.detach() - plain.model.multi_modal_projector.linear_1.weight.detach()).abs().max()
        )

    result = {
        "partitioned_outside_forward": partitioned,
        "checkpointing": bool(engine.module.model.language_model.gradient_checkpointing),
        "ce": [float(ref.ce_loss), float(out.ce_loss)],
        "vista": [float(ref.vista.loss), float(out.vista.loss)],
        "loss": [float(ref.loss), float(out.loss)],
        "num_grads": len(grad_diffs),
        "missing_grads": missing,
        "grad_diffs": grad_diffs,
        "projector_grad_norm": projector_norm,
        "updated_weight_diff": updated_diff,
    }
    Path(result_file).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    _worker(sys.argv[1])
