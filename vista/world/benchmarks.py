"""The local lmms-eval suite: one task YAML per benchmark over a parquet file with embedded PNG images.

Tasks are grouped like the paper's three tables (``GROUPS``; the column map is
``reproduce/benchmark_map_local.csv``) and all score ``exact_match`` (case and punctuation ignored) against a
one-word or short-phrase answer; ``world_describe`` asks for the full canonical description. The length split
``world_length_wNNN`` asks the *same* questions about the *same* images after distractor notes of NNN words (the
longer notes extend the shorter ones), to measure accuracy versus preceding text length.

``doc_to_text`` returns only the question (with its note): the ``vista`` lmms-eval plugin puts ``<image>`` first and
wraps it in the checkpoint's conversation template.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from vista.world import text
from vista.world.scenes import Scene, render, sample_scene
from vista.world.synth import stream

GROUPS: dict[str, tuple[str, ...]] = {
    "semantic": ("world_colour", "world_shape", "world_size", "world_exist"),
    "general": ("world_count", "world_position", "world_relation"),
    "fine_grained": ("world_describe", "world_after_text"),
}
QUESTION_OF_TASK = {
    "world_colour": "colour",
    "world_shape": "shape",
    "world_size": "size",
    "world_exist": "exist",
    "world_count": "count",
    "world_position": "position",
    "world_relation": "relation",
}
LENGTH_WORDS = (0, 30, 60, 100, 140)  # the length split's note budgets (within the training range)
LENGTH_KINDS = ("colour", "shape", "position")
MAX_NEW_TOKENS = {"world_describe": 80}

UTILS = '''\
"""lmms-eval hooks of the vista synthetic-world tasks (written by vista.world.benchmarks)."""


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_target(doc):
    return doc["answer"]
'''


def length_task(words: int) -> str:
    return f"world_length_w{words:03d}"


def _doc(scene: Scene, question: str, answer: str, kind: str, note_words: int, index: int) -> dict:
    return {
        "id": index,
        "question": question,
        "answer": answer,
        "kind": kind,
        "note_words": note_words,
        "scene": json.dumps(scene.to_dict(), sort_keys=True),
        "image": render(scene),
    }


def _scenes(seed: int, task: str, n: int, image_size: int) -> list[Scene]:
    rng = stream(seed, f"bench-scenes/{task}")
    return [sample_scene(rng, image_size) for _ in range(n)]


def task_docs(task: str, seed: int, docs: int, image_size: int) -> list[dict]:
    """The documents of one non-length task."""
    rng = stream(seed, f"bench/{task}")
    scenes = _scenes(seed, task, docs, image_size)
    out = []
    for i, scene in enumerate(scenes):
        if task == "world_describe":
            out.append(_doc(scene, text.DESCRIBE, text.description(scene), "describe", 0, i))
            continue
        if task == "world_after_text":
            kind, (q, a) = text.ask(scene, rng)
            others = [scenes[(i + 1 + k) % len(scenes)] for k in range(6)]
            note = text.distractor_note(others, rng.randint(20, 140))
            out.append(_doc(scene, text.after_note(note, q), a, kind, len(note.split()), i))
            continue
        kind, (q, a) = text.ask(scene, rng, QUESTION_OF_TASK[task])
        out.append(_doc(scene, q, a, kind, 0, i))
    return out


def length_docs(seed: int, docs: int, image_size: int) -> dict[str, list[dict]]:
    """The length split: the same (scene, question) pairs after notes of each budget in LENGTH_WORDS."""
    rng = stream(seed, "bench/length")
    scenes = _scenes(seed, "length", docs, image_size)
    questions = [text.ask(s, rng, LENGTH_KINDS[i % len(LENGTH_KINDS)]) for i, s in enumerate(scenes)]
    split = {}
    for words in LENGTH_WORDS:
        rows = []
        for i, (scene, (kind, (q, a))) in enumerate(zip(scenes, questions)):
            note = text.distractor_note([scenes[(i + 1 + k) % len(scenes)] for k in range(6)], words)
            rows.append(_doc(scene, text.after_note(note, q), a, kind, len(note.split()), i))
        split[length_task(words)] = rows
    return split


def task_yaml(task: str, parquet: Path, cache: Path, group: str) -> str:
    return textwrap.dedent(f"""\
        # vista synthetic world: {task} ({group}); written by vista.world.benchmarks
        task: {task}
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: {parquet.resolve()}
          cache_dir: {cache.resolve()}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: !function utils.doc_to_target
        generation_kwargs:
          max_new_tokens: {MAX_NEW_TOKENS.get(task, 8)}
          until: ["\\n"]
          do_sample: false
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
            ignore_case: true
            ignore_punctuation: true
        metadata:
          version: 1.0
        """)


def write_benchmarks(out: str | Path, *, seed: int, docs: int, image_size: int = 32) -> dict:
    """Write the parquet files, task YAMLs and ``utils.py`` under ``out``; returns {"tasks", "groups", "docs"}."""
    import datasets

    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    all_docs = {t: task_docs(t, seed, docs, image_size) for ts in GROUPS.values() for t in ts}
    length = length_docs(seed, docs, image_size)
    all_docs.update(length)
    groups = {**{t: g for g, ts in GROUPS.items() for t in ts}, **{t: "length" for t in length}}
    for task, rows in all_docs.items():
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        data = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
        parquet = out / "data" / f"{task}.parquet"
        data.to_parquet(str(parquet))
        (out / f"{task}.yaml").write_text(task_yaml(task, parquet, out / "hf_cache", groups[task]))
    (out / "utils.py").write_text(UTILS)
    return {
        "tasks": list(all_docs),
        "groups": {**{g: list(ts) for g, ts in GROUPS.items()}, "length": list(length)},
        "docs": {t: len(rows) for t, rows in all_docs.items()},
        "length_words": list(LENGTH_WORDS),
    }
