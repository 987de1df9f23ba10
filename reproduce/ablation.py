"""Stages of an ablation profile (``reproduce/configs/profiles/tiny-ablation.yaml``), called by ``pipeline.py``.

A profile with an ``ablation`` mapping names each variant and how it trains::

    ablation:
      baseline: {}                                   # the loss variant ``baseline`` in both stages
      vista-c0.03: {variant: vista, both: {vista.coefficient: 0.03}}
      l2t: {finetune: {objectives.l2t.enabled: true}}

``variant`` is the loss variant of ``vista train`` (default ``baseline``); ``both`` / ``pretrain`` / ``finetune``
are dotted overrides for both stages or one. Reuse: the world and foundations are built once; stage 1 (pretrain)
runs once per distinct (variant, pretrain overrides, seed) and is shared by every variant whose stage 1 is identical
(e.g. L2T and VIRAL-style, which only change stage 2, reuse the baseline's). Every variant is evaluated on the
local lmms-eval suite; the report compares each with ``baseline_variant`` seed by seed (``analysis.report.ablation``).
"""

from __future__ import annotations

from pathlib import Path

from stages import Stage

STAGES = ("pretrain", "finetune")


def stage_overrides(spec: dict, stage: str) -> list[str]:
    """``key=value`` overrides of one stage of a variant spec (``variant=...`` first)."""
    unknown = sorted(set(spec) - {"variant", "both", *STAGES})
    if unknown:
        raise SystemExit(
            f"ablation variant spec has unknown key {unknown[0]!r}; expected variant, both, pretrain, finetune"
        )
    values = {**(spec.get("both") or {}), **(spec.get(stage) or {})}
    return [f"variant={spec.get('variant', 'baseline')}"] + [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in sorted(values.items())
    ]


def world_inputs(profile: dict, out: Path) -> tuple[list[Stage], dict[str, list[str]]]:
    """The world and foundation stages of a CPU ablation, and each training stage's data and model overrides.

    A GPU ablation (no ``world`` in the profile) has neither: the preset's configs hold its data paths and model
    ids (``reproduce/configs/<train_configs>/*.yaml``), exactly as in the paper profiles."""
    import pipeline

    if not pipeline.is_cpu_profile(profile):
        return [], {"pretrain": [], "finetune": []}
    data, foundations = out / "data", out / "foundations"
    # tiny_stages builds the world and foundations stages (kept) and others that need these keys (discarded)
    base = {"theory": {"K": 1, "M": 1, "T": 1, "alpha": 0.0}, **profile, "variants": [], "profile": "tiny"}
    stages = [s for s in pipeline.tiny_stages(base, out) if s.name in ("world", *pipeline.FOUNDATION_STAGES)]
    images = f"data.image_folder={data / 'images'}"
    return stages, {
        "pretrain": [f"data.json={data / 'pretrain.json'}", images, f"model.vision_tower={foundations / 'vision'}",
                     f"model.language_model={foundations / 'language'}"],
        "finetune": [f"data.json={data / 'finetune.json'}", images],
    }  # fmt: skip


def ablation_stages(profile: dict, out: Path) -> list[Stage]:
    """Shared stage-1 runs, stage-2 runs and evaluations of every variant and seed, then tables and the report.

    A CPU profile (``world``) first builds the world and foundations and, when it has ``length_effect``, measures
    every variant on ``world_len_N``; a GPU profile trains from the preset's configs through its ``launcher`` and
    evaluates on its task list (``eval.tasks``)."""
    import pipeline

    stages, inputs = world_inputs(profile, out)
    cpu = pipeline.is_cpu_profile(profile)
    configs = pipeline.train_configs(profile)
    variants: dict = profile["ablation"]
    if profile.get("baseline_variant", "baseline") not in variants:
        raise SystemExit(
            f"profile {profile['profile']}: baseline_variant is not one of the ablation variants"
        )
    evaluated, trained = [], []
    for seed in range(1, profile["seeds"] + 1):
        pretrained: dict[tuple, tuple[str, Path]] = {}
        for name, spec in variants.items():
            spec = spec or {}
            run_dir = out / "runs" / pipeline.run_name(profile, name, seed)
            key = tuple(stage_overrides(spec, "pretrain"))
            if key not in pretrained:
                folder = run_dir / "pretrain"
                overrides = [*key, f"training.seed={seed}", f"training.output_dir={folder}",
                             "training.overwrite_output_dir=true", *inputs["pretrain"],
                             *(profile["train"].get("pretrain") or [])]  # fmt: skip
                command = pipeline.train_command(profile, configs / "pretrain.yaml", overrides)
                stages.append(
                    Stage(f"pretrain-{name}-seed{seed}", f"stage 1 of {name} (seed {seed}); shared with variants "
                          "whose stage 1 is identical", [command], [folder / "config.json", folder / "vista_run.json"],
                          needs=["world", *pipeline.FOUNDATION_STAGES] if cpu else [])
                )  # fmt: skip
                pretrained[key] = (f"pretrain-{name}-seed{seed}", folder)
            needs, checkpoint = pretrained[key]
            folder = run_dir / "finetune"
            overrides = [*stage_overrides(spec, "finetune"), f"training.seed={seed}",
                         f"training.output_dir={folder}", "training.overwrite_output_dir=true", *inputs["finetune"],
                         f"model.checkpoint={checkpoint}", *(profile["train"].get("finetune") or [])]  # fmt: skip
            command = pipeline.train_command(profile, configs / "finetune.yaml", overrides)
            stages.append(
                Stage(f"train-{name}-seed{seed}", f"stage 2 of {name} (seed {seed})", [command],
                      [folder / "config.json", folder / "vista_run.json"], needs=[needs])
            )  # fmt: skip
            include = out / "data" / "benchmarks" if cpu else None
            stages.append(pipeline.eval_stage(profile, name, seed, folder, out, include=include))
            trained.append(f"train-{name}-seed{seed}")
            evaluated.append(f"eval-{name}-seed{seed}")
    if cpu:
        stages += [
            s
            for s in pipeline.world_analysis_stages(profile, out, trained, evaluated)
            if s.name == "length-effect"
        ]
    return stages + pipeline.tables_and_report(profile, out, evaluated)
