"""A small, resumable stage runner for the reproduction pipeline.

A stage is a list of commands plus the files it must produce. A stage counts as finished when its stamp records the
same commands and every output exists and is non-empty; a rerun skips it. Each stage's wall time, commands and
outputs are recorded in ``<out>/stages/<name>.json``; its log goes to ``<out>/logs/<name>.log``. A failing command
stops the pipeline with the stage named and the end of its log printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One resumable step: commands run in order, outputs verify completion."""

    name: str
    description: str
    commands: list[list[str]]
    outputs: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        text = json.dumps([self.commands, sorted(self.env.items())], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class StageFailed(RuntimeError):
    """Raised when a stage's command exits non-zero or leaves an output missing."""


def missing_outputs(stage: Stage) -> list[Path]:
    """Outputs that do not exist or are empty (a folder counts if it holds at least one file)."""
    missing = []
    for path in stage.outputs:
        if path.is_dir():
            if not any(p.is_file() for p in path.rglob("*")):
                missing.append(path)
        elif not (path.is_file() and path.stat().st_size > 0):
            missing.append(path)
    return missing


def is_finished(stage: Stage, out_dir: Path) -> bool:
    stamp = out_dir / "stages" / f"{stage.name}.json"
    if not stamp.is_file():
        return False
    record = json.loads(stamp.read_text())
    return record.get("fingerprint") == stage.fingerprint() and not missing_outputs(stage)


def run_stage(stage: Stage, out_dir: Path) -> float:
    """Run every command of ``stage``, logging to ``<out>/logs``; return its wall time in seconds."""
    log_path = out_dir / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **stage.env}
    start = time.perf_counter()
    with log_path.open("w") as log:
        for command in stage.commands:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if code != 0:
                raise StageFailed(
                    f"stage '{stage.name}' failed: `{shlex.join(command)}` exited {code}\n{_tail(log_path)}"
                )
    seconds = time.perf_counter() - start
    missing = missing_outputs(stage)
    if missing:
        raise StageFailed(
            f"stage '{stage.name}' finished but did not produce: {', '.join(map(str, missing))}\n{_tail(log_path)}"
        )
    record = {
        "stage": stage.name,
        "description": stage.description,
        "fingerprint": stage.fingerprint(),
        "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commands": [shlex.join(c) for c in stage.commands],
        "outputs": [str(p) for p in stage.outputs],
    }
    (out_dir / "stages").mkdir(parents=True, exist_ok=True)
    (out_dir / "stages" / f"{stage.name}.json").write_text(json.dumps(record, indent=2))
    return seconds


def run_pipeline(
    stages: list[Stage], out_dir: Path, *, dry_run: bool = False, force: set[str] = frozenset()
) -> None:
    """Run stages in order, skipping finished ones; print one line per stage with its wall time."""
    unknown = set(force) - {s.name for s in stages} - {"all"}
    if unknown:
        raise SystemExit(
            f"--force names unknown stages {sorted(unknown)}; stages are {[s.name for s in stages]}"
        )
    total = time.perf_counter()
    for index, stage in enumerate(stages, 1):
        prefix = f"[{index}/{len(stages)}] {stage.name}"
        if dry_run:
            print(f"# {prefix}: {stage.description}")
            for command in stage.commands:
                env = " ".join(f"{k}={shlex.quote(v)}" for k, v in stage.env.items())
                print(f"{env + ' ' if env else ''}{shlex.join(command)}")
            continue
        if stage.name not in force and "all" not in force and is_finished(stage, out_dir):
            print(f"{prefix}: done already (outputs verified), skipped", flush=True)
            continue
        print(f"{prefix}: {stage.description} ...", flush=True)
        try:
            seconds = run_stage(stage, out_dir)
        except StageFailed as error:
            print(f"\nFAILED at stage '{stage.name}'.\n{error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"{prefix}: finished in {seconds:.1f} s", flush=True)
    if not dry_run:
        print(f"pipeline finished in {time.perf_counter() - total:.1f} s; results in {out_dir}", flush=True)


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)
