"""A newcomer's wrong commands: every subcommand answers with one line naming the offending value, a non-zero exit
code and no traceback; internal errors keep theirs. Most commands run in-process through ``vista.cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vista import cli

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = str(REPO / "reproduce/configs/tiny/pretrain.yaml")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Small files the wrong commands point at."""
    root = tmp_path_factory.mktemp("wrong")
    np.savez(root / "three.npz", x=np.arange(6.0).reshape(3, 2), y=np.arange(3.0))
    (root / "empty").mkdir()
    finished = root / "finished"
    finished.mkdir()
    (finished / "vista_run.json").write_text(json.dumps({"status": "finished"}))
    records = [
        {"id": f"r{i}", "image": f"missing{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]}
        for i in range(2)
    ]  # fmt: skip
    (root / "no_images.json").write_text(json.dumps(records))
    (root / "broken.json").write_text(json.dumps(records)[:-5])  # cut off: not valid JSON
    (root / "saved").mkdir()
    (root / "saved" / "config.json").write_text("{}")  # passes the saved-model-folder check, loads nothing
    return {"root": root, "saved": root / "saved", "three": root / "three.npz", "empty": root / "empty", "finished": finished,
            "no_images": root / "no_images.json", "broken": root / "broken.json",
            "nope": root / "does_not_exist"}  # fmt: skip


# (name, argv with {placeholders} from `inputs`, text the one-line message must contain, expected exit code)
WRONG_COMMANDS = [
    ("no command", [], "COMMAND", 2),
    ("tiny-model: unknown family", ["tiny-model", "--family", "qwen9", "--out", "{root}/t"], "'qwen9'", 2),
    ("tiny-model: processor cannot be built", ["tiny-model", "--family", "qwen2_vl", "--out", "{root}/t",
                                               "--qwen-tokenizer", "{nope}"], "qwen2_vl", 2),
    ("train: pretrained folder missing", ["train", "--config", str(REPO / "reproduce/configs/any-vlm/finetune.yaml"),
                                          "model.pretrained={nope}", "data.json={no_images}",
                                          "data.image_folder={root}", "training.output_dir={root}/any"],
     "does_not_exist: folder not found", 2),
    ("train: dry run of any-family training", ["train", "--config", str(REPO / "reproduce/configs/any-vlm/finetune.yaml"),
                                               "model.pretrained={root}", "--dry-run"], "model.pretrained", 2),
    ("unknown command", ["trian"], "'trian'", 2),
    ("train: missing config", ["train", "--config", "{nope}/cfg.yaml"], "does_not_exist/cfg.yaml", 2),
    ("train: not a number", ["train", "--config", PRETRAIN, "training.learning_rate=abc", "--dry-run"], "'abc'", 2),
    ("train: typo in key", ["train", "--config", PRETRAIN, "training.lerning_rate=1e-3", "--dry-run"],
     "did you mean 'training.learning_rate'", 2),
    ("train: unreadable data file", ["train", "--config", PRETRAIN, "data.json={broken}",
                                     "training.output_dir={root}/broken"], "not valid JSON", 3),
    ("train: dry run of unreadable data", ["train", "--config", PRETRAIN, "data.json={broken}", "--dry-run"],
     "not valid JSON", 3),
    ("train: dry run of data the run refuses", ["train", "--config", PRETRAIN, "data.json={no_images}",
                                               "data.image_folder={root}", "--dry-run"],
     "the run would stop: no usable records: all 2 are refused", 3),
    ("train: stage 2 before stage 1", ["train", "--config", str(REPO / "reproduce/configs/tiny/finetune.yaml"),
                                       "model.checkpoint={empty}", "data.json={no_images}",
                                       "training.output_dir={root}/s2"], "run the previous stage first", 2),
    ("train: bad choice", ["train", "--config", PRETRAIN, "data.on_bad_sample=skp", "--dry-run"], "'skp'", 2),
    ("train: out of range", ["train", "--config", PRETRAIN, "training.warmup_ratio=1.5", "--dry-run"], "1.5", 2),
    ("train: override syntax", ["train", "--config", PRETRAIN, "learning_rate"], "'learning_rate'", 2),
    ("train: bad flag value", ["train", "--config", PRETRAIN, "--world-size", "two"], "'two'", 2),
    ("train: zero GPUs", ["train", "--config", PRETRAIN, "--dry-run", "--world-size", "0"], "got 0", 2),
    ("train: negative GPU memory", ["train", "--config", PRETRAIN, "--dry-run", "--gpu-memory", "-5"], "-5", 2),
    ("train: plan flags without --dry-run", ["train", "--config", PRETRAIN, "--gpu-memory", "40"], "--dry-run", 2),
    ("train: variant contradicted", ["train", "--config", PRETRAIN, "--dry-run", "variant=vista", "vista.enabled=false"],
     "contradicts variant=vista", 2),
    ("foundations: zero threads", ["foundations", "--data", "{root}", "--out", "{root}/f", "--threads", "0"], "got 0", 2),
    ("mi: zero neighbours", ["mi", "features", "--features", "{root}/x.npz", "--out", "{root}/m.csv", "--k", "0"],
     "got 0", 2),
    ("eval: zero batch", ["eval", "--checkpoint", "{root}", "--tasks", "local", "--out", "{root}/e", "--batch-size", "0"],
     "got 0", 2),
    ("train: finished output", ["train", "--config", PRETRAIN, "data.json={no_images}",
                                "training.output_dir={finished}"], "--overwrite", 2),
    ("data: bad size", ["data", "synth", "--out", "{root}/world", "--size", "0"], "got 0", 2),
    ("data: unknown action", ["data", "synthesize", "--out", "x"], "'synthesize'", 2),
    ("foundations: no world", ["foundations", "--data", "{nope}", "--out", "{root}/f"], "does_not_exist", 2),
    ("foundations: other part's flag", ["foundations", "--data", "{root}", "--out", "{root}/f", "--only", "language",
                                        "--clip-steps", "5"], "--clip-steps sets the vision part", 2),
    ("eval: no checkpoint", ["eval", "--checkpoint", "{nope}", "--tasks", "local", "--out", "{root}/e"],
     "does_not_exist", 2),
    ("eval: local without include path", ["eval", "--checkpoint", "{empty}", "--tasks", "local", "--out",
                                          "{root}/e"], "--include-path", 2),
    ("tables: no results", ["tables", "--results", "{nope}", "--out", "{root}/t"], "does_not_exist", 2),
    ("theory: bad K", ["theory", "--K", "0", "--out", "{root}/th", "--no-figures"], "K=0", 2),
    ("probe: unknown probe", ["probe", "--checkpoint", "{empty}", "--data", "{no_images}", "--out", "{root}/p",
                              "--probes", "abltion"], "did you mean 'ablation'", 2),
    ("probe: no checkpoint", ["probe", "--checkpoint", "{nope}", "--data", "{no_images}", "--out", "{root}/p"],
     "does_not_exist", 2),
    ("mi: too few samples", ["mi", "features", "--features", "{three}", "--out", "{root}/mi.csv"],
     "too few samples", 3),
    ("mi: no features file", ["mi", "features", "--features", "{nope}.npz", "--out", "{root}/mi.csv"],
     "does_not_exist.npz", 2),
    ("mi: no checkpoint", ["mi", "checkpoint", "--checkpoint", "{nope}", "--data", "{no_images}", "--out",
                           "{root}/m"], "does_not_exist", 2),
    ("mi: data folder of several files", ["mi", "checkpoint", "--checkpoint", "{saved}", "--data", "{root}", "--out",
                                          "{root}/m"], "expected exactly one .json/.jsonl", 2),
    ("report: no folder", ["report", "--results", "{nope}"], "does_not_exist", 2),
    ("report: empty folder", ["report", "--results", "{empty}"], "nothing to report", 3),
]  # fmt: skip


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, argv, needle, code", WRONG_COMMANDS, ids=[c[0] for c in WRONG_COMMANDS])
def test_wrong_command_is_one_line_without_traceback(name, argv, needle, code, inputs, capsys):
    argv = [a.format(**inputs) for a in argv]
    exit_code, _, err = run_main(argv, capsys)
    assert exit_code == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if needle in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("vista"), lines[0]
    if len(argv) > 0 and argv[0] in cli.SUBCOMMANDS and not lines[0].startswith(f"vista {argv[0]}"):
        pytest.fail(f"message does not name the command: {lines[0]}")


def test_every_subcommand_has_a_wrong_command():
    covered = {argv[0] for _, argv, _, _ in WRONG_COMMANDS if argv}
    assert set(cli.SUBCOMMANDS) <= covered


def test_skipping_every_record_says_no_usable_records(inputs, capsys, tmp_path):
    """Following the hint (data.on_bad_sample=skip) on data whose every record is bad: a reason, not a crash."""
    argv = ["train", "--config", PRETRAIN, f"data.json={inputs['no_images']}", "data.on_bad_sample=skip",
            f"training.output_dir={tmp_path / 'out'}"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert code == 3, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "no usable records" in line]
    assert str(inputs["no_images"]) in line and "image_missing" in line


def test_internal_errors_keep_their_traceback(monkeypatch):
    import analysis.report.cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(analysis.report.cli, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["report", "--results", "."])


def test_help_shows_defaults_and_an_example(capsys):
    code, out, _ = run_main(["probe", "--help"], capsys)
    assert code == 0
    assert "(default: 8)" in out  # --num-swaps
    assert "example:\n  vista probe --checkpoint" in out
    for name in cli.SUBCOMMANDS:
        assert cli.EXAMPLES[name].startswith(f"vista {name} ")
    for command in (
        ["data", "synth"],
        ["mi", "checkpoint"],
        ["mi", "features"],
    ):  # sub-actions have their own
        code, out, _ = run_main([*command, "--help"], capsys)
        assert code == 0 and f"example:\n  vista {' '.join(command)} --" in out, out


def test_version_and_a_wrong_command_in_a_real_process():
    run = subprocess.run([sys.executable, "-m", "vista.cli", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("vista 0.")
    run = subprocess.run(
        [sys.executable, "-m", "vista.cli", "-q", "report", "--results", "does/not/exist"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("vista report: --results ")


def test_default_image_folder_follows_the_synth_layout(tmp_path):
    """`vista data synth` puts heldout.json beside images/; LLaVA's layout puts paths relative to the JSON."""
    from vista.layout import default_image_folder

    world = tmp_path / "world"
    (world / "images" / "heldout").mkdir(parents=True)
    (world / "images" / "heldout" / "ho0.png").write_bytes(b"png")
    records = [{"id": "t", "conversations": []}, {"id": "a", "image": "heldout/ho0.png", "conversations": []}]
    (world / "heldout.json").write_text(json.dumps(records))
    assert default_image_folder(world / "heldout.json") == world / "images"
    (world / "heldout").mkdir()
    (world / "heldout" / "ho0.png").write_bytes(
        b"png"
    )  # now the JSON's own folder holds it: LLaVA's layout wins
    assert default_image_folder(world / "heldout.json") == world
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(records))
    run = {"config": {"data": {"image_folder": str(world / "images")}}}
    assert default_image_folder(elsewhere, run) == world / "images"  # from the checkpoint's training config
    assert (
        default_image_folder(elsewhere) == tmp_path
    )  # nothing found: the JSON's folder (missing images reported)


def test_overwrite_gets_past_a_finished_output_folder(inputs, capsys):
    argv = ["train", "--config", PRETRAIN, f"data.json={inputs['no_images']}", "data.on_bad_sample=skip",
            f"training.output_dir={inputs['finished']}", "--overwrite"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert (
        code == 3 and "no usable records" in err and "--overwrite" not in err
    )  # refused later, for the data


def test_overrides_may_follow_options(capsys):
    """argparse took positionals in one run only: an override after ``--dry-run`` was "unrecognized"."""
    code, out, err = run_main(
        ["train", "--config", PRETRAIN, "variant=vista", "--dry-run", "training.seed=2", "--print-config"],
        capsys,
    )
    assert code == 0, err
    assert "seed: 2" in out and "variant: vista" in out


@pytest.mark.parametrize(
    "override, message",
    [
        ("vista.distance=L2", "vista.distance='L2' is not one of l2, cosine; did you mean 'l2'?"),
        ("variant=vistaa", "unknown variant 'vistaa'; did you mean 'vista'?"),
    ],
)
def test_wrong_choices_suggest_the_closest_in_config_syntax(override, message, capsys):
    code, _, err = run_main(["train", "--config", PRETRAIN, override, "--dry-run"], capsys)
    assert code == 2 and message in err, err
