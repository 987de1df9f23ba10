"""Write a world folder: scenes, images, pretraining captions, instruction data, held-out probes, benchmarks.

Layout of ``out`` (see ``vista data synth``)::

    manifest.json    seed, size, counts per split and kind, image_words, the benchmark tasks
    scenes.json      every scene's exact attributes, per split (what the answer checker re-derives from)
    images/          train_NNNNN.png, heldout_NNNNN.png (image_size x image_size RGB)
    pretrain.json    one caption per training scene (``plain`` template)
    finetune.json    instruction records (``vicuna_v1``): QA, multi-turn, descriptions, questions after long
                     distractor notes; about 10% text-only records whose answer is in the text
    heldout.json     held-out scenes, one record each, kinds cycling so the text length varies (probes, MI)
    benchmarks/      the lmms-eval include path (see ``vista.world.benchmarks``)

Determinism: every split draws from its own ``random.Random`` seeded with a string of the seed and the split name,
the JSON is written with sorted keys, and PNGs are written by PIL without metadata, so one seed gives byte-identical
files and a different seed different ones.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from vista.world import text
from vista.world.scenes import Scene, render, sample_scene

FINETUNE_KINDS = {"qa": 0.35, "multi": 0.25, "describe": 0.15, "after_text": 0.25}  # image records
TEXT_ONLY_FRACTION = 0.10
NOTE_WORDS = (20, 140)  # distractor note length range in words (training and held-out data)
HELDOUT_KINDS = ("qa", "describe", "multi", "after_text")


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream per split (string seeds hash with SHA-512 in CPython)."""
    return random.Random(f"vista-world/{seed}/{name}")


def human(value: str) -> dict:
    return {"from": "human", "value": value}


def gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def conversation(turns: list[tuple[str, str]], with_image: bool = True) -> list[dict]:
    """LLaVA turns from (question, answer) pairs; the first question carries ``<image>``."""
    out = []
    for i, (q, a) in enumerate(turns):
        out += [human(("<image>\n" + q) if i == 0 and with_image else q), gpt(a)]
    return out


def image_record(
    scene: Scene, rng: random.Random, kind: str, others: list[Scene], note_words: int | None = None
) -> tuple[list[tuple[str, str]], dict]:
    """The (question, answer) turns of one record of ``kind`` about ``scene`` and its metadata."""
    meta: dict = {"kind": kind}
    if kind == "qa":
        qkind, qa = text.ask(scene, rng)
        meta["question_kinds"] = [qkind]
        return [qa], meta
    if kind == "describe":
        return [(text.DESCRIBE, text.description(scene))], meta
    if kind == "multi":
        asked = [text.ask(scene, rng) for _ in range(rng.randint(2, 5))]
        turns = [qa for _, qa in asked]
        if rng.random() < 0.3:
            turns.insert(rng.randint(0, len(turns)), (text.DESCRIBE, text.description(scene)))
        meta["question_kinds"] = [k for k, _ in asked]
        return turns, meta
    if kind == "after_text":
        words = rng.randint(*NOTE_WORDS) if note_words is None else note_words
        qkind, (q, a) = text.ask(scene, rng)
        note = text.distractor_note(others, words)
        meta.update(question_kinds=[qkind], note_words=len(note.split()))
        return [(text.after_note(note, q), a)], meta
    raise ValueError(f"unknown record kind {kind!r}")


