"""How strongly a trained model reads the image: attribute accuracy with the real image versus a blank image.

    python -m analysis.image_reading --results OUT [--variant baseline] [--limit 100]

For the synthetic world's single-attribute tasks (held-out scenes, no preceding text: colour, shape, size,
position, count, existence) every checkpoint of ``--variant`` answers each question twice with greedy decoding,
prompted as the lmms-eval task prompts it (the vista plugin's chat template): once with its image and once with
the world's blank background. Exact match uses the benchmark's own scorer (``vista.world.lmms_utils``), so the
"image" column equals lmms-eval's accuracy on the same documents. The best text-only predictor is the majority
answer of each task's documents: every short-answer task is balanced (its answer is independent of the question
text, ``vista.world.text.make_question``), so no predictor that sees only the text can do better in expectation.

Writes ``OUT/image_reading/per_document.csv`` (one row per checkpoint, task and document); the report reads it
(:func:`reading_section`) and ``reproduce/benchmarks/world_meaningful.py`` prints :func:`reading_table`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.markdown import format_mean_sd
from analysis.markdown import markdown_table as table_lines
from vista.errors import refuse_to_replace
from vista.images import to_rgb
from vista.world.lmms_utils import normalise
from vista.world.scenes import POSITIONS, blank_image

# attribute -> the benchmark task asking only about it (held-out scenes, no preceding text)
READING_TASKS: dict[str, str] = {
    "colour": "world_colour",
    "shape": "world_shape",
    "size": "world_size",
    "position": "world_position",
    "count": "world_count",
    "existence": "world_exist",
}
# the bar of issue 16: mean and per-attribute accuracy with the image, and |blank - best text-only| (points)
TARGET_MEAN, TARGET_EACH, TARGET_BLANK_GAP = 85.0, 70.0, 5.0
OUTPUT = "image_reading/per_document.csv"


def task_docs(benchmarks: Path, task: str, limit: int | None = None) -> tuple[pd.DataFrame, list, list[str]]:
    """The first ``limit`` docs of ``task``, their RGB images and their prompts exactly as the task's YAML
    builds them (lmms-eval's ``doc_to_text``: ``pre_prompt + question + post_prompt``).

    Raises:
        FileNotFoundError: the task's parquet or YAML is missing under ``benchmarks``.
    """
    import yaml
    from PIL import Image

    parquet, spec = benchmarks / "data" / f"{task}.parquet", benchmarks / f"{task}.yaml"
    for path in (parquet, spec):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (written by `vista data synth`)")
    df = pd.read_parquet(parquet)
    df = df.head(limit) if limit else df
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load(spec.read_text(), Loader=loader)
    kwargs = (config.get("lmms_eval_specific_kwargs") or {}).get("default", {})
    prompts = [f"{kwargs.get('pre_prompt', '')}{q}{kwargs.get('post_prompt', '')}" for q in df["question"]]
    images = [to_rgb(Image.open(BytesIO(b["bytes"]))) for b in df["image"]]
    return df.reset_index(drop=True), images, prompts


@torch.inference_mode()
def generate(model, processor, template, prompts: list[str], images: list, max_new_tokens: int = 8,
             batch: int = 16) -> list[str]:  # fmt: skip
    """Greedy answers (first line of the decoded continuation), prompted as the vista lmms-eval plugin does:
    ``template.render_prompt`` of one user turn ``<image>\\n<prompt>``. Left padding for batched decoding."""
    processor.tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(prompts), batch):
        qs, ims = prompts[start : start + batch], images[start : start + batch]
        texts = [template.render_prompt([{"role": "user", "content": "<image>\n" + q}]) for q in qs]
        inputs = processor(text=texts, images=ims, return_tensors="pt", padding=True)
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += [
            t.split("\n")[0].strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        ]
    return answers


def load_for_generation(checkpoint: Path):
    """``(model, processor, template)`` of a stage-2 checkpoint, the template resolved as lmms-eval's plugin does."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vista.lmms_plugin import resolve_template_name
    from vista.templates import get_template

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    return model, processor, get_template(resolve_template_name(checkpoint))


# what a wrong answer with the image names, for the attributes one object has (see wrong_kind)
OTHER_OBJECT, NOT_IN_SCENE = "another object's", "not in the scene"
OBJECT_ATTRIBUTES = ("colour", "shape", "size", "position")


def wrong_kind(attribute: str, prediction: str, gold: str, scene: dict) -> str:
    """What a wrong answer about one object's ``attribute`` names: :data:`OTHER_OBJECT` if it is the value of
    another object of the scene (the model read the image but bound the question to the wrong object),
    :data:`NOT_IN_SCENE` otherwise (a value no object has, or not a value at all). ``""`` if the answer is right or
    the attribute is not one object's (count, existence). ``scene``: a :class:`vista.world.scenes.Scene` dict."""
    if attribute not in OBJECT_ATTRIBUTES or normalise(prediction) == normalise(gold):
        return ""
    values = {
        POSITIONS[(o["row"], o["col"])] if attribute == "position" else o[attribute] for o in scene["objects"]
    }
    return OTHER_OBJECT if normalise(prediction) in {normalise(v) for v in values} else NOT_IN_SCENE


# the order attributes are named in a reference ("size+colour+shape": "the small red circle")
REFERENCE_ORDER = ("size", "colour", "shape", "position")
ALL_OBJECTS = "all objects"


def reference_of(spec: dict) -> str:
    """How a question picks out what it asks about, from its ``vista.world.text`` spec: the attributes of the
    object's reference joined by ``+`` in :data:`REFERENCE_ORDER` (``"shape"``, ``"colour+shape"``,
    ``"position"``), the filter of an existence or count question, or :data:`ALL_OBJECTS` for a count of all."""
    keys = spec.get("ref", spec.get("filter", {}))
    return "+".join(k for k in REFERENCE_ORDER if k in keys) or ALL_OBJECTS


def reading_rows(checkpoint: Path, benchmarks: Path, limit: int | None = None) -> pd.DataFrame:
    """Per task and document: gold answer, correct with the image, correct with a blank image.

    Columns: ``attribute``, ``task``, ``doc``, ``answer``, ``n_objects`` (in the scene), ``reference``
    (:func:`reference_of`), ``correct_image``, ``correct_blank`` (0/1), ``prediction_image`` (the greedy answer
    with the image) and ``wrong_kind`` (:func:`wrong_kind`). The blank image has the size of the document's image.
    """
    model, processor, template = load_for_generation(checkpoint)
    frames = []
    for attribute, task in READING_TASKS.items():
        df, images, prompts = task_docs(benchmarks, task, limit)
        gold = [normalise(a) for a in df["answer"]]
        blanks = [blank_image(im.size[0]) for im in images]
        with_image = generate(model, processor, template, prompts, images)
        with_blank = generate(model, processor, template, prompts, blanks)
        frames.append(pd.DataFrame({
            "attribute": attribute, "task": task, "doc": np.arange(len(df)), "answer": df["answer"],
            "n_objects": df["n_objects"], "reference": [reference_of(json.loads(s)) for s in df["spec"]],
            "correct_image": [int(normalise(a) == g) for a, g in zip(with_image, gold)],
            "correct_blank": [int(normalise(a) == g) for a, g in zip(with_blank, gold)],
            "prediction_image": with_image,
            "wrong_kind": [wrong_kind(attribute, a, g, json.loads(sc))
                           for a, g, sc in zip(with_image, df["answer"], df["scene"])],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def best_text_only(answers: pd.Series) -> float:
    """Accuracy (0-1) of always giving the most frequent answer (after the benchmark's normalisation)."""
    counts = Counter(normalise(a) for a in answers)
    return counts.most_common(1)[0][1] / len(answers) if len(answers) else float("nan")


def attributes_in(rows: pd.DataFrame) -> list[str]:
    """The attributes present in ``rows``, in :data:`READING_TASKS` order (every table's row order)."""
    present = set(rows["attribute"])
    return [a for a in READING_TASKS if a in present]


def reading_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attribute (in :data:`READING_TASKS` order) and a final ``mean`` row: accuracy in % with the image and
    with a blank image (mean and sd over seeds), the best text-only predictor's accuracy (%) on the same documents,
    ``blank - text-only`` in points, and ``n`` documents per seed.

    ``rows``: :func:`reading_rows` output with a ``seed`` column (one checkpoint per seed).
    Raises ValueError if ``rows`` is empty.
    """
    if rows.empty:
        raise ValueError("reading_table: no rows")
    per_seed = rows.groupby(["attribute", "seed"])[["correct_image", "correct_blank"]].mean() * 100
    out = []
    for attribute in attributes_in(rows):
        seeds = per_seed.loc[attribute]
        docs = rows[(rows["attribute"] == attribute) & (rows["seed"] == rows["seed"].min())]
        text = 100 * best_text_only(docs["answer"])
        out.append({
            "attribute": attribute, "image": seeds["correct_image"].mean(), "image_sd": seeds["correct_image"].std(),
            "blank": seeds["correct_blank"].mean(), "blank_sd": seeds["correct_blank"].std(),
            "text_only": text, "blank_minus_text": seeds["correct_blank"].mean() - text, "n": len(docs),
        })  # fmt: skip
    table = pd.DataFrame(out)
    mean = table.drop(columns="attribute").mean(numeric_only=True)
    seed_means = per_seed.groupby("seed").mean()  # each seed's mean over attributes
    mean["image_sd"], mean["blank_sd"] = seed_means["correct_image"].std(), seed_means["correct_blank"].std()
    mean["n"] = table["n"].sum()
    table.loc[len(table)] = {"attribute": "mean", **mean.to_dict()}
    return table


def meets_target(table: pd.DataFrame) -> dict[str, bool]:
    """The three conditions of issue 16 on a :func:`reading_table`: mean image accuracy >= 85 %, each attribute
    >= 70 %, and the blank image within 5 points of the best text-only predictor (mean over attributes)."""
    per = table[table["attribute"] != "mean"]
    mean = table[table["attribute"] == "mean"].iloc[0]
    return {
        "mean_image": bool(mean["image"] >= TARGET_MEAN),
        "each_image": bool((per["image"] >= TARGET_EACH).all()),
        "blank_near_text_only": bool(abs(mean["blank_minus_text"]) <= TARGET_BLANK_GAP),
    }


def markdown_table(table: pd.DataFrame) -> list[str]:
    """The table as Markdown lines (accuracy %, mean ± sd over seeds)."""
    header = ["attribute", "with image", "blank image", "best text-only", "blank − text-only", "docs/seed"]
    rows = [
        [r.attribute, format_mean_sd(r.image, r.image_sd, 1), format_mean_sd(r.blank, r.blank_sd, 1),
         f"{r.text_only:.1f}", f"{r.blank_minus_text:+.1f}", int(r.n)]
        for r in table.itertuples()
    ]  # fmt: skip
    return table_lines(header, rows)


def wrong_answer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attribute that :func:`wrong_kind` classifies: wrong answers with the image (all seeds), and the % of them
    naming another object's value or a value not in the scene. Empty if ``rows`` has no ``wrong_kind`` column
    (files written before it existed)."""
    if "wrong_kind" not in rows:
        return pd.DataFrame()
    out = []
    for attribute in OBJECT_ATTRIBUTES:
        wrong = rows[(rows["attribute"] == attribute) & (rows["correct_image"] == 0)]
        if len(wrong):
            kinds = wrong["wrong_kind"].fillna("")
            out.append({"attribute": attribute, "wrong": len(wrong),
                        "other_object": 100 * float((kinds == OTHER_OBJECT).mean()),
                        "not_in_scene": 100 * float((kinds == NOT_IN_SCENE).mean())})  # fmt: skip
    return pd.DataFrame(out)


def wrong_answer_lines(table: pd.DataFrame) -> list[str]:
    """Markdown for :func:`wrong_answer_table` (no lines if it is empty)."""
    if table.empty:
        return []
    header = ["attribute", "wrong answers", "another object's value (%)", "not in the scene (%)"]
    rows = [
        [r.attribute, int(r.wrong), f"{r.other_object:.1f}", f"{r.not_in_scene:.1f}"]
        for r in table.itertuples()
    ]
    intro = ("What the wrong answers with the image name (all seeds): the value of *another* object of the scene "
             "means the model read the objects but bound the question to the wrong one; a value no object has means "
             "it did not read the attribute.")  # fmt: skip
    return [intro, "", *table_lines(header, rows), ""]


def binding_tables(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy with the image (%, every seed's documents pooled) per attribute (rows) and number of objects in the
    scene (columns), and per attribute and :func:`reference_of` (``attribute``, ``reference``, ``docs``,
    ``accuracy``). With one object a question needs no binding, so the first table separates reading an attribute
    from binding it to the right object; the second shows which references bind. Two empty tables if ``rows`` lacks
    the ``n_objects`` / ``reference`` columns (files written before they existed)."""
    if not {"n_objects", "reference"} <= set(rows):
        return pd.DataFrame(), pd.DataFrame()
    by_count = rows.pivot_table(
        index="attribute", columns="n_objects", values="correct_image", aggfunc="mean"
    )
    by_count = (100 * by_count).reindex(attributes_in(rows))
    by_reference = (
        rows.groupby(["attribute", "reference"], sort=False)["correct_image"]
        .agg(docs="size", accuracy="mean")
        .reset_index()
    )
    by_reference["accuracy"] *= 100
    return by_count, by_reference


def binding_lines(by_count: pd.DataFrame, by_reference: pd.DataFrame) -> list[str]:
    """Markdown for :func:`binding_tables` (no lines if they are empty)."""
    if by_count.empty:
        return []
    header = ["attribute", *(f"{n} object{'s' if n > 1 else ''}" for n in by_count.columns)]
    rows = [[a, *("" if np.isnan(v) else f"{v:.1f}" for v in r)] for a, r in by_count.iterrows()]
    reference_rows = [
        [r.attribute, r.reference, int(r.docs), f"{r.accuracy:.1f}"] for r in by_reference.itertuples()
    ]
    return [
        "Accuracy with the image (%) by the number of objects in the scene (all seeds pooled). With one object "
        "a question needs no binding: the drop from the first column to the others is what binding the question to "
        "the right object costs.", "",
        *table_lines(header, rows), "",
        "By how the question names what it asks about (`+`: the object is named by two or more attributes, a "
        "conjunction; *position*: by where it is):", "",
        *table_lines(["attribute", "reference", "docs", "accuracy with the image (%)"], reference_rows), "",
    ]  # fmt: skip


def load_rows(results: Path) -> pd.DataFrame | None:
    """``OUT/image_reading/per_document.csv`` (None if absent)."""
    path = Path(results) / OUTPUT
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def reading_section(results: Path, metrics: dict) -> list[str]:
    """REPORT.md's section on how strongly the baseline reads the image, placed before the variants are compared
    (issue 16, item 4); records the table in ``metrics["image_reading"]``. Empty if the stage has not run."""
    rows = load_rows(results)
    if rows is None or rows.empty:
        return []
    variant = str(rows["variant"].iloc[0])
    table = reading_table(rows)
    verdict = meets_target(table)
    metrics["image_reading"] = {"variant": variant, "table": table.to_dict("records"), "meets": verdict}
    mean = table[table["attribute"] == "mean"].iloc[0]
    seeds = rows["seed"].nunique()
    worst = table[table["attribute"] != "mean"].sort_values("image").iloc[0]
    strong = all(verdict.values())
    lines = ["## How strongly the baseline reads the image", "",
             f"Before comparing variants: the {variant} model's greedy exact-match accuracy on held-out scenes "
             "(no scene of two or more objects was trained on; one-object scenes are too few to hold out, "
             "`vista/world/benchmarks.py`) "
             f"with no preceding text, with the real image and with a blank image, against the best text-only "
             f"predictor (the majority answer; every task is balanced), mean ± sd over {seeds} seed(s) "
             "(`python -m analysis.image_reading`):", ""]  # fmt: skip
    lines += markdown_table(table)
    lines += ["", (
        f"With the image the {variant} answers {mean['image']:.1f}% on average (weakest: {worst['attribute']} "
        f"{worst['image']:.1f}%); with a blank image {mean['blank']:.1f}%, {mean['blank_minus_text']:+.1f} points "
        f"from the best text-only predictor ({mean['text_only']:.1f}%). "
        + ("It reads every attribute from the image (mean >= 85%, each >= 70%, blank within 5 points of text-only), "
           "so a variant that weakens image reading has room to show it below."
           if strong else
           "It does not meet the bar of a model that reads every attribute (mean >= 85%, each >= 70%, blank "
           "within 5 points of text-only): differences between variants below say little about image reading.")
    ), ""]  # fmt: skip
    wrong = wrong_answer_table(rows)
    if not wrong.empty:
        metrics["image_reading"]["wrong_answers"] = wrong.to_dict("records")
    by_count, by_reference = binding_tables(rows)
    if not by_count.empty:
        metrics["image_reading"]["accuracy_by_objects"] = {
            a: {int(n): v for n, v in r.dropna().items()} for a, r in by_count.iterrows()
        }
        metrics["image_reading"]["accuracy_by_reference"] = by_reference.to_dict("records")
    return lines + wrong_answer_lines(wrong) + binding_lines(by_count, by_reference)


def measure(results: Path, variant: str = "baseline", limit: int | None = None) -> pd.DataFrame:
    """Rows of every stage-2 checkpoint of ``variant`` under ``results/runs`` (with ``variant``, ``seed``)."""
    from analysis.probes.decay import trained_checkpoints

    checkpoints = trained_checkpoints(results)
    checkpoints = checkpoints[checkpoints["variant"] == variant]
    if checkpoints.empty:
        raise FileNotFoundError(f"{results}/runs: no stage-2 checkpoint of variant {variant!r}")
    benchmarks = Path(results) / "data" / "benchmarks"
    frames = [
        reading_rows(Path(c.path), benchmarks, limit).assign(variant=c.variant, seed=c.seed)
        for c in checkpoints.itertuples()
    ]
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.image_reading", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--results", type=Path, required=True, help="a results folder of reproduce/run_all.sh"
    )
    parser.add_argument(
        "--variant", default="baseline", help="training variant to measure (default: baseline)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N docs per task (default: all)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"where per_document.csv goes (default: RESULTS/{Path(OUTPUT).parent}, which REPORT.md reads)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing per_document.csv")
    args = parser.parse_args(argv)
    target = (args.out or args.results / Path(OUTPUT).parent) / Path(OUTPUT).name
    if target.exists() and not args.overwrite:
        print(f"{parser.prog}: {refuse_to_replace(target)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        rows = measure(args.results, args.variant, args.limit)
    except FileNotFoundError as error:  # inputs of the results folder: one line, no traceback
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(target, index=False)
    table = reading_table(rows)
    print("\n".join(markdown_table(table)))
    print(json.dumps(meets_target(table)))
    print("\n".join(wrong_answer_lines(wrong_answer_table(rows))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
