"""Generate notebooks/04_benchmark_tables.ipynb (the paper's tables, the audit, and the same tables from runs).

    .venv/bin/python reproduce/notebooks/make_04_tables.py [--out notebooks/04_benchmark_tables.ipynb]

The notebook only calls ``analysis.tables``; edit this script, not the .ipynb.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbtools import build_notebook, write_notebook

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "notebooks" / "04_benchmark_tables.ipynb"

CELLS = [
    (
        "md",
        """# 04 · The paper's benchmark tables, regenerated

The paper (VISTA, arXiv 2505.10917) reports three tables evaluated with lmms-eval v0.3.0: **Semantic VQA**,
**General** and **Fine-grained**, for TinyLLaVA-3B and LLaVA-1.5-7B, each trained as a baseline, with VISTA (L2)
and with VISTA(cosine). This notebook

1. regenerates those tables from the numbers shipped in `reproduce/paper_results.csv`, and audits the printed
   "Avg. Improvement" column;
2. builds the same tables from lmms-eval result files of your own runs (default `results/tiny`, the CPU
   miniature; set `VISTA_RESULTS=/path/to/gpu/runs` for GPU runs), with mean ± std over seeds and the
   differences to the paper.

The same thing in one command: `vista tables --results results/tiny --out results/tables`.

**Avg. Improvement** (one formula everywhere): `100 · mean_b (x_b − x0_b) / x0_b` over the table's benchmarks,
where `x0` is the baseline row of the same model family (mean over its seeds); computed per seed, shown as
mean ± std.""",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from analysis import tables as T
from analysis.notebook_io import results_folder, shown

RESULTS = results_folder()  # $VISTA_RESULTS (set by run_all.sh's notebooks stage), else <repo>/results/tiny
print("results folder:", shown(RESULTS))""",
    ),
    ("md", "## 1 · The paper's tables, from the shipped numbers"),
    (
        "code",
        """paper = T.paper_tables()
for table in paper.values():
    display(Markdown(table.to_markdown()))""",
    ),
    (
        "md",
        """### Audit of the printed averages

Recompute every printed "Avg. Improvement" from the per-benchmark numbers with the documented formula (and two
alternatives for context). A printed value is *reproduced* when the recomputed value rounds to it.""",
    ),
    (
        "code",
        """audit = T.audit_paper_averages()
display(Markdown(T.render_audit_markdown(audit)))""",
    ),
    ("md", "### Per-benchmark relative gains in the paper"),
    (
        "code",
        """paper_wide, _, paper_labels = T.load_paper_results()
ax = T.plot_relative_gains(T.relative_gains(paper_wide, labels=paper_labels))
ax.set_title("paper: relative gain over the baseline of the same family")
ax.figure.tight_layout()
display(ax.figure)
plt.close(ax.figure)""",
    ),
    (
        "md",
        """## 2 · The same tables from your runs

Each results file is attributed to a run (family, variant, seed) by the `vista_eval.json` that `vista eval`
writes beside lmms-eval's output, by a hand-written `run.json`, or by a folder named
`<family>__<variant>__seed<N>` (see `analysis/tables/__init__.py`). The column map is the one whose tasks the results
cover: `reproduce/benchmark_map.csv` for the paper's tasks, `reproduce/benchmark_map_local.csv` for the CPU
miniature's local suite (`analysis.tables.choose_map`); a `benchmark_map.csv` inside the results folder wins.""",
    ),
    (
        "code",
        """have_runs = RESULTS.is_dir() and any(T.find_results_files([RESULTS]))
if not have_runs:
    display(Markdown(
        f"**No lmms-eval results under `{shown(RESULTS)}` yet.** Produce them with e.g. "
        "`vista eval --checkpoint <ckpt> --tasks <tasks> --out results/tiny/<family>__<variant>__seed<N>` "
        "(or `bash reproduce/run_all.sh`), then re-run this notebook."
    ))
else:
    long = T.load_lmms_results([RESULTS])
    own_map = RESULTS / "benchmark_map.csv"
    mapping = T.load_benchmark_map(own_map if own_map.is_file() else T.choose_map(long))
    wide = T.to_paper_columns(long, mapping)
    print(f"{long['run'].nunique()} runs, {len(long)} metric values from {long['file'].nunique()} files")
    runs = T.build_tables(wide, mapping)
    for table in runs.values():
        display(Markdown(table.to_markdown()))
    for table in T.delta_tables(runs, paper).values():
        display(Markdown(table.to_markdown()))
    gains = T.relative_gains(wide, mapping)
    if len(gains):
        ax = T.plot_relative_gains(gains)
        ax.set_title(f"{RESULTS.name}: relative gain over the baseline of the same family")
        ax.figure.tight_layout()
        display(ax.figure)
        plt.close(ax.figure)""",
    ),
]


def build() -> nbformat.NotebookNode:
    return build_notebook(CELLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    write_notebook(build(), args.out)


if __name__ == "__main__":
    main()
