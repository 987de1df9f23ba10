"""``vista eval``: evaluate a checkpoint with lmms-eval, the way the paper did, and record how.

    vista eval --checkpoint runs/llava-vista/final --tasks paper --out results/gpu/llava-1.5-7b__vista__seed0
    vista eval --checkpoint runs/tiny/final --tasks local --include-path vista/world/tasks --out results/tiny/...

It runs lmms-eval's own CLI code path in-process (``lmms_eval.__main__.parse_eval_args`` +
``cli_evaluate_single``) with the ``vista`` model plugin (``vista.lmms_plugin``), so the results land where the
``lmms-eval`` command puts them: ``<out>/<model_name_sanitized>/<timestamp>_results.json``. Unlike the
``lmms-eval`` command, any failure raises, and a run that writes no results file, or a results file without
every requested task, is an error.

Beside lmms-eval's output it writes ``<out>/vista_eval.json``: the run identity that ``vista tables`` reads
(``family``, ``variant``, ``seed``), the checkpoint, template, tasks and settings, the package versions and the
list of results files. The identity comes from ``--family/--variant/--seed``, else from the checkpoint's run
metadata (``vista_run.json`` as ``vista train`` writes it: ``preset`` (or ``family``), ``variant``, ``seed``), else the checkpoint
folder name, variant ``unknown``, seed 0 (with a warning). Several ``vista eval`` calls may share one ``--out``
(e.g. task by task) if they evaluate the same run; the files list accumulates.

Task presets: ``paper`` (the paper's 18 lmms-eval tasks, for GPU runs; needs the Hub datasets) and ``local``
(every task defined by the YAML files under ``--include-path``: the CPU suite). Presets and task names mix:
``--tasks local,gqa``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import yaml

from vista.errors import MissingInputError, UsageError, positive_int
from vista.run_metadata import parse_run_name, provenance, read_run_metadata, resolve_template_name

# The paper's tasks (REFERENCE section 4; the same as the `task` column of reproduce/benchmark_map.csv).
PAPER_TASKS = (
    "vqav2_val", "ok_vqa_val2014", "gqa", "textvqa_val", "realworldqa", "docvqa_val",
    "seedbench", "ai2d", "mmmu_val", "mmstar", "mmt_val", "ocrbench", "mmbench_en_dev", "mmbench_cn_dev",
    "mme", "refcoco_bbox_val", "refcoco+_bbox_val", "refcocog_bbox_val",
)  # fmt: skip
SIDECAR = "vista_eval.json"
VERSIONED_PACKAGES = ("vista-mllm", "lmms_eval", "torch", "transformers", "datasets", "accelerate", "pillow")


class EvaluationError(RuntimeError):
    """lmms-eval failed, or did not write the results it should have."""


class _IgnoreTags(yaml.SafeLoader):
    """Reads lmms-eval task YAMLs without resolving ``!function`` tags."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


def local_tasks(include_paths: list[str | Path]) -> list[str]:
    """Names of the tasks defined by the ``*.yaml`` files under the include paths (groups not expanded)."""
    names = []
    for root in map(Path, include_paths):
        for path in sorted(root.rglob("*.yaml")):
            try:
                doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_IgnoreTags)
            except yaml.YAMLError as e:
                raise ValueError(f"{path}: not valid YAML ({e})") from None
            if isinstance(doc, dict) and isinstance(doc.get("task"), str):
                names.append(doc["task"])
    return list(dict.fromkeys(names))


