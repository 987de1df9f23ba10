"""The paper presets executed on CPU: true widths, reduced depth, real tokenizers, one real run per stage.

    python reproduce/benchmarks/paper_presets_cpu.py --preset {llava-1.5-7b,tinyllava-3b} [--layers 1]
        [--records 4] [--rounds 7] [--out DIR] [--shared ../shared]

What it does, through the same commands as on GPUs (``vista train --config reproduce/configs/<preset>/...``):

1. Data: the first ``--records`` real multi-turn LLaVA-Instruct records (``shared/realdata/llava_data/``), with
   stand-in 640x480 photos (the records' images are not shipped); stage 1 gets their first exchange as captions.
2. Model: the preset's exact architecture (``model.source=random``: vision tower, projector, LM from their real
   configurations, random weights) with ``model.text_layers=N model.vision_layers=N``; the real tokenizer
   (``llama2-vicuna``; for Phi-2 GPT-2 plus its 38 whitespace tokens, :func:`vista.builder.phi2_tokenizer`).
3. Stage 1 (``pretrain``, ZeRO-2, one process) and stage 2 (``finetune`` from stage 1's output, ZeRO-3 in two
   processes through the ``deepspeed`` launcher on CPU/gloo), 2 optimizer steps each. The overrides that differ
   from the preset (batch, steps, precision on CPU, ...) are printed with the reason.
4. Reload the stage-2 model offline with ``AutoModelForImageTextToText`` / ``AutoProcessor`` and generate for 2
   documents through the lmms-eval plugin (``vista.lmms_plugin.VistaLlava``).
5. VISTA's cost at true width: a stage-2 training step (forward, backward, AdamW) with cross-entropy only and with
   VISTA, same batch (~1,200 tokens: the longest real records), same process, interleaved A B B A rounds; the ratio
   is the median of per-round ratios of process CPU time.
6. The memory plan (``vista.memory_plan.plan_memory``, the same formula as ``vista train --dry-run``) for the reduced
   model, against the peak RSS measured per process during each stage.

The last line: ``preset=<name> stage1=ok stage2=ok reload=ok overhead_ratio=<x> peak_rss_gb=<y>`` (``ok`` only if
that step happened; ``peak_rss_gb`` is the largest resident set of any one process during the two stages).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules: inputs and checks
from paper_presets_checks import reload_and_generate, trained_as_recipe  # noqa: E402
from paper_presets_inputs import RECORDS, tokenizer_folder, write_data  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GB = 1024**3


def ablation_overrides(profile: str, variant: str) -> dict[str, list[str]]:
    """Each stage's overrides of ``variant`` in the ablation profile ``profile`` (``variant=...`` first), exactly as
    ``reproduce/ablation.py`` puts them on that profile's commands.

    Raises:
        SystemExit: the profile has no ``ablation`` mapping or no such variant (the known ones named).
    """
    sys.path.insert(0, str(REPO / "reproduce"))
    from ablation import STAGES, stage_overrides
    from pipeline import PROFILES, is_cpu_profile, load_profile

    if not (PROFILES / f"{profile}.yaml").is_file():
        profiles = {p.stem: load_profile(p.stem, quick=False, seeds=None) for p in PROFILES.glob("*.yaml")}
        known = sorted(name for name, p in profiles.items() if "ablation" in p and not is_cpu_profile(p))
        raise SystemExit(f"--ablation-variant: no GPU ablation profile {profile} ({PROFILES / profile}.yaml); "
                         f"the GPU ablation profiles: {', '.join(known)}")  # fmt: skip

    variants = load_profile(profile, quick=False, seeds=None).get("ablation") or {}
    if variant not in variants:
        raise SystemExit(
            f"--ablation-variant {variant!r}: profile {profile} has {sorted(variants) or 'no variants'}"
        )
    return {stage: stage_overrides(variants[variant] or {}, stage) for stage in STAGES}


# ------------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_measured(command: list[str], log: Path, cwd: Path) -> tuple[int, float]:
    """Run ``command`` (output to ``log``); return its exit code and the peak RSS (GiB) of any one process in its
    tree, sampled every 0.2 s."""
    env = dict(
        os.environ,
        # DeepSpeed's CPU ops compiled once per environment (a shared cache is rebuilt by every other venv)
        TORCH_EXTENSIONS_DIR=os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")
        ),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(REPO),
    )
    peak = 0
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max([peak] + [p.memory_info().rss for p in tree if p.is_running()])
            except psutil.Error:
                pass
            time.sleep(0.2)
    return proc.returncode, peak / GB


def idle_rss_gb() -> float:
    """Resident set of a process that imported what ``vista train`` imports (the baseline of a measured RSS)."""
    code = (
        "import deepspeed, transformers, torch, psutil, os, vista.train, vista.trainer, vista.data;"
        "print(psutil.Process(os.getpid()).memory_info().rss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    return int(out.stdout.strip().splitlines()[-1]) / GB


# ------------------------------------------------------------------------------------------------ the stages


def cpu_overrides(preset: str, stage: str, layers: int) -> list[tuple[str, str]]:
    """``(override, reason)`` pairs that differ from the preset, for a CPU run of 2 optimizer steps."""
    from vista.presets import preset_defaults

    training = preset_defaults(preset, stage)["training"]
    world = 2 if stage == "finetune" else 1
    pairs = [
        (f"model.text_layers={layers}", "reduced depth (true width)"),
        (f"model.vision_layers={layers}", "reduced depth (true width)"),
        ("training.max_steps=2", "2 optimizer steps"),
        (
            "training.per_device_train_batch_size=1",
            f"memory: paper {training['per_device_train_batch_size']} x 4096-wide "
            "activations do not fit a shared 24 GiB CPU",
        ),
        (
            f"training.global_batch_size={2 * world}",
            f"paper {training['global_batch_size']}: 2 steps on a handful of records "
            f"({world} process(es) x 1 x accumulation {2 // world})",
        ),
        ("training.dataloader_num_workers=0", "memory: no forked loader workers beside a multi-GB process"),
    ]
    if training["fp16"]:
        reason = "CPU: DeepSpeed's CPU accelerator has no fp16; bf16 has the same bytes per parameter"
        pairs += [("training.fp16=false", reason), ("training.bf16=true", reason)]
    return pairs


def stage_command(preset: str, stage: str, overrides: list[str]) -> list[str]:
    config = str(REPO / f"reproduce/configs/{preset}/{stage}.yaml")
    train = ["vista.cli", "train", "--config", config, *overrides]
    if stage == "pretrain":
        return [sys.executable, "-m", *train]
    launcher = str(Path(sys.executable).parent / "deepspeed")
    return [
        launcher,
        "--no_local_rank",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        "--module",
        *train,
    ]


def run_stage(preset: str, stage: str, work: Path, layers: int, extra: list[str]) -> dict:
    pairs = cpu_overrides(preset, stage, layers)
    print(
        f"\n== {stage} ({'ZeRO-2, 1 process' if stage == 'pretrain' else 'ZeRO-3, 2 processes (deepspeed launcher)'})"
    )
    for override, reason in pairs:
        print(f"  override {override:<45} {reason}")
    overrides = [o for o, _ in pairs] + extra
    command = stage_command(preset, stage, overrides)
    print("  $ " + " ".join(command))
    start = time.perf_counter()
    code, peak = run_measured(command, work / f"{stage}.log", work)
    seconds = time.perf_counter() - start
    out = work / stage
    ok = code == 0 and (out / "config.json").is_file() and (out / "vista_run.json").is_file()
    run = json.loads((out / "vista_run.json").read_text()) if ok else {}
    steps = run.get("train_metrics", {}).get("train_steps_per_second")
    status = run.get("status")
    ok = ok and status == "finished"
    print(
        f"  exit {code}, {seconds:.0f} s, peak RSS of one process {peak:.2f} GiB, status {status}, log {work / f'{stage}.log'}"
    )
    if not ok:
        print(
            "  last log lines:\n    " + "\n    ".join((work / f"{stage}.log").read_text().splitlines()[-15:])
        )
    losses = [h for h in _log_history(out) if "loss" in h]
    for h in losses:
        print(
            f"  step {h.get('step')}: loss {h['loss']:.4f} "
            + " ".join(f"{k} {v:.4g}" for k, v in h.items() if k.endswith("_loss"))
        )
    ok = ok and len(losses) == 2 and all(np.isfinite(h["loss"]) for h in losses)
    return {
        "ok": ok,
        "peak_rss_gb": peak,
        "seconds": seconds,
        "overrides": overrides,
        "steps_per_second": steps,
    }


def _log_history(out: Path) -> list[dict]:
    path = out / "trainer_state.json"
    return json.loads(path.read_text())["log_history"] if path.is_file() else []


# --------------------------------------------------------------------------------------- VISTA's overhead


def overhead(out: Path, work: Path, template: str, image_aspect: str, rounds: int) -> tuple[float, int]:
    """Median per-round CPU-time ratio (CE + VISTA) / (CE only) of a stage-2 step on one ~1,200-token sample."""
    import torch

    from vista.builder import freeze_for_stage, load_llava_checkpoint
    from vista.data import DataCollatorForVista, LlavaJsonDataset
    from vista.loss import VistaConfig
    from vista.model import causal_lm_forward, forward_with_vista
    from vista.templates import get_template

    sys.path.insert(0, str(REPO / "reproduce/benchmarks"))
    from loss_overhead import interleaved

    model, processor = load_llava_checkpoint(out, dtype=torch.bfloat16)  # the presets train in 16 bits
    model.train()
    model.config.use_cache = False
    freeze_for_stage(model, "finetune")
    dataset = LlavaJsonDataset(
        work / "finetune.json",
        work / "images",
        processor,
        get_template(template),
        4096,
        image_aspect=image_aspect,
    )
    longest = max(range(len(dataset)), key=lambda i: dataset.lengths[i])
    batch = DataCollatorForVista(processor)([dataset[longest]])
    tokens = int(batch["input_ids"].shape[1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    config = VistaConfig()

    def step(loss) -> None:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(
        f"\n== VISTA's cost: stage-2 step (forward, backward, AdamW), batch 1 x {tokens} tokens, {rounds} interleaved rounds"
    )
    times = interleaved(
        {
            "ce": lambda: step(causal_lm_forward(model, batch).loss),
            "ce+vista": lambda: step(forward_with_vista(model, batch, config).loss),
        },
        rounds,
        "steps",
    )
    for name, clocks in times.items():
        print(
            f"  {name:9s} median wall {statistics.median(clocks['wall']):7.2f} s, cpu {statistics.median(clocks['cpu']):7.2f} s"
        )
    ratios = [v / c for v, c in zip(times["ce+vista"]["cpu"], times["ce"]["cpu"])]
    print("  per-round cpu ratios: " + " ".join(f"{r:.4f}" for r in ratios))
    return statistics.median(ratios), tokens


# ------------------------------------------------------------------------------------------ memory check


def memory_check(preset: str, work: Path, stages: dict, seq_len: int, idle_gb: float) -> None:
    """The dry-run memory plan of the reduced-depth runs (same formula) against their measured peak RSS."""
    from vista.memory_plan import plan_memory
    from vista.train_config import load_config

    print(
        f"\n== memory plan (vista.memory_plan, reduced depth, micro-batch 1 x {seq_len} tokens) vs measured peak RSS"
    )
    print(f"  idle process after imports: {idle_gb:.2f} GiB (subtracted)")
    print(f"  {'stage':<9}{'world':>6}{'states':>9}{'activ.':>9}{'plan':>9}{'measured-idle':>15}{'ratio':>8}")
    for stage, world in (("pretrain", 1), ("finetune", 2)):
        overrides = [*stages[stage]["overrides"], f"data.max_length={seq_len}"]
        config = load_config(REPO / f"reproduce/configs/{preset}/{stage}.yaml", overrides)
        config["model"]["checkpoint"] = str(work / "pretrain") if stage == "finetune" else None
        plan = plan_memory(config, world)
        measured = stages[stage]["peak_rss_gb"] - idle_gb
        stages[stage]["plan"] = plan.to_dict()
        print(
            f"  {stage:<9}{world:>6}{plan.model_states_gb_per_gpu:>9.2f}{plan.activations_gb_per_micro_batch:>9.2f}"
            f"{plan.total_gb_per_gpu:>9.2f}{measured:>15.2f}{measured / plan.total_gb_per_gpu:>8.2f}"
        )


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, choices=["llava-1.5-7b", "tinyllava-3b"])
    parser.add_argument("--layers", type=int, default=1, help="model.text_layers = model.vision_layers")
    parser.add_argument(
        "--records",
        type=int,
        default=4,
        help="real records used (stage 2 takes 4 per step: 2 processes x accumulation 2)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="interleaved rounds of the overhead measurement (round-to-round noise here: about 1.5%%)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="working folder (default: a new temporary one)"
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("VISTA_SHARED", REPO.parent / "shared"))
    )
    parser.add_argument(
        "--ablation-variant",
        default=None,
        metavar="NAME",
        help="train this variant of the preset's GPU ablation profile (<preset>-ablation, e.g. viral, l2t, "
        "vista-anchor-mean) with its overrides on both stages; default: the preset's own variant (vista)",
    )
    args = parser.parse_args()
    variant = (
        ablation_overrides(f"{args.preset}-ablation", args.ablation_variant)
        if args.ablation_variant
        else {"pretrain": [], "finetune": []}
    )
    if not (args.shared / RECORDS).is_file():
        parser.error(
            f"{args.shared / RECORDS} not found: give --shared (the folder with tokenizers/ and realdata/)"
        )
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = (args.out or Path(tempfile.mkdtemp(prefix=f"paper-{args.preset}-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"preset {args.preset}: true width, {args.layers} text + {args.layers} vision layer(s); working folder {work}"
    )
    if args.ablation_variant:
        print(f"ablation variant {args.ablation_variant} of {args.preset}-ablation: {variant}")
    data = write_data(args.shared, work, args.records)
    tokenizer = tokenizer_folder(args.preset, args.shared, work)
    common = [f"data.image_folder={data['images']}"]
    stages = {
        "pretrain": run_stage(
            args.preset,
            "pretrain",
            work,
            args.layers,
            [
                *common,
                f"data.json={data['pretrain']}",
                "model.source=random",
                f"model.tokenizer={tokenizer}",
                f"training.output_dir={work / 'pretrain'}",
                *variant["pretrain"],
            ],
        ),
    }
    if stages["pretrain"]["ok"]:
        stages["finetune"] = run_stage(
            args.preset,
            "finetune",
            work,
            args.layers,
            [
                *common,
                f"data.json={data['finetune']}",
                f"model.checkpoint={work / 'pretrain'}",
                f"training.output_dir={work / 'finetune'}",
                *variant["finetune"],
            ],
        )
    else:
        stages["finetune"] = {"ok": False, "peak_rss_gb": 0.0}
    reload_ok, ratio, tokens = False, float("nan"), 0
    if stages["finetune"]["ok"]:
        records = json.loads(data["finetune"].read_text())
        reload_ok = reload_and_generate(args.preset, work / "finetune", records, data["images"])
        trained = trained_as_recipe(work / "pretrain", work / "finetune")
        stages["finetune"]["ok"] = stages["finetune"]["ok"] and trained
        from vista.presets import preset_defaults

        defaults = preset_defaults(args.preset, "finetune")["data"]
        ratio, tokens = overhead(
            work / "finetune", work, defaults["template"], defaults["image_aspect"], args.rounds
        )
        memory_check(args.preset, work, stages, tokens, idle_rss_gb())
    own = psutil.Process().memory_info().rss / GB
    peak = max(stages["pretrain"]["peak_rss_gb"], stages["finetune"]["peak_rss_gb"], own)
    (work / "summary.json").write_text(
        json.dumps(
            {
                "preset": args.preset,
                "stages": stages,
                "overhead_ratio": ratio,
                "overhead_tokens": tokens,
                "peak_rss_gb": peak,
            },
            indent=1,
            default=str,
        )
    )
    flag = {True: "ok", False: "failed"}
    print(
        f"preset={args.preset} stage1={flag[stages['pretrain']['ok']]} stage2={flag[stages['finetune']['ok']]} "
        f"reload={flag[reload_ok]} overhead_ratio={ratio:.4f} peak_rss_gb={peak:.2f}"
    )
    return 0 if stages["pretrain"]["ok"] and stages["finetune"]["ok"] and reload_ok else 1


if __name__ == "__main__":
    sys.exit(main())
