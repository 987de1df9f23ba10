"""The probe summaries' bootstrap: one vectorised scipy call per group size against one call per group.

    python reproduce/benchmarks/probe_summary.py --probes results/tiny/probes/probes.parquet [--rounds 2]

``vista probe`` summarises its rows as curves with a 95% BCa bootstrap interval per (checkpoint, probe, variant,
layer, position) group: thousands of small groups. This times, side by side and alternating, ``summarise`` as it
is (:func:`analysis.probes.aggregate.bootstrap_mean_cis`) and the same summaries with one
:func:`scipy.stats.bootstrap` call per group (the implementation before it), then compares them: identical means
and counts, and the largest interval difference as a fraction of the interval's width.

The last line: ``batched_over_per_group=<median time ratio> max_ci_diff_over_width=<...> groups=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from analysis.probes import aggregate
from analysis.probes.runner import summarise


def per_group(samples, level=0.95, n_resamples=1000, method="BCa", seed=0):
    """One scipy call per group: the reference."""
    return [aggregate.bootstrap_mean_ci(v, level, n_resamples, method, seed) for v in samples]


def timed(rows: pd.DataFrame, reference: str, batched: bool) -> tuple[float, dict[str, pd.DataFrame]]:
    start = time.perf_counter()
    if batched:
        out = summarise(rows, reference=reference)
    else:
        with mock.patch.object(aggregate, "bootstrap_mean_cis", per_group):
            out = summarise(rows, reference=reference)
    return time.perf_counter() - start, out


def compare(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> float:
    """Largest |interval difference| / interval width; raises if means, counts or keys differ."""
    worst = 0.0
    for name in a:
        left, right = a[name], b[name]
        pd.testing.assert_frame_equal(
            left.drop(columns=["ci_low", "ci_high"]), right.drop(columns=["ci_low", "ci_high"])
        )
        width = (left.ci_high - left.ci_low).to_numpy(float)
        diff = np.maximum(abs(left.ci_low - right.ci_low), abs(left.ci_high - right.ci_high)).to_numpy(float)
        ok = np.isfinite(width) & (width > 0)
        if ok.any():
            worst = max(worst, float((diff[ok] / width[ok]).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=Path, default=Path("results/tiny/probes/probes.parquet"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.probes.is_file():
        raise SystemExit(
            f"--probes {args.probes}: no such file; `vista probe ... --out DIR` writes DIR/probes.parquet"
        )
    rows = pd.read_parquet(args.probes)
    reference = rows["checkpoint"].iloc[0]
    ratios, worst, groups = [], 0.0, 0
    for r in range(args.rounds):
        order = [True, False] if r % 2 == 0 else [False, True]
        results = {batched: timed(rows, reference, batched) for batched in order}
        (fast, new), (slow, old) = results[True], results[False]
        ratios.append(fast / slow)
        worst = max(worst, compare(old, new))
        groups = sum(len(s) for s in new.values())
        print(f"round {r + 1}: batched {fast:.2f} s, per group {slow:.2f} s, ratio {ratios[-1]:.3f}")
    print(
        f"batched_over_per_group={statistics.median(ratios):.3f} max_ci_diff_over_width={worst:.4f} groups={groups}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
