"""`vista eval` with generation batch 1 against batch N on one checkpoint: wall time and whether every answer is equal.

    .venv/bin/python reproduce/benchmarks/eval_batch.py --results results/tiny [--variant baseline] [--seed 1]
        [--batch-size 16] [--limit 100]

Runs the pipeline's own evaluation stage command for one run of the tiny profile (`reproduce/pipeline.py`
`eval_stage`: `--tasks local`, the world's benchmarks, `--log-samples`) twice, one after the other, with
`--batch-size 1` and `--batch-size N`, into a temporary folder, and prints each wall time (whole process, imports
included), the ratio, and how many of the logged per-document answers differ (greedy decoding with left padding
should change none). The tiny profile's `eval.batch_size` rests on this.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reproduce"))
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402

from analysis.tables.results import load_lmms_samples  # noqa: E402


def run_eval(results: Path, variant: str, seed: int, batch_size: int, limit: int, out: Path) -> float:
    """Seconds for the tiny profile's eval stage of ``variant``/``seed`` at ``batch_size``, written under ``out``."""
    profile = pipeline.load_profile("tiny", quick=False, seeds=None)
    profile["eval"] |= {"batch_size": batch_size, "limit": limit}
    run = pipeline.run_name(profile, variant, seed)
    checkpoint = results / "runs" / run / "finetune"
    stage = pipeline.eval_stage(profile, variant, seed, checkpoint, out, results / "data" / "benchmarks")
    start = time.perf_counter()
    subprocess.run(stage.commands[0], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def logged_answers(out: Path) -> dict[tuple[str, int], str]:
    """(task, doc_id) -> the first filtered response, from every lmms-eval sample log under ``out``."""
    answers = {}
    for path in out.rglob("*_samples_*.jsonl"):
        frame = load_lmms_samples(path)
        answers |= dict(zip(zip(frame["task"], frame["doc_id"]), frame["response"]))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, required=True, help="a results folder of run_all.sh (tiny profile)"
    )
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=100, help="documents per task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, answers = {}, {}
        for batch in (1, args.batch_size):
            out = Path(tmp) / f"batch{batch}"
            seconds[batch] = run_eval(args.results, args.variant, args.seed, batch, args.limit, out)
            answers[batch] = logged_answers(out)
            print(f"batch {batch}: {seconds[batch]:.1f} s, {len(answers[batch])} logged answers", flush=True)
    one, many = answers[1], answers[args.batch_size]
    differ = sum(one[k] != many.get(k) for k in one) + len(set(many) - set(one))
    print(f"batch_{args.batch_size}_over_batch_1 = {seconds[args.batch_size] / seconds[1]:.3f}; "
          f"answers that differ: {differ} of {len(one)}")  # fmt: skip


if __name__ == "__main__":
    main()
