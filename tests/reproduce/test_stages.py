"""The pipeline's stage runner: resumable stages verified by outputs, timings recorded, failures named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reproduce"))
from stages import Stage, run_pipeline  # noqa: E402


def writer(path: Path, text: str = "x") -> list[str]:
    return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(path)!r}).write_text({text!r})"]


def counting_stage(tmp_path: Path, name: str = "make") -> Stage:
    counter = tmp_path / f"{name}.count"
    bump = [sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(counter)!r}); "
            "p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))"]  # fmt: skip
    return Stage(name, "writes a file", [bump, writer(tmp_path / f"{name}.out")], [tmp_path / f"{name}.out"])


def runs_of(tmp_path: Path, name: str = "make") -> int:
    return int((tmp_path / f"{name}.count").read_text())


def test_rerun_skips_finished_stages_and_records_time(tmp_path, capsys):
    out = tmp_path / "results"
    stage = counting_stage(tmp_path)
    run_pipeline([stage], out)
    run_pipeline([stage], out)
    assert runs_of(tmp_path) == 1
    assert "skipped" in capsys.readouterr().out
    record = json.loads((out / "stages" / "make.json").read_text())
    assert record["seconds"] >= 0 and record["commands"]
    assert (out / "logs" / "make.log").is_file()


def test_missing_output_or_changed_command_reruns(tmp_path):
    out = tmp_path / "results"
    stage = counting_stage(tmp_path)
    run_pipeline([stage], out)
    (tmp_path / "make.out").unlink()
    run_pipeline([stage], out)
    assert runs_of(tmp_path) == 2
    changed = Stage(
        stage.name, stage.description, [*stage.commands, writer(tmp_path / "extra")], stage.outputs
    )
    run_pipeline([changed], out)
    assert runs_of(tmp_path) == 3


def test_force_reruns(tmp_path):
    out = tmp_path / "results"
    stage = counting_stage(tmp_path)
    run_pipeline([stage], out)
    run_pipeline([stage], out, force={"make"})
    assert runs_of(tmp_path) == 2
    with pytest.raises(SystemExit, match="unknown stages"):
        run_pipeline([stage], out, force={"nope"})


def test_failure_names_the_stage_and_stops(tmp_path, capsys):
    out = tmp_path / "results"
    failing = Stage(
        "broken",
        "fails",
        [[sys.executable, "-c", "raise SystemExit('boom at step 3')"]],
        [tmp_path / "never"],
    )
    after = counting_stage(tmp_path, "after")
    with pytest.raises(SystemExit):
        run_pipeline([failing, after], out)
    err = capsys.readouterr().err
    assert "FAILED at stage 'broken'" in err and "boom at step 3" in err
    assert not (tmp_path / "after.count").exists()


def test_stage_that_forgets_an_output_fails(tmp_path, capsys):
    stage = Stage("lazy", "does nothing", [[sys.executable, "-c", "pass"]], [tmp_path / "promised.csv"])
    with pytest.raises(SystemExit):
        run_pipeline([stage], tmp_path / "results")
    assert "did not produce" in capsys.readouterr().err


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
    stage = counting_stage(tmp_path)
    run_pipeline([stage], tmp_path / "results", dry_run=True)
    assert "make.out" in capsys.readouterr().out
    assert not (tmp_path / "make.count").exists()
