"""The length-effect probe on one checkpoint with eager attention against SDPA: time and the largest difference.

    .venv/bin/python reproduce/benchmarks/probe_attention.py --results results/tiny [--run tiny__baseline__seed1]
        [--limit 100] [--rounds 2]

Builds the ``world_len_N`` split the length-effect stage probes (:func:`analysis.probes.decay.length_split_json`,
``--limit`` questions at each N) and runs that stage's own probe of the run's stage-2 checkpoint
(``analysis.probes.decay._probe_one``: load the model and samples, score the blank-image ablation, batch 16) with
``attn_implementation="eager"`` (what every probe loaded until 2026-12-02) and with ``"sdpa"`` (what
:func:`analysis.probes.runner.attention_backend` now picks for every probe but the attention probe), alternating for
``--rounds`` rounds in one process, one thread. Prints the seconds of each (loading included), their ratio, and the
largest difference between the two per-token contributions (nats; float rounding).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.probes.decay import _probe_one, length_split_json  # noqa: E402


def score(checkpoint: Path, split: Path, backend: str) -> tuple[float, np.ndarray]:
    """(seconds, per-token contributions) of the length-effect stage's probe of one checkpoint (model and samples
    loaded, blank-image ablation scored, batch 16) with ``backend`` attention."""
    start = time.perf_counter()
    rows, _ = _probe_one(checkpoint, split, ("ablation", "blank"), "cpu", 16, attn_implementation=backend)
    return time.perf_counter() - start, rows["value"].to_numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, required=True, help="a run_all.sh results folder (tiny profile)"
    )
    parser.add_argument("--run", default="tiny__baseline__seed1")
    parser.add_argument("--limit", type=int, default=100, help="questions at each N (the profile's)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    checkpoint = args.results / "runs" / args.run / "finetune"
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"--results/--run: no checkpoint at {checkpoint}")
    torch.set_num_threads(1)
    seconds = {"eager": 0.0, "sdpa": 0.0}
    values = {}
    with tempfile.TemporaryDirectory() as tmp:
        split = length_split_json(args.results / "data" / "benchmarks", Path(tmp), questions=args.limit)
        for _ in range(args.rounds):
            for backend in seconds:
                took, values[backend] = score(checkpoint, split, backend)
                seconds[backend] += took
    for backend, took in seconds.items():
        print(f"{backend}: {took:.1f} s over {args.rounds} rounds ({len(values[backend])} token rows)")
    print(f"sdpa_over_eager = {seconds['sdpa'] / seconds['eager']:.3f}")
    print(
        f"largest |contribution difference| = {np.nanmax(np.abs(values['sdpa'] - values['eager'])):.2e} nats"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
