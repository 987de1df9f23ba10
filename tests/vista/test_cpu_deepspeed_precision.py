"""bf16 + DeepSpeed on a CPU (the paper presets' precision): transformers' GPU-only bf16 check must not refuse it,
and DeepSpeed must stay the engine (a plain ``use_cpu`` would silently drop it). Runs in a subprocess: DeepSpeed's
process group must not leak into other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_helpers import REPO

WORKER = """
import json, sys
from vista.train import _ensure_distributed_env, training_arguments
from vista.train_config import load_config
_ensure_distributed_env(True)  # as vista train does without a launcher
config = load_config(sys.argv[1], ["training.bf16=true", "training.deepspeed=reproduce/configs/deepspeed/zero2.json"])
args = training_arguments(config, 1)
state = args.distributed_state
print(json.dumps({"bf16": args.bf16, "deepspeed": bool(args.deepspeed), "type": str(state.distributed_type),
                  "ds_bf16": args.hf_deepspeed_config.is_true("bf16.enabled")}))
"""


def test_bf16_with_deepspeed_on_cpu_keeps_deepspeed():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    config = str(REPO / "reproduce/configs/tiny/pretrain.yaml")
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, config], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"bf16": True, "deepspeed": True, "type": "DistributedType.DEEPSPEED", "ds_bf16": True}
