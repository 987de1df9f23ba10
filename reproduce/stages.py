"""A small, resumable stage runner for the reproduction pipeline.

A stage is a list of commands plus the files it must produce, and the stages it needs. A stage counts as finished
when its stamp records the same commands and every output exists and is non-empty; a rerun skips it. Up to ``jobs``
stages whose needs are met run at the same time (the CPU profile trains two tiny models at once on two cores); when
more are ready than slots are free, the earliest in the list goes first. Each stage's wall time, commands and
outputs are recorded in ``<out>/stages/<name>.json`` with its ``started`` and ``finished`` times
(``python reproduce/stages.py --timeline <out>`` prints them as a timeline); its log goes to
``<out>/logs/<name>.log`` (a failed attempt's log is kept as ``<name>.failed-<time>.log``). A failing command
stops the pipeline with the stage named and the end of its log printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from warm import WarmStarter, module_command, worth_warming
from warm import enabled as warm_start_enabled

from analysis.report.stamps import STAMP_TIME, stage_span  # the stamps' time format, written and read


@dataclass
class Stage:
    """One resumable step: commands run in order, outputs verify completion."""

    name: str
    description: str
    commands: list[list[str]]
    outputs: list[Path]
    needs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        text = json.dumps([self.commands, sorted(self.env.items())], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class StageFailed(RuntimeError):
    """Raised when a stage's command exits non-zero or leaves an output missing."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class StageInterrupted(StageFailed):
    """Raised when a stage's command was stopped by Ctrl-C (SIGINT): not a failure, its log is not kept."""


INTERRUPTED_CODES = (-signal.SIGINT, 128 + signal.SIGINT)  # killed by SIGINT / a shell or Python reporting it


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


def run_stage(stage: Stage, out_dir: Path, starter: WarmStarter | None = None) -> float:
    """Run every command of ``stage``, logging to ``<out>/logs``; return its wall time in seconds.

    A failed attempt's log is also kept as ``logs/<stage>.failed-<time>.log`` (see :func:`keep_failed_log`), so a
    rerun that succeeds (and rewrites ``<stage>.log``) does not erase the evidence of the failure.
    """
    try:
        return _run_stage(stage, out_dir, starter)
    except StageInterrupted:
        raise
    except StageFailed as error:
        log_path = out_dir / "logs" / f"{stage.name}.log"
        try:
            kept = keep_failed_log(log_path)
        except OSError as copy_error:  # e.g. a full disk: report the failure anyway
            error.args = (f"{error}\n(could not keep a copy of {log_path}: {copy_error})",)
            raise error from None
        if kept is not None:
            error.args = (f"{error}\n(log kept as {kept})",)
        raise


def keep_failed_log(log_path: Path) -> Path | None:
    """Copy a failed stage's log to ``<name>.failed-<UTC time>.log`` beside it; return the copy (None if no log).

    Raises:
        OSError: the copy could not be written (e.g. the disk is full).
    """
    if not log_path.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = log_path.with_name(f"{log_path.stem}.failed-{stamp}.log")
    shutil.copyfile(log_path, kept)
    return kept


