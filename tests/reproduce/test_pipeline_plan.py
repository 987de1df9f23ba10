"""run_all.sh's plans: every profile resolves, the paper profiles use the launcher and the paper's task list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "reproduce" / "pipeline.py"


def dry_run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(PIPELINE), "--dry-run", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tiny_plan_covers_every_variant_seed_and_analysis():
    plan = dry_run("--seeds", "2")
    for variant in ("baseline", "vista", "vista-cosine"):
        for seed in (1, 2):
            assert f"train-{variant}-seed{seed}" in plan and f"eval-{variant}-seed{seed}" in plan
    for stage in ("theory", "world", "foundations", "probes", "mi", "tables", "report"):
        assert f"] {stage}:" in plan
    assert plan.count("vista.cli train") == 2 * 3 * 2


@pytest.mark.parametrize("profile", ["llava-1.5-7b", "tinyllava-3b"])
def test_paper_profiles_use_the_launcher_presets_and_paper_tasks(profile):
    plan = dry_run("--profile", profile)
    assert (
        f"deepspeed --num_gpus 8 --module vista.cli train --config {ROOT}/reproduce/configs/{profile}/pretrain.yaml"
        in plan
    )
    assert f"reproduce/configs/{profile}/finetune.yaml" in plan
    assert "--tasks paper" in plan and "--device cuda" in plan
    assert "vista.cli data synth" not in plan


def test_unknown_profile_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, str(PIPELINE), "--profile", "nope", "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "unknown profile 'nope'" in done.stderr


def test_the_last_stage_executes_every_notebook_on_the_run_results():
    plan = dry_run("--seeds", "1", "--out", "/tmp/vista-plan")
    last = plan.strip().splitlines()[-2:]
    assert last[0].endswith("] notebooks: the four notebooks executed on these results (.ipynb + .html)")
    assert last[1].endswith(
        "reproduce/notebooks/run_notebooks.py --results /tmp/vista-plan --out /tmp/vista-plan/notebooks"
    )
    assert "] notebooks:" not in dry_run("--quick")  # the suite's quick run leaves them to the notebook tests
