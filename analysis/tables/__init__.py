"""lmms-eval results -> the paper's three benchmark tables (Semantic VQA, General, Fine-grained).

Pipeline: ``load_lmms_results(paths)`` (long DataFrame, one row per metric value, with provenance) ->
``to_paper_columns(df)`` (one row per run, one column per paper benchmark, in the paper's units) ->
``build_tables(wide)`` (mean ± std over seeds per (family, variant), "Avg. Improvement") -> ``render_*``
(modules :mod:`~analysis.tables.results`, :mod:`~analysis.tables.columns`, :mod:`~analysis.tables.build`,
:mod:`~analysis.tables.render`; the map: :mod:`~analysis.tables.benchmark_map`; ``vista tables``:
:mod:`~analysis.tables.cli`).
The paper's own numbers (``reproduce/paper_results.csv``) go through the same rendering (``paper_tables()``),
and ``audit_paper_averages()`` recomputes the paper's printed averages.

Run identity. A run is (family, variant, seed), e.g. ``("llava-1.5-7b", "vista-cosine", 1)``. Variants of the
paper: ``baseline``, ``vista`` (L2), ``vista-cosine``. For each results file, in this order:

0. ``--label FILE=NAME`` (``labels=`` in Python), NAME ``model`` or ``family/variant[/seed]``;
1. a JSON sidecar ``vista_eval.json`` (written by ``vista eval`` into its ``--out`` folder) or ``run.json`` (write
   one by hand for GPU runs evaluated elsewhere) with keys ``family``, ``variant`` and optionally ``seed`` (0), in
   the file's folder or any folder above it up to the path given on the command line (lmms-eval writes into a
   model subfolder such as ``ckpts__llava-1.5-7b__vista__seed1/`` below ``--out``: the sidecar wins over it);
2. a folder named ``<family>__<variant>__seed<N>`` (:func:`vista.run_metadata.parse_run_name`, the parser of the
   names ``reproduce/pipeline.py`` makes with ``format_run_name``), nearest first;
3. otherwise the model's short name (:func:`model_label`: ``Qwen2.5-VL-3B-Instruct`` from a hub cache path),
   variant ``unknown`` (rows show the name alone), seed 0, with a warning.

Values that are not a usable score (``null``, ``[]``, ``"N/A"``, NaN, infinities, a dict without the mapped
field) are gaps with a ``MissingBenchmarkWarning`` naming file, task and key. A value from a run that evaluated
only part of a task (lmms-eval's ``n-samples``: effective < original, a ``--limit`` run) is kept but marked
``‡``; a cell from fewer seeds than the table's other cells shows ``(n=k)``. Tasks outside the map are listed
once; runs without any task of the map are left out of the tables with one warning.

Avg. Improvement (one formula, everywhere): for a row r of family f and a table with benchmarks B,
``100 * mean_{b in B} (x_rb - x_0b) / x_0b`` where ``x_0b`` is the mean over seeds of the ``baseline`` row of the
same family. It is computed per seed of r and the cell shows the mean ± std over r's seeds. Benchmarks missing in
either row are left out of the mean and the cell is marked ``*``. This formula reproduces some of the paper's
printed averages but not all: see ``audit_paper_averages()``.

Missing benchmarks show as a gap (``—``) with a ``MissingBenchmarkWarning``, never as zero. Files that are not
results files (not JSON, no ``results`` object, a task that is not an object) raise ``ResultsFormatError`` naming
the file and the key.
"""

from __future__ import annotations

from analysis.tables.benchmark_map import (
    DEFAULT_MAP,
    LOCAL_MAP,
    PAPER_RESULTS,
    Benchmark,
    MissingBenchmarkWarning,
    ResultsFormatError,
    choose_map,
    load_benchmark_map,
    table_ids,
)
from analysis.tables.build import (
    AVG,
    TABLE_TITLES,
    Table,
    audit_paper_averages,
    build_tables,
    delta_tables,
    load_paper_results,
    paper_tables,
    relative_gains,
    row_label,
)
from analysis.tables.columns import PARTIAL_MARK, to_paper_columns
from analysis.tables.render import (
    GAP,
    format_cell,
    plot_relative_gains,
    render_audit_markdown,
    render_csv,
    render_latex,
    render_markdown,
)
from analysis.tables.results import (
    LONG_COLUMNS,
    UNKNOWN_VARIANT,
    find_results_files,
    load_lmms_results,
    load_lmms_samples,
    model_label,
    resolve_run,
    value_problem,
)

__all__ = [
    "AVG",
    "DEFAULT_MAP",
    "GAP",
    "LOCAL_MAP",
    "LONG_COLUMNS",
    "PAPER_RESULTS",
    "PARTIAL_MARK",
    "TABLE_TITLES",
    "UNKNOWN_VARIANT",
    "Benchmark",
    "MissingBenchmarkWarning",
    "ResultsFormatError",
    "Table",
    "audit_paper_averages",
    "build_tables",
    "choose_map",
    "delta_tables",
    "find_results_files",
    "format_cell",
    "load_benchmark_map",
    "load_lmms_results",
    "load_lmms_samples",
    "load_paper_results",
    "model_label",
    "paper_tables",
    "plot_relative_gains",
    "relative_gains",
    "render_audit_markdown",
    "render_csv",
    "render_latex",
    "render_markdown",
    "resolve_run",
    "row_label",
    "table_ids",
    "to_paper_columns",
    "value_problem",
]
