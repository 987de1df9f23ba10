"""lmms-eval results -> the paper's three benchmark tables (Semantic VQA, General, Fine-grained).

Pipeline: ``load_lmms_results(paths)`` (long DataFrame, one row per metric value, with provenance) ->
``to_paper_columns(df)`` (one row per run, one column per paper benchmark, in the paper's units) ->
``build_tables(wide)`` (mean ± std over seeds per (family, variant), "Avg. Improvement") -> ``render_*``.
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

import argparse
import fnmatch
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vista.run_metadata import parse_run_name, recorded_package_version

REPRODUCE_DIR = Path(__file__).resolve().parents[1] / "reproduce"
DEFAULT_MAP = REPRODUCE_DIR / "benchmark_map.csv"
LOCAL_MAP = REPRODUCE_DIR / "benchmark_map_local.csv"  # the CPU miniature's local lmms-eval suite
PAPER_RESULTS = REPRODUCE_DIR / "paper_results.csv"

TABLE_TITLES = {"semantic": "Semantic VQA", "general": "General", "fine_grained": "Fine-grained"}
AVG = "Avg. Improvement"
GAP = "—"
RUN_SIDECARS = ("vista_eval.json", "run.json")
UNKNOWN_VARIANT = "unknown"
SUBMISSIONS = "submissions"
SAMPLE_LOG_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
                   "target_hash", "input", "filter", "metrics", "task"}  # fmt: skip
PARTIAL_MARK = "‡"
VARIANT_ORDER = ("baseline", "vista-cosine", "vista")
# family id -> (name of the baseline row, prefix of the VISTA rows), as printed in the paper
FAMILY_NAMES = {"tinyllava-3b": ("TinyLLaVA-3B", "TinyLLaVA"), "llava-1.5-7b": ("LLaVA-1.5-7B", "LLaVA")}
VARIANT_SUFFIX = {"vista": "VISTA", "vista-cosine": "VISTA(cosine)"}
SKIP_KEYS = {"alias", "samples", "name", "sample_len"}
LONG_COLUMNS = [
    "run", "family", "variant", "seed", "task", "metric", "filter", "metric_key", "subkey", "value", "note",
    "file", "layout", "lmms_eval_version", "date", "run_source", "documents", "documents_total",
]  # fmt: skip


class ResultsFormatError(ValueError):
    """A results, mapping or metadata file does not have the expected structure."""


class MissingBenchmarkWarning(UserWarning):
    """A benchmark has no value for a run: the cell is left empty."""


# ----------------------------------------------------------------------------------------------- mapping


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


def _as_map(mapping: str | Path | Sequence[Benchmark] | None) -> list[Benchmark]:
    if mapping is None or isinstance(mapping, (str, Path)):
        return load_benchmark_map(mapping)
    return list(mapping)


def table_ids(mapping: Sequence[Benchmark]) -> list[str]:
    """Table ids in the order they first appear in the map."""
    return list(dict.fromkeys(b.table for b in mapping))


# ----------------------------------------------------------------------------------------------- loading


def find_results_files(paths: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """(results file, search root) pairs: ``*_results.json`` (lmms-eval >= 0.2) and ``results.json`` (older).

    In folders, files below a ``submissions/`` folder (lmms-eval's benchmark-server uploads, e.g.
    ``mmbench_en_dev_results.json``) are not aggregated results: skipped with a warning.
    """
    found: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append((p, p.parent.parent))
        elif p.is_dir():
            files = sorted({*p.rglob("*_results.json"), *p.rglob("results.json")})
            submissions = [f for f in files if SUBMISSIONS in f.relative_to(p).parts[:-1]]
            if submissions:  # lmms-eval's <output>/submissions/<task>_results.json: per-benchmark uploads
                warnings.warn(f"{p}: skipped {len(submissions)} file(s) in lmms-eval's {SUBMISSIONS}/ folders "
                              f"(benchmark submissions, not aggregated results): {submissions[0]}, ...",
                              stacklevel=3)  # fmt: skip
            found += [(f, p) for f in files if f not in submissions]
        else:
            raise FileNotFoundError(f"results path does not exist: {p}")
    return found


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))  # a UTF-8 byte-order mark is allowed
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsFormatError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise ResultsFormatError(f"{path}: top level is {type(doc).__name__}, expected an object")
    return doc


def detect_layout(doc: dict) -> str:
    """'0.7.x' (top-level ``lmms_eval_version``, ``config.model_backend``) or '0.3.x' (the paper's v0.3.0)."""
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    return "0.7.x" if "lmms_eval_version" in doc or "model_backend" in config else "0.3.x"


def _run_from_sidecar(path: Path) -> dict:
    meta = _read_json(path)
    for key in ("family", "variant"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ResultsFormatError(f"{path}: key {key!r} missing or not a non-empty string")
    try:
        seed = int(meta.get("seed", 0) if meta.get("seed") is not None else 0)
    except (TypeError, ValueError):
        raise ResultsFormatError(f"{path}: key 'seed' is not an integer: {meta.get('seed')!r}") from None
    version = recorded_package_version(meta, "lmms_eval")  # also reads the older "versions" mapping
    return {"family": meta["family"], "variant": meta["variant"], "seed": seed, "run_source": str(path),
            "lmms_eval_version": version}  # fmt: skip


def _label_run(label: str, results_file: Path) -> dict:
    """A ``--label`` NAME (``family[/variant[/seed]]``) as a run identity."""
    parts = label.split("/")
    if len(parts) > 3 or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        raise ResultsFormatError(f"--label for {results_file}: {label!r} is not 'name[/variant[/seed]]'")
    variant = parts[1] if len(parts) > 1 else UNKNOWN_VARIANT
    return {"family": parts[0], "variant": variant, "seed": int(parts[2]) if len(parts) == 3 else 0,
            "run_source": f"--label {label}", "lmms_eval_version": None}  # fmt: skip


def _model_args_path(model_args: object) -> str:
    """``pretrained=``/``model=`` of lmms-eval's ``model_args`` (a ``k=v,...`` string, JSON inside it, or a dict)."""
    if isinstance(model_args, str) and model_args.strip().startswith("{"):
        try:
            model_args = json.loads(model_args)
        except json.JSONDecodeError:
            pass
    if isinstance(model_args, dict):
        return str(model_args.get("pretrained") or model_args.get("model") or "")
    for item in str(model_args or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() in ("pretrained", "model", "model_name", "model_version") and value.strip():
            return value.strip()
    return ""


def model_label(doc: dict, results_file: Path) -> str:
    """A readable name for a run without identity: the model's name without its path.

    ``/opt/hf-cache/hub/models--Qwen--Qwen2.5-VL-3B-Instruct/snapshots/<hash>`` -> ``Qwen2.5-VL-3B-Instruct``;
    ``liuhaotian/llava-v1.5-7b`` -> ``llava-v1.5-7b``; no model name or path: lmms-eval's model type
    (``config.model``, e.g. ``gemma4_hf``), else the results file's name.
    """
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    for raw in (doc.get("model_name"), _model_args_path(config.get("model_args"))):
        text = str(raw or "").strip().rstrip("/\\")
        if not text:
            continue
        parts = re.split(r"[/\\]", text)
        hub = [p for p in parts if p.startswith("models--")]
        return hub[-1].split("--")[-1] if hub else parts[-1]
    return str(config.get("model") or results_file.stem.removesuffix("_results"))


def resolve_run(results_file: Path, root: Path, doc: dict, label: str | None = None) -> dict:
    """Identity (family, variant, seed) of a results file; see the module docstring for the convention.

    ``label`` (``--label``) wins. Then a sidecar in any folder from the file's up to ``root`` (lmms-eval writes
    into a model subfolder below the folder holding ``vista_eval.json``); then a folder named by
    :func:`vista.run_metadata.parse_run_name`; then the model's short name (:func:`model_label`), with a warning.
    """
    if label:
        return _label_run(label, results_file)
    root = root.resolve()
    folders = []
    folder = results_file.resolve().parent
    while True:
        folders.append(folder)
        if folder == root or folder.parent == folder or root not in folder.parents:
            break
        folder = folder.parent
    for folder in folders:
        for name in RUN_SIDECARS:
            if (folder / name).is_file():
                return _run_from_sidecar(folder / name)
    for folder in folders:
        if parsed := parse_run_name(folder.name):
            return {**parsed, "run_source": f"folder {folder}", "lmms_eval_version": None}
    family = model_label(doc, results_file)
    warnings.warn(
        f"{results_file}: no {' / '.join(RUN_SIDECARS)} and no '<family>__<variant>__seed<N>' folder; "
        f"labelled {family!r} from its model name (name it with --label FILE=NAME)",
        stacklevel=3,
    )
    return {"family": family, "variant": UNKNOWN_VARIANT, "seed": 0, "run_source": "model_name",
            "lmms_eval_version": None}  # fmt: skip


def _flatten(value: object, prefix: str = "") -> Iterable[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def value_problem(value: object) -> str:
    """Why a metric value is not a usable score ("" if it is a finite number).

    lmms-eval writes ``null`` or ``[]`` for scores it did not compute, ``"N/A"`` strings, and Python's ``NaN`` /
    ``Infinity`` for failed aggregations; every such value is treated the same way: a gap with a warning.
    """
    if value is None:
        return "null"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a number: {json.dumps(value, default=str)[:40]}"
    if not math.isfinite(value):
        return f"not finite: {value}"
    return ""


def _documents(doc: dict, task: str) -> tuple[float, float]:
    """(documents evaluated, documents in the task) from lmms-eval's ``n-samples`` (NaN when not recorded)."""
    counts = (doc.get("n-samples") or {}).get(task) if isinstance(doc.get("n-samples"), dict) else None
    if not isinstance(counts, dict):
        config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        limit = config.get("limit")
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            return float(
                limit
            ), math.inf  # a --limit run without per-task counts: part of the task, size unknown
        return math.nan, math.nan
    try:
        return float(counts.get("effective")), float(counts.get("original"))
    except (TypeError, ValueError):
        return math.nan, math.nan


def _metric_rows(path: Path, task: str, metrics: object) -> list[dict]:
    if not isinstance(metrics, dict):
        raise ResultsFormatError(f"{path}: results[{task!r}] is {type(metrics).__name__}, expected an object")
    rows = []
    for key, raw in metrics.items():
        if key in SKIP_KEYS or "_stderr" in key:
            continue
        metric, _, filt = key.partition(",")
        for subkey, value in _flatten(raw):
            note = value_problem(value)
            value = math.nan if note else value
            rows.append({"task": task, "metric": metric, "filter": filt, "metric_key": key, "subkey": subkey,
                         "value": float(value), "note": note})  # fmt: skip
    return rows


def _label_for(file: Path, labels: dict[str, str] | None) -> str | None:
    """The ``--label`` NAME whose FILE (a path, a file name or a glob) matches ``file``."""
    for pattern, name in (labels or {}).items():
        if (
            Path(pattern).resolve() == file.resolve()
            or fnmatch.fnmatch(str(file), pattern)
            or fnmatch.fnmatch(file.name, pattern)
        ):
            return name
    return None


def load_lmms_results(
    paths: str | Path | Iterable[str | Path], labels: dict[str, str] | None = None
) -> pd.DataFrame:
    """Read lmms-eval results files (0.3.x and 0.7.x layouts) into a long DataFrame.

    ``paths``: results files or folders (searched recursively). One row per (file, task, metric key, dict
    field), columns ``LONG_COLUMNS``: run identity (family, variant, seed), task, metric, filter, metric_key
    (``"<metric>,<filter>"``), subkey (dotted field of a dict-valued metric, "" for scalars), value (float, NaN
    with a ``note`` for null/non-numeric values), and provenance (file, layout, lmms_eval_version, date,
    run_source), documents / documents_total (lmms-eval's ``n-samples``: fewer evaluated than the task holds
    is a ``--limit`` run). ``alias``, ``samples`` and ``*_stderr*`` keys are not metrics and are skipped.
    ``labels``: ``{FILE: NAME}`` (``--label``), FILE a path, file name or glob, NAME ``family[/variant[/seed]]``.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = find_results_files(paths)
    if not files:
        raise FileNotFoundError(f"no *_results.json or results.json under {[str(p) for p in paths]}")
    unused = [p for p in labels or {} if not any(_label_for(file, {p: ""}) is not None for file, _ in files)]
    if unused:
        raise ResultsFormatError(
            f"--label {', '.join(unused)}: matches none of the {len(files)} results files found (give a path, a "
            "file name or a glob of one of them)"
        )
    rows = []
    for file, root in files:
        doc = _read_json(file)
        results = doc.get("results")
        if not isinstance(results, dict):
            raise ResultsFormatError(f"{file}: key 'results' missing or not an object")
        layout = detect_layout(doc)
        run = resolve_run(file, root, doc, _label_for(file, labels))
        version = (
            run.pop("lmms_eval_version")
            or f"{layout} ({doc.get('lmms_eval_version') or 'version not recorded'})"
        )
        date = str(doc.get("date") or file.name.removesuffix("results.json").rstrip("_"))
        label = f"{run['family']}/{run['variant']}/{run['seed']}"
        for task, metrics in results.items():
            documents, total = _documents(doc, task)
            for row in _metric_rows(file, task, metrics):
                rows.append({"run": label, **run, **row, "file": str(file), "layout": layout,
                             "lmms_eval_version": version, "date": date, "documents": documents,
                             "documents_total": total})  # fmt: skip
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


# ----------------------------------------------------------------------------------------------- sample logs


def _sample_score(value: object) -> float:
    """A per-sample metric as a float: a number, a numeric string, or a dict's ``score`` (MME); else NaN."""
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _first_text(value: object) -> str:
    while isinstance(value, list) and value:
        value = value[0]
    return "" if isinstance(value, list) or value is None else str(value)


def load_lmms_samples(path: str | Path) -> pd.DataFrame:
    """An lmms-eval per-sample log (``--log_samples``: ``<date>_samples_<task>.jsonl``) as one row per document.

    Reads the full format (``doc``, ``arguments``, ``resps``, ``filtered_resps``, ...) and the compact v0.6 one
    (``doc_id``, ``target``, ``filtered_resps``, ``input``, metrics). Columns: task (from the file name), doc_id,
    target, response (the first filtered response), input ("" if absent), then one float column per metric (a
    number, a numeric string or a dict's ``score``; NaN otherwise, e.g. dicts that only the task's aggregation
    can score). ``attrs["format"]``: "full" or "compact". Unreadable lines raise ``ResultsFormatError`` naming
    the file and line.
    """
    from vista.data import DataFileError, load_records  # the one reader of JSON / JSON Lines files

    path = Path(path)
    try:
        records = load_records(path)
    except DataFileError as error:
        raise ResultsFormatError(str(error)) from None
    task = path.stem.split("_samples_", 1)[1] if "_samples_" in path.stem else path.stem
    rows = []
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "doc_id" not in record:
            raise ResultsFormatError(f"{path}: record {number} has no 'doc_id' (not an lmms-eval sample log)")
        row = {"task": task, "doc_id": record["doc_id"], "target": _first_text(record.get("target")),
               "response": _first_text(record.get("filtered_resps", record.get("resps"))),
               "input": _first_text(record.get("input"))}  # fmt: skip
        row |= {k: _sample_score(v) for k, v in record.items() if k not in SAMPLE_LOG_KEYS}
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["format"] = "full" if records and "resps" in records[0] else "compact"
    return frame


# ----------------------------------------------------------------------------------------------- paper columns


def _partial(rows: pd.DataFrame) -> pd.Series:
    """Rows from a run that evaluated fewer documents than the task holds (``--limit``)."""
    return rows["documents"] < rows["documents_total"]


def _gap(file: str, bench: Benchmark, key: str, why: str) -> None:
    warnings.warn(f"{file}: results[{bench.task!r}][{key!r}] {why}: {bench.column} left as a gap",
                  MissingBenchmarkWarning, stacklevel=4)  # fmt: skip


def _pick(df: pd.DataFrame, bench: Benchmark, run: str) -> tuple[float, dict] | None:
    """Value (lmms-eval units) and provenance of one benchmark for one run's rows, or None (a gap, warned) if
    absent or not a usable score. Among several files, complete runs win over ``--limit`` runs, then the latest."""
    task_rows = df[df["task"] == bench.task]
    for key in bench.metric_keys:
        rows = task_rows[task_rows["metric_key"] == key]
        if rows.empty:
            continue
        ordered = rows.assign(_partial=_partial(rows)).sort_values(["_partial", "date", "file"],
                                                                    ascending=[False, True, True])  # fmt: skip
        files = ordered["file"].unique()
        if len(files) > 1:
            warnings.warn(f"run {run}: {bench.task} {key} found in {len(files)} files; using {files[-1]} "
                          "(complete runs before --limit runs, then the latest)", stacklevel=3)  # fmt: skip
        rows = rows[rows["file"] == files[-1]]
        scalar = rows[rows["subkey"] == ""]
        if scalar.empty:
            fields = [f for f in bench.dict_fields if f in set(rows["subkey"])]
            if not fields:
                _gap(files[-1], bench, key, f"is a dict with fields {sorted(rows['subkey'])[:8]}, none of the "
                     f"mapped dict_fields {list(bench.dict_fields)}")  # fmt: skip
                return None
            scalar = rows[rows["subkey"] == fields[0]]
        row = scalar.iloc[0]
        if row["note"]:
            _gap(row["file"], bench, key, f"is {row['note']}")
            return None
        return float(row["value"]), {"file": row["file"], "task": bench.task, "metric_key": key,
                                     "subkey": row["subkey"], "documents": row["documents"],
                                     "documents_total": row["documents_total"]}  # fmt: skip
    return None


def _warn_unmapped(df: pd.DataFrame, benches: Sequence[Benchmark]) -> None:
    """One warning listing the tasks of the results that no column of the map uses (with their runs)."""
    mapped = {b.task for b in benches}
    unmapped = df[~df["task"].isin(mapped)].groupby("task", sort=True)["run"].nunique()
    if not unmapped.empty:
        listed = ", ".join(f"{task} ({n} run{'s' * (n > 1)})" for task, n in unmapped.items())
        warnings.warn(f"tasks not in the benchmark map (not in the tables): {listed}", MissingBenchmarkWarning,
                      stacklevel=3)  # fmt: skip


def to_paper_columns(
    df: pd.DataFrame, mapping: str | Path | Sequence[Benchmark] | None = None
) -> pd.DataFrame:
    """One row per run (family, variant, seed), one column per paper benchmark in the paper's units.

    ``df``: output of ``load_lmms_results``. Overrides of the map win over lmms-eval values. A benchmark with no
    usable value is NaN plus a ``MissingBenchmarkWarning``. Runs with no task of the map are left out, with one
    warning; tasks outside the map are listed in one warning. ``result.attrs["provenance"]``: a long DataFrame
    saying where each value came from (file/task/key or ``override``), the scale applied and the documents
    evaluated; ``result.attrs["partial"]``: ``{(family, variant, seed, column): "<evaluated>/<total>"}`` for values
    from ``--limit`` runs (part of the benchmark; the tables mark them).
    """
    benches = _as_map(mapping)
    _warn_unmapped(df, benches)
    columns = [b.column for b in benches]
    records, provenance, partial, unmatched = [], [], {}, []
    runs = df[["family", "variant", "seed"]].drop_duplicates().itertuples(index=False)
    for family, variant, seed in runs:
        run_rows = df[(df["family"] == family) & (df["variant"] == variant) & (df["seed"] == seed)]
        run = f"{family}/{variant}/{seed}"
        has_task = any(b.task in set(run_rows["task"]) or b.override_for(family, variant, int(seed)) is not None
                       for b in benches)  # fmt: skip
        if not has_task:
            unmatched.append(run)
            continue
        record: dict = {"family": family, "variant": variant, "seed": int(seed)}
        gaps: list[str] = []
        details: list[str] = []
        for bench in benches:
            manual = bench.override_for(family, variant, int(seed))
            picked = None if manual is not None else _pick(run_rows, bench, run)
            if manual is not None:
                record[bench.column] = manual
                provenance.append({"run": run, "column": bench.column, "value": manual, "source": "override"})
            elif picked is None:
                record[bench.column] = math.nan
                gaps.append(bench.column)
                details.append(f"{bench.column} ({bench.task}: {' | '.join(bench.metric_keys)})")
            else:
                value, where = picked
                record[bench.column] = value * bench.scale
                provenance.append({"run": run, "column": bench.column, "value": value * bench.scale,
                                   "source": "lmms-eval", "scale": bench.scale, **where})  # fmt: skip
                if where["documents"] < where["documents_total"]:
                    total = where["documents_total"]
                    partial[(family, variant, int(seed), bench.column)] = (
                        f"{where['documents']:g}/{total:.0f}"
                        if math.isfinite(total)
                        else f"--limit {where['documents']:g}"
                    )
        if gaps:
            listed = ", ".join(details if len(gaps) <= 3 else gaps)  # task and keys when few, else names
            warnings.warn(f"run {run}: no value for {listed}: left as gaps ({len(gaps)} of {len(benches)} "
                          "columns)", MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
        cut = [
            f"{c} ({n} documents)"
            for (f, v, k, c), n in partial.items()
            if (f, v, k) == (family, variant, seed)
        ]
        if cut:
            warnings.warn(f"run {run}: {', '.join(cut)}: evaluated on part of the benchmark (--limit); "
                          f"marked {PARTIAL_MARK} in the tables", MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
        records.append(record)
    if unmatched:
        warnings.warn(f"{len(unmatched)} run(s) have no task of the benchmark map and are left out of the tables "
                      f"(their values are in the long results): {', '.join(unmatched)}", MissingBenchmarkWarning,
                      stacklevel=2)  # fmt: skip
    wide = pd.DataFrame(records, columns=["family", "variant", "seed", *columns])
    wide.attrs["provenance"] = pd.DataFrame(provenance)
    wide.attrs["partial"] = partial
    return wide


# ----------------------------------------------------------------------------------------------- tables


def row_label(family: str, variant: str) -> str:
    """Row name as in the paper ("LLaVA-1.5-7B", "LLaVA-VISTA(cosine)"), or "<family>-<variant>" otherwise."""
    base, prefix = FAMILY_NAMES.get(family.lower(), (family, family))
    if variant in ("baseline", UNKNOWN_VARIANT):  # a run without identity is named by its model alone
        return base
    return f"{prefix}-{VARIANT_SUFFIX.get(variant, variant)}"


def _ordered_rows(wide: pd.DataFrame) -> list[tuple[str, str]]:
    families = list(dict.fromkeys(wide["family"]))
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    rows = []
    for fam in families:
        variants = set(wide.loc[wide["family"] == fam, "variant"])
        rows += [(fam, v) for v in sorted(variants, key=lambda v: (rank.get(v, len(rank)), v))]
    return rows


@dataclass
class Table:
    """One of the paper's tables for a set of rows. ``mean``/``std``/``n``: label x (benchmarks + [AVG])."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, str]]  # (family, variant) per row, in display order
    labels: list[str]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    decimals: dict[str, int]
    partial_avg: set[str] = field(default_factory=set)  # labels whose average skipped missing benchmarks
    signed: bool = False  # deltas: print "+0.12"
    partial_cells: set[tuple[str, str]] = field(default_factory=set)  # (label, column) with a --limit run

    def to_markdown(self) -> str:
        return render_markdown(self)

    def to_latex(self) -> str:
        return render_latex(self)

    def to_csv(self) -> str:
        return render_csv(self)


def _per_seed_avg_gain(
    wide: pd.DataFrame, family: str, variant: str, cols: list[str]
) -> tuple[list[float], bool]:
    """Avg. Improvement (%) of each seed of (family, variant) over the family's baseline mean; partial flag."""
    base = wide[(wide["family"] == family) & (wide["variant"] == "baseline")][cols].mean()
    gains, partial = [], False
    for _, seed_row in wide[(wide["family"] == family) & (wide["variant"] == variant)].iterrows():
        rel = 100.0 * (seed_row[cols].astype(float) - base) / base
        partial |= bool(rel.isna().any())
        if rel.notna().any():
            gains.append(float(rel.mean(skipna=True)))
    return gains, partial


def build_tables(
    wide: pd.DataFrame,
    mapping: str | Path | Sequence[Benchmark] | None = None,
    printed_avg: pd.DataFrame | None = None,
    labels: dict[tuple[str, str], str] | None = None,
) -> dict[str, Table]:
    """Group runs by (family, variant) and lay them out as the map's tables (mean ± std over seeds).

    ``wide``: output of ``to_paper_columns``. ``printed_avg``: optional (family, variant) x table-id frame of
    averages to print instead of computing them (the paper's own). ``labels``: optional row names.
    """
    benches = _as_map(mapping)
    rows = _ordered_rows(wide)
    names = [(labels or {}).get(r) or row_label(*r) for r in rows]
    grouped = wide.groupby(["family", "variant"], sort=False)
    tables = {}
    for tid in table_ids(benches):
        cols = [b.column for b in benches if b.table == tid]
        mean = pd.DataFrame(np.nan, index=names, columns=[*cols, AVG])
        std, n = mean.copy(), pd.DataFrame(0, index=names, columns=[*cols, AVG])
        partial = set()
        for (family, variant), label in zip(rows, names):
            group = grouped.get_group((family, variant))[cols].astype(float)
            mean.loc[label, cols] = group.mean()
            std.loc[label, cols] = group.std(ddof=1)
            n.loc[label, cols] = group.notna().sum()
            if variant in ("baseline", UNKNOWN_VARIANT):  # no baseline to compare a run without identity to
                continue
            if printed_avg is not None:
                value = (
                    printed_avg.loc[(family, variant), tid]
                    if (family, variant) in printed_avg.index
                    else np.nan
                )
                mean.loc[label, AVG], n.loc[label, AVG] = value, int(pd.notna(value))
                continue
            if not ((wide["family"] == family) & (wide["variant"] == "baseline")).any():
                warnings.warn(f"family {family}: no baseline run, {AVG} of {label} left empty",
                              MissingBenchmarkWarning, stacklevel=2)  # fmt: skip
                continue
            gains, is_partial = _per_seed_avg_gain(wide, family, variant, cols)
            if gains:
                mean.loc[label, AVG] = float(np.mean(gains))
                std.loc[label, AVG] = float(np.std(gains, ddof=1)) if len(gains) > 1 else np.nan
                n.loc[label, AVG] = len(gains)
            if is_partial and gains:
                partial.add(label)
        decimals = {b.column: b.decimals for b in benches} | {AVG: 2}
        label_of = dict(zip(rows, names))
        cut = {(label_of[(f, v)], c) for (f, v, _, c) in wide.attrs.get("partial", {}) if c in cols}
        tables[tid] = Table(
            tid,
            TABLE_TITLES.get(tid, tid),
            cols,
            rows,
            names,
            mean,
            std,
            n,
            decimals,
            partial,
            partial_cells=cut,
        )
    return tables


# ----------------------------------------------------------------------------------------------- paper data


def load_paper_results(path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The paper's numbers: (wide frame like ``to_paper_columns``, printed averages, row labels).

    Printed averages: index (family, variant), columns table ids (NaN for baselines, printed as "-").
    """
    path = Path(path or PAPER_RESULTS)
    frame = pd.read_csv(path)
    avg_cols = [c for c in frame.columns if c.startswith("avg_")]
    wide = frame.drop(columns=["model", *avg_cols]).assign(seed=0)
    wide = wide[
        ["family", "variant", "seed", *[c for c in wide.columns if c not in ("family", "variant", "seed")]]
    ]
    printed = frame.set_index(["family", "variant"])[avg_cols].rename(
        columns=lambda c: c.removeprefix("avg_")
    )
    labels = {(r.family, r.variant): r.model for r in frame.itertuples()}
    return wide, printed, labels


def paper_tables(
    path: str | Path | None = None, mapping: str | Path | Sequence[Benchmark] | None = None
) -> dict[str, Table]:
    """The paper's three tables from ``reproduce/paper_results.csv``, with the averages as printed."""
    wide, printed, labels = load_paper_results(path)
    return build_tables(wide, mapping, printed_avg=printed, labels=labels)


def delta_tables(runs: dict[str, Table], paper: dict[str, Table] | None = None) -> dict[str, Table]:
    """Run means minus the paper's cells, for rows whose (family, variant) is in the paper; others dropped."""
    paper = paper or paper_tables()
    out = {}
    for tid, table in runs.items():
        ref = paper.get(tid)
        if ref is None:
            continue
        keep = [(r, lab) for r, lab in zip(table.rows, table.labels) if r in ref.rows]
        if not keep:
            continue
        rows, labels = [r for r, _ in keep], [lab for _, lab in keep]
        ref_labels = [ref.labels[ref.rows.index(r)] for r in rows]
        cols = [c for c in table.columns if c in ref.columns]
        delta = (
            table.mean.loc[labels, [*cols, AVG]].to_numpy()
            - ref.mean.loc[ref_labels, [*cols, AVG]].to_numpy()
        )
        mean = pd.DataFrame(delta, index=labels, columns=[*cols, AVG])
        n = table.n.loc[labels, [*cols, AVG]]
        out[tid] = Table(tid, f"{table.title}: ours minus paper", cols, rows, labels, mean,
                         mean * np.nan, n, table.decimals, table.partial_avg & set(labels), signed=True)  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- audit


def audit_paper_averages(
    path: str | Path | None = None, mapping: str | Path | Sequence[Benchmark] | None = None
) -> pd.DataFrame:
    """Recompute every printed "Avg. Improvement" of the paper and say which ones are reproduced.

    Columns: table, model, printed, mean_relative_gain (the documented formula), diff (recomputed - printed),
    reproduced (the recomputed value rounds to the printed one, |diff| <= 0.005), and two alternative formulas
    for context: relative_gain_of_means (100 (mean x - mean x0) / mean x0) and mean_absolute_gain
    (mean (x - x0), in each benchmark's units), with the list of formulas that reproduce the printed value.
    """
    benches = _as_map(mapping)
    wide, printed, labels = load_paper_results(path)
    rows = []
    for tid in table_ids(benches):
        cols = [b.column for b in benches if b.table == tid]
        for (family, variant), value in printed[tid].dropna().items():
            x = wide[(wide.family == family) & (wide.variant == variant)][cols].iloc[0].astype(float)
            x0 = wide[(wide.family == family) & (wide.variant == "baseline")][cols].iloc[0].astype(float)
            formulas = {
                "mean_relative_gain": float((100 * (x - x0) / x0).mean()),
                "relative_gain_of_means": float(100 * (x.mean() - x0.mean()) / x0.mean()),
                "mean_absolute_gain": float((x - x0).mean()),
            }
            hits = [k for k, v in formulas.items() if abs(v - value) <= 0.005 + 1e-9]
            rows.append({"table": tid, "model": labels[(family, variant)], "printed": float(value), **formulas,
                         "diff": formulas["mean_relative_gain"] - value,
                         "reproduced": "mean_relative_gain" in hits, "formulas_reproducing": ", ".join(hits)})  # fmt: skip
    return pd.DataFrame(rows)


def render_audit_markdown(audit: pd.DataFrame) -> str:
    """The audit as a Markdown table plus a one-line verdict."""
    lines = [
        "| table | model | printed | recomputed (mean relative gain %) | diff | reproduced | other formulas that fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in audit.itertuples():
        others = ", ".join(f for f in r.formulas_reproducing.split(", ") if f and f != "mean_relative_gain")
        lines.append(f"| {TABLE_TITLES.get(r.table, r.table)} | {r.model} | {r.printed:.2f} | "
                     f"{r.mean_relative_gain:.2f} | {r.diff:+.2f} | {'yes' if r.reproduced else 'no'} | "
                     f"{others or '-'} |")  # fmt: skip
    ok = audit[audit.reproduced]
    lines.append("")
    lines.append(f"{len(ok)} of {len(audit)} printed averages are reproduced by the mean relative gain: "
                 + (", ".join(f"{TABLE_TITLES.get(t, t)} {m}" for t, m in zip(ok.table, ok.model)) or "none") + ".")  # fmt: skip
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- rendering


def format_cell(
    mean: float, std: float, n: int, decimals: int, signed: bool = False, latex: bool = False
) -> str:
    """``"61.20"``, ``"61.20±0.35"`` (n > 1 seeds), ``"+0.12"`` (signed) or the gap mark for NaN."""
    if pd.isna(mean):
        return GAP if not latex else "--"
    text = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    if n > 1 and pd.notna(std):
        text += (r"$\pm$" if latex else "±") + f"{std:.{decimals}f}"
    return text


def _full_seeds(table: Table) -> int:
    """The most seeds any benchmark cell of the table has (cells with fewer say so)."""
    return int(table.n.drop(columns=AVG).to_numpy().max(initial=0))


def _cells(table: Table, latex: bool = False) -> list[list[str]]:
    full = _full_seeds(table)
    out = []
    for (_, variant), label in zip(table.rows, table.labels):
        cells = []
        for col in [*table.columns, AVG]:
            if col == AVG and variant in ("baseline", UNKNOWN_VARIANT):
                cells.append("-")
                continue
            m, s, k = table.mean.at[label, col], table.std.at[label, col], int(table.n.at[label, col])
            cell = format_cell(m, s, k, table.decimals.get(col, 2), table.signed, latex)
            if pd.notna(m):
                cell += "*" if col == AVG and label in table.partial_avg else ""
                cell += (
                    (r"$^\ddagger$" if latex else PARTIAL_MARK) if (label, col) in table.partial_cells else ""
                )
                cell += f" (n={k})" if 0 < k < full and not table.signed else ""
            cells.append(cell)
        out.append(cells)
    return out


def _footnotes(table: Table) -> list[str]:
    notes = []
    if table.signed:
        notes.append("Cells: our mean over seeds minus the paper's value.")
    elif _full_seeds(table) > 1:
        notes.append("Cells: mean±std over seeds (sample std).")
    if table.mean.drop(columns=AVG).isna().to_numpy().any():
        notes.append(f"{GAP}: no result for this benchmark.")
    if table.partial_avg:
        notes.append("*: averaged over the benchmarks present in both the row and its baseline.")
    if table.partial_cells:
        notes.append(f"{PARTIAL_MARK}: evaluated on part of the benchmark (an lmms-eval --limit run).")
    counts = table.n.drop(columns=AVG).to_numpy()
    if not table.signed and ((counts > 0) & (counts < _full_seeds(table))).any():
        notes.append(f"(n=k): from k seeds, fewer than the table's other cells ({_full_seeds(table)}).")
    return notes


def render_markdown(table: Table) -> str:
    """The table in the paper's layout as GitHub Markdown (title line, header, one line per row, notes)."""
    header = ["model", *table.columns, AVG]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in zip(table.labels, _cells(table))]
    notes = _footnotes(table)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _tex(text: str) -> str:
    return re.sub(r"([&%_#$])", r"\\\1", text)


def render_latex(table: Table) -> str:
    """The table as a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    header = ["Model", *table.columns, AVG]
    lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]  # fmt: skip
    last_family = None
    for (family, _), label, cells in zip(table.rows, table.labels, _cells(table, latex=True)):
        if last_family is not None and family != last_family:
            lines.append(r"\midrule")
        last_family = family
        lines.append(" & ".join([_tex(label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Machine-readable: model, family, variant, then per column its mean, std and number of seeds."""
    frame = pd.DataFrame({"model": table.labels, "family": [r[0] for r in table.rows],
                          "variant": [r[1] for r in table.rows]})  # fmt: skip
    for col in [*table.columns, AVG]:
        frame[col] = table.mean[col].to_numpy()
        frame[f"{col} std"] = table.std[col].to_numpy()
        frame[f"{col} n"] = table.n[col].to_numpy()
    return frame.to_csv(index=False, float_format="%.6g")


# ----------------------------------------------------------------------------------------------- gains plot


def relative_gains(
    wide: pd.DataFrame, mapping: str | Path | Sequence[Benchmark] | None = None, labels: dict | None = None
) -> pd.DataFrame:
    """Per-benchmark relative gain (%) of each non-baseline row over its family's baseline (means over seeds).

    Long frame: family, variant, model, table, column, gain_pct. Rows of families without a baseline are absent.
    """
    benches = _as_map(mapping)
    cols = [b.column for b in benches]
    means = wide.groupby(["family", "variant"], sort=False)[cols].mean()
    out = []
    for family, variant in _ordered_rows(wide):
        if variant == "baseline" or (family, "baseline") not in means.index:
            continue
        gain = (
            100
            * (means.loc[(family, variant)] - means.loc[(family, "baseline")])
            / means.loc[(family, "baseline")]
        )
        label = (labels or {}).get((family, variant)) or row_label(family, variant)
        out += [{"family": family, "variant": variant, "model": label, "table": b.table, "column": b.column,
                 "gain_pct": float(gain[b.column])} for b in benches]  # fmt: skip
    return pd.DataFrame(out, columns=["family", "variant", "model", "table", "column", "gain_pct"])


def plot_relative_gains(gains: pd.DataFrame, ax=None):
    """Bar chart of ``relative_gains`` output: one bar per (benchmark, model). Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.55 * gains["column"].nunique() + 2), 3.6))
    sns.barplot(data=gains.dropna(subset=["gain_pct"]), x="column", y="gain_pct", hue="model", ax=ax)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("relative gain over baseline (%)")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=8, frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------- CLI


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
            print(f"vista tables: error: {e}", file=sys.stderr)
            return 2
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    (Path(args.out) / "warnings.txt").write_text("".join(m + "\n" for m in messages), encoding="utf-8")
    print(paths["summary"].read_text(encoding="utf-8"))
    print(f"wrote {paths['summary']} ({len(messages)} warnings)")
    return 0
