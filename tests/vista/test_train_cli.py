"""`vista train` end to end on CPU: stage 1 then stage 2, baseline and VISTA, from tiny saved foundations
(the GPU presets' code path: model.vision_tower / model.language_model) and a generated LLaVA-JSON dataset.

Runs go through ``vista.cli.main`` in this process (the console script's entry point; subprocess launches are
covered by tests/vista/test_deepspeed.py). About 1.5 minutes on 2 busy cores.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from train_helpers import REPO, losses, make_foundations, make_world_dataset, run_cli, world_tokenizer
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPVisionModel, LlamaForCausalLM

from vista.train_config import ConfigError, load_config
from vista.train_plan import plan

PRETRAIN = "reproduce/configs/tiny/pretrain.yaml"
FINETUNE = "reproduce/configs/tiny/finetune.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train_cli")
    data = make_world_dataset(root / "data", size=48)  # vista data synth --size 48
    return {
        "root": root,
        "data": data,
        "foundations": make_foundations(root / "foundations", tokenizer=world_tokenizer(data)),
    }


def _data(ws: dict, stage: str) -> list[str]:
    return [f"data.json={ws['data'][stage]}", f"data.image_folder={ws['data']['images']}"]


@pytest.fixture(scope="module")
def runs(workspace) -> dict[str, Path]:
    """Stage 1 (2 epochs, 12 steps, a checkpoint at step 3) then stage 2 (3 epochs), baseline and VISTA."""
    ws, root = workspace, workspace["root"]
    out = {}
    for variant in ("baseline", "vista"):
        code = run_cli(
            root,
            PRETRAIN,
            f"variant={variant}",
            *_data(ws, "pretrain"),
            f"model.vision_tower={ws['foundations']['vision']}",
            f"model.language_model={ws['foundations']['lm']}",
            "training.num_train_epochs=2",
            "training.save_steps=3",
            "training.save_total_limit=null",
            "training.output_dir=runs/{variant}/pretrain",
        )
        assert code == 0
        code = run_cli(
            root,
            FINETUNE,
            f"variant={variant}",
            *_data(ws, "finetune"),
            "model.checkpoint=runs/{variant}/pretrain",
            "training.num_train_epochs=3",
            "training.output_dir=runs/{variant}/finetune",
        )
        assert code == 0
        out[f"{variant}/pretrain"] = root / "runs" / variant / "pretrain"
        out[f"{variant}/finetune"] = root / "runs" / variant / "finetune"
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "run", ["baseline/pretrain", "baseline/finetune", "vista/pretrain", "vista/finetune"]
)
def test_loss_falls(runs, run):
    curve = losses(runs[run])
    ce = losses(runs[run], "ce_loss")
    assert len(curve) >= 12 and all(torch.isfinite(torch.tensor(curve)))
    assert _mean(curve[-3:]) < _mean(curve[:3]) - 0.05, curve
    assert _mean(ce[-3:]) < _mean(ce[:3]) - 0.05, ce


@pytest.mark.parametrize("variant", ["baseline", "vista"])
def test_logged_parts_add_up(runs, variant):
    """Baseline: loss is the cross-entropy alone (VISTA still logged); VISTA: loss = ce_loss + vista_loss."""
    rows = [
        r
        for r in json.loads((runs[f"{variant}/finetune"] / "trainer_state.json").read_text())["log_history"]
        if "ce_loss" in r
    ]
    assert rows and any(row["vista_samples"] > 0 for row in rows)
    for row in rows:
        expected = row["ce_loss"] + (row["vista_loss"] if variant == "vista" else 0.0)
        assert row["loss"] == pytest.approx(expected, abs=1e-4)
        if row["vista_samples"] > 0:
            assert row["vista_loss"] > 0 and "vista_similarity" in row
        else:  # a window of text-only batches (length-grouped sampling): no term, no similarity, nothing faked
            assert row["vista_loss"] == 0 and "vista_similarity" not in row


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {different[:5]} changed"


def test_stage1_leaves_vision_and_llm_bit_identical(runs, workspace):
    vision = _state(CLIPVisionModel.from_pretrained(workspace["foundations"]["vision"]))
    lm = LlamaForCausalLM.from_pretrained(workspace["foundations"]["lm"])
    llm, head = _state(lm.model), _state(lm.lm_head)
    run = runs["vista/pretrain"]
    projectors = []
    for folder in (run / "checkpoint-3", run):
        model = AutoModelForImageTextToText.from_pretrained(folder)
        _assert_equal(_state(model.model.vision_tower), vision, f"{folder} vision tower")
        _assert_equal(_state(model.model.language_model), llm, f"{folder} LLM")
        _assert_equal(_state(model.lm_head), head, f"{folder} lm_head")
        projectors.append(_state(model.model.multi_modal_projector))
    changed = [k for k in projectors[0] if not torch.equal(projectors[0][k], projectors[1][k])]
    assert changed, "the projector did not train between step 3 and the end of stage 1"


def test_stage2_trains_llm_and_projector_not_vision(runs):
    stage1 = AutoModelForImageTextToText.from_pretrained(runs["vista/pretrain"])
    stage2 = AutoModelForImageTextToText.from_pretrained(runs["vista/finetune"])
    _assert_equal(_state(stage2.model.vision_tower), _state(stage1.model.vision_tower), "vision tower")
    for part in ("language_model", "multi_modal_projector"):
        a, b = _state(getattr(stage1.model, part)), _state(getattr(stage2.model, part))
        assert any(not torch.equal(a[k], b[k]) for k in a), f"{part} did not train in stage 2"


def test_checkpoint_reloads_offline_and_generates(runs, workspace):
    folder = runs["vista/finetune"]
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    record = next(r for r in json.loads(workspace["data"]["finetune"].read_text()) if "image" in r)
    image = Image.open(workspace["data"]["images"] / record["image"])
    question = record["conversations"][0]["value"]  # starts with <image>
    inputs = processor(images=[image], text=[f"USER: {question} ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 6
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


@pytest.mark.parametrize("variant", ["baseline", "vista"])
def test_run_metadata(runs, variant):
    meta = json.loads((runs[f"{variant}/finetune"] / "vista_run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["template"] == "vicuna_v1" and meta["stage"] == "finetune" and meta["variant"] == variant
    assert meta["vista"]["enabled"] is (variant == "vista") and meta["vista"]["distance"] == "l2"
    assert meta["world_size"] == 1 and meta["precision"] == "fp32" and meta["global_batch_size"] == 8
    assert meta["num_train_samples"] == 48 and meta["data_skip_report"]["num_skipped"] == 0
    assert set(meta["git"]) == {"commit", "dirty"} and meta["packages"]["transformers"]
    configured = yaml.safe_load((REPO / "reproduce" / "configs" / "tiny" / "finetune.yaml").read_text())
    assert meta["config"]["training"]["learning_rate"] == pytest.approx(
        float(configured["training"]["learning_rate"])
    )
    assert (
        meta["parameters"]["vision_tower"]["trainable"] == 0
        and meta["parameters"]["language_model"]["trainable"] > 0
    )
    pretrain = json.loads((runs[f"{variant}/pretrain"] / "vista_run.json").read_text())
    assert pretrain["template"] == "plain" and pretrain["parameters"]["language_model"]["trainable"] == 0
    assert (runs[f"{variant}/pretrain"] / "checkpoint-3" / "vista_run.json").is_file()
    assert any((runs[f"{variant}/finetune"] / "runs").rglob("events.out.tfevents.*")), "no tensorboard logs"


def test_resume_continues_the_same_loss_curve(runs, workspace):
    root = workspace["root"]
    common = [
        *_data(workspace, "finetune"),
        "model.checkpoint=runs/vista/pretrain",
        "training.max_steps=6",
        "training.save_steps=3",
        "training.save_total_limit=null",
    ]
    assert run_cli(root, FINETUNE, *common, "training.output_dir=resume/full") == 0
    # An interruption after step 3: only checkpoint-3 survives.
    (root / "resume/cut").mkdir(parents=True)
    shutil.copytree(root / "resume/full/checkpoint-3", root / "resume/cut/checkpoint-3")
    assert (
        run_cli(
            root, FINETUNE, *common, "training.output_dir=resume/cut", "training.resume_from_checkpoint=auto"
        )
        == 0
    )
    full, resumed = losses(root / "resume/full"), losses(root / "resume/cut")
    assert len(full) == len(resumed) == 6
    assert resumed == pytest.approx(full, rel=1e-5, abs=1e-6)


def test_nan_loss_stops_the_run_with_a_message(runs, workspace, capsys):
    root = workspace["root"]
    code = run_cli(
        root,
        FINETUNE,
        *_data(workspace, "finetune"),
        "model.checkpoint=runs/vista/pretrain",
        "training.max_steps=6",
        "training.save_steps=1",
        "training.save_total_limit=null",
        "training.learning_rate=1e30",
        "training.warmup_ratio=0",
        "training.output_dir=nan",
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "non-finite training loss at optimizer step 2" in err and "ce_loss=nan" in err
    # No checkpoint is written at or after the bad step; the run did not finish.
    assert sorted(p.name for p in (root / "nan").glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((root / "nan" / "vista_run.json").read_text())["status"] == "running"


def test_lora_option_trains_and_saves_a_plain_llava(runs, workspace):
    root = workspace["root"]
    code = run_cli(
        root,
        FINETUNE,
        *_data(workspace, "finetune"),
        "model.checkpoint=runs/vista/pretrain",
        "lora.enabled=true",
        "lora.r=4",
        "lora.alpha=8",
        "training.max_steps=3",
        "training.save_strategy=no",
        "training.output_dir=lora",
    )
    assert code == 0
    model = AutoModelForImageTextToText.from_pretrained(root / "lora")
    assert not any("lora" in name for name, _ in model.named_parameters())
    stage1 = AutoModelForImageTextToText.from_pretrained(runs["vista/pretrain"])
    _assert_equal(_state(model.model.vision_tower), _state(stage1.model.vision_tower), "vision tower")
    a, b = _state(stage1.model.language_model), _state(model.model.language_model)
    assert any(not torch.equal(a[k], b[k]) for k in a), "LoRA merge left the LLM unchanged"
    meta = json.loads((root / "lora" / "vista_run.json").read_text())
    trainable = meta["parameters"]
    assert 0 < trainable["language_model"]["trainable"] < trainable["language_model"]["total"] / 2


# ------------------------------------------------------------------------------------------------------ dry runs

PAPER = {
    "pretrain": {"global_batch_size": 256, "learning_rate": 1e-3, "zero_stage": 2},
    "finetune": {"global_batch_size": 128, "learning_rate": 2e-5, "zero_stage": 3},
}


@pytest.mark.parametrize("preset", ["llava-1.5-7b", "tinyllava-3b"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_dry_run_reports_the_paper_hyperparameters(preset, stage, capsys, tmp_path):
    code = run_cli(tmp_path, f"reproduce/configs/{preset}/{stage}.yaml", "--dry-run", "--world-size", "8")
    text = capsys.readouterr().out
    assert code == 0
    expected = PAPER[stage]
    assert (
        f"world size 8 x per-device {expected['global_batch_size'] // 8} x grad accumulation 1 = global batch "
        f"{expected['global_batch_size']}" in text
    )
    assert f"DeepSpeed ZeRO-{expected['zero_stage']}" in text
    assert f"learning_rate {expected['learning_rate']}" in text
    for fragment in (
        "num_train_epochs 1",
        "weight_decay 0.0",
        "warmup_ratio 0.03",
        "lr_scheduler_type cosine",
    ):
        assert fragment in text
    max_length = 2048 if preset == "llava-1.5-7b" else 3072  # TinyLLaVA-VISTA's scripts use 3072
    assert f"max length {max_length}" in text
    assert "<- differs" not in text
    # The same plan for 4 processes keeps the global batch through gradient accumulation.
    info = plan(load_config(REPO / f"reproduce/configs/{preset}/{stage}.yaml"), world_size=4)
    assert info["batch"]["gradient_accumulation_steps"] == 2
    assert info["batch"]["global_batch_size"] == expected["global_batch_size"]


def test_dry_run_counts_llava_parameters_from_known_formulas():
    """CLIP ViT-L/14-336 tower 303,507,456; mlp2x_gelu 1024->4096->4096; Llama-2-7B 6,738,415,616 + <image> rows."""
    info = plan(load_config(REPO / "reproduce/configs/llava-1.5-7b/pretrain.yaml"), world_size=8)
    projector = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
    llm = 6_738_415_616 + 2 * 4096  # one new embedding row and one new lm_head row for <image>
    for stage, trainable in (("pretrain", projector), ("finetune", projector + llm)):
        report = info["parameters"][stage]
        assert report["projector"]["total"] == projector
        assert report["language_model"]["total"] == llm
        assert report["vision_tower"] == {"trainable": 0, "total": 303_507_456}
        assert report["all"]["trainable"] == trainable
    assert info["model"]["image_tokens_per_image"] == 576


def test_dry_run_variants_and_overrides():
    config = load_config(REPO / "reproduce/configs/llava-1.5-7b/finetune.yaml", ["variant=vista-cosine"])
    assert config["vista"] == {"enabled": True, "distance": "cosine", "weighting": "position"}
    assert config["model"]["checkpoint"] == "runs/llava-1.5-7b/vista-cosine/pretrain"
    config = load_config(REPO / "reproduce/configs/tinyllava-3b/finetune.yaml", ["variant=vista-cosine"])
    assert config["vista"]["weighting"] == "linear"
    config = load_config(
        REPO / "reproduce/configs/tiny/pretrain.yaml",
        ["variant=baseline", "training.learning_rate=3e-4", "training.save_strategy=no"],
    )
    assert config["vista"] == {"enabled": False}
    assert config["training"]["learning_rate"] == 3e-4 and config["training"]["save_strategy"] == "no"


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.learning_rat=1", "training.learning_rat"),
        ("model.vison_tower=x", "model.vison_tower"),
        ("variant=vista-l1", "unknown variant 'vista-l1'"),
        ("vista.distance=l1", "distance='l1'"),
        ("stage=stage3", "unknown stage 'stage3'"),
        ("training.learning_rate=abc", "training.learning_rate='abc' is not a number; expected a number > 0"),
        ("training.lerning_rate=1e-3", "did you mean 'training.learning_rate'?"),
        ("data.max_length=0", "data.max_length=0 is out of range; expected a whole number >= 1, e.g. data."),
        ("training.bf16=yes", "training.bf16='yes' is not true or false"),
        ("training.eval_steps=abc", "training.eval_steps='abc' is not a number"),
        ("model.finetune_top_layers=2", "model.finetune_top_layers needs stage finetune"),
        ("model.finetune_top_layers=0", "model.finetune_top_layers=0 is out of range"),
        ("data.length_group_megabatches=0", "data.length_group_megabatches=0 is out of range"),
        ("data.length_group_megabatches=4", "needs data.group_by_modality_length=true"),
        (
            "data.sorted_micro_batches=true",
            "data.sorted_micro_batches needs data.group_by_modality_length=true",
        ),
        ("data.sorted_micro_batches=maybe", "data.sorted_micro_batches='maybe' is not true or false"),
    ],
)
def test_config_errors_name_the_file_and_key(override, message):
    path = REPO / "reproduce/configs/llava-1.5-7b/pretrain.yaml"
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert message in str(error.value) and str(path) in str(error.value)


def test_a_mistake_on_the_command_line_is_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((REPO / PRETRAIN).read_text().replace("learning_rate:", "learnin_rate:"))
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'training.learnin_rate'"):
        load_config(path)  # in the file
    with pytest.raises(
        ConfigError, match=r"^command-line override \(config .*\): unknown key 'training.seeed'"
    ):
        load_config(REPO / PRETRAIN, ["training.seeed=1"])
    override_value = r"^command-line override \(config .*\): training.seed='abc' is not"
    with pytest.raises(ConfigError, match=override_value):
        load_config(REPO / PRETRAIN, ["training.seed=abc"])  # a wrong value typed there
    with pytest.raises(
        ConfigError, match=r"^command-line override \(config .*\): vista.distance='L2' is not"
    ):
        load_config(REPO / PRETRAIN, ["vista.distance=L2"])  # a VistaConfig choice typed there
    typo = r"^command-line override \(config .*\): objectives.virall .*did you mean 'objectives.viral'"
    with pytest.raises(ConfigError, match=typo):
        load_config(REPO / PRETRAIN, ["objectives.virall.enabled=true"])  # an objectives key typed there
    path.write_text((REPO / PRETRAIN).read_text() + "objectives: {virall: {enabled: true}}\n")
    with pytest.raises(ConfigError, match=r"objectives.viral.teacher=/nonexistent: no such folder"):
        load_config(
            REPO / PRETRAIN, ["objectives.viral.enabled=true", "objectives.viral.teacher=/nonexistent"]
        )
    with pytest.raises(ConfigError, match=rf"^{path}: objectives.virall"):
        load_config(path, ["objectives.viral.enabled=true"])  # the file's mistake, whatever the command adds
    path.write_text((REPO / PRETRAIN).read_text().replace("seed: 42", "seed: abc"))
    with pytest.raises(ConfigError, match=rf"^{path}: training.seed='abc' is not"):
        load_config(path)  # the same value in the file


def test_global_batch_must_divide(capsys, tmp_path):
    code = run_cli(tmp_path, "reproduce/configs/llava-1.5-7b/pretrain.yaml", "--dry-run", "--world-size", "3")
    assert code == 2
    assert "global_batch_size=256 is not a multiple" in capsys.readouterr().err


def test_bf16_and_gradient_checkpointing_run(runs, workspace):
    root = workspace["root"]
    overrides = [
        *_data(workspace, "finetune"),
        "model.checkpoint=runs/vista/pretrain",
        "training.bf16=true",
        "training.gradient_checkpointing=true",
        "training.max_steps=2",
        "training.save_strategy=no",
        "training.output_dir=bf16",
    ]
    assert run_cli(root, FINETUNE, *overrides) == 0
    meta = json.loads((root / "bf16" / "vista_run.json").read_text())
    assert meta["precision"] == "bf16" and meta["config"]["training"]["gradient_checkpointing"] is True
    assert all(math.isfinite(x) for x in losses(root / "bf16"))


def test_dry_run_counts_the_data(workspace):
    config = load_config(REPO / FINETUNE, _data(workspace, "finetune"))
    data = plan(config, world_size=2)["data"]
    counts = json.loads(workspace["data"]["manifest"].read_text())["counts"]  # the generator's own count
    assert (data["samples"], data["with_image"], data["text_only"]) == (48, 45, 3)
    assert (counts["finetune"], counts["finetune_text_only"]) == (48, 3)


def test_quiet_training_prints_no_bars_and_no_log_dicts(runs, workspace, capfd, monkeypatch):
    """`vista -q train`: warnings only. The dataset's bars passed ``disable=False`` (which beats ``TQDM_DISABLE``)
    and the Trainer printed every log dict; the logs still reach trainer_state.json."""
    for name, value in (
        ("TQDM_DISABLE", "0"),
        ("TRANSFORMERS_VERBOSITY", "info"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "0"),
    ):
        monkeypatch.setenv(name, value)  # restored afterwards: `-q` sets them for the process
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils.logging import enable_progress_bar

    from vista.cli import main

    root = workspace["root"]
    monkeypatch.chdir(root)
    argv = ["-q", "train", "--config", str(REPO / FINETUNE), *_data(workspace, "finetune"),
            "model.checkpoint=runs/baseline/pretrain", "training.max_steps=2", "training.output_dir=quiet"]  # fmt: skip
    capfd.readouterr()
    try:
        assert main(argv) == 0
    finally:
        enable_progress_bar(), enable_progress_bars()
    out, err = capfd.readouterr()
    for noise in (
        "checking records",
        "tokenizing",
        "Loading weights",
        "Writing model shards",
        "'loss'",
        "it/s",
    ):
        assert noise not in out + err, f"{noise!r} printed under -q:\n{(out + err)[-2000:]}"
    state = json.loads((root / "quiet" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "ce_loss" in e] == [1, 2]
