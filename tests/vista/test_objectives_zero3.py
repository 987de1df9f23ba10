"""The VIRAL-style term and the diagnostics under DeepSpeed ZeRO-3 over two CPU processes equal plain training.

Stage 2 from a saved tiny LLaVA, VISTA and VIRAL-style on, 2 optimizer steps of global batch 8: plain PyTorch in this
process (per-device 4 x gradient accumulation 2) against ``deepspeed --num_gpus 2`` with ZeRO-3 (per-device 4 x 2
ranks; the same micro-batches reach the same steps). Under ZeRO-3 the projector ``viral_projector`` is partitioned
like every other weight (it is a submodule of the model when the engine is built) and gathered around its forward;
the teacher (the model's own frozen vision tower) is called as a submodule, so its weights are gathered too.
Matching logged values after an optimizer step also checks that the projector's gradient reached the optimizer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO, cli_env, corpus, losses, make_dataset, run_cli

from vista.tiny import build_tiny_llava, build_tokenizer, save_tiny_llava
from vista.train import free_port

CONFIG = "reproduce/configs/tiny/finetune.yaml"
pytestmark = pytest.mark.slow
KEYS = (
    "loss",
    "ce_loss",
    "vista_loss",
    "viral_loss",
    "diag_hv_norm",
    "diag_text_erank",
    "diag_hv_target_cos",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("deepspeed")
    root = tmp_path_factory.mktemp("viral_zero3")
    data = make_dataset(root / "data")
    model, processor = build_tiny_llava(tokenizer=build_tokenizer(corpus(), vocab_size=400), seed=0)
    save_tiny_llava(model, processor, root / "stage1")
    common = [
        f"data.json={data['finetune']}", f"data.image_folder={data['images']}", "model.checkpoint=stage1",
        "training.max_steps=2", "training.save_strategy=no", "training.per_device_train_batch_size=4",
        "training.report_to=[]", "objectives.viral.enabled=true",
        "data.sorted_micro_batches=false",  # balanced micro-batches: 1 process x accumulation 2 = 2 ranks
    ]  # fmt: skip
    launch = [
        str(Path(sys.executable).parent / "deepspeed"), "--no_local_rank", "--num_gpus", "2",
        "--master_port", str(free_port()), "--module", "vista.cli", "train", "--config", str(REPO / CONFIG),
        *common, "training.gradient_accumulation_steps=1",
        "training.deepspeed=reproduce/configs/deepspeed/zero3.json", "training.output_dir=zero3x2",
    ]  # fmt: skip
    with open(root / "zero3x2.log", "w") as log:
        process = subprocess.Popen(launch, cwd=root, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
        plain = run_cli(
            root, CONFIG, *common, "training.gradient_accumulation_steps=2", "training.output_dir=plain"
        )
        code = process.wait(timeout=1500)  # DeepSpeed may rebuild its CPU op first (shared cache)
    assert plain == 0
    assert code == 0, f"ZeRO-3 x2 exited {code}:\n{(root / 'zero3x2.log').read_text()[-5000:]}"
    return {"plain": root / "plain", "zero3x2": root / "zero3x2"}


@pytest.mark.parametrize("key", KEYS)
def test_viral_and_diagnostics_under_zero3_match_plain_training(runs, key):
    plain, zero3 = losses(runs["plain"], key), losses(runs["zero3x2"], key)
    assert len(plain) == len(zero3) == 2
    assert zero3 == pytest.approx(plain, rel=1e-4, abs=1e-5)
    if key == "viral_loss":
        assert all(v != 0 for v in plain)  # the term is on
