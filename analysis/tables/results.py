"""lmms-eval results files -> one long DataFrame (one row per metric value, with the run's identity and
provenance); lmms-eval's per-sample logs -> one row per document. The run-identity convention is in
:mod:`analysis.tables`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.tables.benchmark_map import ResultsFormatError
from vista.run_metadata import parse_run_name, recorded_package_version

RUN_SIDECARS = ("vista_eval.json", "run.json")
UNKNOWN_VARIANT = "unknown"
SUBMISSIONS = "submissions"
SAMPLE_LOG_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
                   "target_hash", "input", "filter", "metrics", "task"}  # fmt: skip
SKIP_KEYS = {"alias", "samples", "name", "sample_len"}
LONG_COLUMNS = [
    "run", "family", "variant", "seed", "task", "metric", "filter", "metric_key", "subkey", "value", "note",
    "file", "layout", "lmms_eval_version", "date", "run_source", "documents", "documents_total",
]  # fmt: skip


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
