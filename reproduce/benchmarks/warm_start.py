"""The pipeline's warm start, measured: the same `run_all.sh --quick` with fresh processes and warm-started ones.

    python reproduce/benchmarks/warm_start.py [--rounds 1] [--out DIR]

Each round runs ``bash reproduce/run_all.sh --quick`` twice into new folders, once with ``VISTA_WARM_START=0``
(every stage command a fresh process) and once warm (``reproduce/warm.py``), alternating which goes first from
round to round, on the same machine, one after the other. It prints each run's pipeline wall time (the
``pipeline_runs.jsonl`` record) and the warm/cold ratio per round, and checks that the two runs' results are the
same files byte for byte (benchmark scores, image reading, length effect, tables, the stage-2 weights).

The last line: ``warm_over_cold=<median ratio> identical=<yes|no>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# results that must not depend on how the commands were started
COMPARED = (
    "benchmark_scores.csv",
    "image_reading/per_document.csv",
    "length_effect/per_document.csv",
    "length_effect/summary.csv",
    "tables/tables.md",
    "runs/tiny__baseline__seed1/finetune/model.safetensors",
    "runs/tiny__vista__seed1/finetune/model.safetensors",
)


def run_quick(out: Path, warm: bool) -> float:
    """Pipeline wall seconds of one ``run_all.sh --quick`` into ``out``.

    Raises:
        RuntimeError: the run failed (its last output lines are in the message).
    """
    env = {**os.environ, "VISTA_WARM_START": "1" if warm else "0"}
    done = subprocess.run(["bash", str(REPO / "reproduce" / "run_all.sh"), "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"run_all.sh --quick --out {out} exited {done.returncode}:\n{done.stderr[-3000:]}")
    record = json.loads((out / "pipeline_runs.jsonl").read_text().splitlines()[-1])
    return float(record["wall_seconds"])


def differing(a: Path, b: Path) -> list[str]:
    """The :data:`COMPARED` files that differ between two results folders (or are missing from one)."""
    return [name for name in COMPARED
            if not ((a / name).is_file() and (b / name).is_file() and (a / name).read_bytes() == (b / name).read_bytes())]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (each ~2.5 + ~4 min here)")
    parser.add_argument(
        "--out", type=Path, default=None, help="working folder (default: a new temporary one)"
    )
    args = parser.parse_args()
    work = (args.out or Path(tempfile.mkdtemp(prefix="warm-start-"))).resolve()
    ratios, different = [], set()
    for index in range(args.rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        seconds = {}
        for warm in order:
            label = "warm" if warm else "cold"
            seconds[label] = run_quick(work / f"round{index + 1}-{label}", warm)
            print(f"round {index + 1}: {label} run_all.sh --quick: {seconds[label]:.1f} s", flush=True)
        ratios.append(seconds["warm"] / seconds["cold"])
        different |= set(differing(work / f"round{index + 1}-warm", work / f"round{index + 1}-cold"))
        print(f"round {index + 1}: warm / cold = {ratios[-1]:.3f}", flush=True)
    for name in sorted(different):
        print(f"differs: {name}")
    print(f"warm_over_cold={statistics.median(ratios):.3f} identical={'no' if different else 'yes'}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
