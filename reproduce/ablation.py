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


def ablation_stages(profile: dict, out: Path) -> list[Stage]:
    """World, foundations, shared stage-1 runs, stage-2 runs, evaluations, the length effect (when the profile has
    ``length_effect``), tables and the report."""
    import pipeline

    data, foundations = out / "data", out / "foundations"
    # tiny_stages builds the world and foundations stages (kept) and others that need these keys (discarded)
    base = {"theory": {"K": 1, "M": 1, "T": 1, "alpha": 0.0}, **profile, "variants": [], "profile": "tiny"}
    stages = [s for s in pipeline.tiny_stages(base, out) if s.name in ("world", *pipeline.FOUNDATION_STAGES)]
    configs = pipeline.TRAIN_CONFIGS / profile.get("train_configs", "tiny")
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
                             "training.overwrite_output_dir=true", f"data.json={data / 'pretrain.json'}",
                             f"data.image_folder={data / 'images'}", f"model.vision_tower={foundations / 'vision'}",
                             f"model.language_model={foundations / 'language'}",
                             *(profile["train"].get("pretrain") or [])]  # fmt: skip
                command = pipeline.vista_command("train", "--config", configs / "pretrain.yaml", *overrides)
                stages.append(
                    Stage(f"pretrain-{name}-seed{seed}", f"stage 1 of {name} (seed {seed}); shared with variants "
                          "whose stage 1 is identical", [command], [folder / "config.json", folder / "vista_run.json"],
                          needs=["world", *pipeline.FOUNDATION_STAGES])
                )  # fmt: skip
                pretrained[key] = (f"pretrain-{name}-seed{seed}", folder)
            needs, checkpoint = pretrained[key]
            folder = run_dir / "finetune"
            overrides = [*stage_overrides(spec, "finetune"), f"training.seed={seed}",
                         f"training.output_dir={folder}", "training.overwrite_output_dir=true",
                         f"data.json={data / 'finetune.json'}", f"data.image_folder={data / 'images'}",
                         f"model.checkpoint={checkpoint}", *(profile["train"].get("finetune") or [])]  # fmt: skip
            command = pipeline.vista_command("train", "--config", configs / "finetune.yaml", *overrides)
            stages.append(
                Stage(f"train-{name}-seed{seed}", f"stage 2 of {name} (seed {seed})", [command],
                      [folder / "config.json", folder / "vista_run.json"], needs=[needs])
            )  # fmt: skip
            stages.append(pipeline.eval_stage(profile, name, seed, folder, out, include=data / "benchmarks"))
            trained.append(f"train-{name}-seed{seed}")
            evaluated.append(f"eval-{name}-seed{seed}")
    stages += [
        s
        for s in pipeline.world_analysis_stages(profile, out, trained, evaluated)
        if s.name == "length-effect"
    ]
    tables, report = pipeline.analysis_stages(profile, out, [], data / "heldout.json", evaluated)[-2:]
    return [*stages, tables, report]
