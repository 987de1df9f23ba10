"""Warm start: ``python -m`` stage commands run in children of a preloaded forkserver, with the same results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reproduce"))
import warm  # noqa: E402
from stages import Stage, run_pipeline  # noqa: E402
from warm import WarmStarter, enabled, module_command, worth_warming  # noqa: E402


@pytest.fixture
def always_warm(monkeypatch):
    """Warm-start even a single command (the pipeline needs MIN_COMMANDS before it starts the forkserver)."""
    monkeypatch.setattr(warm, "MIN_COMMANDS", 1)


def json_tool(source: Path, target: Path) -> list[str]:
    return [sys.executable, "-m", "json.tool", "--sort-keys", str(source), str(target)]


def test_module_command_recognises_only_this_interpreter():
    assert module_command([sys.executable, "-m", "vista.cli", "train", "--config", "x"]) == (
        "vista.cli",
        ["train", "--config", "x"],
    )
    assert module_command(["python3", "-m", "vista.cli"]) is None  # another interpreter: a fresh process
    assert module_command([sys.executable, "script.py"]) is None
    assert module_command(["deepspeed", "--module", "vista.cli"]) is None
    with pytest.raises(ValueError, match="not a"):
        WarmStarter(preload=()).call([sys.executable, "x.py"], Path("log"), {})


def test_a_module_runs_as_main_with_its_arguments_and_exit_code(tmp_path):
    source, target, log = tmp_path / "in.json", tmp_path / "out.json", tmp_path / "log"
    source.write_text('{"b": 1, "a": [2]}')
    log.write_text("header\n")
    starter = WarmStarter(preload=())
    assert starter.call(json_tool(source, target), log, {}) == 0
    assert json.loads(target.read_text()) == {"a": [2], "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # --sort-keys reached the module
    assert starter.call(json_tool(tmp_path / "missing.json", target), log, {}) != 0  # argparse's error exit
    text = log.read_text()
    assert text.startswith("header\n")  # appended, not overwritten
    assert "missing.json" in text  # the child's stderr went to the log


def test_pipeline_logs_keep_each_command_header_before_its_output(tmp_path, always_warm):
    source = tmp_path / "in.json"
    source.write_text('{"z": 0}')
    stage = Stage("fmt", "two warm commands", [json_tool(source, tmp_path / "a.json"),
                  [sys.executable, "-m", "json.tool", str(source)]], [tmp_path / "a.json"])  # fmt: skip
    run_pipeline([stage], tmp_path / "results", warm=True)
    lines = (tmp_path / "results" / "logs" / "fmt.log").read_text().splitlines()
    assert lines[0].startswith("$ ") and "a.json" in lines[0]
    assert lines[1].startswith("$ ") and lines[2:] == ["{", '    "z": 0', "}"]


def test_a_failing_warm_command_stops_the_pipeline_with_its_log(tmp_path, capsys, always_warm):
    stage = Stage(
        "bad", "fails", [json_tool(tmp_path / "missing.json", tmp_path / "o.json")], [tmp_path / "o.json"]
    )
    with pytest.raises(SystemExit):
        run_pipeline([stage], tmp_path / "results", warm=True)
    assert "missing.json" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("1", True), ("0", False), ("false", False)])
def test_vista_warm_start_variable(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("VISTA_WARM_START", raising=False)
    else:
        monkeypatch.setenv("VISTA_WARM_START", value)
    assert enabled() is expected


def test_few_commands_do_not_start_the_forkserver():
    python_m = [sys.executable, "-m", "json.tool"]
    assert not worth_warming([python_m, python_m, ["deepspeed", "x"], [sys.executable, "script.py"]])
    assert worth_warming([python_m] * warm.MIN_COMMANDS)


def test_a_warm_child_reports_like_a_fresh_interpreter(tmp_path):
    """An uncaught exception: exit 1 and the module's traceback, without multiprocessing's wrapper;
    ``sys.path[0]`` is the working directory, as with ``python -m``."""
    log, starter = tmp_path / "log", WarmStarter(preload=())
    log.write_text("")
    script = tmp_path / "in.json"
    script.write_text("not json")
    assert (
        starter.call([sys.executable, "-m", "json.tool", str(script)], log, {}) == 1
    )  # json.tool's own error
    assert "Process ForkServerProcess" not in log.read_text()
    code = starter.call([sys.executable, "-m", "this_module_does_not_exist_xyz"], log, {})
    assert code == 1 and "No module named this_module_does_not_exist_xyz" in log.read_text()
    assert "Process ForkServerProcess" not in log.read_text()
    log.write_text("")
    assert starter.call([sys.executable, "-m", "site"], log, {}) == 0  # prints sys.path, one entry per line
    first = log.read_text().split("sys.path = [")[1].splitlines()[1].strip().strip("',")
    assert first == os.getcwd()


def test_concurrent_warm_commands_all_report_their_own_exit_code(tmp_path):
    """The runner calls the starter from one thread per slot: no command may lose its exit status to another
    thread's bookkeeping (that showed up as exit 255 for a training that had finished)."""
    from concurrent.futures import ThreadPoolExecutor

    starter, source = WarmStarter(preload=()), tmp_path / "in.json"
    source.write_text('{"a": 1}')

    def one(i: int) -> int:
        log = tmp_path / f"log{i}"
        log.write_text("")
        return starter.call(json_tool(source, tmp_path / f"out{i}.json"), log, {})

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(60))) == [0] * 60
