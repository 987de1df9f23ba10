"""``vista probe``: how much each text position of a dataset depends on the image, for one or more checkpoints.

    vista probe --checkpoint runs/baseline --checkpoint runs/vista --data data/val.json --out results/probes \\
        [--probes ablation,swap,kl,attention,alignment] [--num-swaps 8] [--limit 200]

Each checkpoint is a saved transformers VLM folder (``AutoModelForImageTextToText`` + ``AutoProcessor``). Prompts
are built with the conversation template named in the checkpoint's ``vista_run.json`` (or ``--template``), through
the same dataset code as training: :class:`vista.data.LlavaJsonDataset` for the LLaVA recipe, and for a checkpoint
of any family trained with ``model.pretrained`` (template ``chat_template``) the model's own chat template
(:class:`vista.chat_data.ChatDataset`), scored by :class:`analysis.probes.chat_scoring.ChatScorer`. Samples that
are text-only or hold several images are skipped and counted; bad records are skipped and counted by the dataset.

Writes to ``--out``: ``probes.parquet`` and ``probes.csv`` (every row of every probe and checkpoint),
``summary_<curve>.csv`` (means with bootstrap CIs by text position, by answer position, by text-length bucket,
attention by layer, and each checkpoint minus the first one, paired), ``<probe>_<curve>.png`` (all checkpoints in one figure) and ``probe_run.json`` (settings and skip counts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from analysis.probes.chat_scoring import ChatScorer
from analysis.probes.runner import PROBES, attention_backend, run_probes, summarise, write_figures
from analysis.probes.scoring import HFScorer, ProbeSample
from vista.errors import DataError, MissingInputError, UsageError, closest, positive_int
from vista.images import resolve_image_aspect
from vista.layout import default_image_folder, find_json, require_checkpoint
from vista.run_metadata import (
    CHAT_TEMPLATE,
    read_run_metadata,
    recorded_max_length,
    recorded_template,
    resolve_template_name,
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        type=Path,
        help="a saved model folder; repeat to compare checkpoints (e.g. baseline and VISTA)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=None,
        help="display name per --checkpoint, in order (default: the run's variant or folder name)",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="a LLaVA JSON/JSONL file, or a folder holding exactly one"
    )
    parser.add_argument(
        "--image-folder",
        type=Path,
        default=None,
        help="root of image paths (default: the JSON's folder, else its images/ subfolder as `vista data synth` "
        "writes it, else the checkpoint's training data.image_folder)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--probes", default=",".join(PROBES), help=f"comma-separated subset of {','.join(PROBES)}"
    )
    parser.add_argument(
        "--num-swaps", type=positive_int, default=8, help="K contrast images per sample (swap, kl)"
    )
    parser.add_argument("--limit", type=int, default=None, help="probe the first N usable samples")
    parser.add_argument(
        "--template", default=None, help="conversation template (default: from vista_run.json)"
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="default: from vista_run.json, else 2048"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass")
    parser.add_argument("--buckets", type=positive_int, default=4, help="text-length buckets")
    parser.add_argument(
        "--bootstrap", type=positive_int, default=1000, help="bootstrap resamples for the CIs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the contrast images and the bootstrap")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def read_run(checkpoint: Path) -> dict:
    """The checkpoint's run metadata (empty dict if absent)."""
    return read_run_metadata(checkpoint)[0]


