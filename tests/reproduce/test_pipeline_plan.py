"""run_all.sh's plans: every profile resolves, the paper profiles use the launcher and the paper's task list."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "reproduce" / "pipeline.py"
sys.path.insert(0, str(ROOT / "reproduce"))
import pipeline  # noqa: E402
from stages import simulate  # noqa: E402


def plan_stages(profile: str, out: Path, *, quick: bool = False, seeds: int | None = None) -> list:
    """The stages ``run_all.sh --profile <profile>`` would run (built in-process, nothing run)."""
    return pipeline.build_stages(pipeline.load_profile(profile, quick=quick, seeds=seeds), out)


def dry_run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(PIPELINE), "--dry-run", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tiny_plan_covers_every_variant_seed_and_analysis():
    plan = dry_run("--seeds", "2")
    for variant in ("baseline", "vista", "vista-cosine"):
        for seed in (1, 2):
            assert f"train-{variant}-seed{seed}" in plan and f"eval-{variant}-seed{seed}" in plan
    for stage in (
        "theory",
        "world",
        "foundation-vision",
        "foundation-language",
        "probes",
        "mi",
        "tables",
        "report",
    ):
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


def test_each_notebook_is_a_stage_after_the_report_needing_only_what_it_reads():
    out = Path("/tmp/vista-plan")
    stages = plan_stages("tiny", out, seeds=2)
    names = [s.name for s in stages]
    notebooks = [s for s in stages if s.name.startswith("notebook-")]
    assert [s.name for s in notebooks] == ["notebook-01", "notebook-02", "notebook-03", "notebook-04"]
    assert names[-5:] == ["report", *(s.name for s in notebooks)]  # the report still needs every study stage
    report = stages[-5]
    assert report.needs == names[:-5]
    trained = [n for n in names if n.startswith("train-")]
    evaluated = [n for n in names if n.startswith("eval-")]
    assert len(trained) == len(evaluated) == 6
    needs = {s.name: s.needs for s in notebooks}
    assert needs == {"notebook-01": ["theory"], "notebook-02": ["world", *trained, "length-effect", "probes"],
                     "notebook-03": ["mi"], "notebook-04": evaluated}  # fmt: skip
    runner = "reproduce/notebooks/run_notebooks.py --results /tmp/vista-plan --out /tmp/vista-plan/notebooks --only"
    for stage, name in zip(notebooks, pipeline.NOTEBOOKS):
        assert shlex.join(stage.commands[0]).endswith(f"{runner} {name}")
        assert stage.outputs == [out / "notebooks" / f"{name}.ipynb", out / "notebooks" / f"{name}.html"]
    assert "] notebook-" not in dry_run("--quick")  # the suite's quick run leaves them to the notebook tests


def test_every_shipped_notebook_declares_the_stages_it_reads():
    assert sorted(pipeline.NOTEBOOK_INPUTS) == pipeline.NOTEBOOKS


def test_foundation_parts_are_two_stages_that_get_their_own_profile_options():
    from vista.foundations import PART_OPTIONS

    assert pipeline.FOUNDATION_PARTS == PART_OPTIONS  # pipeline.py keeps a copy (importing torch is slow)
    stages = {s.name: s for s in plan_stages("tiny", Path("/tmp/p"), quick=True)}
    vision, language = (shlex.join(stages[n].commands[0]) for n in pipeline.FOUNDATION_STAGES)
    assert vision.endswith("--only vision --clip-steps 150") and language.endswith(
        "--only language --lm-steps 150"
    )
    assert stages["foundation-vision"].needs == stages["foundation-language"].needs == ["world"]
    assert set(stages["train-baseline-seed1"].needs) == {"world", "foundation-vision", "foundation-language"}
    ablation = {s.name: s for s in plan_stages("tiny-ablation", Path("/tmp/p"), quick=True)}
    assert set(ablation["pretrain-baseline-seed1"].needs) == {
        "world",
        "foundation-vision",
        "foundation-language",
    }


def test_ablation_profile_measures_the_length_effect_of_every_variant():
    """Issue 17: the length-split result for each variant needs every evaluation's per-document samples and a
    length-effect stage after every training and evaluation."""
    stages = {s.name: s for s in plan_stages("tiny-ablation", Path("/tmp/p"), quick=True)}
    evals = [s for name, s in stages.items() if name.startswith("eval-")]
    assert evals and all("--log-samples" in map(str, s.commands[0]) for s in evals)
    needs = set(stages["length-effect"].needs)
    assert {s.name for s in evals} <= needs
    assert {name for name in stages if name.startswith("train-")} <= needs


def test_gpu_ablation_trains_the_cpu_ablations_variants_with_the_paper_recipe():
    """Issue 17: the ablation at paper scale: tiny-ablation's variants (one list), the llava-1.5-7b configs through the
    launcher, the paper's tasks, shared stage-1 runs, no synthetic world."""
    cpu = {s.name: s for s in plan_stages("tiny-ablation", Path("/tmp/c"), seeds=2)}
    gpu = {s.name: s for s in plan_stages("llava-1.5-7b-ablation", Path("/tmp/g"), seeds=2)}
    assert not {"world", "foundation-vision", "foundation-language", "length-effect"} & set(gpu)
    assert {n for n in cpu if n.startswith(("pretrain-", "train-", "eval-"))} == {
        n for n in gpu if n.startswith(("pretrain-", "train-", "eval-"))
    }
    assert gpu["train-viral-seed2"].needs == gpu["train-l2t-seed2"].needs == ["pretrain-baseline-seed2"]
    assert gpu["pretrain-baseline-seed1"].needs == []

    def variant_overrides(stage, config: str) -> list[str]:
        """The overrides before ``training.seed``: the variant's own (``variant=...``, objectives, vista.*)."""
        args = stage.commands[0]
        assert config in args[args.index("--config") + 1]
        rest = args[args.index("--config") + 2 :]
        return rest[: next(i for i, a in enumerate(rest) if a.startswith("training.seed="))]

    for name, stage in gpu.items():
        if name.startswith(("pretrain-", "train-")):
            config = ("pretrain" if name.startswith("pretrain-") else "finetune") + ".yaml"
            assert stage.commands[0][:5] == ["deepspeed", "--num_gpus", "8", "--module", "vista.cli"]
            assert f"configs/llava-1.5-7b/{config}" in stage.commands[0][7]
            assert variant_overrides(stage, config) == variant_overrides(cpu[name], config)
            assert not any(a.startswith(("data.", "model.vision_tower", "model.language_model")) for a in
                           stage.commands[0])  # fmt: skip
        if name.startswith("eval-"):
            assert "paper" in stage.commands[0] and "cuda" in stage.commands[0]
    assert "objectives.viral.enabled=true" in gpu["train-viral-seed1"].commands[0]
    assert gpu["report"].needs[-1] == "tables"


