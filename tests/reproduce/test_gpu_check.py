"""``reproduce/benchmarks/gpu_check.py``: its CPU mode end to end, budget skips, the out-of-memory fallback.

The CPU mode runs the same code as a GPU run at small sizes; timings here check nothing (a 2-core shared machine),
the shapes, the summary and the last line do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "reproduce" / "benchmarks" / "gpu_check.py"
LAST_LINE = re.compile(r"^loop_speedup=(\S+) overhead_ratio=(\S+) mem_plan_ratio=(\S+)$")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(gpu_check, *argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = gpu_check.main(list(argv))
    return status, out.getvalue().splitlines()


@pytest.fixture(scope="module")
def cpu_run(gpu_check, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    status, lines = run(gpu_check, "--device", "cpu", "--budget-s", "300", "--out", str(folder))
    files = list(folder.glob("gpu_check_cpu_*.json"))
    assert len(files) == 1, lines[-20:]
    return status, lines, json.loads(files[0].read_text())


def test_cpu_mode_runs_every_part_and_ends_with_the_summary_line(cpu_run):
    status, lines, summary = cpu_run
    assert status == 0, "\n".join(lines[-40:])
    assert {name: part["status"] for name, part in summary["parts"].items()} == {
        "loss": "done",
        "llava-1.5-7b": "done",
        "tinyllava-3b": "done",
    }
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    speedup, overhead, memory = (float(x) for x in match.groups())
    assert speedup > 0 and 0.3 < overhead < 3  # finite, measured; CPU timings are not a claim
    assert math.isnan(memory)  # peak memory is read from the CUDA allocator only
    headline = summary["headline"]
    assert f"{headline['loop_speedup']:.2f}" == match.group(1)
    assert f"{headline['overhead_ratio']:.4f}" == match.group(2)
    assert headline["mem_plan_ratio"] is None  # nan is stored as null: strict JSON
    step = summary["parts"]["llava-1.5-7b"]
    # the logging step's arm ran (a measurement, not a claim on CPU)
    assert 0.3 < step["diagnostics_ratio"] < 10
    assert "ce+vista+diagnostics" in step["times"]


def test_cpu_mode_loss_part_compares_both_dtypes(cpu_run):
    loss = cpu_run[2]["parts"]["loss"]
    assert (loss["batch"], loss["image_tokens"], loss["text_tokens"]) == (16, 576, 128)
    for dtype in ("bf16", "fp32"):
        assert loss[dtype]["status"] == "done"
        assert set(loss[dtype]["times"]) == {"loop", "vectorised"}
        assert all(arm["n"] >= 3 for arm in loss[dtype]["times"].values())
    assert loss["loop_speedup"] == loss["bf16"]["loop_speedup"]


@pytest.mark.parametrize(
    ("preset", "image_tokens", "precision"), [("llava-1.5-7b", 576, "bf16"), ("tinyllava-3b", 729, "fp16")]
)
def test_cpu_mode_training_parts_run_the_preset_architecture(cpu_run, preset, image_tokens, precision):
    part = cpu_run[2]["parts"][preset]
    # the preset's image tokens (CLIP-336 without CLS: 576; SigLIP-384: 729) + 64 text tokens, micro-batch 2
    assert (part["image_tokens"], part["seq_len"], part["micro_batch"]) == (
        image_tokens,
        image_tokens + 64,
        2,
    )
    assert (part["text_layers"], part["vision_layers"], part["precision"]) == (2, 2, precision)
    assert part["gradient_checkpointing"] and part["stage"] == "finetune"
    assert part["parameters"]["projector"] > 0 and part["trainable_parameters"] < part["parameters"]["all"]
    assert all(arm["n"] >= 2 for arm in part["times"].values())
    plan = part["memory_plan"]  # the plan of the same config (true width on CPU): same batch, length, depth
    assert (plan["micro_batch"], plan["seq_len"], plan["zero_stage"]) == (2, image_tokens + 64, None)
    assert plan["total_gb_per_gpu"] > 0 and "CUDA" in part["mem_plan_reason"]


def test_no_budget_skips_every_part_with_a_reason(gpu_check, tmp_path):
    status, lines = run(gpu_check, "--device", "cpu", "--budget-s", "0", "--out", str(tmp_path))
    assert status == 0
    reasons = dict(line.split(" skipped: ") for line in lines if " skipped: " in line)
    assert reasons["[loss]"] == "no time for either dtype"
    assert (
        reasons["[llava-1.5-7b]"]
        == reasons["[tinyllava-3b]"]
        == "0 s left for this part, it needs at least 5 s"
    )
    assert lines[-1] == "loop_speedup=nan overhead_ratio=nan mem_plan_ratio=nan"


def test_out_of_memory_or_slow_steps_halve_the_layers_and_the_ratio_uses_the_plan(gpu_check, monkeypatch):
    def fake_measure(config, device, sizes, deadline):
        layers = config["model"]["text_layers"]
        if layers > 4:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {layers} layers")
        if layers > 2:
            raise gpu_check.TooSlow(f"too slow at {layers} layers")
        return {"peak_allocated_gb": {"ce+vista": 10.0}, "model_states_gb": 4.0, "text_layers": layers,
                "micro_batch": 16, "seq_len": 2048, "overhead_ratio": 1.0, "diagnostics_ratio": 1.0}  # fmt: skip

    monkeypatch.setattr(gpu_check, "measure_step", fake_measure)
    sizes = gpu_check.SIZES["cuda"]
    result = gpu_check.part_train("llava-1.5-7b", torch.device("cpu"), sizes, float("inf"), max_layers=8)
    retries = [(a["text_layers"], a["error"]) for a in result["smaller_retries"]]
    assert retries == [(8, "CUDA out of memory at 8 layers"), (4, "too slow at 4 layers")]
    plan = gpu_check.plan_for(gpu_check.preset_config("llava-1.5-7b", 2), None)[0]
    assert result["memory_plan"]["total_gb_per_gpu"] == pytest.approx(plan.total_gb_per_gpu)
    assert result["mem_plan_ratio"] == pytest.approx(10.0 / plan.total_gb_per_gpu)
    assert result["model_states_ratio"] == pytest.approx(4.0 / plan.model_states_gb_per_gpu)
    assert result["activations_ratio"] == pytest.approx(6.0 / plan.activations_gb_per_micro_batch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when there is no CUDA device")
def test_cuda_without_a_device_is_a_clear_error(gpu_check, capsys):
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
