"""``vista mi``: mutual information from a features file, or per text position of a checkpoint.

Two modes::

    vista mi features --features feats.npz --methods ksg gaussian --out mi.csv
    vista mi checkpoint --checkpoint ckpt/ --data data.json --out mi_out/ \\
        --targets e_t h_t --methods ksg gaussian

``features`` reads paired samples: an ``.npz`` with arrays ``x`` (N, d_x) and ``y`` (N, d_y), or a parquet file
with columns ``x`` and ``y`` holding equal-length vectors (or numeric columns ``x_0, x_1, ...`` and ``y_0, ...``).

``checkpoint`` runs a LLaVA-style checkpoint over a LLaVA-JSON dataset and, for every text position ``t``
(1-based index among the sample's non-image tokens, as in the VISTA loss), estimates ``I(h_v; e_t)`` and/or
``I(h_v; h_t)`` across samples, where ``h_v`` is the final hidden state (after the final norm) at the last image
token, ``e_t`` the input embedding and ``h_t`` the final hidden state of text token ``t``; by default each side
is first reduced to its top 8 principal components (``--pca-dim``; the MI of projections is a lower bound).
Positions with too few samples, and estimates that fail (e.g. a constant target makes the Gaussian covariance
singular), are written as rows with ``mi`` = NaN and the reason in ``skipped``, and counted in the summary.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.mi import METHODS, estimate_mi
from vista.errors import DataError, MissingInputError, UsageError, positive_int
from vista.layout import default_image_folder, require_checkpoint, require_file

TARGETS = ("e_t", "h_t")


# ----------------------------------------------------------------------------- features files


def _stack_column(df: pd.DataFrame, key: str, path: Path) -> np.ndarray:
    if key in df.columns:
        col = df[key]
        if col.dtype != object:
            return col.to_numpy(dtype=np.float64)
        lengths = col.map(len)
        if lengths.nunique() != 1:
            bad = int((lengths != lengths.iloc[0]).to_numpy().nonzero()[0][0])
            raise ValueError(
                f"{path}: column {key!r} row {bad} has {lengths.iloc[bad]} values, row 0 has {lengths.iloc[0]}"
            )
        return np.stack([np.asarray(v, dtype=np.float64) for v in col])
    prefixed = [c for c in df.columns if str(c).startswith(f"{key}_") and str(c)[len(key) + 1 :].isdigit()]
    if not prefixed:
        raise ValueError(
            f"{path}: no column {key!r} (vectors) nor {key}_0, {key}_1, ...; columns are {list(df.columns)[:20]}"
        )
    prefixed.sort(key=lambda c: int(str(c)[len(key) + 1 :]))
    return df[prefixed].to_numpy(dtype=np.float64)


def load_features(path: str | Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Paired samples ``(x (N, d_x), y (N, d_y))`` from an ``.npz`` or parquet file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"--features {path}: no such file (an .npz with arrays x, y or a parquet file)"
        )
    if path.suffix == ".npz":
        with np.load(path) as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise UsageError(
                    f"{path}: no array {', '.join(missing)}; it has {', '.join(data.files)} "
                    f"(choose with --x-key/--y-key, e.g. --x-key {data.files[0]})"
                )
            return np.asarray(data[x_key]), np.asarray(data[y_key])
    if path.suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        return _stack_column(df, x_key, path), _stack_column(df, y_key, path)
    raise UsageError(f"{path}: unsupported features file type {path.suffix!r}; use .npz or .parquet")


# ----------------------------------------------------------------------------- checkpoint states


@dataclass
class SampleStates:
    """One sample's representations: ``h_v`` (H,), ``e_t`` and ``h_t`` (T, H), ``supervised`` (T,) bool.

    ``before_image``: how many of the T text tokens precede the last image token (a system prompt, say); their
    states cannot depend on the image under causal attention.
    """

    index: int
    h_v: np.ndarray
    e_t: np.ndarray
    h_t: np.ndarray
    supervised: np.ndarray
    before_image: int = 0


@torch.no_grad()
def extract_states(model: Any, batch: dict[str, torch.Tensor], indices: list[int]) -> list[SampleStates]:
    """Run one forward pass of ``batch`` and split out ``h_v``, ``e_t``, ``h_t`` per sample (float32 numpy).

    Samples without image tokens have no ``h_v`` and are not returned (the caller counts them).
    """
    from vista.loss import build_vista_masks
    from vista.model import capture_vista_states, image_token_id

    with capture_vista_states(model) as capture:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    hidden, embeds = (t.float() for t in capture.states())
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"], batch.get("attention_mask"), image_token_id(model)
    )
    out = []
    for row, index in enumerate(indices):
        image_pos = image_mask[row].nonzero().flatten()
        if image_pos.numel() == 0:
            continue
        text_pos = text_mask[row].nonzero().flatten()
        out.append(
            SampleStates(
                index=index,
                h_v=hidden[row, image_pos[-1]].numpy(),
                e_t=embeds[row, text_pos].numpy(),
                h_t=hidden[row, text_pos].numpy(),
                supervised=(batch["labels"][row, text_pos] != -100).numpy(),
                before_image=int((text_pos < image_pos[-1]).sum()),
            )
        )
    return out


def collect_states(
    checkpoint: str | Path,
    data: str | Path,
    *,
    image_folder: str | Path | None = None,
    template: str | None = None,
    max_length: int = 512,
    max_samples: int | None = None,
    batch_size: int = 8,
) -> tuple[list[SampleStates], dict[str, int]]:
    """Load a checkpoint with ``AutoProcessor``/``LlavaForConditionalGeneration`` and collect states.

    Returns ``(states, counts)`` with ``counts`` = {"samples", "no_image", ...skip reasons from the dataset}.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vista.data import DataCollatorForVista, LlavaJsonDataset
    from vista.images import resolve_image_aspect
    from vista.run_metadata import read_run_metadata, resolve_template_name

    template = resolve_template_name(checkpoint, template)
    image_aspect = resolve_image_aspect(checkpoint)  # the training preprocessing, as probes and evaluation
    if image_folder is None:
        image_folder = default_image_folder(data, read_run_metadata(checkpoint)[0])
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint).eval()
    dataset = LlavaJsonDataset(
        data,
        image_folder,
        processor,
        template,
        max_length,
        on_bad_sample="skip",
        image_aspect=image_aspect,
        show_progress=False,
    )
    collate = DataCollatorForVista(processor)
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    states: list[SampleStates] = []
    for start in tqdm(range(0, n, batch_size), desc="forward", unit="batch"):
        indices = list(range(start, min(n, start + batch_size)))
        states += extract_states(model, collate([dataset[i] for i in indices]), indices)
    counts = {"samples": n, "no_image": n - len(states)}
    counts.update({f"skipped_{k}": v for k, v in dataset.skip_report().to_dict().get("counts", {}).items()})
    return states, counts


