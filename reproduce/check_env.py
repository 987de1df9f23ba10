"""Compare an installed Python environment with the lock (reproduce/lock/*.txt).

    python reproduce/check_env.py                  # the running interpreter's environment vs the lock
    python reproduce/check_env.py --diff OLD NEW   # what changed between two lock folders
    python reproduce/check_env.py --families       # .venv-families vs its lock (families.txt + lmms-eval + smollm2)

Used by `bash reproduce/setup_env.sh --check`, `reproduce/update_lock.sh` and tests/test_environment.py.
Standard library only, so that it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

LOCK_DIR = Path(__file__).resolve().parent / "lock"
LOCK_FILES = ("cpu.txt", "lmms-eval.txt", "smollm2.txt", "bootstrap.txt", "torch-cpu.txt")
# The optional families environment (setup_env.sh --families): families.txt replaces cpu.txt and torch-cpu.txt.
FAMILIES_LOCK_FILES = ("families.txt", "lmms-eval.txt", "smollm2.txt", "bootstrap.txt")
PROJECT = "vista-mllm"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalisation (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(folder: Path = LOCK_DIR, files: tuple[str, ...] = LOCK_FILES) -> dict[str, str]:
    """Pinned ``{name: version}`` of the lock files in ``folder``.

    Raises:
        ValueError: a requirement line that is not an exact ``name==version`` pin (file and line named).
    """
    pins: dict[str, str] = {}
    for file in files:
        path = folder / file
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if not text or text.startswith(("#", "--hash")):
                continue
            match = _PIN.match(text)
            if match is None:
                raise ValueError(f"{path}:{number}: not an exact pin (name==version): {text!r}")
            pins[normalize(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    """``{name: version}`` of every distribution visible to this interpreter."""
    return {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def torch_build_packages() -> set[str]:
    """Packages the installed torch build requires (e.g. nvidia-* for a CUDA build), normalised."""
    try:
        requires = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    names = {normalize(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r}
    return names | {"triton"}


def differences(lock: dict[str, str], present: dict[str, str], custom_torch: bool = False) -> list[str]:
    """Every way ``present`` differs from ``lock``, one readable line each (empty when they agree).

    ``custom_torch``: torch and the packages its build requires may differ (GPU machines; README).
    """
    lines = []
    build = torch_build_packages() if custom_torch else set()
    for name in sorted(set(lock) | set(present)):
        if name in (PROJECT, "pip", "setuptools", "wheel") and name not in lock:
            continue
        want, have = lock.get(name), present.get(name)
        if custom_torch and (name == "torch" or (want is None and name in build)):
            continue
        if have is None:
            lines.append(f"missing: {name}=={want} is in the lock but not installed")
        elif want is None:
            lines.append(f"extra: {name}=={have} is installed but not in the lock")
        elif want != have:
            lines.append(f"version: {name} is {have}, the lock says {want}")
    return lines


def diff_locks(old: Path, new: Path) -> list[str]:
    """Added, removed and changed pins between two lock folders."""
    a, b = read_lock(old), read_lock(new)
    out = [f"+ {n}=={b[n]}" for n in sorted(set(b) - set(a))]
    out += [f"- {n}=={a[n]}" for n in sorted(set(a) - set(b))]
    out += [f"~ {n} {a[n]} -> {b[n]}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--diff", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two lock folders")
    parser.add_argument(
        "--custom-torch", action="store_true", help="torch and its build's packages may differ"
    )
    parser.add_argument(
        "--families", action="store_true", help="compare with the families lock (families.txt) instead"
    )
    args = parser.parse_args(argv)
    if args.diff:
        changes = diff_locks(*args.diff)
        print("\n".join(changes) if changes else "no change")
        return 0
    files = FAMILIES_LOCK_FILES if args.families else LOCK_FILES
    problems = differences(read_lock(files=files), installed(), custom_torch=args.custom_torch)
    for line in problems:
        print(f"[check_env] {line}")
    lock_size = len(read_lock(files=files))
    print(
        f"[check_env] {sys.prefix}: "
        + (
            f"matches the lock ({lock_size} pins)"
            if not problems
            else f"{len(problems)} difference(s) from the lock"
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
