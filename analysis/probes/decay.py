"""Alignment decay in trained checkpoints: the image's contribution to the answer versus preceding text and position.

Two views, both per training variant with bootstrap confidence intervals (notebook 02, section 1):

* **versus preceding text** -- the synthetic world's ``world_len_<N>`` split puts the *same* questions and images
  behind ``N`` words of image-independent text (``vista/world/benchmarks.py``). :func:`probe_length_split` probes
  every trained checkpoint of a results folder on it; :func:`by_preceding_words` averages the answer tokens of
  each question over seeds and bootstraps over questions (the same questions at every ``N``, so the curves are
  paired across ``N`` and across variants).
* **versus position** -- the ``probes`` stage's rows (``probes/probes.parquet``, held-out data, seed 1):
  :func:`by_position` bins answer tokens by their text position and bootstraps over samples.

A contribution is a probe value in nats (e.g. blank-image ablation: ``log p(answer | image) - log p(answer |
blank image)``); the plots here draw one message per figure with the legend outside the axes.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.probes.aggregate import curve
from analysis.probes.runner import run_probes
from analysis.probes.scoring import HFScorer
from vista.world.text import SHORT_ANSWER_PROMPT

LENGTH_FILE = re.compile(r"world_len_(\d+)\.parquet$")
LENGTH_ID = re.compile(r"^len(\d+)-(\d+)$")  # record ids of world_len_<N>: len<N>-<question index>
PROBE_MAX_LENGTH = 2048  # tokens; lmms-eval does not truncate prompts, so neither do the probes here


def length_split_files(benchmarks: Path) -> dict[int, Path]:
    """``{N: world_len_<N>.parquet}`` under a world benchmark folder (``<results>/data/benchmarks``); may be empty."""
    folder = Path(benchmarks) / "data"
    found = {
        int(m.group(1)): p for p in folder.glob("world_len_*.parquet") if (m := LENGTH_FILE.search(p.name))
    }
    return dict(sorted(found.items()))


def length_split_json(benchmarks: Path, out: Path, questions: int | None = None) -> Path:
    """Write the ``world_len_<N>`` split as one LLaVA JSON (images as PNG files beside it) for :mod:`vista.data`.

    Args:
        benchmarks: the world's benchmark folder (holding ``data/world_len_<N>.parquet``).
        out: folder for ``length_split.json`` and ``images/``.
        questions: keep the first ``questions`` questions of every ``N`` (the same questions at each ``N``).

    Returns:
        The JSON path (``length_split_q<questions>.json``). Prompts are the lmms-eval task's: ``<image>\\n<passage>\\n<question>\\n<short-answer prompt>``.

    Raises:
        FileNotFoundError: no ``world_len_*.parquet`` under ``benchmarks/data``.
        ValueError: a record id is not ``len<N>-<i>`` or its image has no bytes (file and id named).
    """
    files = length_split_files(benchmarks)
    if not files:
        raise FileNotFoundError(f"{benchmarks}/data: no world_len_*.parquet (written by `vista data synth`)")
    images = Path(out) / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for path in files.values():
        table = pd.read_parquet(path)
        for row in table.head(questions).itertuples() if questions else table.itertuples():
            if not LENGTH_ID.match(str(row.id)):
                raise ValueError(f"{path}: record id {row.id!r} is not len<N>-<question index>")
            image = row.image.get("bytes") if isinstance(row.image, dict) else None
            if not image:
                raise ValueError(f"{path}: record {row.id}: image has no bytes")
            (images / f"{row.id}.png").write_bytes(image)
            human = f"<image>\n{row.question}\n{SHORT_ANSWER_PROMPT}"
            records.append(
                {
                    "id": str(row.id),
                    "image": f"{row.id}.png",
                    "conversations": [
                        {"from": "human", "value": human},
                        {"from": "gpt", "value": row.answer},
                    ],
                }
            )
    target = Path(out) / f"length_split_q{questions or 'all'}.json"  # the name keys the probe cache
    target.write_text(json.dumps(records))
    return target


def trained_checkpoints(results: Path) -> pd.DataFrame:
    """The final (stage-2) checkpoints of a results folder: columns ``variant``, ``seed``, ``path``."""
    from analysis.report.training import training_runs

    rows = [
        {"variant": labels["variant"], "seed": labels["seed"], "path": folder}
        for labels, folder in training_runs(Path(results))
        if labels["stage"] == "finetune" and (folder / "config.json").is_file()
    ]
    return pd.DataFrame(rows, columns=["variant", "seed", "path"])


def probe_length_split(
    checkpoints: pd.DataFrame,
    json_path: Path,
    measure: tuple[str, str] = ("ablation", "blank"),
    device: str = "cpu",
    batch_size: int = 16,
    cache: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Probe every checkpoint on the length split; rows of all checkpoints in one frame, and skip reports.

    Args:
        checkpoints: rows with ``variant``, ``seed``, ``path`` (see :func:`trained_checkpoints`).
        json_path: from :func:`length_split_json` (images resolved beside it).
        measure: ``(probe, variant)``; an ``ablation`` runs only that variant (two forward passes per sample),
            other probes run in full (:func:`analysis.probes.runner.run_probes`).
        cache: a folder for one parquet file per checkpoint and setting (``<run>__<probe>-<variant>__<json>.parquet``);
            a file newer than its checkpoint is read instead of probing again. None: no cache.

    Returns:
        (rows, info): probe rows plus ``run_variant``, ``seed``, ``preceding_words`` (N) and ``question`` (index,
        the same at every N); info maps ``"<variant> seed <s>"`` to the probe's sample and skip counts.
    """
    frames, info = [], {}
    for item in checkpoints.itertuples():
        name = f"{item.variant} seed {item.seed}"
        path = Path(item.path)
        stored = None
        if cache is not None:
            stored = Path(cache) / f"{path.parent.name}__{measure[0]}-{measure[1]}__{json_path.stem}.parquet"
        if (
            stored is not None
            and stored.is_file()
            and stored.stat().st_mtime > (path / "config.json").stat().st_mtime
        ):
            rows = pd.read_parquet(stored)
            info[name] = json.loads(stored.with_suffix(".json").read_text())
        else:
            rows, info[name] = _probe_one(path, json_path, measure, device, batch_size)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                rows.to_parquet(stored, index=False)
                stored.with_suffix(".json").write_text(json.dumps(info[name]))
        ids = rows["sample_id"].str.extract(LENGTH_ID).astype(int)
        frames.append(
            rows.assign(
                run_variant=item.variant, seed=item.seed, preceding_words=ids[0], question=ids[1].astype(str)
            )
        )
    if not frames:
        raise ValueError("probe_length_split: no checkpoints given")
    return pd.concat(frames, ignore_index=True), info