def expand_tasks(spec: str | list[str], include_paths: list[str | Path] | None = None) -> list[str]:
    """Task names from a comma-separated list that may contain the presets ``paper`` and ``local``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks: list[str] = []
    for item in (i.strip() for i in items if i.strip()):
        if item == "paper":
            tasks += PAPER_TASKS
        elif item == "local":
            if not include_paths:
                raise UsageError(
                    "--tasks local needs --include-path DIR (the local task YAMLs, e.g. "
                    "--include-path results/tiny/data/benchmarks)"
                )
            found = local_tasks(include_paths)
            if not found:
                raise MissingInputError(
                    f"--include-path {' '.join(map(str, include_paths))}: no task YAML there; point it at the "
                    "benchmarks/ folder of `vista data synth` (e.g. results/tiny/data/benchmarks)"
                )
            tasks += found
        else:
            tasks.append(item)
    if not tasks:
        raise UsageError(f"--tasks {spec!r} names no task; e.g. --tasks local or --tasks gqa,mme")
    return list(dict.fromkeys(tasks))


def run_identity(checkpoint: str | Path, family: str | None = None, variant: str | None = None,
                 seed: int | None = None) -> dict:  # fmt: skip
    """(family, variant, seed) of the evaluated run: explicit values, else run metadata, else defaults."""
    meta, path = read_run_metadata(checkpoint)
    named = next(
        filter(None, (parse_run_name(p.name) for p in (Path(checkpoint), *Path(checkpoint).parents))), {}
    )
    identity = {  # explicit, else run metadata, else a <family>__<variant>__seed<N> folder of the checkpoint path
        "family": family or meta.get("family") or meta.get("preset") or named.get("family"),
        "variant": variant or meta.get("variant") or named.get("variant"),
        "seed": seed if seed is not None else meta.get("seed", named.get("seed")),
    }
    if not identity["family"] or not identity["variant"]:
        warnings.warn(
            f"run identity of {checkpoint} not given (--family/--variant) nor in its run metadata "
            f"({path or 'none found'}); using family {Path(checkpoint).resolve().name!r}, variant 'unknown'",
            stacklevel=2,
        )
        identity["family"] = identity["family"] or Path(checkpoint).resolve().name
        identity["variant"] = identity["variant"] or "unknown"
    identity["seed"] = int(identity["seed"] or 0)
    return identity


def lmms_eval_argv(checkpoint: Path, tasks: list[str], out: Path, *, template: str, batch_size: int, device: str,
                   limit: float | None, log_samples: bool, verbosity: str) -> list[str]:  # fmt: skip
    """The ``lmms-eval`` command line equivalent to this evaluation (parsed by lmms-eval's own parser)."""
    if "," in str(checkpoint):
        raise ValueError(
            f"checkpoint path must not contain ',' (lmms-eval splits model_args on it): {checkpoint}"
        )
    argv = ["--model", "vista", "--model_args", f"pretrained={checkpoint},template={template}",
            "--tasks", ",".join(tasks), "--output_path", str(out), "--batch_size", str(batch_size),
            "--device", device, "--verbosity", verbosity]  # fmt: skip
    if limit is not None:
        argv += ["--limit", str(limit)]
    if log_samples:
        argv.append("--log_samples")
    return argv


def evaluate(
    checkpoint: str | Path,
    tasks: str | list[str],
    out: str | Path,
    *,
    include_paths: list[str | Path] | None = None,
    limit: float | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    template: str | None = None,
    log_samples: bool = False,
    family: str | None = None,
    variant: str | None = None,
    seed: int | None = None,
    verbosity: str = "WARNING",
) -> dict:
    """Evaluate ``checkpoint`` on ``tasks`` with lmms-eval; return the record written to ``<out>/vista_eval.json``.

    Raises ``EvaluationError`` if lmms-eval raises, writes no results file, or omits a requested task.
    """
    checkpoint, out = Path(checkpoint).resolve(), Path(out).resolve()
    if not checkpoint.is_dir():
        raise MissingInputError(f"--checkpoint {checkpoint}: no such folder (a folder `vista train` wrote)")
    include_paths = [str(Path(p).resolve()) for p in include_paths or []]
    task_list = expand_tasks(tasks, include_paths)
    template = resolve_template_name(checkpoint, template)
    identity = run_identity(checkpoint, family, variant, seed)
    sidecar_path = out / SIDECAR
    previous = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else None
    if previous and {k: previous.get(k) for k in identity} != identity:
        raise UsageError(f"{sidecar_path} belongs to run {previous.get('family')}/{previous.get('variant')}/"
                              f"{previous.get('seed')}, not {identity}: use another --out")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    argv = lmms_eval_argv(checkpoint, task_list, out, template=template, batch_size=batch_size, device=device,
                          limit=limit, log_samples=log_samples, verbosity=verbosity)  # fmt: skip

    from lmms_eval.__main__ import cli_evaluate_single, parse_eval_args
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=verbosity)
    with mock.patch.object(sys, "argv", ["lmms-eval", *argv]):
        _, args = parse_eval_args()
    args.include_path = include_paths or None
    before = set(out.rglob("*_results.json"))
    started = time.time()
    try:
        results, _ = cli_evaluate_single(args)
    except ValueError as e:
        if str(e).startswith("Tasks not found:"):  # lmms-eval's own check of the task names: a user error
            missing = str(e).split(":", 1)[1].split(". Try", 1)[0].strip()
            raise UsageError(
                f"--tasks: lmms-eval knows no task {missing} (list them with `lmms-eval --tasks list`; local tasks "
                "need --include-path DIR)"
            ) from None
        raise EvaluationError(f"lmms-eval failed on {checkpoint} ({', '.join(task_list)}): {e!r}") from e
    except Exception as e:  # lmms-eval raises many types; re-raise as one, keeping the cause
        raise EvaluationError(f"lmms-eval failed on {checkpoint} ({', '.join(task_list)}): {e!r}") from e
    new_files = sorted(set(out.rglob("*_results.json")) - before)
    if results is None or not new_files:
        raise EvaluationError(f"lmms-eval wrote no results file under {out} (tasks {', '.join(task_list)})")
    missing = [
        t for t in task_list if t not in results.get("results", {}) and t not in results.get("groups", {})
    ]
    if missing:
        raise EvaluationError(f"{new_files[-1]}: no results for task(s) {missing}")
    record = {
        "schema": 1,
        **identity,
        "checkpoint": str(checkpoint),
        "template": template,
        "tasks": sorted(set(task_list) | set((previous or {}).get("tasks", []))),
        "settings": {
            "include_paths": include_paths,
            "limit": limit,
            "batch_size": batch_size,
            "device": device,
            "log_samples": log_samples,
            "decoding": "greedy",
            "lmms_eval_argv": argv,
        },  # fmt: skip
        **provenance(VERSIONED_PACKAGES),  # "git", "packages": the schema of vista_run.json
        "results_files": (previous or {}).get("results_files", [])
        + [str(f.relative_to(out)) for f in new_files],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 2),
    }
    sidecar_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def score_table(results_file: str | Path) -> str:
    """The scores of one lmms-eval results file as an aligned text table: task, metric, value, stderr.

    lmms-eval keys metrics ``<metric>,<filter>`` with a ``<metric>_stderr,<filter>`` partner; other entries
    (``alias``, samples counts) are left out.
    """
    data = json.loads(Path(results_file).read_text(encoding="utf-8"))
    rows = []
    for task, metrics in sorted((data.get("results") or {}).items()):
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if (
                not filt
                or "_stderr" in name
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            stderr = metrics.get(f"{name}_stderr,{filt}")
            stderr = f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "-"
            rows.append((task, name if filt == "none" else key, f"{value:.4f}", stderr))
    header = ("task", "metric", "value", "stderr")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder (save_pretrained model + processor)"
    )
    parser.add_argument(
        "--tasks", required=True, help="comma-separated lmms-eval tasks; presets: paper, local"
    )
    parser.add_argument("--out", required=True, help="output folder (lmms-eval results + vista_eval.json)")
    parser.add_argument("--include-path", action="append", default=[], metavar="DIR",
                        help="folder of extra task YAMLs (repeatable), e.g. the local CPU suite")  # fmt: skip
    parser.add_argument("--limit", type=float, default=None, help="documents per task (testing only)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="generation batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--template", default=None, help="conversation template (default: from run metadata)")
    parser.add_argument("--family", default=None, help="model family for the tables, e.g. llava-1.5-7b")
    parser.add_argument("--variant", default=None, help="baseline | vista | vista-cosine")
    parser.add_argument("--seed", type=int, default=None, help="training seed of the run")
    parser.add_argument("--log-samples", action="store_true", help="also write per-sample outputs (jsonl)")
    parser.add_argument("--verbosity", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    record = evaluate(
        args.checkpoint, args.tasks, args.out, include_paths=args.include_path, limit=args.limit,
        batch_size=args.batch_size, device=args.device, template=args.template, log_samples=args.log_samples,
        family=args.family, variant=args.variant, seed=args.seed, verbosity=args.verbosity,
    )  # fmt: skip
    print(
        f"evaluated {record['family']}/{record['variant']}/{record['seed']} on {', '.join(record['tasks'])}"
    )
    for name in record["results_files"]:
        print(f"  {Path(args.out) / name}")
    print(f"  {Path(args.out) / SIDECAR}")
    print(score_table(Path(args.out) / record["results_files"][-1]))
    if args.limit is not None:
        print(
            f"note: --limit {args.limit:g} documents per task; limited runs are checks, not benchmark scores"
        )
    return 0
