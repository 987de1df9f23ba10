"""Training curves of cross-entropy, the VISTA term and the similarity score, read from Trainer logs.

``VistaTrainer`` logs ``loss``, ``ce_loss``, ``vista_loss`` and ``vista_similarity`` every ``logging_steps``; the
HF Trainer stores them in ``trainer_state.json`` (``log_history``). These are the reference curves users compare
their runs against.
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

CURVE_METRICS = ("loss", "ce_loss", "vista_loss", "vista_similarity")


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
        columns and ``source`` (the trainer_state.json read).
    """
    rows = []
    for labels, run_dir in runs:
        path = find_trainer_state(run_dir)
        try:
            history = json.loads(path.read_text())["log_history"]
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{path}: not a Trainer state file with 'log_history' ({error})") from error
        for entry in history:
            for metric in CURVE_METRICS:
                if metric in entry and "step" in entry:
                    rows.append(
                        {
                            **labels,
                            "step": int(entry["step"]),
                            "epoch": entry.get("epoch"),
                            "metric": metric,
                            "value": float(entry[metric]),
                            "source": str(path),
                        }
                    )
    if not rows:
        raise ValueError(
            "no training metrics found in the given runs (is logging_steps larger than the run?)"
        )
    return pd.DataFrame(rows)


def plot_training_curves(logs: pd.DataFrame, path: str | Path, *, hue: str = "variant") -> Path:
    """One panel per (stage, metric): mean over seeds with a ± sd band, one line per ``hue``."""
    metrics = [m for m in CURVE_METRICS if m in set(logs["metric"])]
    stages = list(dict.fromkeys(logs["stage"])) if "stage" in logs else [None]
    fig, axes = plt.subplots(
        len(stages), len(metrics), figsize=(3.6 * len(metrics), 2.9 * len(stages)), squeeze=False
    )
    for row, stage in enumerate(stages):
        stage_logs = logs if stage is None else logs[logs["stage"] == stage]
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            data = stage_logs[stage_logs["metric"] == metric]
            if data.empty:
                ax.set_visible(False)
                continue
            sns.lineplot(
                data=data,
                x="step",
                y="value",
                hue=hue,
                ax=ax,
                errorbar="sd",
                legend=(row, col) == (0, 0),
            )
            ax.set_title(f"{stage} · {metric}" if stage else metric, fontsize=9)
            ax.set_ylabel("")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
