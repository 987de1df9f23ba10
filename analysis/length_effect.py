"""The length effect, measured: accuracy and the image's contribution versus preceding text on ``world_len_N``.

    python -m analysis.length_effect --results OUT [--limit 100] [--resamples 2000]

The synthetic world's ``world_len_N`` tasks ask the *same* questions about the same held-out images behind ``N``
words of image-independent text (``vista/world/benchmarks.py``). For every training variant and ``N`` this module
reports, with 95% bootstrap intervals over documents *and* seeds:

* **accuracy**: lmms-eval's per-document exact match (the eval stage's ``--log-samples`` output,
  ``eval/<run>/**/*_samples_world_len_<N>.jsonl``);
* **image contribution**: ``log p(answer | image) - log p(answer | blank image)`` in nats per gold answer, summed
  over the answer's supervised tokens (the end-of-turn token included), from the blank-image ablation probe
  (:func:`analysis.probes.decay.probe_length_split`, cached under ``OUT/length_effect/cache``).

The interval resamples documents and seeds independently (a two-way crossed bootstrap: ``scipy.stats.bootstrap``
with the document and seed indices as two unpaired samples, statistic = mean of the resampled doc x seed cells),
so it reflects both which questions were asked and which seeds were trained. Whatever the curve shows is reported;
nothing here assumes a decay. Writes ``OUT/length_effect/{per_document.csv, summary.csv}`` and the figure
``OUT/figures/length_effect.png``; the report reads them (:func:`length_effect_section`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from analysis.markdown import markdown_table, table_row
from analysis.palette import variant_palette
from vista.errors import refuse_to_replace
from vista.run_metadata import parse_run_name

SAMPLES_FILE = re.compile(r"_samples_world_len_(\d+)\.jsonl$")
MEASURES = {"accuracy": "accuracy (%)", "contribution": "image contribution (nats per answer)"}
FOLDER, FIGURE = "length_effect", "figures/length_effect.png"


# ---- inputs -----------------------------------------------------------------------------------------------------
def accuracy_rows(eval_dir: Path) -> pd.DataFrame:
    """Per run and ``world_len_N`` document: lmms-eval's exact match (0/1) from the ``--log-samples`` files.

    Columns: ``variant``, ``seed``, ``words`` (N), ``question`` (doc index, the same question at every N),
    ``accuracy`` (0 or 100). Runs are the folders of ``eval_dir`` named like ``tiny__baseline__seed1``.

    Raises:
        ValueError: a sample line has no ``doc_id`` or ``exact_match`` (file and line named).
    """
    rows = []
    for run in sorted(p for p in Path(eval_dir).iterdir() if p.is_dir()):
        labels = parse_run_name(run.name)
        if labels is None:
            continue
        for path in sorted(run.rglob("*_samples_world_len_*.jsonl")):
            words = int(SAMPLES_FILE.search(path.name).group(1))
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                sample = json.loads(line)
                if "doc_id" not in sample or "exact_match" not in sample:
                    raise ValueError(f"{path}:{number}: a sample without doc_id or exact_match")
                rows.append((labels["variant"], labels["seed"], words, question_index(sample),
                             100.0 * float(sample["exact_match"])))  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "seed", "words", "question", "accuracy"])


def question_index(sample: dict) -> int:
    """The question's index, the same at every N: from the doc's ``len<N>-<i>`` id if logged, else ``doc_id``."""
    from analysis.probes.decay import LENGTH_ID

    match = LENGTH_ID.match(str((sample.get("doc") or {}).get("id", "")))
    return int(match.group(2)) if match else int(sample["doc_id"])


def contribution_rows(probe_rows: pd.DataFrame) -> pd.DataFrame:
    """Per run and document: the blank-image ablation summed over the answer's supervised tokens (nats).

    ``probe_rows``: :func:`analysis.probes.decay.probe_length_split` output (``probe``, ``variant``,
    ``supervised``, ``value``, ``run_variant``, ``seed``, ``preceding_words``, ``question``). Non-finite token
    values make the document's contribution NaN (left out of means and intervals, counted in ``summary``).
    """
    part = probe_rows[
        (probe_rows["probe"] == "ablation") & (probe_rows["variant"] == "blank") & probe_rows["supervised"]
    ]
    if part.empty:
        raise ValueError("no answer-token rows of the blank-image ablation probe")
    summed = part.groupby(["run_variant", "seed", "preceding_words", "question"])["value"].agg(
        lambda v: v.sum() if np.isfinite(v).all() else np.nan
    )
    out = summed.reset_index().rename(
        columns={"run_variant": "variant", "preceding_words": "words", "value": "contribution"}
    )
    out["question"] = out["question"].astype(int)
    return out


def probed_split(results: Path) -> Path | None:
    """The ``world_len_N`` split file the length-effect stage probed (``OUT/length_effect/split/length_split_q*.json``;
    the newest if it ran with several limits), None if it has not run. Its probe rows are cached under
    ``OUT/length_effect/cache`` (notebook 02 reads them instead of probing again)."""
    files = sorted(
        (Path(results) / FOLDER / "split").glob("length_split_q*.json"), key=lambda p: p.stat().st_mtime
    )
    return files[-1] if files else None


def probe_contributions(results: Path, limit: int | None) -> pd.DataFrame:
    """:func:`contribution_rows` of every stage-2 checkpoint of ``results`` on the first ``limit`` questions."""
    from analysis.probes.decay import length_split_json, probe_length_split, trained_checkpoints

    folder = Path(results) / FOLDER
    json_path = length_split_json(Path(results) / "data" / "benchmarks", folder / "split", questions=limit)
    rows, _ = probe_length_split(trained_checkpoints(results), json_path, cache=folder / "cache")
    return contribution_rows(rows)


# ---- statistics -------------------------------------------------------------------------------------------------
def crossed_bootstrap(
    matrix: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a (documents, seeds) matrix and a percentile bootstrap interval resampling rows and columns
    independently (``scipy.stats.bootstrap`` on the two index vectors, unpaired). NaN cells are left out.

    With one seed the column resampling is the identity, so the interval is over documents alone.
    Returns ``(mean, low, high)``; NaNs if the matrix has no finite cell.
    """
    matrix = np.asarray(matrix, dtype=float)
    if not np.isfinite(matrix).any():
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(matrix))
    docs, seeds = np.arange(matrix.shape[0]), np.arange(matrix.shape[1])
    if matrix.shape[0] < 2:
        return mean, float("nan"), float("nan")

    def statistic(d: np.ndarray, s: np.ndarray | None = None) -> float:
        columns = seeds if s is None else s.astype(int)
        return float(np.nanmean(matrix[np.ix_(d.astype(int), columns)]))

    samples = (docs, seeds) if len(seeds) > 1 else (docs,)  # scipy needs >= 2 observations per sample
    result = stats.bootstrap(samples, statistic, paired=False, vectorized=False, n_resamples=n_resamples,
                             confidence_level=level, method="percentile", random_state=seed)  # fmt: skip
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(per_doc: pd.DataFrame, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per variant, N and measure: ``mean``, ``ci_low``, ``ci_high`` (95%), ``docs``, ``seeds``, ``n_missing``.

    ``per_doc``: columns ``variant``, ``seed``, ``words``, ``question`` and one column per measure of
    :data:`MEASURES` present (missing measures are skipped).
    """
    out = []
    for measure in [m for m in MEASURES if m in per_doc.columns]:
        for (variant, words), part in per_doc.groupby(["variant", "words"], sort=False):
            matrix = part.pivot_table(
                index="question", columns="seed", values=measure, aggfunc="mean", dropna=False
            )
            mean, low, high = crossed_bootstrap(matrix.to_numpy(), n_resamples, seed=seed)
            out.append({"measure": measure, "variant": variant, "words": int(words), "mean": mean, "ci_low": low,
                        "ci_high": high, "docs": matrix.shape[0], "seeds": matrix.shape[1],
                        "n_missing": int(np.isnan(matrix.to_numpy(dtype=float)).sum())})  # fmt: skip
    return (
        pd.DataFrame(out).sort_values(["measure", "variant", "words"], kind="stable").reset_index(drop=True)
    )


# ---- outputs ----------------------------------------------------------------------------------------------------
def plot(summary: pd.DataFrame, path: Path) -> Path:
    """One panel per measure: mean and 95% interval versus N, one line per variant."""
    measures = [m for m in MEASURES if m in set(summary["measure"])]
    palette = variant_palette(summary["variant"])
    fig, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures), 3.6), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        for variant, part in summary[summary["measure"] == measure].groupby("variant", sort=False):
            colour = palette[variant]
            ax.plot(part["words"], part["mean"], marker="o", label=variant, color=colour)
            ax.fill_between(part["words"], part["ci_low"], part["ci_high"], alpha=0.2, color=colour)
        ax.set(xlabel="preceding words N (world_len_N)", ylabel=MEASURES[measure])
        if measure == "contribution":
            ax.axhline(0, color="grey", lw=0.8)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def length_effect_section(results: Path, metrics: dict) -> list[str]:
    """REPORT.md lines: the table of ``OUT/length_effect/summary.csv`` and the figure (empty if absent);
    records the summary in ``metrics["length_effect"]``."""
    path = Path(results) / FOLDER / "summary.csv"
    if not path.is_file():
        return []
    summary = pd.read_csv(path)
    metrics["length_effect"] = summary.to_dict("records")
    words = sorted(set(summary["words"]))
    docs, seeds = int(summary["docs"].max()), int(summary["seeds"].max())
    lines = ["### The length effect, measured", "",
             f"The same {docs} questions and images behind N words of image-independent text (`world_len_N`), "
             f"{seeds} seed(s): mean [95% bootstrap interval over documents and seeds] "
             "(`python -m analysis.length_effect`). Accuracy is lmms-eval's exact match (%); the image's "
             "contribution is log p(answer | image) − log p(answer | blank image), nats per gold answer.", "",
             f"![length effect]({FIGURE})", ""]  # fmt: skip
    for measure in [m for m in MEASURES if m in set(summary["measure"])]:
        part = summary[summary["measure"] == measure]
        digits = 1 if measure == "accuracy" else 2
        lines += [
            f"{MEASURES[measure].capitalize()}:",
            "",
            *markdown_table(["variant", *(f"N={w}" for w in words)]),
        ]
        for variant, rows in part.groupby("variant", sort=False):
            by = {int(r.words): r for r in rows.itertuples()}
            cells = [f"{by[w].mean:.{digits}f} [{by[w].ci_low:.{digits}f}, {by[w].ci_high:.{digits}f}]"
                     if w in by else "—" for w in words]  # fmt: skip
            lines.append(table_row([variant, *cells]))
        lines.append("")
    return lines


def measure(
    results: Path, limit: int | None = None, n_resamples: int = 2000, out: Path | None = None
) -> pd.DataFrame:
    """The summary of both measures for every run of ``results``; the per-document rows, the summary and the figure
    are written to ``out`` (default: ``results/length_effect`` and ``results/figures``, which REPORT.md reads)."""
    results = Path(results)
    accuracy = accuracy_rows(results / "eval")
    if accuracy.empty:
        raise FileNotFoundError(
            f"{results}/eval: no *_samples_world_len_*.jsonl (the eval stage must run lmms-eval with --log-samples)"
        )
    if limit:
        accuracy = accuracy[accuracy["question"] < limit]
    per_doc = accuracy.merge(probe_contributions(results, limit), on=["variant", "seed", "words", "question"],
                             how="outer")  # fmt: skip
    folder, figure = outputs(results, out)
    folder.mkdir(parents=True, exist_ok=True)
    per_doc.to_csv(folder / "per_document.csv", index=False)
    summary = summarise(per_doc, n_resamples)
    summary.to_csv(folder / "summary.csv", index=False)
    plot(summary, figure)
    return summary


def outputs(results: Path, out: Path | None = None) -> tuple[Path, Path]:
    """(folder of per_document.csv and summary.csv, figure path): the run's own, or both in ``out``."""
    if out is None:
        return Path(results) / FOLDER, Path(results) / FIGURE
    return Path(out), Path(out) / Path(FIGURE).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.length_effect", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--results", type=Path, required=True, help="a results folder of reproduce/run_all.sh"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each world_len_N task")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"folder for the CSVs and the figure (default: RESULTS/{FOLDER} and RESULTS/{FIGURE}, which REPORT.md "
        "reads; the probe cache stays in RESULTS)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing summary and figure")
    args = parser.parse_args(argv)
    summary_path = outputs(args.results, args.out)[0] / "summary.csv"
    if summary_path.exists() and not args.overwrite:
        print(f"{parser.prog}: {refuse_to_replace(summary_path)}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    try:
        summary = measure(args.results, args.limit, args.resamples, args.out)
    except FileNotFoundError as error:  # inputs of the results folder: one line, no traceback
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    print(summary.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
