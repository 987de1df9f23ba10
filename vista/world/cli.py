"""``vista data synth``: write a synthetic world (LLaVA-JSON pretrain/finetune data, images, local benchmarks).

    vista data synth --out DIR [--seed S] [--size N] [--image-size 32] [--bench-size 200]

Layout of DIR:
    pretrain.json              N caption records (the ``blip_laion_cc_sbu_558k.json`` schema; template ``plain``)
    finetune.json              N instruction records (the ``llava_v1_5_mix665k.json`` schema, ~8% text-only)
    finetune_single_turn.json  the same questions, each as its own one-turn record with its image (small profile)
    images/pretrain/*.png      images/finetune/*.png (paths in the JSON are relative to images/)
    heldout.json               instruction records on held-out scenes (images/heldout/), never trained on: one
                               per scene, types cycling (probes of visual contribution per position, MI)
    scenes/{pretrain,finetune,heldout}.jsonl   per record: id, scene spec, the question spec of every gpt turn
    benchmarks/                lmms-eval task YAMLs, utils.py, data/*.parquet (held-out scenes; see benchmarks.py)
    manifest.json              seed, sizes, counts by sample type, length statistics, answer balance
Everything is a pure function of (seed, size, image size, bench size): same arguments, byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vista.errors import UsageError
from vista.templates import IMAGE_TOKEN
from vista.world import text as T
from vista.world.benchmarks import scene_key, write_benchmarks
from vista.world.scenes import Scene, render, sample_scene

# finetune sample types and their probabilities (the 665k mix analogue; text-only about 8%). Questions are what
# teaches the tiny LLaVA to find the object a question names in the image, so most records are multi-turn: their
# system prompt and image tokens are paid once for 6-12 supervised answers. Measured (2026-11-30, 1 seed, 50 documents
# per attribute, analysis.image_reading, same foundations and stage-2 recipe): the baseline read 50.0% with the
# previous mix (short_qa 0.30, multi_turn 0.30 of 2-6 questions, half of them sentences, describe 0.20,
# long_context 0.10) and 65.3% with this one (seeds 1 and 2 alike; 60.8% on 100 documents), for about 1.3x the
# stage-2 time.
# Long-context records cost most tokens for one answer each.
MIX: dict[str, float] = {
    "short_qa": 0.10,
    "multi_turn": 0.60,
    "describe": 0.15,
    "long_context": 0.07,
    "text_only": 0.08,
}
MULTI_TURN_QUESTIONS = (6, 12)  # inclusive range of questions per multi-turn record
# share of multi-turn questions asked without the short-answer prompt (answered with full sentences)
SENTENCE_ANSWER_RATE = 0.2


def _choose(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def pretrain_record(i: int, scene: Scene, rng: random.Random) -> tuple[dict, list]:
    rid = f"pt{i:06d}"
    conv = [
        {"from": "human", "value": f"<image>\n{rng.choice(T.CAPTION_PROMPTS)}"},
        {"from": "gpt", "value": T.caption(scene, rng)},
    ]
    return {"id": rid, "image": f"pretrain/{rid}.png", "conversations": conv}, [None]


HELDOUT_TYPES = ("describe", "long_context", "multi_turn", "short_qa")


def finetune_record(
    i: int,
    scene: Scene,
    rng: random.Random,
    kind: str | None = None,
    prefix: str = "ft",
    folder: str = "finetune",
) -> tuple[dict, list, str]:
    """One instruction record, the question specs of its gpt turns (None for free text) and its type."""
    rid = f"{prefix}{i:06d}"
    kind = kind or _choose(rng, MIX)
    specs: list = []
    if kind == "text_only":
        return {"id": rid, "conversations": T.text_only_conversation(rng, scene)}, [None], kind
    if kind == "describe":
        conv = [
            {"from": "human", "value": rng.choice(T.DESCRIBE_PROMPTS)},
            {"from": "gpt", "value": T.describe(scene, rng, detail=rng.randint(0, 2))},
        ]
        specs = [None]
    elif kind in ("short_qa", "long_context"):
        q = T.sample_question(scene, rng, balanced=False)
        prefix = T.passage(rng, rng.randint(20, 300)) if kind == "long_context" else ""
        human = f"{T.with_preceding(T.question_text(q), prefix)}\n{T.SHORT_ANSWER_PROMPT}"
        conv = [{"from": "human", "value": human}, {"from": "gpt", "value": q["answer"]}]
        specs = [T.spec_of(q)]
    else:  # multi_turn: MULTI_TURN_QUESTIONS about the same image, single words or full sentences
        conv = []
        for _ in range(rng.randint(*MULTI_TURN_QUESTIONS)):
            q = T.sample_question(scene, rng, balanced=False)
            if rng.random() >= SENTENCE_ANSWER_RATE:
                human, answer = f"{T.question_text(q)}\n{T.SHORT_ANSWER_PROMPT}", q["answer"]
            else:
                human, answer = T.question_text(q), T.sentence_answer(q, q["answer"])
            conv += [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
            specs.append(T.spec_of(q))
    conv[0]["value"] = "<image>\n" + conv[0]["value"]
    return {"id": rid, "image": f"{folder}/{rid}.png", "conversations": conv}, specs, kind


def single_turn_records(records: list[dict]) -> list[dict]:
    """Every question of every image record as its own one-turn record (``<id>_<turn>``, the same image, the question
    put after ``<image>\n`` as in a first turn); text-only records unchanged. The ``small`` profile's stage 2 trains
    on these: its 128-token records would otherwise cut most turns of a multi-turn record, and the benchmarks ask
    first-turn questions (README, "The small profile")."""
    out = []
    for record in records:
        if "image" not in record:
            out.append(record)
            continue
        turns = record["conversations"]
        for j in range(0, len(turns) - 1, 2):
            question = turns[j]["value"].removeprefix(f"{IMAGE_TOKEN}\n")
            out.append({"id": f"{record['id']}_{j // 2}", "image": record["image"], "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, turns[j + 1]]})  # fmt: skip
    return out


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _length_stats(values: list[int]) -> dict:
    a = np.asarray(values)
    return {
        "min": int(a.min()),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "max": int(a.max()),
    }


def write_split(
    out: Path, split: str, n: int, seed: int, image_size: int, exclude: set | None = None
) -> tuple[list[dict], Counter, set]:
    """Records, sample-type counts and scene keys of one split; images and scenes/<split>.jsonl written.
    Multi-object scenes whose key is in ``exclude`` are resampled (held-out splits; see
    ``benchmarks._held_out_scene`` for why single-object scenes may recur)."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "scenes").mkdir(exist_ok=True)
    records, kinds, keys, lines = [], Counter(), set(), []
    for i in tqdm(range(n), desc=f"synth {split}", leave=False):
        rng = random.Random(f"{seed}/{split}/{i}")
        scene = sample_scene(rng, image_size)
        while (
            exclude and len(scene.objects) > 1 and scene_key(scene) in exclude
        ):  # see benchmarks._held_out_scene
            scene = sample_scene(rng, image_size)
        if split == "pretrain":
            (record, specs), kind = pretrain_record(i, scene, rng), "caption"
        elif split == "heldout":
            kind = HELDOUT_TYPES[i % len(HELDOUT_TYPES)]
            record, specs, kind = finetune_record(i, scene, rng, kind, prefix="ho", folder="heldout")
        else:
            record, specs, kind = finetune_record(i, scene, rng)
        if "image" in record:
            render(scene).save(out / "images" / record["image"], format="PNG")
            keys.add(scene_key(scene))
        records.append(record)
        kinds[kind] += 1
        lines.append(
            json.dumps({"id": record["id"], "scene": scene.to_dict(), "specs": specs}, sort_keys=True)
        )
    _write_json(out / f"{split}.json", records)
    (out / "scenes" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return records, kinds, keys


def synth(
    out: str | Path,
    seed: int = 0,
    size: int = 4000,
    image_size: int = 32,
    bench_size: int = 200,
    heldout: int = 200,
) -> dict:
    """Write a world folder (see the module docstring); returns the manifest."""
    if size < 1 or bench_size < 1 or heldout < 0:
        raise ValueError(
            f"--size and --bench-size must be positive and --heldout >= 0, got {size}, {bench_size}, {heldout}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pretrain, pt_kinds, pt_keys = write_split(out, "pretrain", size, seed, image_size)
    finetune, ft_kinds, ft_keys = write_split(out, "finetune", size, seed, image_size)
    single_turn = single_turn_records(finetune)
    _write_json(out / "finetune_single_turn.json", single_turn)
    heldout_records, _, _ = write_split(out, "heldout", heldout, seed, image_size, exclude=pt_keys | ft_keys)
    bench_counts = write_benchmarks(out / "benchmarks", seed, bench_size, image_size, pt_keys | ft_keys)

    def words(records: list[dict], role: str) -> list[int]:
        return [
            sum(T.count_words(t["value"]) for t in r["conversations"] if t["from"] == role) for r in records
        ]

    manifest = {
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "bench_size": bench_size,
        "files": {
            "pretrain": "pretrain.json",
            "finetune": "finetune.json",
            "finetune_single_turn": "finetune_single_turn.json",
            "heldout": "heldout.json",
            "image_folder": "images",
        },
        "counts": {
            "pretrain": len(pretrain),
            "finetune": len(finetune),
            "finetune_text_only": sum("image" not in r for r in finetune),
            "finetune_single_turn": len(single_turn),
            "heldout": len(heldout_records),
            "images": sum("image" in r for r in pretrain + finetune + heldout_records),
            "finetune_types": dict(sorted(ft_kinds.items())),
            "pretrain_types": dict(sorted(pt_kinds.items())),
            "benchmarks": bench_counts,
        },
        "words": {
            "pretrain_answer": _length_stats(words(pretrain, "gpt")),
            "finetune_prompt": _length_stats(words(finetune, "human")),
            "finetune_answer": _length_stats(words(finetune, "gpt")),
            "finetune_total": _length_stats(
                [a + b for a, b in zip(words(finetune, "human"), words(finetune, "gpt"))]
            ),
        },
        "image_words": sorted(T.ATTRIBUTE_WORDS),
        "vocabulary_words": len(
            {w for r in pretrain + finetune for t in r["conversations"] for w in T.to_words(t["value"])}
        ),
        "seconds": round(time.perf_counter() - start, 2),
    }
    _write_json(out / "manifest.json", {k: v for k, v in manifest.items() if k != "seconds"})
    return manifest


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser(
        "synth",
        help="write a synthetic scene world (training data, images, benchmarks)",
        epilog="example:\n  vista data synth --out results/tiny/data --size 2000",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=4000, help="records per split (pretrain and finetune)")
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels (32-128)")
    p.add_argument("--bench-size", type=int, default=200, help="docs per benchmark task")
    p.add_argument("--heldout", type=int, default=200, help="held-out instruction records (probes)")


def run(args: argparse.Namespace) -> int:
    try:
        manifest = synth(args.out, args.seed, args.size, args.image_size, args.bench_size, args.heldout)
    except ValueError as error:  # bad arguments: a one-line message (vista.cli), not a traceback
        raise UsageError(str(error)) from None
    c, w = manifest["counts"], manifest["words"]
    print(
        f"wrote {args.out}: pretrain {c['pretrain']}, finetune {c['finetune']} ({c['finetune_text_only']} text-only), "
        f"{c['images']} images, {len(c['benchmarks'])} benchmark tasks x {args.bench_size} docs "
        f"in {manifest['seconds']:.1f} s"
    )
    print(
        f"finetune words per record: {w['finetune_total']}; vocabulary {manifest['vocabulary_words']} words"
    )
    return 0
