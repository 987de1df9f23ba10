"""run_all.sh --profile small: the tiny profile's stages plus the cached `llm` conversion, whose output replaces the
tiny Llama in stage 1, with the small profile's configs (ChatML stage 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "reproduce" / "pipeline.py"


def test_small_plan_converts_the_llm_once_and_trains_every_variant_on_it(tmp_path):
    out = tmp_path / "small"
    done = subprocess.run([sys.executable, str(PIPELINE), "--dry-run", "--profile", "small", "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    assert plan.count("-m vista.pretrained_llm --out") == 1 and f"--out {out / 'llm'}" in plan
    assert "--size 2000 --bench-size 50" in plan
    stage1 = [line for line in plan.splitlines() if "configs/small/pretrain.yaml" in line]
    stage2 = [line for line in plan.splitlines() if "configs/small/finetune.yaml" in line]
    assert len(stage1) == len(stage2) == 3  # baseline, vista, vista-cosine; one seed
    assert all(f"model.language_model={out / 'llm'}" in line for line in stage1)
    assert all(f"model.vision_tower={out / 'foundations' / 'vision'}" in line for line in stage1)
    assert "smollm2__vista-cosine__seed1" in plan
    for stage in ("theory", "world", "foundation-vision", "llm", "probes", "mi", "tables", "report"):
        assert f"] {stage}:" in plan
    # SmolLM2 and its tokenizer replace the tiny Llama: no foundation-language stage, and training does not wait for it
    assert "] foundation-language:" not in plan and "--only language" not in plan
    assert "--only vision\n" in plan