def text_only_record(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """A question answered by a caption given in the text (no image): the text-predictable case."""
    _, (q, a) = text.ask(scene, rng)
    return [(f"A picture shows this: {text.caption(scene)} {q}", a)]


def sample_scenes(seed: int, split: str, n: int, image_size: int) -> list[Scene]:
    rng = stream(seed, f"scenes/{split}")
    return [sample_scene(rng, image_size) for _ in range(n)]


def save_images(scenes: list[Scene], folder: Path, prefix: str) -> list[str]:
    names = []
    for i, scene in enumerate(tqdm(scenes, desc=f"render {prefix}", leave=False)):
        name = f"{prefix}_{i:05d}.png"
        render(scene).save(folder / name, format="PNG")
        names.append(name)
    return names


def pretrain_records(scenes: list[Scene], names: list[str]) -> list[dict]:
    return [
        {
            "id": f"cap-{i:05d}",
            "image": name,
            "conversations": conversation([(text.CAPTION_PROMPT, text.caption(s))]),
        }
        for i, (s, name) in enumerate(zip(scenes, names))
    ]


def finetune_records(
    scenes: list[Scene], names: list[str], seed: int, per_scene: int
) -> list[dict]:
    """``per_scene`` image records per training scene, then text-only records (TEXT_ONLY_FRACTION of all)."""
    rng = stream(seed, "finetune")
    kinds, weights = zip(*FINETUNE_KINDS.items())
    records = []
    for i, (scene, name) in enumerate(zip(scenes, names)):
        for j in range(per_scene):
            kind = rng.choices(kinds, weights)[0]
            others = [scenes[(i + 1 + k * 7) % len(scenes)] for k in range(6)]
            turns, meta = image_record(scene, rng, kind, others)
            records.append(
                {"id": f"ft-{i:05d}-{j}", "image": name, "conversations": conversation(turns), **meta}
            )
    n_text = round(len(records) * TEXT_ONLY_FRACTION / (1 - TEXT_ONLY_FRACTION))
    for t in range(n_text):
        scene = scenes[rng.randrange(len(scenes))]
        records.append(
            {
                "id": f"txt-{t:05d}",
                "kind": "text_only",
                "conversations": conversation(text_only_record(scene, rng), with_image=False),
            }
        )
    rng.shuffle(records)
    return records


def heldout_records(scenes: list[Scene], names: list[str], seed: int) -> list[dict]:
    rng = stream(seed, "heldout")
    records = []
    for i, (scene, name) in enumerate(zip(scenes, names)):
        kind = HELDOUT_KINDS[i % len(HELDOUT_KINDS)]
        others = [scenes[(i + 1 + k * 5) % len(scenes)] for k in range(6)]
        turns, meta = image_record(scene, rng, kind, others)
        records.append(
            {
                "id": f"ho-{i:05d}",
                "image": name,
                "scene_index": i,
                "conversations": conversation(turns),
                **meta,
            }
        )
    return records


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def synthesize(
    out: str | Path,
    *,
    seed: int = 0,
    size: int = 2000,
    image_size: int = 32,
    records_per_scene: int = 2,
    heldout: int | None = None,
    bench_docs: int = 40,
) -> dict:
    """Write the world folder (see the module docstring); returns the manifest.

    Args:
        size: training scenes (one caption each, ``records_per_scene`` instruction records each).
        heldout: held-out scenes for ``heldout.json`` (default ``max(64, size // 8)``).
        bench_docs: documents per benchmark task (each from its own held-out scenes).
    """
    from vista.world import benchmarks  # pandas/datasets: imported only when writing

    if size < 8:
        raise ValueError(f"size must be at least 8 scenes, got {size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    train = sample_scenes(seed, "train", size, image_size)
    held = sample_scenes(seed, "heldout", heldout or max(64, size // 8), image_size)
    train_names = save_images(train, out / "images", "train")
    held_names = save_images(held, out / "images", "heldout")
    pretrain = pretrain_records(train, train_names)
    finetune = finetune_records(train, train_names, seed, records_per_scene)
    probes = heldout_records(held, held_names, seed)
    write_json(out / "pretrain.json", pretrain)
    write_json(out / "finetune.json", finetune)
    write_json(out / "heldout.json", probes)
    bench = benchmarks.write_benchmarks(out / "benchmarks", seed=seed, docs=bench_docs, image_size=image_size)
    write_json(
        out / "scenes.json",
        {
            "train": [s.to_dict() for s in train],
            "heldout": [s.to_dict() for s in held],
        },
    )
    manifest = {
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "records_per_scene": records_per_scene,
        "counts": {
            "scenes": {"train": len(train), "heldout": len(held)},
            "pretrain": len(pretrain),
            "finetune": dict(sorted(Counter(r["kind"] for r in finetune).items())),
            "heldout": dict(sorted(Counter(r["kind"] for r in probes).items())),
            "benchmarks": bench["docs"],
        },
        "image_words": list(text.IMAGE_WORDS),
        "benchmarks": bench,
        "files": {
            "pretrain": "pretrain.json",
            "finetune": "finetune.json",
            "heldout": "heldout.json",
            "images": "images",
            "scenes": "scenes.json",
            "benchmarks": "benchmarks",
        },
    }
    write_json(out / "manifest.json", manifest)
    return manifest
