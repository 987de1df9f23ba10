"""`vista eval` with generation batch 1 against batch N on one checkpoint: wall time and whether every answer is equal.

    .venv/bin/python reproduce/benchmarks/eval_batch.py --results results/tiny [--run tiny__baseline__seed1]
        [--batch-size 16] [--limit 100]

Runs the default study's evaluation command (`--tasks local`, the world's benchmarks, `--log-samples`) twice, one
after the other, with `--batch-size 1` and `--batch-size N`, into a temporary folder, and prints each wall time
(whole process, imports included), the ratio, and how many of the logged per-document answers differ (greedy
decoding with left padding should change none). The tiny profile's `eval.batch_size` rests on this.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_eval(results: Path, run: str, batch_size: int, limit: int, out: Path) -> float:
    """Seconds for one `vista eval` of ``results/runs/<run>/finetune`` into ``out``."""
    command = [
        sys.executable, "-m", "vista.cli", "eval", "--checkpoint", str(results / "runs" / run / "finetune"),
        "--tasks", "local", "--include-path", str(results / "data" / "benchmarks"), "--out", str(out),
        "--limit", str(limit), "--log-samples", "--batch-size", str(batch_size),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def logged_answers(out: Path) -> dict[tuple[str, int], str]:
    """(samples file's task, doc_id) -> the filtered answer, from lmms-eval's ``*samples_<task>.jsonl`` files."""
    answers = {}
    for path in out.rglob("*samples_*.jsonl"):
        task = path.stem.split("samples_", 1)[1]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            answers[(task, sample["doc_id"])] = json.dumps(sample["filtered_resps"])
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, required=True, help="a results folder of run_all.sh (tiny profile)"
    )
    parser.add_argument("--run", default="tiny__baseline__seed1", help="run name under RESULTS/runs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=100, help="documents per task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, answers = {}, {}
        for batch in (1, args.batch_size):
            out = Path(tmp) / f"batch{batch}"
            seconds[batch] = run_eval(args.results, args.run, batch, args.limit, out)
            answers[batch] = logged_answers(out)
            print(f"batch {batch}: {seconds[batch]:.1f} s, {len(answers[batch])} logged answers", flush=True)
    one, many = answers[1], answers[args.batch_size]
    differ = sum(one[k] != many.get(k) for k in one) + len(set(many) - set(one))
    print(f"batch_{args.batch_size}_over_batch_1 = {seconds[args.batch_size] / seconds[1]:.3f}; "
          f"answers that differ: {differ} of {len(one)}")  # fmt: skip


if __name__ == "__main__":
    main()
