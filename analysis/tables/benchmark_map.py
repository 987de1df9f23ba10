"""The benchmark map: which lmms-eval task and metric fills each paper column, in which units
(``reproduce/benchmark_map.csv``, ``reproduce/benchmark_map_local.csv``), and the errors of the tables package.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPRODUCE_DIR = Path(__file__).resolve().parents[2] / "reproduce"
DEFAULT_MAP = REPRODUCE_DIR / "benchmark_map.csv"
LOCAL_MAP = REPRODUCE_DIR / "benchmark_map_local.csv"  # the CPU miniature's local lmms-eval suite
PAPER_RESULTS = REPRODUCE_DIR / "paper_results.csv"


class ResultsFormatError(ValueError):
    """A results, mapping or metadata file does not have the expected structure."""


class MissingBenchmarkWarning(UserWarning):
    """A benchmark has no value for a run: the cell is left empty."""


@dataclass(frozen=True)
class Benchmark:
    """One paper column: where lmms-eval puts it and how to convert it to the paper's units."""

    column: str  # paper column name, e.g. "MME-P"
    table: str  # "semantic" | "general" | "fine_grained" (or any table id of a custom map)
    task: str  # lmms-eval task name
    metric_keys: tuple[str, ...]  # "<metric>,<filter>" alternatives, first present wins
    dict_fields: tuple[str, ...] = ()  # for dict-valued metrics: the field(s) to take, first present wins
    scale: float = 1.0  # paper value = lmms-eval value * scale
    decimals: int = 2  # digits printed in the paper
    overrides: tuple[tuple[str, float], ...] = ()  # (run selector, value in paper units)

    def override_for(self, family: str, variant: str, seed: int) -> float | None:
        """Manual value for this run, if a selector (``family/variant[/seed]``, globs allowed) matches."""
        run = f"{family}/{variant}/{seed}"
        for selector, value in self.overrides:
            pattern = (
                selector
                if selector.count("/") == 2
                else selector.rstrip("/") + ("/*" * (2 - selector.count("/")))
            )
            if fnmatch.fnmatchcase(run, pattern):
                return value
        return None


def _split(cell: object) -> tuple[str, ...]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ()
    return tuple(part.strip() for part in str(cell).split("|") if part.strip())


def _parse_overrides(cell: object, where: str) -> tuple[tuple[str, float], ...]:
    out = []
    for item in (p.strip() for p in ("" if pd.isna(cell) else str(cell)).split(";")):
        if not item:
            continue
        selector, sep, value = item.rpartition("=")
        try:
            out.append((selector.strip() or "*", float(value)) if sep else ("*", float(value)))
        except ValueError:
            raise ResultsFormatError(
                f"{where}: override {item!r} is not 'family/variant[/seed]=number'"
            ) from None
    return tuple(out)


def load_benchmark_map(path: str | Path | None = None) -> list[Benchmark]:
    """Read a mapping CSV (``reproduce/benchmark_map.csv`` by default) into ``Benchmark`` records, in file order.

    Columns: column, table, task, metric_keys (``|``-separated alternatives), dict_fields, scale, decimals,
    override (``family/variant[/seed]=value;...``, in paper units), notes.
    """
    path = Path(path or DEFAULT_MAP)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ResultsFormatError(f"{path}: not a readable UTF-8 CSV file ({error})") from None
    missing = {"column", "table", "task", "metric_keys", "scale"} - set(frame.columns)
    if missing:
        raise ResultsFormatError(f"{path}: missing column(s) {sorted(missing)}")
    out = []
    for i, row in frame.iterrows():
        where = f"{path} row {i + 2} ({row['column']!r})"
        keys = _split(row["metric_keys"])
        if not row["column"] or not row["task"] or not keys:
            raise ResultsFormatError(f"{where}: column, task and metric_keys must be non-empty")
        try:
            scale = float(row["scale"])
            decimals = int(row.get("decimals") or 2)
        except ValueError:
            raise ResultsFormatError(f"{where}: scale/decimals must be numbers") from None
        out.append(
            Benchmark(
                column=row["column"],
                table=row["table"],
                task=row["task"],
                metric_keys=keys,
                dict_fields=_split(row.get("dict_fields", "")),
                scale=scale,
                decimals=decimals,
                overrides=_parse_overrides(row.get("override", ""), where),
            )
        )
    if len({b.column for b in out}) != len(out):
        raise ResultsFormatError(f"{path}: duplicate paper column names")
    return out


def choose_map(long: pd.DataFrame, candidates: Sequence[str | Path] = (DEFAULT_MAP, LOCAL_MAP)) -> Path:
    """The map file whose tasks the results cover most (ties: the first, i.e. the paper's map).

    ``long``: output of ``load_lmms_results``. GPU runs on the paper's tasks get ``benchmark_map.csv``; runs of the
    CPU miniature's local suite get ``benchmark_map_local.csv``.
    """
    tasks = set(long["task"])
    existing = [Path(p) for p in candidates if Path(p).is_file()]
    if not existing:
        raise FileNotFoundError(f"none of the benchmark maps exists: {[str(p) for p in candidates]}")
    return max(existing, key=lambda p: len(tasks & {b.task for b in load_benchmark_map(p)}))


def as_map(mapping: str | Path | Sequence[Benchmark] | None) -> list[Benchmark]:
    if mapping is None or isinstance(mapping, (str, Path)):
        return load_benchmark_map(mapping)
    return list(mapping)


def table_ids(mapping: Sequence[Benchmark]) -> list[str]:
    """Table ids in the order they first appear in the map."""
    return list(dict.fromkeys(b.table for b in mapping))