# ----------------------------------------------------------------------------- MI per position


def mi_by_position(
    states: list[SampleStates],
    *,
    targets: tuple[str, ...] = TARGETS,
    methods: tuple[str, ...] = ("ksg", "gaussian"),
    max_position: int | None = None,
    min_samples: int = 20,
    positions: str = "after-image",
    **options: Any,
) -> pd.DataFrame:
    """One row per (target, position, method): ``I(h_v; target_t)`` across the samples that reach position t.

    Columns: ``target, position, method, mi, stderr, n_samples, frac_supervised, skipped`` plus estimator
    details. ``position`` is 1-based among the sample's text tokens after the image (``positions="after-image"``,
    the default: earlier tokens cannot see the image) or among all its text tokens (``"all"``, the VISTA loss's
    indexing). Failed or under-populated cells have ``mi`` NaN and the reason in ``skipped``.
    """
    if positions not in ("after-image", "all"):
        raise ValueError(f"positions={positions!r}; expected 'after-image' or 'all'")
    offset = {id(s): (s.before_image if positions == "after-image" else 0) for s in states}
    longest = max((s.e_t.shape[0] - offset[id(s)] for s in states), default=0)
    last = longest if max_position is None else min(longest, max_position)
    rows = []
    for target in targets:
        for t in tqdm(range(1, last + 1), desc=f"MI h_v vs {target}", unit="pos"):
            reach = [s for s in states if s.e_t.shape[0] - offset[id(s)] >= t]
            base = {
                "target": target,
                "position": t,
                "n_samples": len(reach),
                "frac_supervised": float(np.mean([s.supervised[offset[id(s)] + t - 1] for s in reach]))
                if reach
                else np.nan,
            }
            x = np.stack([s.h_v for s in reach]) if reach else None
            y = np.stack([getattr(s, target)[offset[id(s)] + t - 1] for s in reach]) if reach else None
            for method in methods:
                rows.append(base | {"method": method} | _one_estimate(x, y, method, min_samples, options))
    return pd.DataFrame(rows)


