"""The local lmms-eval benchmark suite of the synthetic world: parquet files with embedded PNGs and task YAMLs.

Grouped like the paper's three tables (``world_semantic``: attribute VQA; ``world_general``: counting, existence,
spatial relations; ``world_fine``: positions, detailed descriptions, questions after a long preceding passage) plus
``world_length``: the same scenes and questions behind image-independent passages of several lengths (a paired
design, each shorter passage a prefix of the longer ones) for accuracy versus text length. Run with

    lmms-eval --model ... --include_path DIR/benchmarks --tasks world_semantic,world_general,world_fine,world_length

Every short-answer task is balanced: its answer is independent of its question text (see ``text.make_question``).
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from vista.world import text as T
from vista.world.scenes import Scene, render, sample_scene

LENGTHS: tuple[int, ...] = (0, 25, 50, 100, 200, 300)  # preceding-passage words of the world_length split
LONGCTX_WORDS: tuple[int, int] = (120, 300)
SHORT_KINDS = ("colour", "shape", "size", "position", "exist")


@dataclass(frozen=True)
class Task:
    name: str
    group: str
    kinds: tuple[str, ...] = ()  # question kinds; empty for descriptions
    preceding: tuple[int, int] = (0, 0)  # passage length range in words


TASKS: tuple[Task, ...] = (
    Task("world_colour", "world_semantic", ("colour",)),
    Task("world_shape", "world_semantic", ("shape",)),
    Task("world_size", "world_semantic", ("size",)),
    Task("world_count", "world_general", ("count",)),
    Task("world_exist", "world_general", ("exist",)),
    Task("world_relation", "world_general", ("relation",)),
    Task("world_position", "world_fine", ("position",)),
    Task("world_describe", "world_fine"),
    Task("world_longctx", "world_fine", SHORT_KINDS, LONGCTX_WORDS),
)
GROUPS = ("world_semantic", "world_general", "world_fine", "world_length")


def scene_key(scene: Scene) -> str:
    """Identity of a scene's pixels (same key <=> same rendered image)."""
    return json.dumps(scene.to_dict(), sort_keys=True)


def png_bytes(scene: Scene) -> bytes:
    buffer = io.BytesIO()
    render(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def _held_out_scene(rng: random.Random, image_size: int, seen: set[str]) -> Scene:
    """A scene whose image never appears in training, unless it has a single object.

    Single-object scenes are few (at 32 px a large object has no jitter room: 4 cells x 24 kinds) and training
    sees nearly all of them; rejecting them would skew the object count (and every answer that depends on it)
    away from uniform, so they are kept. Multi-object collisions are rare and resampled.
    """
    for _ in range(1000):
        scene = sample_scene(rng, image_size)
        if len(scene.objects) == 1 or scene_key(scene) not in seen:
            return scene
    raise RuntimeError("could not sample a held-out scene in 1000 tries; is the training set exhaustive?")


def _row(
    uid: str, scene: Scene, question: str, answer: str, kind: str, spec: dict, preceding_words: int
) -> dict:
    return {
        "id": uid,
        "image": {"bytes": png_bytes(scene), "path": None},
        "question": question,
        "answer": answer,
        "kind": kind,
        "n_objects": len(scene.objects),
        "preceding_words": preceding_words,
        "text_words": T.count_words(question),
        "scene": json.dumps(scene.to_dict(), sort_keys=True),
        "spec": json.dumps(spec, sort_keys=True),
    }


def task_rows(task: Task, n: int, seed: int, image_size: int, seen: set[str]) -> list[dict]:
    """``n`` docs of ``task``; every item has its own RNG stream so tasks do not shift each other."""
    rows = []
    for i in range(n):
        rng = random.Random(f"{seed}/bench/{task.name}/{i}")
        scene = _held_out_scene(rng, image_size, seen)
        if not task.kinds:
            question = rng.choice(T.DESCRIBE_PROMPTS[:1])
            rows.append(_row(f"{task.name}-{i}", scene, question, T.describe(scene, rng), "describe", {}, 0))
            continue
        q = T.sample_question(scene, rng, task.kinds, balanced=True)
        words = rng.randint(*task.preceding) if task.preceding[1] else 0
        prefix = T.passage(rng, words) if words else ""
        question = T.with_preceding(T.question_text(q), prefix)
        rows.append(_row(f"{task.name}-{i}", scene, question, q["answer"], q["kind"], T.spec_of(q), words))
    return rows


def length_rows(n: int, seed: int, image_size: int, seen: set[str]) -> dict[str, list[dict]]:
    """world_len_<L>: the same n (scene, question) pairs behind passages of L words (prefixes of each other)."""
    items = []
    for i in range(n):
        rng = random.Random(f"{seed}/bench/length/{i}")
        scene = _held_out_scene(rng, image_size, seen)
        items.append(
            (scene, T.sample_question(scene, rng, SHORT_KINDS, balanced=True), f"{seed}/passage/{i}")
        )
    out = {}
    for length in LENGTHS:
        rows = []
        for i, (scene, q, passage_seed) in enumerate(items):
            prefix = T.passage(random.Random(passage_seed), length) if length else ""
            question = T.with_preceding(T.question_text(q), prefix)
            rows.append(
                _row(f"len{length}-{i}", scene, question, q["answer"], q["kind"], T.spec_of(q), length)
            )
        out[f"world_len_{length:03d}"] = rows
    return out


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "n_objects": datasets.Value("int32"),
        "preceding_words": datasets.Value("int32"),
        "text_words": datasets.Value("int32"),
        "scene": datasets.Value("string"),
        "spec": datasets.Value("string"),
    }
)


