"""The README's Python examples run as written, and .ci/run calls exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert python_blocks(), "README.md lost its Python example"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, capsys):
    exec(compile(python_blocks()[index], f"README.md[python block {index}]", "exec"), {})
    assert "ce=" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("bash ")]
    assert len(commands) == 2, f"the Quick start must show exactly two commands, found {commands}"
    test_command = next(c for c in commands if "test" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], f".ci/run does not call `{test_command}`"


def test_cli_drops_the_deepspeed_launchers_local_rank(monkeypatch):
    from vista.cli import strip_launcher_rank

    monkeypatch.setenv("LOCAL_RANK", "")  # registers the variable so that monkeypatch restores it afterwards
    monkeypatch.delenv("LOCAL_RANK")
    assert strip_launcher_rank(["--local_rank=3", "train", "--config", "x.yaml"]) == [
        "train",
        "--config",
        "x.yaml",
    ]
    import os

    assert os.environ["LOCAL_RANK"] == "3"
    monkeypatch.delenv("LOCAL_RANK")
    assert strip_launcher_rank(["--local-rank", "1", "train"]) == ["train"]
    assert os.environ["LOCAL_RANK"] == "1"
