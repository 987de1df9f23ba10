"""The study's wall time under two stage graphs, from one run's measured stage times (issue 16: <= 20 min).

    .venv/bin/python reproduce/benchmarks/stage_schedule.py --results results/tiny [--profile tiny] [--seeds N] [--quick]

Replays the stage runner (``reproduce/stages.py:simulate``, the runner's own order, the profile's ``jobs``) with
every stage taking the seconds recorded in ``--results/stages/*.json``, on

- ``before``: one ``foundations`` stage (CLIP then the LM in one process) and one ``notebooks`` stage after the
  report (the graph until 2026-11-30);
- ``after``: the pipeline's graph today (``foundation-vision`` beside ``foundation-language``; one stage per
  notebook, each after the stages it reads).

A run recorded with either graph works: the missing stage times are derived from the other graph's records. A
``foundations`` stamp is split with ``foundations/foundations_log.json`` (CLIP and LM seconds; each part also pays the
whole stage's overhead: start-up, corpus, tokenizer, saving), a ``notebooks`` stamp with the per-notebook times its
log prints (each notebook also pays the stage's start-up). The replay of ``before`` on a run recorded with it is
printed beside the run's recorded wall time, which checks the replay. Prints one line per graph and the ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reproduce"))
import pipeline  # noqa: E402
from stages import Stage, simulate  # noqa: E402


def recorded_seconds(results: Path) -> dict[str, float]:
    """Stage name -> recorded seconds, from ``<results>/stages/*.json``."""
    stamps = [json.loads(p.read_text()) for p in sorted((results / "stages").glob("*.json"))]
    if not stamps:
        raise SystemExit(f"--results {results}: no stage stamps in {results / 'stages'}")
    return {s["stage"]: float(s["seconds"]) for s in stamps}


def split_foundations(results: Path, seconds: dict[str, float]) -> dict[str, float]:
    """``foundation-vision`` / ``-language`` seconds from a ``foundations`` stamp and its log."""
    log = json.loads((results / "foundations" / "foundations_log.json").read_text())
    overhead = seconds["foundations"] - log["clip"]["seconds"] - log["lm"]["seconds"]
    return {
        "foundation-vision": log["clip"]["seconds"] + overhead,
        "foundation-language": log["lm"]["seconds"] + overhead,
    }


def split_notebooks(results: Path, seconds: dict[str, float]) -> dict[str, float]:
    """``notebook-NN`` seconds from a ``notebooks`` stamp and the per-notebook times of its log."""
    found = re.findall(
        r"^(\d+)_\S+\.ipynb: executed in (\d+) s", (results / "logs" / "notebooks.log").read_text(), re.M
    )
    executed = {f"notebook-{n}": float(s) for n, s in found}
    overhead = max(0.0, seconds["notebooks"] - sum(executed.values()))
    return {name: value + overhead for name, value in executed.items()}


def before_graph(stages: list[Stage]) -> list[Stage]:
    """Today's stages merged back into one ``foundations`` and one ``notebooks`` stage (needing every study stage)."""
    merged: list[Stage] = []
    study = [s for s in stages if not s.name.startswith("notebook-")]
    for stage in study:
        needs = list(
            dict.fromkeys("foundations" if n in pipeline.FOUNDATION_STAGES else n for n in stage.needs)
        )
        if stage.name == pipeline.FOUNDATION_STAGES[0]:
            merged.append(Stage("foundations", "CLIP then the LM", [], [], needs=needs))
        elif stage.name not in pipeline.FOUNDATION_STAGES:
            merged.append(Stage(stage.name, stage.description, [], [], needs=needs))
    if len(study) < len(stages):
        merged.append(Stage("notebooks", "every notebook", [], [], needs=[s.name for s in merged]))
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a complete run_all.sh results folder")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", type=int, default=None, help="default: the profile's")
    parser.add_argument("--quick", action="store_true", help="the profile's --quick version (as the run was)")
    args = parser.parse_args(argv)
    results = args.results.resolve()
    profile = pipeline.load_profile(args.profile, quick=args.quick, seeds=args.seeds)
    after = pipeline.build_stages(profile, results)
    before = before_graph(after)
    seconds = recorded_seconds(results)
    if "foundations" in seconds:
        seconds |= split_foundations(results, seconds)
    else:  # one process building both: their sum (counts the start-up overhead twice: overstates "before" a little)
        seconds["foundations"] = sum(seconds[n] for n in pipeline.FOUNDATION_STAGES)
    if "notebooks" in seconds:
        seconds |= split_notebooks(results, seconds)
    elif any(n.startswith("notebook-") for n in seconds):
        seconds["notebooks"] = sum(v for n, v in seconds.items() if n.startswith("notebook-"))
    missing = sorted({s.name for s in [*after, *before]} - set(seconds))
    if missing:
        raise SystemExit(f"--results {results}: no recorded time for stages {missing} (is the run complete?)")
    jobs = int(profile.get("jobs", 1))
    walls = {}
    for name, graph in (("before", before), ("after", after)):
        times = simulate(graph, seconds, jobs)
        walls[name] = max(end for _, end in times.values())
        last = max(times, key=lambda n: times[n][1])
        print(f"{name}: {len(graph)} stages, {jobs} at a time: replayed wall {walls[name]:.0f} s "
              f"({walls[name] / 60:.1f} min), last stage {last}")  # fmt: skip
    runs = results / "pipeline_runs.jsonl"
    complete = (
        [json.loads(line) for line in runs.read_text().splitlines() if line.strip()] if runs.is_file() else []
    )
    complete = [
        r
        for r in complete
        if r.get("ran") and not (r.get("skipped") or r.get("failed") or r.get("interrupted"))
    ]
    if complete:
        print(f"recorded wall time of the run: {complete[-1]['wall_seconds']:.0f} s")
    print(f"after / before = {walls['after'] / walls['before']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
