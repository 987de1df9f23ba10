"""The environment is the lock: every installed package pinned, hashes present, no torchvision, both routes agree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "reproduce" / "lock"
sys.path.insert(0, str(ROOT / "reproduce"))
import check_env  # noqa: E402


def test_every_installed_package_is_pinned_by_the_lock():
    problems = check_env.differences(check_env.read_lock(), check_env.installed())
    assert problems == [], "\n".join(problems)


def test_lock_lines_are_exact_pins_with_hashes():
    for name in check_env.LOCK_FILES:
        text = (LOCK / name).read_text()
        assert text.startswith("# "), f"{name} lost its header saying how it was made"
        assert "update_lock.sh" in text.splitlines()[1]
        pins = [line for line in text.splitlines() if "==" in line and not line.lstrip().startswith("#")]
        assert pins, f"{name} pins nothing"
        for line in pins:
            assert line.rstrip().endswith("\\"), f"{name}: {line!r} has no --hash line after it"
    assert check_env.read_lock()["filelock"].startswith("3."), "filelock 4 breaks lmms-eval 0.7.3"


def test_torchvision_is_absent_from_lock_and_environment():
    assert "torchvision" not in check_env.read_lock()
    assert importlib.util.find_spec("torchvision") is None


def test_check_names_every_difference():
    lock = {"a": "1.0", "b": "2.0", "torch": "2.13.0+cpu"}
    present = {"a": "1.0", "b": "2.1", "c": "0.1", "torch": "2.13.0+cpu", "vista-mllm": "0.1.0"}
    assert check_env.differences(lock, present) == [
        "version: b is 2.1, the lock says 2.0",
        "extra: c==0.1 is installed but not in the lock",
    ]
    assert check_env.differences(lock, {"a": "1.0"}) == [
        "missing: b==2.0 is in the lock but not installed",
        "missing: torch==2.13.0+cpu is in the lock but not installed",
    ]


def test_read_lock_refuses_an_unpinned_line(tmp_path):
    (tmp_path / "cpu.txt").write_text("# header\nnumpy>=1.0\n")
    with pytest.raises(ValueError, match=r"cpu.txt:2: not an exact pin"):
        check_env.read_lock(tmp_path, ("cpu.txt",))


def test_setup_env_check_reports_a_match():
    result = subprocess.run(
        ["bash", str(ROOT / "reproduce" / "setup_env.sh"), "--check"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "VIRTUAL_ENV": sys.prefix,
            "CONDA_PREFIX": sys.prefix,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches the lock" in result.stdout


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "vista"
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-r reproduce/lock/torch-cpu.txt" in pip
    assert "-r reproduce/lock/cpu.txt" in pip
    assert not [p for p in pip if not p.startswith(("-r ", "--"))], (
        "environment.yml installs outside the lock"
    )


# ---- the optional families environment (reproduce/lock/families.txt, `setup_env.sh --families`, .venv-families)
def _is_torch_build_package(name: str) -> bool:
    """What torch 2.14.1 (a CUDA build) and torchvision pull besides cpu.txt's packages."""
    return name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))


def test_families_lock_is_the_main_lock_plus_torchvision_and_num2words():
    """families.txt keeps every cpu.txt pin and adds only torch 2.14.1, torchvision 0.29.1, what they pull and
    num2words (with its dependency docopt); every line hashed, header saying how it was made."""
    main = check_env.read_lock(files=("cpu.txt",))
    families = check_env.read_lock(files=("families.txt",))
    assert {n: families.get(n) for n in main} == main, "a main pin differs in families.txt"
    added = set(families) - set(main)
    assert {n for n in added if not _is_torch_build_package(n)} == {"num2words", "docopt"}
    assert families["torch"] == "2.14.1" and families["torchvision"] == "0.29.1"
    assert any(n.startswith("nvidia-") for n in added), "the CUDA build's packages are locked too"
    text = (LOCK / "families.txt").read_text()
    assert "update_lock.sh" in text.splitlines()[1]
    pins = [line for line in text.splitlines() if "==" in line and not line.lstrip().startswith("#")]
    assert all(line.rstrip().endswith("\\") for line in pins), "families.txt: a pin without --hash"


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="runs in the families environment only (bash reproduce/run_tests.sh --families)",
)
def test_the_families_environment_is_its_lock():
    import torch
    import torchvision

    problems = check_env.differences(
        check_env.read_lock(files=check_env.FAMILIES_LOCK_FILES), check_env.installed()
    )
    assert problems == [], "\n".join(problems)
    assert torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")
    assert torchvision.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]


def test_setup_env_names_an_unknown_option_and_the_missing_families_env():
    result = subprocess.run(["bash", str(ROOT / "reproduce" / "setup_env.sh"), "--famillies"], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 2 and "unknown option --famillies" in result.stderr
    if not (ROOT / ".venv-families").exists():
        result = subprocess.run(["bash", str(ROOT / "reproduce" / "setup_env.sh"), "--families", "--check"],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 1 and "run bash reproduce/setup_env.sh --families" in result.stderr
