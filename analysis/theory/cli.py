"""``vista theory``: information profile of a random visual Markov source, as CSV files and figures.

    vista theory --K 4 --M 8 --T 64 --alpha 0.3 --out runs/theory

Writes to ``--out``: ``profile.csv`` (one row per position, nats; Monte Carlo adds ``*_se`` columns),
``shares.csv``, ``by_length.csv``, ``lemmas.csv``, ``residuals.csv``, ``summary.json`` and the figures
``theory_profile.png``, ``theory_alignment_decay.png``, ``theory_vista_signal.png``, ``theory_lemmas.png``;
with ``--bridge`` also ``bridge_per_position.csv``, ``bridge_summary.csv``, ``bridge_history.csv`` and
``theory_bridge.png`` (see :mod:`analysis.theory.bridge`).
``--method auto`` (default) uses the exact method when its lumped prefix states fit in ``--max-states`` and
Monte Carlo otherwise, and says which it used.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("vista.theory")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--K", type=int, default=4, help="number of image values")
    parser.add_argument("--M", type=int, default=8, help="vocabulary size")
    parser.add_argument("--T", type=int, default=64, help="text length")
    parser.add_argument(
        "--alpha", type=float, default=0.3, help="weight of the image in each token's distribution"
    )
    parser.add_argument("--method", choices=("auto", "exact", "monte_carlo"), default="auto")
    parser.add_argument("--n-samples", type=int, default=2000, help="Monte Carlo samples")
    parser.add_argument("--max-states", type=int, default=200_000, help="exact method: lumped-state limit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random source")
    parser.add_argument("--mc-seed", type=int, default=0, help="seed of the Monte Carlo samples")
    parser.add_argument(
        "--image-concentration",
        type=float,
        default=0.3,
        help="Dirichlet concentration of the emission rows (small: informative tokens)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-figures", action="store_true", help="write only the CSV and JSON files")
    parser.add_argument(
        "--bridge",
        action="store_true",
        help="also train the tiny models of analysis.theory.bridge (own small source; 10-60 s)",
    )
    parser.add_argument("--bridge-steps", type=int, default=300, help="training steps per bridge model")


def run(args: argparse.Namespace) -> int:
    from vista.errors import UsageError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except ValueError as err:  # invalid parameters: one clear line (vista.cli), no traceback
        raise UsageError(str(err)) from None


def _run(args: argparse.Namespace) -> int:
    from analysis.theory import (
        VisualMarkovSource,
        alignment_shares,
        chain_rule_residuals,
        information_profile,
        lemma_checks,
        objective_by_length,
    )

    source = VisualMarkovSource.random(
        args.K, args.M, args.alpha, seed=args.seed, image_concentration=args.image_concentration
    )
    start = time.perf_counter()
    profile = _profile(information_profile, source, args)
    elapsed = time.perf_counter() - start
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    profile.to_csv(out / "profile.csv", index=False)
    alignment_shares(profile).to_csv(out / "shares.csv", index=False)
    by_length = objective_by_length(profile)
    by_length.to_csv(out / "by_length.csv", index=False)
    lemma_checks(profile).to_csv(out / "lemmas.csv", index=False)
    residuals = chain_rule_residuals(profile)
    residuals.to_csv(out / "residuals.csv", index=False)

    last = profile.iloc[-1]
    summary = {
        "K": args.K,
        "M": args.M,
        "T": args.T,
        "alpha": args.alpha,
        "seed": args.seed,
        "method": profile.attrs["method"],
        "n_samples": profile.attrs.get("n_samples") if profile.attrs["method"] == "monte_carlo" else None,
        "mc_seed": args.mc_seed if profile.attrs["method"] == "monte_carlo" else None,
        "seconds": round(elapsed, 3),
        "H_vision": float(last.H_vision),
        "I_vision_all_text": float(last.I_vision_cumulative),
        "sum_I_vision_given_prefix": float(profile.I_vision_given_prefix.sum()),
        "ce_visual_per_token_at_T": float(by_length.ce_visual_per_token.iloc[-1]),
        "ce_visual_share_at_T": float(by_length.ce_visual_share.iloc[-1]),
        "vista_signal_linear_at_T": float(by_length.vista_signal_linear.iloc[-1]),
        "max_abs_chain_rule_residual": float(
            residuals[["visual_first", "text_first", "token_chain"]].abs().max().max()
        ),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_figures:
        _figures(profile, out)
    for key, value in summary.items():
        log.info("%-28s %s", key, value)
    if args.bridge:
        _bridge(args, out)
    log.info("wrote %s", out)
    return 0


def _bridge(args: argparse.Namespace, out: Path) -> None:
    from analysis.theory.bridge import BridgeConfig, bridge_curves, run_bridge

    result = run_bridge(BridgeConfig(steps=args.bridge_steps), progress=True)
    result.per_position.to_csv(out / "bridge_per_position.csv", index=False)
    result.summary.to_csv(out / "bridge_summary.csv", index=False)
    result.history.to_csv(out / "bridge_history.csv", index=False)
    log.info("bridge (exact I(V;Y_t|Y_<t) vs trained models):\n%s", result.summary.to_string(index=False))
    if not args.no_figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from analysis.theory.plots import plot_theory_bridge

        fig = plot_theory_bridge(bridge_curves(result))
        fig.savefig(out / "theory_bridge.png", dpi=120)
        plt.close(fig)


def _profile(information_profile, source, args: argparse.Namespace):
    kwargs = dict(n_samples=args.n_samples, seed=args.mc_seed, max_states=args.max_states, progress=True)
    if args.method != "auto":
        return information_profile(source, args.T, args.method, **kwargs)
    try:
        return information_profile(source, args.T, "exact", **kwargs)
    except ValueError as err:
        if "max_states" not in str(err):
            raise
        log.info("exact method infeasible (%s); using monte_carlo with %d samples", err, args.n_samples)
        return information_profile(source, args.T, "monte_carlo", **kwargs)


def _figures(profile, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.theory.plots import (
        plot_theory_alignment_decay,
        plot_theory_lemmas,
        plot_theory_profile,
        plot_theory_vista_signal,
    )

    for name, plot in (
        ("theory_profile", plot_theory_profile),
        ("theory_alignment_decay", plot_theory_alignment_decay),
        ("theory_vista_signal", plot_theory_vista_signal),
        ("theory_lemmas", plot_theory_lemmas),
    ):
        fig = plot(profile)
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