def load_checkpoint(checkpoint: Path, device: str, attn_implementation: str = "eager"):
    """``(model, processor)`` of a saved VLM folder. Eager attention by default: the attention probe needs its
    weights; probes that only score tokens may pass ``"sdpa"`` (the same log-probabilities up to float rounding,
    in 0.61-0.67x the time on CPU: ``reproduce/benchmarks/probe_attention.py``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    require_checkpoint(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation=attn_implementation)
    processor = AutoProcessor.from_pretrained(checkpoint)
    return model.to(device).eval(), processor


def load_family_checkpoint(checkpoint: Path, device: str, attn_implementation: str = "eager"):
    """``(model, processor)`` of a checkpoint of any family of :mod:`vista.families` (eager attention by default, as
    :func:`load_checkpoint`).

    Raises:
        UsageError: the model type is not a supported family, or its processor needs a missing package.
    """
    from vista.any_vlm import load_pretrained

    require_checkpoint(checkpoint)
    model, processor, _ = load_pretrained(str(checkpoint), attn_implementation=attn_implementation)
    return model.to(device).eval(), processor


def load_chat_samples(
    json_path: Path, image_folder: Path | None, processor, checkpoint: Path, run: dict, args
) -> tuple[list, dict]:
    """ProbeSamples (one image each) rendered with the model's own chat template, and skip counts per reason."""
    from analysis.probes.chat_scoring import chat_samples
    from vista.chat_data import ChatDataset, ChatRecordError

    resolve_template_name(checkpoint, args.template)  # warns when an explicit --template contradicts the run
    folder = image_folder if image_folder is not None else default_image_folder(json_path, run)
    try:
        dataset = ChatDataset(
            json_path, folder, processor, on_bad_sample="skip", max_samples=args.limit, num_images=1
        )
    except ChatRecordError as error:  # no usable record at all
        raise DataError(
            f"no usable sample with one image in {json_path} ({error}); missing images? pass --image-folder DIR"
        ) from None
    info = {
        "template": CHAT_TEMPLATE,
        "image_aspect": "processor",
        "skipped": dict(dataset.skip_report.counts),
    }
    samples = chat_samples(dataset)
    return samples, {**info, "probed": len(samples)}


def load_samples(
    json_path: Path, image_folder: Path | None, processor, checkpoint: Path, run: dict, args
) -> tuple[list, dict]:
    """ProbeSamples (one image each) from the dataset, and skip counts per reason."""
    from vista.data import LlavaJsonDataset

    template = resolve_template_name(checkpoint, args.template)
    dataset = LlavaJsonDataset(
        json_path,
        image_folder if image_folder is not None else default_image_folder(json_path, run),
        processor,
        template,
        args.max_length or recorded_max_length(run) or 2048,
        on_bad_sample="skip",
        image_aspect=resolve_image_aspect(checkpoint),
        show_progress=False,
    )
    skips: dict[str, int] = {}
    samples, seen = [], set()
    for i, num_images in enumerate(dataset.num_images):
        if args.limit is not None and len(samples) >= args.limit:
            break
        if num_images != 1:
            reason = "text_only" if num_images == 0 else "several_images"
            skips[reason] = skips.get(reason, 0) + 1
            continue
        item = dataset[i]
        if item["index"] != i:  # the image failed to decode: the dataset counted it and substituted another
            continue
        raw = int(dataset._indices[i])  # private: the dataset has no public index -> record map yet
        record = dataset.records[raw]
        sample_id = str(record.get("id", f"record{raw}"))
        if (
            sample_id in seen
        ):  # ids must be unique: rows are averaged per sample and bootstrapped over samples
            sample_id = f"{sample_id}#record{raw}"
        seen.add(sample_id)
        samples.append(
            ProbeSample(sample_id, item["input_ids"], item["labels"] != -100, item["pixel_values"][0])
        )
    for reason, count in dataset.skip_report().counts.items():  # up front and while loading
        skips[reason] = skips.get(reason, 0) + count
    info = {
        "template": template,
        "image_aspect": dataset.image_aspect,
        "skipped": skips,
        "probed": len(samples),
    }
    return samples, info


def label_of(checkpoint: Path, run: dict, taken: set[str]) -> str:
    label = run.get("variant") or checkpoint.name
    return label if label not in taken else f"{label} ({checkpoint})"