def _one_estimate(
    x: np.ndarray | None, y: np.ndarray | None, method: str, min_samples: int, options: dict
) -> dict:
    if x is None or x.shape[0] < min_samples:
        n = 0 if x is None else x.shape[0]
        return {"mi": np.nan, "skipped": f"{n} samples < min_samples={min_samples}"}
    try:
        est = estimate_mi(x, y, method, **_options_for(method, options))
    except ValueError as err:
        return {"mi": np.nan, "skipped": str(err)}
    row = est.as_row()
    row.pop("method")
    return row | {"skipped": ""}


def _options_for(method: str, options: dict) -> dict:
    """Keep only the options ``method`` understands (the CLI passes one set to every method)."""
    common = {"standardize", "pca_dim", "jitter", "seed"}
    own = {
        "ksg": {"k", "workers"},
        "gaussian": {"bias_correct", "ridge"},
    }.get(method, {"critic", "steps", "batch_size", "lr", "eval_fraction", "clip", "hidden", "threads"})
    return {k: v for k, v in options.items() if k in common | own and v is not None}


def plot_mi_by_position(table: pd.DataFrame, path: str | Path) -> Path:
    """MI (nats) versus text position, one panel per target, one line per method, +-1 stderr bands."""
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.5), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], targets):
        for method, sub in table[table["target"] == target].groupby("method", sort=False):
            sub = sub.sort_values("position")
            ax.plot(sub["position"], sub["mi"], marker="o", ms=3, label=method)
            if "stderr" in sub and sub["stderr"].notna().any():
                lo, hi = sub["mi"] - sub["stderr"], sub["mi"] + sub["stderr"]
                ax.fill_between(sub["position"], lo, hi, alpha=0.2)
        ax.set(title=f"I(h_v; {target})", xlabel="text position t", ylabel="MI (nats)")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- CLI