def _run_stage(stage: Stage, out_dir: Path, starter: WarmStarter | None = None) -> float:
    log_path = out_dir / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    # an attempt replaces the stage's outputs: until it succeeds, the old stamp must not vouch for them
    (out_dir / "stages" / f"{stage.name}.json").unlink(missing_ok=True)
    env = {**os.environ, **stage.env}
    started = time.strftime(STAMP_TIME)
    start = time.perf_counter()
    with log_path.open("a") as log:  # append: a warm-started command writes to the same file
        for command in stage.commands:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            if starter is not None and module_command(command) is not None:
                code = starter.call(command, log_path, env)
            else:
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if code in INTERRUPTED_CODES:
                raise StageInterrupted(stage.name, f"stage '{stage.name}' interrupted (Ctrl-C)")
            if code != 0:
                raise StageFailed(
                    stage.name,
                    f"stage '{stage.name}' failed: `{shlex.join(command)}` exited {code}\n{_tail(log_path)}",
                )
    seconds = time.perf_counter() - start
    missing = missing_outputs(stage)
    if missing:
        raise StageFailed(
            stage.name,
            f"stage '{stage.name}' finished but did not produce: {', '.join(map(str, missing))}\n{_tail(log_path)}",
        )
    record = {
        "stage": stage.name,
        "description": stage.description,
        "fingerprint": stage.fingerprint(),
        "seconds": round(seconds, 2),
        "started": started,
        "finished": time.strftime(STAMP_TIME),
        "commands": [shlex.join(c) for c in stage.commands],
        "outputs": [str(p) for p in stage.outputs],
    }
    (out_dir / "stages").mkdir(parents=True, exist_ok=True)
    (out_dir / "stages" / f"{stage.name}.json").write_text(json.dumps(record, indent=2))
    return seconds


def ready_stages(pending: list[Stage], done: set[str]) -> list[Stage]:
    """The pending stages whose needs are all done, in list order: the order the runner starts them in (so a stage
    early in the list, e.g. a training, goes before a later one, e.g. a notebook, when both are ready)."""
    return [s for s in pending if set(s.needs) <= done]


def simulate(stages: list[Stage], seconds: dict[str, float], jobs: int) -> dict[str, tuple[float, float]]:
    """(start, end) of every stage if each took ``seconds[name]`` and the runner of :func:`run_pipeline` scheduled
    them on ``jobs`` slots (the same :func:`ready_stages` order; no stage skipped). For comparing stage graphs with
    measured stage times (``reproduce/benchmarks/stage_schedule.py``)."""
    clock, done, pending = 0.0, set(), list(stages)
    running: dict[str, float] = {}  # name -> end time
    times: dict[str, tuple[float, float]] = {}
    while pending or running:
        for stage in ready_stages(pending, done)[: max(1, jobs) - len(running)]:
            running[stage.name] = clock + seconds[stage.name]
            times[stage.name] = (clock, running[stage.name])
            pending.remove(stage)
        if not running:
            raise ValueError(
                f"stages {[s.name for s in pending]} can never start (their needs are not stages)"
            )
        clock = min(running.values())
        for name in [n for n, end in running.items() if end == clock]:
            del running[name]
            done.add(name)
    return times