def test_ablation_from_must_name_a_profile_with_variants(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("profile: mine\nablation_from: tiny\nseeds: 1\n")
    (tmp_path / "tiny.yaml").write_text((pipeline.PROFILES / "tiny.yaml").read_text())
    monkeypatch.setattr(pipeline, "PROFILES", tmp_path)
    with pytest.raises(SystemExit, match="ablation_from names 'tiny', which has no 'ablation' mapping"):
        pipeline.load_profile("mine", quick=False, seeds=None)


def test_tiny_long_is_the_tiny_plan_with_twelve_stage_2_epochs():
    """``extends: tiny``: the same stages and commands, except each stage-2 command ends with the 12-epoch override
    and the report is titled tiny-long (the training configs stay tiny's)."""
    tiny = {s.name: s for s in plan_stages("tiny", Path("/tmp/p"))}
    long = {s.name: s for s in plan_stages("tiny-long", Path("/tmp/p"))}
    assert list(long) == list(tiny)
    for name, stage in long.items():
        if name == "report":
            assert stage.commands[0][-2:] == ["--profile", "tiny-long"]
            assert stage.commands[0][:-1] == tiny[name].commands[0][:-1]
        elif not name.startswith("train-"):
            assert stage.commands == tiny[name].commands, name
        if not name.startswith("train-"):
            continue
        pretrain, finetune = stage.commands
        assert pretrain == tiny[name].commands[0]
        assert finetune[-1] == "training.num_train_epochs=12" and finetune[:-1] == tiny[name].commands[1]
        assert str(pipeline.TRAIN_CONFIGS / "tiny" / "finetune.yaml") in finetune


def test_small_profile_finetunes_on_single_turn_records():
    small = {s.name: s for s in plan_stages("small", Path("/tmp/p"))}
    pretrain, finetune = small["train-baseline-seed1"].commands
    assert "data.json=/tmp/p/data/finetune_single_turn.json" in finetune
    assert "data.json=/tmp/p/data/pretrain.json" in pretrain
    tiny = {s.name: s for s in plan_stages("tiny", Path("/tmp/p"))}
    assert "data.json=/tmp/p/data/finetune.json" in tiny["train-baseline-seed1"].commands[1]


def test_extends_merges_mappings_one_level_and_refuses_a_cycle(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text(
        "profile: base\nseeds: 3\ntrain: {pretrain: [a=1], finetune: [b=1]}\nquick: {seeds: 1, world: {size: 9}}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base\nprofile: child\ntrain: {finetune: [b=2]}\nquick: {eval: {limit: 2}}\n"
    )
    (tmp_path / "loop.yaml").write_text("extends: loop2\nprofile: loop\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop\nprofile: loop2\n")
    monkeypatch.setattr(pipeline, "PROFILES", tmp_path)
    child = pipeline.read_profile("child")
    assert child["profile"] == "child" and child["seeds"] == 3
    assert child["train"] == {"pretrain": ["a=1"], "finetune": ["b=2"]}
    assert child["quick"] == {"seeds": 1, "world": {"size": 9}, "eval": {"limit": 2}}
    with pytest.raises(SystemExit, match="makes a cycle \\(loop -> loop2 -> loop\\)"):
        pipeline.read_profile("loop")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\nprofile: orphan\n")
    with pytest.raises(SystemExit, match="unknown profile 'nowhere'"):
        pipeline.read_profile("orphan")


def test_replayed_default_schedule_fills_the_foundation_gap_and_keeps_every_need():
    """The default profile replayed with the runner's own order: notebook 01 runs on the core the language
    foundation leaves free, the trainings start as soon as both foundations exist, and every stage (the report, each
    notebook) starts after the stages it needs."""
    stages = plan_stages("tiny", Path("/tmp/p"))
    # theory ends before the world, as measured (19 s vs 20 s): notebook 01 takes a core first, and the language
    # foundation (the critical path) must still start as soon as the world exists, before the vision one
    seconds = {s.name: 10.0 for s in stages} | {"foundation-language": 100.0, "theory": 19.0, "world": 20.0}
    times = simulate(stages, seconds, jobs=2)
    assert times["foundation-language"][0] == times["world"][1] < times["foundation-vision"][0]
    assert times["notebook-01"][0] < times["foundation-language"][1]
    first_train = min(start for name, (start, _) in times.items() if name.startswith("train-"))
    assert first_train == times["foundation-language"][1]
    for stage in stages:
        assert all(times[n][1] <= times[stage.name][0] for n in stage.needs), stage.name


def test_paper_presets_cpu_runs_an_ablation_variant_with_the_profiles_overrides():
    """``paper_presets_cpu.py --ablation-variant`` executes a GPU-ablation variant at true width, reduced depth."""
    sys.path.insert(0, str(ROOT / "reproduce" / "benchmarks"))
    from paper_presets_cpu import ablation_overrides

    assert ablation_overrides("llava-1.5-7b-ablation", "viral") == {
        "pretrain": ["variant=baseline"],
        "finetune": ["variant=baseline", "objectives.viral.enabled=true"],
    }
    assert ablation_overrides("llava-1.5-7b-ablation", "vista-anchor-mean")["pretrain"] == [
        "variant=vista",
        "vista.anchor=mean",
    ]
    with pytest.raises(SystemExit, match="'nope': profile llava-1.5-7b-ablation has"):
        ablation_overrides("llava-1.5-7b-ablation", "nope")
    with pytest.raises(
        SystemExit, match="no GPU ablation profile tinyllava-3b-ablation.*llava-1.5-7b-ablation"
    ):
        ablation_overrides("tinyllava-3b-ablation", "viral")


@pytest.mark.parametrize("profile", ["tiny", "tiny-ablation"])
def test_tiny_evaluations_generate_in_batches(profile):
    """The profile's eval.batch_size reaches `vista eval --batch-size` (batched greedy answers equal unbatched ones:
    tests/vista/test_lmms_plugin.py; 2.3x faster on the default run's checkpoints, README)."""
    evals = [s for s in plan_stages(profile, Path("/tmp/p"), quick=True) if s.name.startswith("eval-")]
    commands = [list(map(str, s.commands[0])) for s in evals]
    assert commands and all(c[c.index("--batch-size") + 1] == "16" for c in commands)
