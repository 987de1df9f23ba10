"""``vista tables``: the paper's tables and audit, and the tables of lmms-eval runs, as .md, .tex and .csv.

vista tables --results results/tiny/eval --out results/tiny/tables
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from analysis.tables.benchmark_map import (
    DEFAULT_MAP,
    LOCAL_MAP,
    PAPER_RESULTS,
    ResultsFormatError,
    choose_map,
)
from analysis.tables.build import (
    Table,
    audit_paper_averages,
    build_tables,
    delta_tables,
    paper_tables,
    relative_gains,
)
from analysis.tables.columns import to_paper_columns
from analysis.tables.render import render_audit_markdown
from analysis.tables.results import load_lmms_results


def _write_tables(tables: dict[str, Table], out: Path, prefix: str = "") -> list[Path]:
    written = []
    for tid, table in tables.items():
        for ext, text in (("md", table.to_markdown()), ("tex", table.to_latex()), ("csv", table.to_csv())):
            path = out / f"{prefix}{tid}.{ext}"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def write_all(results: Sequence[str | Path], out: str | Path, mapping: str | Path | None = None,
              paper_results: str | Path | None = None, labels: dict[str, str] | None = None) -> dict[str, Path]:  # fmt: skip
    """Write the paper's tables + audit (``out/paper``) and, if ``results`` given, the runs' tables, deltas
    versus the paper and the intermediate frames (``out/runs``), plus ``out/tables.md`` with everything.
    ``labels``: ``{FILE: NAME}`` run names for results files without a vista identity (``--label``)."""
    out = Path(out)
    (out / "paper").mkdir(parents=True, exist_ok=True)
    paper = paper_tables(paper_results)
    audit = audit_paper_averages(paper_results)
    _write_tables(paper, out / "paper")
    (out / "paper" / "audit.md").write_text(render_audit_markdown(audit), encoding="utf-8")
    audit.to_csv(out / "paper" / "audit.csv", index=False)
    summary = ["# The paper's tables (reported numbers)", ""]
    summary += [t.to_markdown() for t in paper.values()] + [
        "## Audit of the printed averages",
        "",
        render_audit_markdown(audit),
    ]
    if results:
        runs_dir = out / "runs"
        runs_dir.mkdir(exist_ok=True)
        long = load_lmms_results(results, labels)
        long.to_csv(runs_dir / "results_long.csv", index=False)
        mapping = mapping or choose_map(long)
        wide = to_paper_columns(long, mapping)
        wide.to_csv(runs_dir / "paper_columns.csv", index=False)
        wide.attrs["provenance"].to_csv(runs_dir / "provenance.csv", index=False)
        tables = build_tables(wide, mapping)
        _write_tables(tables, runs_dir)
        relative_gains(wide, mapping).to_csv(runs_dir / "relative_gains.csv", index=False)
        summary += ["# Tables from the runs", "", f"Runs: {', '.join(sorted(set(long['run'])))}", ""]
        summary += [t.to_markdown() for t in tables.values()]
        deltas = delta_tables(tables, paper)
        if deltas:
            _write_tables(deltas, runs_dir, prefix="delta_")
            summary += ["# Runs minus the paper", ""] + [t.to_markdown() for t in deltas.values()]
    (out / "tables.md").write_text("\n".join(summary), encoding="utf-8")
    return {"summary": out / "tables.md", "paper": out / "paper", "runs": out / "runs"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", nargs="*", default=[], metavar="DIR",
                        help="folders (searched recursively) or *_results.json files of lmms-eval runs")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder (tables as .md, .tex, .csv; tables.md)")
    parser.add_argument(
        "--map",
        default=None,
        help=f"column -> task/metric map (default: {DEFAULT_MAP.name} or {LOCAL_MAP.name}, whichever the results cover)",
    )
    parser.add_argument(
        "--paper-results", default=None, help=f"the paper's numbers (default {PAPER_RESULTS})"
    )
    parser.add_argument(
        "--label", action="append", default=[], metavar="FILE=NAME",
        help="name the run of a results file (path, file name or glob) that has no vista_eval.json: "
        "NAME is 'model' or 'family/variant[/seed]' (repeatable)",
    )  # fmt: skip


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``["FILE=NAME", ...]`` (``--label``) -> ``{FILE: NAME}``; ``ResultsFormatError`` for other forms."""
    labels = {}
    for item in items:
        file, sep, name = item.rpartition("=")
        if not sep or not file.strip() or not name.strip():
            raise ResultsFormatError(f"--label {item!r}: expected FILE=NAME")
        labels[file.strip()] = name.strip()
    return labels


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            labels = parse_labels(getattr(args, "label", []))
            paths = write_all(args.results, args.out, args.map, args.paper_results, labels)
        except (ResultsFormatError, FileNotFoundError) as e:
            print(f"vista tables: {e}", file=sys.stderr)
            return 2
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    (Path(args.out) / "warnings.txt").write_text("".join(m + "\n" for m in messages), encoding="utf-8")
    print(paths["summary"].read_text(encoding="utf-8"))
    print(f"wrote {paths['summary']} ({len(messages)} warnings)")
    return 0
