"""The synthetic world: pixels match the scene spec, answers re-derive from the spec, balance (no answer is
predictable from the question text), determinism, the LLaVA-JSON format through vista.data, lmms-eval tasks."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from vista.world import lmms_utils
from vista.world import text as T
from vista.world.benchmarks import TASKS
from vista.world.cli import synth
from vista.world.scenes import (
    BACKGROUND,
    COLOURS,
    GRID,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    radius,
    render,
    sample_scene,
)

SIZE, BENCH = 240, 40


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    synth(out, seed=7, size=SIZE, bench_size=BENCH)
    return out


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- pixels against the spec ------------------------------------------------------------------------------------
def _shape_from_pixels(mask: np.ndarray) -> str:
    """Classify one object's mask by fill ratio of its bounding box and top/bottom asymmetry."""
    fill = mask.mean()
    h = mask.shape[0]
    top, bottom = mask[: h // 3].sum(), mask[-(h // 3) :].sum()
    if fill > 0.95:
        return "square"
    if bottom > 2 * top:
        return "triangle"
    if fill > 0.7:
        return "circle"
    return "cross"


@pytest.mark.parametrize("image_size", [32, 48, 64])
def test_rendered_pixels_recover_the_scene(image_size):
    rng = random.Random(image_size)
    rgb_to_colour = {v: k for k, v in COLOURS.items()}
    for _ in range(150):
        scene = sample_scene(rng, image_size)
        pixels = np.asarray(render(scene))
        assert pixels.shape == (image_size, image_size, 3)
        foreground = (pixels != np.array(BACKGROUND)).any(-1)
        labels, n = ndimage.label(foreground)
        assert n == len(scene.objects)  # objects never touch
        found = []
        for sl in ndimage.find_objects(labels):
            patch = pixels[sl]
            mask = (patch != np.array(BACKGROUND)).any(-1)
            colours = {tuple(c) for c in patch[mask]}
            assert len(colours) == 1  # no anti-aliasing: one exact RGB per object
            cy, cx = (sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2
            row, col = int(cy // (image_size / GRID)), int(cx // (image_size / GRID))
            width = sl[1].stop - sl[1].start
            size = "large" if width > (radius("small", image_size) + radius("large", image_size)) else "small"
            found.append(
                (POSITIONS[(row, col)], rgb_to_colour[colours.pop()], size, _shape_from_pixels(mask))
            )
        expected = {(o.position, o.colour, o.size, o.shape) for o in scene.objects}
        if 2 * radius("small", image_size) + 1 >= 7:
            assert set(found) == expected
        else:  # small shapes narrower than 7 px: check everything but the shape
            assert {f[:3] for f in found} == {e[:3] for e in expected}


def test_scene_roundtrip_and_bad_input():
    scene = sample_scene(random.Random(0), 48)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
    with pytest.raises(ValueError, match="image_size"):
        sample_scene(random.Random(0), 16)
    with pytest.raises(ValueError, match="n_objects"):
        sample_scene(random.Random(0), 48, n_objects=GRID * GRID + 1)


# ---- the checker -------------------------------------------------------------------------------------------------
def test_checker_on_a_handmade_scene():
    from vista.world.scenes import SceneObject

    assert GRID >= 2

    scene = Scene(
        (
            SceneObject("circle", "red", "large", 0, 0),
            SceneObject("square", "red", "small", 0, 1),
            SceneObject("circle", "blue", "small", 1, 0),
        )
    )
    ask = T.answer_from_scene
    assert ask(scene, {"kind": "colour", "ref": {"shape": "square"}}) == "red"
    assert ask(scene, {"kind": "shape", "ref": {"colour": "blue"}}) == "circle"
    assert ask(scene, {"kind": "position", "ref": {"colour": "blue"}}) == POSITIONS[(1, 0)]
    assert ask(scene, {"kind": "size", "ref": {"position": POSITIONS[(0, 0)]}}) == "large"
    assert ask(scene, {"kind": "count", "filter": {}}) == "three"
    assert ask(scene, {"kind": "count", "filter": {"colour": "red"}}) == "two"
    assert ask(scene, {"kind": "count", "filter": {"shape": "cross"}}) == "zero"
    assert ask(scene, {"kind": "exist", "filter": {"colour": "blue", "shape": "circle"}}) == "yes"
    assert ask(scene, {"kind": "exist", "filter": {"colour": "blue", "shape": "square"}}) == "no"
    rel = {"kind": "relation", "axis": "horizontal", "a": {"shape": "square"}, "b": {"colour": "blue"}}
    assert ask(scene, rel) == "right"
    assert ask(scene, {**rel, "axis": "vertical"}) == "above"
    with pytest.raises(ValueError, match="matches 2 objects"):
        ask(scene, {"kind": "colour", "ref": {"shape": "circle"}})
    with pytest.raises(ValueError, match="unknown question kind"):
        ask(scene, {"kind": "smell"})


def test_generated_answers_match_the_checker(world):
    """Every gpt turn with a question spec: the generator's answer equals the checker's (single word or sentence)."""
    records = {r["id"]: r for r in json.loads((world / "finetune.json").read_text())}
    checked = 0
    for line in (world / "scenes" / "finetune.jsonl").read_text().splitlines():
        entry = json.loads(line)
        scene = Scene.from_dict(entry["scene"])
        answers = [t["value"] for t in records[entry["id"]]["conversations"] if t["from"] == "gpt"]
        assert len(answers) == len(entry["specs"])
        for spec, answer in zip(entry["specs"], answers):
            if spec is None:
                continue
            truth = T.answer_from_scene(scene, spec)
            if "image" in records[entry["id"]]:  # text-only ones are about a scene given in words
                assert answer in (truth, T.sentence_answer(spec, truth)), (entry["id"], spec, answer)
            checked += 1
    assert checked > SIZE // 2


def test_benchmark_answers_match_the_checker_and_descriptions_parse(world):
    for task in TASKS:
        df = pd.read_parquet(world / "benchmarks" / "data" / f"{task.name}.parquet")
        assert len(df) == BENCH
        for row in df.itertuples():
            scene = Scene.from_dict(json.loads(row.scene))
            if task.name == "world_describe":
                truth = {(o.position, o.size, o.colour, o.shape) for o in scene.objects}
                assert lmms_utils.parse_objects(row.answer) == truth
            else:
                assert T.answer_from_scene(scene, json.loads(row.spec)) == row.answer


def test_benchmarks_are_held_out(world):
    """No multi-object benchmark or held-out image is a training image (single-object scenes may recur, so that the
    object count stays uniform; text-only records' scenes are never rendered)."""
    train = set()
    for split in ("pretrain", "finetune"):
        with_image = {r["id"] for r in json.loads((world / f"{split}.json").read_text()) if "image" in r}
        for line in (world / "scenes" / f"{split}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if entry["id"] in with_image:
                train.add(json.dumps(entry["scene"], sort_keys=True))
    for path in (world / "benchmarks" / "data").glob("*.parquet"):
        df = pd.read_parquet(path)
        scenes = set(df.loc[df["n_objects"] > 1, "scene"])
        assert scenes and not scenes & train, path.name
    lines = (world / "scenes" / "heldout.jsonl").read_text().splitlines()
    heldout = {json.dumps(json.loads(line)["scene"], sort_keys=True) for line in lines}
    heldout = {key for key in heldout if len(json.loads(key)["objects"]) > 1}
    assert len(lines) == len(json.loads((world / "heldout.json").read_text())) > 0
    assert not heldout & train


def test_length_split_is_paired_and_prefix_nested(world):
    data = world / "benchmarks" / "data"
    frames = {p.stem: pd.read_parquet(p) for p in sorted(data.glob("world_len_*.parquet"))}
    assert len(frames) >= 5
    base = frames["world_len_000"]
    words = []
    for name, df in frames.items():
        assert (df["scene"] == base["scene"]).all() and (df["answer"] == base["answer"]).all(), name
        assert all(q.endswith(b) for q, b in zip(df["question"], base["question"])), name
        words.append(df["text_words"].median())
    assert words == sorted(words) and words[-1] - words[0] >= 250


# ---- balance: no answer from the text alone ---------------------------------------------------------------------
CHANCE = {
    "colour": 1 / len(COLOURS),
    "shape": 1 / len(SHAPES),
    "size": 1 / len(SIZES),
    "position": 1 / len(POSITIONS),
    "count": 1 / MAX_OBJECTS,
    "exist": 1 / 2,
    "relation": 1 / 2,
}


@pytest.mark.parametrize("kind", sorted(CHANCE))
def test_text_only_predictor_is_at_chance(kind):
    """The best text-only predictor (majority answer per exact question text, fitted on 4000 questions, with the
    overall majority as fallback) scores within 0.04 of chance on 4000 fresh ones; answers are near uniform."""

    def draw(seed: int, n: int) -> list[tuple[str, str]]:
        rng, out = random.Random(seed), []
        while len(out) < n:
            q = T.make_question(sample_scene(rng, 48), kind, rng, balanced=True)
            if q is not None:
                out.append((T.question_text(q), q["answer"]))
        return out

    fit, test = draw(1, 4000), draw(2, 4000)
    by_text: dict[str, Counter] = defaultdict(Counter)
    for question, answer in fit:
        by_text[question][answer] += 1
    overall = Counter(a for _, a in fit).most_common(1)[0][0]
    predict = {q: c.most_common(1)[0][0] for q, c in by_text.items()}
    accuracy = np.mean([predict.get(q, overall) == a for q, a in test])
    assert accuracy < CHANCE[kind] + 0.04, accuracy
    freq = Counter(a for _, a in test)
    options = 4 if kind == "relation" else round(1 / CHANCE[kind])  # left/right or above/below, per axis
    assert len(freq) == options
    assert max(freq.values()) / len(test) < 1 / options + 0.03, freq


# ---- determinism and sizes --------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(world, tmp_path):
    again = tmp_path / "again"
    synth(again, seed=7, size=SIZE, bench_size=BENCH)
    first, second = _tree_hashes(world), _tree_hashes(again)
    assert first == second
    assert any(k.endswith(".png") for k in first) and any(k.endswith(".parquet") for k in first)
    other = tmp_path / "other"
    synth(other, seed=8, size=SIZE, bench_size=BENCH)
    third = _tree_hashes(other)
    for name in (
        "finetune.json",
        "pretrain.json",
        "images/finetune/ft000000.png",
        "benchmarks/data/world_colour.parquet",
    ):
        assert third[name] != first[name], name


def test_manifest_counts_vocabulary_and_lengths(world):
    manifest = json.loads((world / "manifest.json").read_text())
    finetune = json.loads((world / "finetune.json").read_text())
    pretrain = json.loads((world / "pretrain.json").read_text())
    c = manifest["counts"]
    assert c["finetune"] == len(finetune) == SIZE and c["pretrain"] == len(pretrain) == SIZE
    assert c["finetune_text_only"] == sum("image" not in r for r in finetune) > 0
    assert c["images"] == len(list((world / "images").rglob("*.png")))
    assert sum(c["finetune_types"].values()) == SIZE
    assert 60 < manifest["vocabulary_words"] < 300
    total = manifest["words"]["finetune_total"]
    assert total["min"] <= 25 and total["max"] >= 250  # from single words to long descriptions and passages


def test_single_turn_file_holds_every_question_once_with_its_image(world):
    finetune = json.loads((world / "finetune.json").read_text())
    single = json.loads((world / "finetune_single_turn.json").read_text())
    turns = lambda record: [(t["value"].removeprefix("<image>\n"), a["value"])  # noqa: E731
                            for t, a in zip(record["conversations"][::2], record["conversations"][1::2])]  # fmt: skip
    expected = [
        (r.get("image"), q) for r in finetune for q in (turns(r) if "image" in r else [r["conversations"]])
    ]
    got = [(r.get("image"), turns(r)[0] if "image" in r else r["conversations"]) for r in single]
    assert got == expected and len(single) > len(finetune)
    assert all(len(r["conversations"]) == 2 and r["conversations"][0]["value"].startswith("<image>\n")
               for r in single if "image" in r)  # fmt: skip
    assert json.loads((world / "manifest.json").read_text())["counts"]["finetune_single_turn"] == len(single)


def test_attribute_words_are_the_image_dependent_ones():
    rng = random.Random(3)
    for _ in range(300):
        scene = sample_scene(rng, 48)
        q = T.sample_question(scene, rng)
        assert set(T.to_words(q["answer"])) <= T.ATTRIBUTE_WORDS
    template = T.to_words(T.SHORT_ANSWER_PROMPT + " " + T.DESCRIBE_PROMPTS[0])
    assert not set(template) & T.ATTRIBUTE_WORDS


# ---- format: through the training data loader and lmms-eval -------------------------------------------------------
def test_records_load_through_the_training_data_loader(world):
    from vista.data import LlavaJsonDataset
    from vista.tiny import build_image_processor, build_processor, build_tokenizer

    texts = [
        t["value"]
        for f in ("pretrain.json", "finetune.json")
        for r in json.loads((world / f).read_text())
        for t in r["conversations"]
    ]
    tokenizer = build_tokenizer(texts, vocab_size=400)
    side = json.loads((world / "manifest.json").read_text())["image_size"]
    processor = build_processor(tokenizer, build_image_processor(side), patch_size=8)
    for split, template in (("pretrain", "plain"), ("finetune", "vicuna_v1")):
        ds = LlavaJsonDataset(
            world / f"{split}.json",
            world / "images",
            processor,
            template,
            max_length=1024,
            on_bad_sample="raise",
            check_images="decode",
            show_progress=False,
        )
        assert len(ds) == SIZE
        for i in range(0, SIZE, 7):
            item = ds[i]
            assert (item["labels"] != -100).sum() > 0
            if "pixel_values" in item:
                assert tuple(item["pixel_values"].shape[-2:]) == (side, side)


def test_lmms_eval_loads_every_task_offline(world):
    from lmms_eval.tasks import TaskManager, get_task_dict

    bench = world / "benchmarks"
    side = json.loads((world / "manifest.json").read_text())["image_size"]
    manager = TaskManager(include_path=str(bench))
    groups = ["world_semantic", "world_general", "world_fine", "world_length"]
    tasks = get_task_dict(groups, manager)
    names = set()

    def walk(d):
        for _key, value in d.items():
            if isinstance(value, dict):
                walk(value)
            else:
                names.add(value.config.task)
                docs = list(value.test_docs())
                assert len(docs) == BENCH
                doc = docs[0]
                image = value.config.doc_to_visual(doc)[0]
                assert image.size == (side, side)
                prompt = value.doc_to_text(doc)
                assert doc["question"] in prompt
                gold = value.config.process_results(doc, [doc["answer"]])
                wrong = value.config.process_results(doc, ["purple elephant"])
                assert gold["exact_match"] == 1.0 and wrong["exact_match"] == 0.0
                if "object_f1" in gold:
                    assert gold["object_f1"] == 1.0 and wrong["object_f1"] == 0.0

    walk(tasks)
    assert names == {t.name for t in TASKS} | {f"world_len_{n:03d}" for n in (0, 25, 50, 100, 200, 300)}


def test_bad_arguments_give_a_clear_error(tmp_path, capsys):
    from vista.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "w"), "--size", "0"]) == 2
    assert "vista data synth: --size" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_held_out_sampling_keeps_the_object_count_uniform():
    """Excluding 8000 training scenes (which cover nearly every large single object) must not skew the counts."""
    from vista.world.benchmarks import TASKS as ALL
    from vista.world.benchmarks import scene_key, task_rows

    rng = random.Random(11)
    seen = {scene_key(sample_scene(rng, 32)) for _ in range(8000)}
    count_task = next(t for t in ALL if t.name == "world_count")
    rows = task_rows(count_task, 600, seed=5, image_size=32, seen=seen)
    freq = Counter(r["answer"] for r in rows)
    assert len(freq) == MAX_OBJECTS
    shares = [n / len(rows) for n in freq.values()]  # uniform: standard error 0.018 at 600 rows
    assert 1 / MAX_OBJECTS - 0.06 < min(shares) and max(shares) < 1 / MAX_OBJECTS + 0.06, freq
