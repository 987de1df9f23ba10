"""``vista mi``: mutual information from a features file, or per text position of a checkpoint.

Two modes::

    vista mi features --features feats.npz --methods ksg gaussian --out mi.csv
    vista mi checkpoint --checkpoint ckpt/ --data data.json --out mi_out/ \\
        --targets e_t h_t --methods ksg gaussian

``features`` reads paired samples: an ``.npz`` with arrays ``x`` (N, d_x) and ``y`` (N, d_y), or a parquet file
with columns ``x`` and ``y`` holding equal-length vectors (or numeric columns ``x_0, x_1, ...`` and ``y_0, ...``).

``checkpoint`` runs a checkpoint (the LLaVA recipe, or any family of :mod:`vista.families` trained with
``model.pretrained``, prompted with its own chat template) over a LLaVA-JSON dataset and, for every text position ``t``
(1-based index among the sample's non-image tokens, as in the VISTA loss), estimates ``I(h_v; e_t)`` and/or
``I(h_v; h_t)`` across samples, where ``h_v`` is the final hidden state (after the final norm) at the last image
token, ``e_t`` the input embedding and ``h_t`` the final hidden state of text token ``t``; by default each side
is first reduced to its top 8 principal components (``--pca-dim``; the MI of projections is a lower bound).
Positions with too few samples, and estimates that fail (e.g. a constant target makes the Gaussian covariance
singular), are written as rows with ``mi`` = NaN and the reason in ``skipped``, and counted in the summary.
``--data`` is a LLaVA JSON file or, as for ``vista probe``, a folder holding exactly one. ``summary.json`` records
the counts and, under ``settings``, every setting the estimates depend on (run, checkpoint, data, template,
methods, k, PCA dimension, jitter, seed, sample and position limits, critic settings), which ``vista report``
quotes. Critic estimates whose held-out bound is below the floor (an overfit critic, see
:mod:`analysis.mi.critics`) are flagged in the ``below_floor`` column and named in a warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.mi.by_position import TARGETS, mi_by_position, options_for, plot_mi_by_position
from analysis.mi.critics import critic_warning
from analysis.mi.estimate import estimate_mi
from analysis.mi.estimators import CRITIC_METHODS, DEFAULT_JITTER, METHODS
from analysis.mi.features import load_features
from analysis.mi.states import collect_states, save_states
from vista.errors import DataError, MissingInputError, UsageError, non_negative_float, positive_int
from vista.layout import find_json, require_checkpoint
from vista.run_metadata import parse_run_name, read_run_metadata, recorded_template


def _add_estimator_args(p: argparse.ArgumentParser, pca_dim: int | None) -> None:
    p.add_argument("--methods", nargs="+", default=["ksg", "gaussian"], choices=METHODS)
    p.add_argument("--k", type=positive_int, default=3, help="KSG neighbours")
    p.add_argument(
        "--pca-dim",
        type=int,
        default=pca_dim,
        help="reduce x and y to at most this many principal components (0: no reduction; default: "
        + (f"{pca_dim})" if pca_dim else "no reduction)"),
    )
    p.add_argument("--no-standardize", action="store_true", help="do not z-score columns first")
    p.add_argument(
        "--jitter",
        type=non_negative_float,
        default=DEFAULT_JITTER,
        help=f"relative noise (x each column's std) to break exact ties, which bias KSG (default {DEFAULT_JITTER:g}; "
        "0: none, KSG then refuses duplicated samples)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--critic", choices=("separable", "concat"), default="separable")
    p.add_argument("--steps", type=positive_int, default=500, help="critic training steps")
    p.add_argument("--batch-size", type=positive_int, default=128, help="critic training batch size")
    p.add_argument("--eval-fraction", type=float, default=0.5, help="held-out fraction for critic evaluation")
    p.add_argument("--clip", type=float, default=5.0, help="SMILE clip tau")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    feats = sub.add_parser(
        "features",
        help="MI between arrays x and y of a .npz or parquet file",
        epilog="example:\n  vista mi features --features pairs.npz --out mi.csv --methods ksg gaussian",
    )
    feats.add_argument("--features", required=True, help=".npz with x, y or parquet with columns x, y")
    feats.add_argument("--x-key", default="x")
    feats.add_argument("--y-key", default="y")
    feats.add_argument("--out", required=True, help="output table (.csv or .parquet)")
    _add_estimator_args(feats, pca_dim=None)

    ckpt = sub.add_parser(
        "checkpoint",
        help="MI between h_v and e_t / h_t per text position of a checkpoint",
        epilog="example:\n  vista mi checkpoint --checkpoint results/tiny/runs/tiny__vista__seed1/finetune "
        "--data results/tiny/data/heldout.json --out results/tiny/mi/vista",
    )
    ckpt.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint folder `vista train` wrote (LLaVA recipe or any family of vista/families.py)",
    )
    ckpt.add_argument(
        "--data",
        required=True,
        help="LLaVA-JSON file, or a folder holding exactly one .json/.jsonl (as vista probe)",
    )
    ckpt.add_argument(
        "--image-folder",
        default=None,
        help="root of image paths (default: the JSON's folder, else its images/ subfolder as `vista data synth` "
        "writes it, else the checkpoint's training data.image_folder)",
    )
    ckpt.add_argument(
        "--template",
        default=None,
        help="conversation template (default: from the checkpoint's vista_run.json)",
    )
    ckpt.add_argument("--max-length", type=int, default=512)
    ckpt.add_argument("--max-samples", type=int, default=None)
    ckpt.add_argument("--forward-batch-size", type=positive_int, default=8)
    ckpt.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ckpt.add_argument("--max-position", type=int, default=32)
    ckpt.add_argument(
        "--positions",
        choices=("after-image", "all"),
        default="after-image",
        help="count positions from the first text token after the image (default) or from the start",
    )
    ckpt.add_argument("--min-samples", type=int, default=20, help="skip positions reached by fewer samples")
    ckpt.add_argument("--save-states", action="store_true", help="also write states.npz (h_v, e_t, h_t)")
    ckpt.add_argument("--out", required=True, help="output folder")
    _add_estimator_args(ckpt, pca_dim=8)  # hidden sizes are large next to the number of samples


def _estimator_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "k": args.k,
        "pca_dim": args.pca_dim or None,
        "standardize": not args.no_standardize,
        "jitter": args.jitter,
        "seed": args.seed,
        "critic": args.critic,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "eval_fraction": args.eval_fraction,
        "clip": args.clip,
    }


def _write_table(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)


def run(args: argparse.Namespace) -> int:
    options = _estimator_options(args)
    if args.mode == "features":
        x, y = load_features(args.features, args.x_key, args.y_key)
        rows = []
        for method in args.methods:
            try:
                rows.append(estimate_mi(x, y, method, **options_for(method, options)).as_row())
            except ValueError as error:  # too few samples, mismatched shapes: the input cannot be estimated
                raise DataError(f"--features {args.features}: {method}: {error}") from None
        table = pd.DataFrame(rows)
        _write_table(table, Path(args.out))
        print(table[["method", "mi", "stderr", "cap", "n_samples", "dim_x", "dim_y", "seconds"]].to_string())
        print(f"wrote {args.out}")
        _warn_critics(rows)
        return 0

    require_checkpoint(args.checkpoint)
    data = find_json(Path(args.data))
    if args.image_folder is not None and not Path(args.image_folder).is_dir():
        raise MissingInputError(f"--image-folder {args.image_folder}: no such folder")
    if args.max_samples is not None and args.max_samples < args.min_samples:
        raise UsageError(
            f"--max-samples {args.max_samples} is below --min-samples {args.min_samples}: every position would be "
            f"skipped; e.g. --max-samples {max(4 * args.min_samples, 64)}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    states, counts = collect_states(
        args.checkpoint,
        data,
        image_folder=args.image_folder,
        template=args.template,
        max_length=args.max_length,
        max_samples=args.max_samples,
        batch_size=args.forward_batch_size,
    )
    if not states:
        raise DataError(
            f"no usable sample with an image in {data} ({counts}); missing images? pass --image-folder DIR"
        )
    if args.save_states:
        save_states(states, out / "states.npz")
    table = mi_by_position(
        states,
        targets=tuple(args.targets),
        methods=tuple(args.methods),
        max_position=args.max_position,
        min_samples=args.min_samples,
        positions=args.positions,
        **options,
    )
    if table["mi"].notna().sum() == 0:
        raise DataError(
            f"no position of {data} is reached by --min-samples {args.min_samples} of the {len(states)} samples "
            f"({counts}); use more samples (--max-samples) or lower --min-samples"
        )
    _write_table(table, out / "mi_by_position.csv")
    run_label = _run_label(Path(args.checkpoint))
    plot_mi_by_position(table, out / "mi_by_position.png", title=run_label)
    skipped = int((table["skipped"] != "").sum())
    settings = _settings(args, run_label, data)
    summary = counts | {"cells": len(table), "cells_skipped": skipped, "settings": settings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table.pivot_table(index="position", columns=["target", "method"], values="mi").round(3).to_string())
    print(f"summary: {counts | {'cells': len(table), 'cells_skipped': skipped}}; wrote {out}/mi_by_position.csv, "
          ".png, summary.json")  # fmt: skip
    _warn_critics(table.to_dict(orient="records"))
    return 0


def _warn_critics(rows: list[dict]) -> None:
    """Print :func:`critic_warning`'s line on stderr when some critic estimate is below the floor."""
    message = critic_warning(rows)
    if message:
        print(f"warning: {message}", file=sys.stderr)


