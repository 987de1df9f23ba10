"""Wall time of ``information_profile(method="monte_carlo")`` at a realistic size (target: under a minute).

    .venv/bin/python reproduce/benchmarks/theory_monte_carlo.py [--T 512 --M 1000 --K 100 --n-samples 1000]

Prints the time of each stage measured in the same run (source sampling alone, the exact marginal recursions,
the whole profile), so the ratio of the profile to plain sampling is visible side by side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.theory import VisualMarkovSource, information_profile
from analysis.theory.profile import _marginal_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=512)
    parser.add_argument("--M", type=int, default=1000)
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--target-seconds", type=float, default=60.0)
    args = parser.parse_args()

    source = VisualMarkovSource.random(args.K, args.M, args.alpha, seed=0)
    start = time.perf_counter()
    source.sample(args.n_samples, args.T, seed=0)
    t_sample = time.perf_counter() - start

    start = time.perf_counter()
    _marginal_profile(source, args.T)
    t_marginal = time.perf_counter() - start

    start = time.perf_counter()
    profile = information_profile(source, args.T, "monte_carlo", n_samples=args.n_samples, seed=0)
    t_profile = time.perf_counter() - start

    last = profile.iloc[-1]
    # two estimators of I(V; Y_1..T) from the same samples: H(V) - E H(V | Y_1..T), and the per-sample sum of
    # the per-position terms (its standard error is that of the running sum, H_prefix_se, plus the last term's)
    sum_se = last.H_prefix_se + last.I_vision_given_prefix_se
    print(f"size: T={args.T} M={args.M} K={args.K} alpha={args.alpha} n_samples={args.n_samples}")
    print(f"sampling only        : {t_sample:8.2f} s")
    print(f"exact marginal terms : {t_marginal:8.2f} s")
    verdict = "PASS" if t_profile < args.target_seconds else "FAIL"
    print(
        f"monte_carlo profile  : {t_profile:8.2f} s  (x{t_profile / t_sample:.1f} sampling; "
        f"target < {args.target_seconds:.0f} s: {verdict})"
    )
    print(
        f"check: I(V;Y_1..T) = {last.I_vision_cumulative:.4f} +- {last.I_vision_cumulative_se:.4f} nats "
        f"<= H(V) = {last.H_vision:.4f}; sum_t I(V;Y_t|Y_<t) = {profile.I_vision_given_prefix.sum():.4f} "
        f"+- {sum_se:.4f}; max se of I(V;Y_t|Y_<t) = {np.max(profile.I_vision_given_prefix_se):.2e}"
    )


if __name__ == "__main__":
    main()