def run_pipeline(
    stages: list[Stage],
    out_dir: Path,
    *,
    dry_run: bool = False,
    force: set[str] = frozenset(),
    jobs: int = 1,
    warm: bool = False,
) -> None:
    """Run stages (up to ``jobs`` at once, in dependency order), skipping finished ones; print each wall time.

    ``warm``: run ``python -m`` commands in children of a forkserver that imported torch and transformers once
    (``reproduce/warm.py``; CPU profiles only; ``VISTA_WARM_START=0`` turns it off)."""
    names = [s.name for s in stages]
    unknown = set(force) - set(names) - {"all"}
    if unknown:
        raise SystemExit(f"--force names unknown stages {sorted(unknown)}; stages are {names}")
    for stage in stages:
        missing = [n for n in stage.needs if n not in names[: names.index(stage.name)]]
        if missing:
            raise ValueError(f"stage '{stage.name}' needs {missing}, which are not earlier stages")
    if dry_run:
        for index, stage in enumerate(stages, 1):
            print(f"# [{index}/{len(stages)}] {stage.name}: {stage.description}")
            if stage.needs:
                print(f"#   needs: {', '.join(stage.needs)}")
            for command in stage.commands:
                env = " ".join(f"{k}={shlex.quote(v)}" for k, v in stage.env.items())
                print(f"{env + ' ' if env else ''}{shlex.join(command)}")
        return
    label = {s.name: f"[{i}/{len(stages)}] {s.name}" for i, s in enumerate(stages, 1)}
    done: set[str] = set()
    skipped: list[str] = []
    pending = list(stages)
    for stage in stages:  # skip finished stages up front (in order, so a forced stage reruns its dependents)
        rerun = stage.name in force or "all" in force or any(n not in done for n in stage.needs)
        if not rerun and is_finished(stage, out_dir):
            print(f"{label[stage.name]}: done already (outputs verified), skipped", flush=True)
            done.add(stage.name)
            skipped.append(stage.name)
            pending.remove(stage)
    total = time.perf_counter()
    commands = [c for stage in pending for c in stage.commands]
    starter = WarmStarter() if warm and warm_start_enabled() and worth_warming(commands) else None
    failures: list[StageFailed] = []
    interrupted = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            running: dict = {}
            while pending or running:
                ready = ready_stages(pending, done) if not (failures or interrupted) else []
                for stage in ready[: max(1, jobs) - len(running)]:
                    print(f"{label[stage.name]}: {stage.description} ...", flush=True)
                    running[pool.submit(run_stage, stage, out_dir, starter)] = stage
                    pending.remove(stage)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stage = running.pop(future)
                    try:
                        seconds = future.result()
                    except StageInterrupted:
                        interrupted = True
                        continue
                    except StageFailed as error:
                        failures.append(error)
                        continue
                    done.add(stage.name)
                    print(f"{label[stage.name]}: finished in {seconds:.1f} s", flush=True)
    except KeyboardInterrupt:  # Ctrl-C reaches the stage commands too; the pool waits for them to stop
        interrupted = True
    wall = time.perf_counter() - total
    ran = [s.name for s in stages if s.name in done and s.name not in skipped]
    record = {"finished": time.strftime(STAMP_TIME), "wall_seconds": round(wall, 1), "jobs": jobs,
              "ran": ran, "skipped": skipped, "failed": failures[0].stage if failures else None,
              "failed_stages": [f.stage for f in failures], "interrupted": interrupted}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "pipeline_runs.jsonl").open("a") as log:
        log.write(json.dumps(record) + "\n")
    for failure in failures:
        print(f"\nFAILED at stage '{failure.stage}'.\n{failure}", file=sys.stderr, flush=True)
    if failures:
        raise SystemExit(1)
    if interrupted:
        print(f"\ninterrupted after {wall:.0f} s: {len(ran)} stage(s) finished and are kept; rerun the same command "
              "to resume", file=sys.stderr, flush=True)  # fmt: skip
        raise SystemExit(130)
    print(f"pipeline finished in {wall:.1f} s; results in {out_dir}", flush=True)


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def timeline(out_dir: Path) -> list[dict]:
    """Every stage stamp of ``out_dir`` as ``{"stage", "start", "end", "seconds"}``, start/end in seconds after the
    earliest start, sorted by start. A stamp written before ``started`` was recorded starts ``seconds`` before it
    finished."""
    rows = []
    for path in sorted((Path(out_dir) / "stages").glob("*.json")):
        record = json.loads(path.read_text())
        start, end = stage_span(record)
        rows.append({"stage": record["stage"], "start": start, "end": end, "seconds": record["seconds"]})
    origin = min((r["start"] for r in rows), default=0.0)
    for row in rows:
        row["start"], row["end"] = row["start"] - origin, row["end"] - origin
    return sorted(rows, key=lambda r: (r["start"], r["stage"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the stage timeline of a results folder (stage stamps)."
    )
    parser.add_argument(
        "--timeline", type=Path, required=True, metavar="RESULTS", help="a run_all.sh results folder"
    )
    args = parser.parse_args(argv)
    rows = timeline(args.timeline)
    if not rows:
        raise SystemExit(f"--timeline {args.timeline}: no stage stamps in {args.timeline / 'stages'}")
    print(f"{'start s':>8} {'end s':>8} {'seconds':>8}  stage")
    for r in rows:
        print(f"{r['start']:8.0f} {r['end']:8.0f} {r['seconds']:8.1f}  {r['stage']}")
    print(
        f"span {max(r['end'] for r in rows):.0f} s; stage seconds add up to {sum(r['seconds'] for r in rows):.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
