"""Training curves of cross-entropy, the VISTA term and the similarity score, read from Trainer logs.

``VistaTrainer`` logs ``loss``, ``ce_loss``, ``vista_loss`` and ``vista_similarity`` every ``logging_steps``; the
HF Trainer stores them in ``trainer_state.json`` (``log_history``). These are the reference curves users compare
their runs against.

Windows without an image. The trainer sums the VISTA term over the window's micro-batches and divides by their
number; a text-only micro-batch adds 0 (it has no image to align) and logs ``vista_samples`` = 0 for its window.
LLaVA's modality-grouped sampler makes whole micro-batches text-only, so with ``logging_steps`` 1 a finetune log
alternates between the term's value and an exact 0.0 that is not a value of the term. Those windows
(``vista_samples`` == 0) are left out of the ``vista_loss`` curve and counted (``attrs["text_only_windows"]``);
``vista_similarity`` is not logged for them at all. A window mixing image and text-only micro-batches
(``logging_steps`` or gradient accumulation > 1) still logs a ``vista_loss`` diluted by its text-only
micro-batches: the log does not say how many micro-batches had an image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.palette import variant_palette  # noqa: E402
from vista.run_metadata import read_run_metadata  # noqa: E402

CURVE_METRICS = ("loss", "ce_loss", "vista_loss", "vista_similarity")
# y-axis label per (metric, distance); the VISTA metrics measure different things under L2 and cosine runs
YLABELS = {
    ("loss", None): "training loss, CE + λ·VISTA [nats/token]",
    ("ce_loss", None): "cross-entropy [nats/token]",
    ("vista_loss", "l2"): "VISTA term, L2: position-weighted\nMSE(h_v, e_t) [hidden units²]",
    ("vista_loss", "cosine"): "VISTA term, cosine: minus position-\nweighted cos(h_v, e_t) [unitless]",
    ("vista_similarity", "l2"): "MSE(h_v, e_t) [hidden units²]\n(lower = closer)",
    ("vista_similarity", "cosine"): "cos(h_v, e_t) [unitless]\n(higher = closer)",
}


def find_trainer_state(run_dir: str | Path) -> Path:
    """``trainer_state.json`` of a run: at its top level, else in its latest ``checkpoint-*`` folder."""
    run_dir = Path(run_dir)
    top = run_dir / "trainer_state.json"
    if top.is_file():
        return top
    checkpoints = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
    if not checkpoints:
        raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoint-* folders")
    return checkpoints[-1]


def load_training_logs(runs: Iterable[tuple[dict, str | Path]]) -> pd.DataFrame:
    """Long table of logged training metrics.

    Args:
        runs: pairs ``(labels, run_dir)``; ``labels`` (e.g. ``{"variant": "vista", "seed": 1, "stage": "finetune"}``)
            become columns.

    Returns:
        One row per (run, logging step, metric) with columns ``step``, ``epoch``, ``metric``, ``value``, the label
        columns and ``source`` (the trainer_state.json read). ``vista_loss`` of windows without an image sample
        (``vista_samples`` == 0, see the module docstring) is left out; ``attrs["text_only_windows"]`` counts them
        per ``stage`` label (``"all"`` without one).
    """
    rows = []
    text_only: dict[str, int] = {}
    for labels, run_dir in runs:
        path = find_trainer_state(run_dir)
        try:
            history = json.loads(path.read_text())["log_history"]
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{path}: not a Trainer state file with 'log_history' ({error})") from error
        distance = run_distance(run_dir)
        for entry in history:
            no_image = entry.get("vista_samples") == 0  # the trainer's 0.0 here is no value of the term
            if no_image and "vista_loss" in entry:
                stage = str(labels.get("stage", "all"))
                text_only[stage] = text_only.get(stage, 0) + 1
            for metric in CURVE_METRICS:
                if metric == "vista_loss" and no_image:
                    continue
                if metric in entry and "step" in entry:
                    rows.append(
                        {
                            **labels,
                            "step": int(entry["step"]),
                            "epoch": entry.get("epoch"),
                            "metric": metric,
                            "value": float(entry[metric]),
                            "distance": distance,
                            "source": str(path),
                        }
                    )
    if not rows:
        raise ValueError(
            "no training metrics found in the given runs (is logging_steps larger than the run?)"
        )
    logs = pd.DataFrame(rows)
    logs.attrs["text_only_windows"] = text_only
    return logs


def run_distance(run_dir: str | Path) -> str:
    """The VISTA distance (``l2`` or ``cosine``) a run logged its similarity with, from its run metadata
    (:func:`vista.run_metadata.read_run_metadata`: the folder or its parent; ``l2``, the default, when the file or
    key is absent). Raises ``ValueError`` naming the file when the metadata is not readable JSON."""
    meta, _ = read_run_metadata(run_dir)
    vista = meta.get("vista")
    distance = vista.get("distance") if isinstance(vista, dict) else None
    return str(distance) if distance else "l2"


def _panels(logs: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(metric, distance) panels: one per metric, the VISTA metrics split by distance (one measure per axis)."""
    panels = []
    distances = sorted(set(logs["distance"])) if "distance" in logs else ["l2"]
    for metric in CURVE_METRICS:
        if metric not in set(logs["metric"]):
            continue
        if metric.startswith("vista_"):
            panels += [
                (metric, d) for d in distances if ((logs["metric"] == metric) & (logs["distance"] == d)).any()
            ]
        else:
            panels.append((metric, None))
    return panels


def plot_training_curves(logs: pd.DataFrame, path: str | Path, *, hue: str = "variant") -> Path:
    """One panel per (stage, metric[, distance]): mean over seeds with a ± 1 sd band, one line per ``hue``.

    ``vista_loss`` and ``vista_similarity`` get one panel per distance: an L2 run logs an MSE, a cosine run a
    cosine similarity, which do not share an axis.
    """
    if "distance" not in logs:
        logs = logs.assign(distance="l2")
    panels = _panels(logs)
    variants = list(dict.fromkeys(logs[hue]))
    palette = variant_palette(variants)  # same colour in every panel
    stages = list(dict.fromkeys(logs["stage"])) if "stage" in logs else [None]
    fig, axes = plt.subplots(
        len(stages), len(panels), figsize=(3.6 * len(panels), 3.1 * len(stages)), squeeze=False
    )
    for row, stage in enumerate(stages):
        stage_logs = logs if stage is None else logs[logs["stage"] == stage]
        for col, (metric, distance) in enumerate(panels):
            ax = axes[row][col]
            data = stage_logs[stage_logs["metric"] == metric]
            if distance is not None:
                data = data[data["distance"] == distance]
            if data.empty:
                ax.set_visible(False)
                continue
            sns.lineplot(
                data=data,
                x="step",
                y="value",
                hue=hue,
                hue_order=[v for v in variants if v in set(data[hue])],
                palette=palette,
                ax=ax,
                errorbar="sd",
                legend=False,
            )
            title = metric + (f" ({distance} runs)" if distance else "")
            ax.set_title(f"{stage} · {title}" if stage else title, fontsize=9)
            ax.set_ylabel(YLABELS.get((metric, distance), metric), fontsize=8)
            ax.set_xlabel("optimizer step", fontsize=8)
    handles = [plt.Line2D([], [], color=palette[v], label=v) for v in variants]
    fig.legend(handles=handles, title=hue, loc="upper right", fontsize=8, title_fontsize=8)
    fig.suptitle("lines: mean over seeds; bands: ± 1 sd over seeds", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