def _probe_one(
    checkpoint: Path,
    json_path: Path,
    measure: tuple[str, str],
    device: str,
    batch_size: int,
    attn_implementation: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Probe rows and skip report of one checkpoint; ``attn_implementation`` None: what the probe needs
    (:func:`analysis.probes.runner.attention_backend`)."""
    from analysis.probes.ablation import ablation_probe
    from analysis.probes.cli import load_checkpoint, load_samples, read_run
    from analysis.probes.runner import attention_backend

    settings = argparse.Namespace(template=None, max_length=PROBE_MAX_LENGTH, limit=None)
    probe, variant = measure
    model, processor = load_checkpoint(checkpoint, device, attn_implementation or attention_backend([probe]))
    samples, report = load_samples(
        json_path, json_path.parent / "images", processor, checkpoint, read_run(checkpoint), settings
    )
    scorer = HFScorer(model, processor, batch_size=batch_size)
    if probe == "ablation":
        rows = ablation_probe(scorer, samples, variants=[variant])
    else:
        rows = run_probes(scorer, samples, [probe])
    return rows, report


def by_preceding_words(
    rows: pd.DataFrame,
    probe: str = "ablation",
    variant: str = "blank",
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean contribution of the answer tokens per training variant and N, with a bootstrap CI over questions.

    Each question's value is its answer tokens' mean, averaged over seeds, so the interval reflects which
    questions were asked; seed-to-seed spread shows in :func:`seed_means`. Columns: ``run_variant``,
    ``preceding_words``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (questions), ``n_nonfinite``, ``level``.
    """
    part = _answer_rows(rows, probe, variant)
    return curve(
        part,
        x="preceding_words",
        groups=("run_variant",),
        unit="question",
        n_resamples=n_resamples,
        seed=seed,
    )


def seed_means(rows: pd.DataFrame, probe: str = "ablation", variant: str = "blank") -> pd.DataFrame:
    """Per training variant, seed and N: the mean contribution over answer tokens of all questions (nats)."""
    part = _answer_rows(rows, probe, variant)
    return part.groupby(["run_variant", "seed", "preceding_words"])["value"].mean().reset_index()


def by_position(
    rows: pd.DataFrame,
    probe: str = "ablation",
    variant: str = "blank",
    bin_width: int = 16,
    min_samples: int = 10,
    supervised_only: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean contribution per checkpoint and text-position bin (``position_bin``: the bin's first position).

    Args:
        rows: ``vista probe`` rows (``probes.parquet``): ``checkpoint``, ``probe``, ``variant``, ``position``, ...
        bin_width: text positions per bin (tokens).
        min_samples: bins with fewer samples are dropped (their interval would be noise).
        supervised_only: answer tokens only (those the training loss saw).

    Returns:
        :func:`~analysis.probes.aggregate.curve` columns with ``position_bin`` as x, plus ``checkpoint``.
    """
    part = rows[(rows["probe"] == probe) & (rows["variant"] == variant)]
    if supervised_only:
        part = part[part["supervised"]]
    if part.empty:
        raise ValueError(f"by_position: no rows for probe {probe!r}, variant {variant!r}")
    part = part.assign(position_bin=(part["position"] // bin_width) * bin_width)
    out = curve(part, x="position_bin", groups=("checkpoint",), n_resamples=n_resamples, seed=seed)
    return out[out["n"] >= min_samples].reset_index(drop=True)


def _answer_rows(rows: pd.DataFrame, probe: str, variant: str) -> pd.DataFrame:
    part = rows[(rows["probe"] == probe) & (rows["variant"] == variant) & rows["supervised"]]
    if part.empty:
        raise ValueError(f"no answer-token rows for probe {probe!r}, variant {variant!r}")
    return part


def plot_decay(
    curves: pd.DataFrame,
    x: str,
    hue: str,
    xlabel: str,
    ylabel: str,
    title: str,
    ax: plt.Axes | None = None,
    xscale: str = "linear",
    legend_title: str | None = None,
) -> plt.Figure:
    """One line per ``hue`` value with its confidence band; the legend sits outside the axes, to the right.

    ``curves`` holds :func:`~analysis.probes.aggregate.curve` columns (``mean``, ``ci_low``, ``ci_high``, ``level``).
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
    else:
        fig = ax.figure
    for name, part in curves.groupby(hue, sort=True):
        part = part.sort_values(x)
        xs = part[x].to_numpy(dtype=float)
        (line,) = ax.plot(xs, part["mean"], marker="o", ms=4, label=str(name))
        ax.fill_between(xs, part["ci_low"], part["ci_high"], color=line.get_color(), alpha=0.18, lw=0)
    ax.axhline(0, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale=xscale)
    level = float(curves["level"].iloc[0]) if "level" in curves and len(curves) else np.nan
    title = legend_title or f"{hue.replace('_', ' ')} ({level:.0%} CI)"
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return fig


def slope_per_100_words(curves: pd.DataFrame) -> pd.Series:
    """Least-squares slope of the mean contribution against N, per training variant (nats per 100 words)."""
    return curves.groupby("run_variant").apply(
        lambda p: 100 * np.polyfit(p["preceding_words"].astype(float), p["mean"], 1)[0], include_groups=False
    )


def probe_rows(results: Path) -> pd.DataFrame | None:
    """The ``probes`` stage's rows (``<results>/probes/probes.parquet``), or None if absent."""
    path = Path(results) / "probes" / "probes.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def describe_checkpoints(checkpoints: pd.DataFrame) -> Mapping[str, list[int]]:
    """``{variant: [seeds]}`` for a one-line summary of what was probed."""
    return {v: sorted(p["seed"].tolist()) for v, p in checkpoints.groupby("variant", sort=True)}


def available_measures(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The ``(probe, variant)`` pairs present in probe rows that give one value per text token (not attention)."""
    pairs = rows.loc[rows["probe"] != "attention", ["probe", "variant"]].drop_duplicates()
    return sorted((str(p), str(v)) for p, v in pairs.to_numpy())


def decay_summary(curves: pd.DataFrame) -> list[str]:
    """One Markdown bullet per training variant: the contribution at the shortest and longest N, and the slope."""
    slopes = slope_per_100_words(curves)
    lines = []
    for variant, part in curves.groupby("run_variant", sort=True):
        first, last = part.sort_values("preceding_words").iloc[[0, -1]].itertuples()
        lines.append(
            f"* **{variant}**: {first.mean:.3f} nats [{first.ci_low:.3f}, {first.ci_high:.3f}] with "
            f"{first.preceding_words} preceding words, {last.mean:.3f} [{last.ci_low:.3f}, {last.ci_high:.3f}] with "
            f"{last.preceding_words}; slope {slopes[variant]:+.3f} nats per 100 words."
        )
    return lines