def _run_label(checkpoint: Path) -> str:
    """The checkpoint's run name and the folders below it (``tiny__vista__seed1/finetune``), else its path."""
    for folder in (checkpoint, *checkpoint.parents):
        if parse_run_name(folder.name):
            return checkpoint.relative_to(folder.parent).as_posix()
    return checkpoint.as_posix()


def _settings(args: argparse.Namespace, run_label: str, data: Path) -> dict[str, Any]:
    """Every setting the estimates depend on, for summary.json (``vista report`` quotes them)."""
    settings = {
        "run": run_label,
        "checkpoint": str(args.checkpoint),
        "data": str(data),
        "image_folder": args.image_folder,
        "template": args.template or recorded_template(read_run_metadata(args.checkpoint)[0]),
        "max_length": args.max_length,
        "max_samples": args.max_samples,
        "min_samples": args.min_samples,
        "max_position": args.max_position,
        "positions": args.positions,
        "targets": list(args.targets),
        "methods": list(args.methods),
        "standardize": not args.no_standardize,
        "pca_dim": args.pca_dim or None,
        "jitter": args.jitter,
        "seed": args.seed,
    }
    if "ksg" in args.methods:
        settings["k"] = args.k
    if set(args.methods) & set(CRITIC_METHODS):
        settings |= {
            "critic": args.critic,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "eval_fraction": args.eval_fraction,
        }
        if "smile" in args.methods:
            settings["clip"] = args.clip
    return settings