def run(args: argparse.Namespace) -> int:
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown or not probes:
        hint = closest(unknown[0], PROBES) if unknown else ""
        raise UsageError(
            f"--probes {args.probes!r}: unknown {', '.join(unknown) or '(empty)'}{hint}; "
            f"choose from {','.join(PROBES)}"
        )
    if args.label is not None and len(args.label) != len(args.checkpoint):
        raise UsageError(
            f"{len(args.label)} --label for {len(args.checkpoint)} --checkpoint; give one per checkpoint"
        )
    if args.limit is not None and args.limit < 2:
        raise UsageError(f"--limit {args.limit}: must be at least 2 (the swap probe contrasts samples)")
    for checkpoint in args.checkpoint:
        require_checkpoint(checkpoint)
    json_path = find_json(args.data)
    if args.image_folder is not None and not args.image_folder.is_dir():
        raise MissingInputError(f"--image-folder {args.image_folder}: no such folder")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"data": str(json_path), "probes": probes, "num_swaps": args.num_swaps, "seed": args.seed,
              "limit": args.limit, "buckets": args.buckets, "bootstrap": args.bootstrap}  # fmt: skip
    report["checkpoints"] = {}
    frames = []
    for n, checkpoint in enumerate(args.checkpoint):
        run_info = read_run(checkpoint)
        label = args.label[n] if args.label else label_of(checkpoint, run_info, set(report["checkpoints"]))
        chat = (args.template or recorded_template(run_info)) == CHAT_TEMPLATE
        if chat:
            model, processor = load_family_checkpoint(checkpoint, args.device, attention_backend(probes))
            samples, info = load_chat_samples(
                json_path, args.image_folder, processor, checkpoint, run_info, args
            )
        else:
            model, processor = load_checkpoint(checkpoint, args.device, attention_backend(probes))
            samples, info = load_samples(json_path, args.image_folder, processor, checkpoint, run_info, args)
        print(
            f"{label}: probing {len(samples)} samples (template {info['template']}); skipped {info['skipped']}"
        )
        if len(samples) < 2:
            raise DataError(
                f"{label}: {len(samples)} usable samples in {json_path} (skipped: {info['skipped']}); need at "
                "least 2 with one image each (missing images? pass --image-folder DIR, the root of the image paths)"
            )
        if chat:
            scorer = ChatScorer(model, processor, batch_size=args.batch_size)
        else:
            scorer = HFScorer(model, processor, batch_size=args.batch_size, image_aspect=info["image_aspect"])
        num_swaps = min(args.num_swaps, len(samples) - 1)
        df = run_probes(scorer, samples, probes, num_swaps=num_swaps, seed=args.seed, progress=True)
        frames.append(df.assign(checkpoint=label, checkpoint_path=str(checkpoint)))
        report["checkpoints"][label] = {"path": str(checkpoint), "num_swaps": num_swaps, **info}
    rows = pd.concat(frames, ignore_index=True)
    rows.to_parquet(args.out / "probes.parquet", index=False)
    rows.to_csv(args.out / "probes.csv", index=False)
    first = next(iter(report["checkpoints"]))  # differences are taken against the first --checkpoint
    summaries = summarise(rows, args.buckets, args.bootstrap, args.seed, reference=first)
    for name, summary in summaries.items():
        summary.to_csv(args.out / f"summary_{name}.csv", index=False)
    figures = write_figures(summaries, args.out)
    report["figures"] = [p.name for p in figures]
    (args.out / "probe_run.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_overview(rows)
    print(f"wrote {len(rows)} rows, {len(summaries)} summaries and {len(figures)} figures to {args.out}")
    return 0


def _print_overview(rows: pd.DataFrame) -> None:
    """Mean value per checkpoint, probe and variant over supervised and unsupervised text tokens."""
    table = (
        rows.groupby(["probe", "variant", "checkpoint", "supervised"])["value"].mean().unstack("supervised")
    )
    print(
        table.rename(columns={True: "answer tokens", False: "prompt tokens"}).to_string(float_format="%.4f")
    )
