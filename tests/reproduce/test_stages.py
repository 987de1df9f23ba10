"""The pipeline's stage runner: resumable stages verified by outputs, timings recorded, failures named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reproduce"))
from stages import Stage, run_pipeline, simulate, timeline  # noqa: E402


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


def sleeper(tmp_path: Path, name: str, needs: list[str] | None = None) -> Stage:
    """A stage that records its start and end times (to see what ran at the same time)."""
    code = (f"import pathlib, time; p = pathlib.Path({str(tmp_path / name)!r}); "
            "start = time.time(); time.sleep(0.6); p.write_text(f'{start} {time.time()}')")  # fmt: skip
    return Stage(name, "sleeps", [[sys.executable, "-c", code]], [tmp_path / name], needs=needs or [])


def interval(tmp_path: Path, name: str) -> tuple[float, float]:
    start, end = map(float, (tmp_path / name).read_text().split())
    return start, end


def test_parallel_jobs_overlap_independent_stages_and_respect_needs(tmp_path):
    stages = [sleeper(tmp_path, "a"), sleeper(tmp_path, "b"), sleeper(tmp_path, "c", needs=["a", "b"])]
    run_pipeline(stages, tmp_path / "results", jobs=2)
    (a0, a1), (b0, b1), (c0, _) = (interval(tmp_path, n) for n in "abc")
    assert a0 < b1 and b0 < a1, "independent stages a and b did not run at the same time"
    assert c0 >= max(a1, b1), "c started before the stages it needs had finished"


def test_a_failure_stops_dependents_but_lets_running_stages_finish(tmp_path, capsys):
    failing = Stage("broken", "fails", [[sys.executable, "-c", "raise SystemExit(2)"]], [tmp_path / "never"])
    stages = [failing, sleeper(tmp_path, "independent"), sleeper(tmp_path, "dependent", needs=["broken"])]
    with pytest.raises(SystemExit):
        run_pipeline(stages, tmp_path / "results", jobs=2)
    assert "FAILED at stage 'broken'" in capsys.readouterr().err
    assert (tmp_path / "independent").exists() and not (tmp_path / "dependent").exists()


def test_needs_must_name_earlier_stages(tmp_path):
    with pytest.raises(ValueError, match="needs"):
        run_pipeline([sleeper(tmp_path, "x", needs=["later"]), sleeper(tmp_path, "later")], tmp_path / "r")


def test_a_failed_attempts_log_survives_a_successful_rerun(tmp_path, capsys):
    out = tmp_path / "results"
    flag = tmp_path / "fixed"
    command = [sys.executable, "-c", f"import pathlib, sys; sys.exit(0 if pathlib.Path({str(flag)!r}).exists() "
               "else 'first attempt ' + 'failed')"]  # fmt: skip
    stage = Stage("flaky", "fails once", [command, writer(tmp_path / "flaky.out")], [tmp_path / "flaky.out"])
    with pytest.raises(SystemExit):
        run_pipeline([stage], out)
    assert "log kept as" in capsys.readouterr().err
    flag.write_text("")
    run_pipeline([stage], out)
    [kept] = (out / "logs").glob("flaky.failed-*.log")
    assert "first attempt failed" in kept.read_text()
    assert "first attempt failed" not in (out / "logs" / "flaky.log").read_text()


def test_ready_stages_start_in_list_order_so_a_late_listed_stage_waits_for_a_free_slot(tmp_path):
    """With one slot, ``note`` (ready from the start, listed last) runs after ``a`` and ``b`` (which needs ``a``):
    an early-ready notebook never takes the slot of a training listed before it. The replay agrees."""
    stages = [sleeper(tmp_path, "a"), sleeper(tmp_path, "b", needs=["a"]), sleeper(tmp_path, "note")]
    run_pipeline(stages, tmp_path / "results", jobs=1)
    starts = {name: interval(tmp_path, name)[0] for name in ("a", "b", "note")}
    assert starts["a"] < starts["b"] < starts["note"]
    replay = simulate(stages, {"a": 1.0, "b": 2.0, "note": 4.0}, jobs=1)
    assert replay == {"a": (0.0, 1.0), "b": (1.0, 3.0), "note": (3.0, 7.0)}
    assert simulate(stages, {"a": 1.0, "b": 2.0, "note": 4.0}, jobs=2) == {
        "a": (0.0, 1.0), "note": (0.0, 4.0), "b": (1.0, 3.0)}  # fmt: skip


def test_stamps_record_start_and_finish_and_the_timeline_orders_them(tmp_path, capsys):
    import stages as stage_runner

    out = tmp_path / "results"
    run_pipeline([sleeper(tmp_path, "a"), sleeper(tmp_path, "b", needs=["a"])], out, jobs=2)
    record = json.loads((out / "stages" / "b.json").read_text())
    assert record["started"] <= record["finished"]
    rows = timeline(out)
    assert [r["stage"] for r in rows] == ["a", "b"] and rows[0]["start"] == 0
    assert rows[1]["start"] >= rows[0]["end"] - 1  # stamps have one-second resolution
    assert stage_runner.main(["--timeline", str(out)]) == 0
    assert "span" in capsys.readouterr().out


def test_a_failed_attempt_invalidates_the_old_stamp(tmp_path):
    """A forced rerun that fails may have replaced some outputs: the next plain run must rerun the stage, not trust
    the stamp of the attempt before."""
    out, target = tmp_path / "results", tmp_path / "made.out"
    good = Stage("make", "writes", [writer(target)], [target])
    run_pipeline([good], out)
    failing = Stage(
        "make", "writes", [writer(target), [sys.executable, "-c", "raise SystemExit(3)"]], [target]
    )
    with pytest.raises(SystemExit):
        run_pipeline([failing], out)
    assert not (out / "stages" / "make.json").exists()
    counted = counting_stage(tmp_path, "make")
    counted.outputs = [target]
    run_pipeline([counted], out)
    assert runs_of(tmp_path) == 1  # rerun, not "done already"


def test_every_failed_stage_is_named(tmp_path, capsys):
    fail = [sys.executable, "-c", "raise SystemExit(2)"]
    stages = [Stage(n, "fails", [fail], [tmp_path / f"{n}.out"]) for n in ("first", "second")]
    with pytest.raises(SystemExit):
        run_pipeline(stages, tmp_path / "results", jobs=2)
    err = capsys.readouterr().err
    assert "FAILED at stage 'first'" in err and "FAILED at stage 'second'" in err
    record = json.loads((tmp_path / "results" / "pipeline_runs.jsonl").read_text().splitlines()[-1])
    assert sorted(record["failed_stages"]) == ["first", "second"] and not record["interrupted"]


def test_ctrl_c_in_a_stage_is_an_interruption_not_a_failure(tmp_path, capsys):
    """A command stopped by SIGINT: exit 130 with a resume hint, no kept '.failed-' log, a record marked
    interrupted (the report never quotes it as a complete run)."""
    # Python's own SIGINT handler first: a suite started in the background inherits SIGINT ignored
    kill = (
        "import os, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "os.kill(os.getpid(), signal.SIGINT)"
    )
    sigint = [sys.executable, "-c", kill]
    stage = Stage("long", "interrupted", [sigint], [tmp_path / "long.out"])
    with pytest.raises(SystemExit) as stop:
        run_pipeline([stage], tmp_path / "results")
    assert stop.value.code == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert not list((tmp_path / "results" / "logs").glob("long.failed-*"))
    record = json.loads((tmp_path / "results" / "pipeline_runs.jsonl").read_text().splitlines()[-1])
    assert record["interrupted"] and record["failed"] is None


def test_a_log_copy_that_cannot_be_written_still_reports_the_failure(tmp_path, capsys, monkeypatch):
    import stages

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages.shutil, "copyfile", full_disk)
    stage = Stage("bad", "fails", [[sys.executable, "-c", "raise SystemExit(4)"]], [tmp_path / "o"])
    with pytest.raises(SystemExit):
        run_pipeline([stage], tmp_path / "results")
    err = capsys.readouterr().err
    assert "FAILED at stage 'bad'" in err and "could not keep a copy" in err and "No space left" in err