def _add_estimator_args(p: argparse.ArgumentParser, pca_dim: int | None) -> None:
    p.add_argument("--methods", nargs="+", default=["ksg", "gaussian"], choices=METHODS)
    p.add_argument("--k", type=positive_int, default=3, help="KSG neighbours")
    p.add_argument(
        "--pca-dim",
        type=int,
        default=pca_dim,
        help=f"reduce x and y to at most this many principal components (default {pca_dim}; 0: none)",
    )
    p.add_argument("--no-standardize", action="store_true", help="do not z-score columns first")
    p.add_argument("--jitter", type=float, default=0.0, help="relative noise to break exact ties (KSG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--critic", choices=("separable", "concat"), default="separable")
    p.add_argument("--steps", type=positive_int, default=500, help="critic training steps")
    p.add_argument("--batch-size", type=positive_int, default=128, help="critic training batch size")
    p.add_argument("--eval-fraction", type=float, default=0.5, help="held-out fraction for critic evaluation")
    p.add_argument("--clip", type=float, default=5.0, help="SMILE clip tau")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    feats = sub.add_parser("features", help="MI between arrays x and y of a .npz or parquet file")
    feats.add_argument("--features", required=True, help=".npz with x, y or parquet with columns x, y")
    feats.add_argument("--x-key", default="x")
    feats.add_argument("--y-key", default="y")
    feats.add_argument("--out", required=True, help="output table (.csv or .parquet)")
    _add_estimator_args(feats, pca_dim=None)

    ckpt = sub.add_parser("checkpoint", help="MI between h_v and e_t / h_t per text position of a checkpoint")
    ckpt.add_argument("--checkpoint", required=True, help="HF folder of a LlavaForConditionalGeneration")
    ckpt.add_argument("--data", required=True, help="LLaVA-JSON file")
    ckpt.add_argument("--image-folder", default=None, help="root of image paths (default: the JSON's folder)")
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
                rows.append(estimate_mi(x, y, method, **_options_for(method, options)).as_row())
            except ValueError as error:  # too few samples, mismatched shapes: the input cannot be estimated
                raise DataError(f"--features {args.features}: {method}: {error}") from None
        table = pd.DataFrame(rows)
        _write_table(table, Path(args.out))
        print(table[["method", "mi", "stderr", "cap", "n_samples", "dim_x", "dim_y", "seconds"]].to_string())
        print(f"wrote {args.out}")
        return 0

    require_checkpoint(args.checkpoint)
    require_file(args.data, "--data", "a LLaVA JSON, e.g. results/tiny/data/heldout.json")
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
        args.data,
        image_folder=args.image_folder,
        template=args.template,
        max_length=args.max_length,
        max_samples=args.max_samples,
        batch_size=args.forward_batch_size,
    )
    if not states:
        raise DataError(
            f"no usable sample with an image in {args.data} ({counts}); missing images? pass --image-folder DIR"
        )
    if args.save_states:
        _save_states(states, out / "states.npz")
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
            f"no position of {args.data} is reached by --min-samples {args.min_samples} of the {len(states)} samples "
            f"({counts}); use more samples (--max-samples) or lower --min-samples"
        )
    _write_table(table, out / "mi_by_position.csv")
    plot_mi_by_position(table, out / "mi_by_position.png")
    skipped = int((table["skipped"] != "").sum())
    summary = counts | {"cells": len(table), "cells_skipped": skipped}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table.pivot_table(index="position", columns=["target", "method"], values="mi").round(3).to_string())
    print(f"summary: {summary}; wrote {out}/mi_by_position.csv, .png, summary.json")
    return 0


def _save_states(states: list[SampleStates], path: Path) -> None:
    """``h_v`` (N, H); ``e_t``/``h_t`` concatenated (sum T, H) with ``offsets`` (N + 1,) into them."""
    offsets = np.cumsum([0] + [s.e_t.shape[0] for s in states])
    np.savez(
        path,
        index=np.array([s.index for s in states]),
        h_v=np.stack([s.h_v for s in states]),
        e_t=np.concatenate([s.e_t for s in states]),
        h_t=np.concatenate([s.h_t for s in states]),
        supervised=np.concatenate([s.supervised for s in states]),
        offsets=offsets,
    )


def load_states(path: str | Path) -> list[SampleStates]:
    """The inverse of ``--save-states``: ``states.npz`` back into per-sample :class:`SampleStates`."""
    with np.load(path) as data:
        missing = {"index", "h_v", "e_t", "h_t", "supervised", "offsets"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path}: not a `vista mi checkpoint --save-states` file, missing {sorted(missing)}"
            )
        off = data["offsets"]
        return [
            SampleStates(
                index=int(data["index"][i]),
                h_v=data["h_v"][i],
                e_t=data["e_t"][off[i] : off[i + 1]],
                h_t=data["h_t"][off[i] : off[i + 1]],
                supervised=data["supervised"][off[i] : off[i + 1]],
            )
            for i in range(len(off) - 1)
        ]