def write_parquet(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {k: [r[k] for r in rows] for k in FEATURES}
    datasets.Dataset.from_dict(columns, features=FEATURES).to_parquet(str(path))


def task_yaml(name: str, describe: bool = False) -> str:
    """An lmms-eval task reading ``data/<name>.parquet`` relative to the YAML (resolved by lmms-eval >= 0.7)."""
    post = "" if describe else "\\n" + T.SHORT_ANSWER_PROMPT
    process = "world_describe_process_results" if describe else "world_process_results"
    metrics = ["exact_match", "object_f1"] if describe else ["exact_match"]
    metric_lines = "".join(
        f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in metrics
    )
    return (
        f"task: {name}\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: data/{name}.parquet\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_visual: !function utils.world_doc_to_visual\n"
        "doc_to_text: !function utils.world_doc_to_text\n"
        "doc_to_target: answer\n"
        "generation_kwargs:\n"
        f"  max_new_tokens: {320 if describe else 8}\n"
        "  temperature: 0\n  do_sample: false\n  num_beams: 1\n"
        f"process_results: !function utils.{process}\n"
        f"metric_list:\n{metric_lines}"
        "lmms_eval_specific_kwargs:\n"
        f'  default:\n    pre_prompt: ""\n    post_prompt: "{post}"\n'
        "metadata:\n  version: 1.0\n"
    )


def group_yaml(group: str, tasks: list[str]) -> str:
    listed = "".join(f"  - {t}\n" for t in tasks)
    return (
        f"group: {group}\ntask:\n{listed}"
        "aggregate_metric_list:\n  - metric: exact_match\n    aggregation: mean\n    weight_by_size: true\n"
        "metadata:\n  version: 1.0\n"
    )


def write_benchmarks(
    out: Path, seed: int, n_per_task: int, image_size: int, seen: set[str], progress: Callable | None = None
) -> dict[str, int]:
    """Write the suite under ``out`` (YAMLs, utils.py, data/*.parquet); returns docs per task."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    shutil.copyfile(Path(__file__).with_name("lmms_utils.py"), out / "utils.py")
    tables: dict[str, list[dict]] = {}
    for task in TASKS:
        tables[task.name] = task_rows(task, n_per_task, seed, image_size, seen)
        if progress:
            progress(task.name)
    tables.update(length_rows(n_per_task, seed, image_size, seen))
    members: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, rows in tables.items():
        write_parquet(rows, out / "data" / f"{name}.parquet")
        (out / f"{name}.yaml").write_text(task_yaml(name, describe=name == "world_describe"))
        group = next((t.group for t in TASKS if t.name == name), "world_length")
        members[group].append(name)
    for group, names in members.items():
        (out / f"_{group}.yaml").write_text(group_yaml(group, names))
    return {name: len(rows) for name, rows in tables.items()}
