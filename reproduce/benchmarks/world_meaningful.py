"""Is the synthetic world meaningful? A trained tiny LLaVA must need the image, and less so as text grows.

    .venv/bin/python reproduce/benchmarks/world_meaningful.py --world DIR --checkpoint RUN/finetune
    .venv/bin/python reproduce/benchmarks/world_meaningful.py --build --out /tmp/world_meaningful   # everything

Prints, side by side in one run:
0. issue 16's table (analysis.image_reading): per attribute (colour, shape, size, position, count, existence) on
   held-out scenes with no preceding text, accuracy with the image, with a blank image and of the best text-only
   predictor, and whether the model meets the bar (mean >= 85%, each >= 70%, blank within 5 points of text-only);
   what the wrong answers name (another object's value or one not in the scene), and accuracy by the number of
   objects in the scene and by how the question names its object (reading vs binding);
1. per benchmark task: greedy exact-match accuracy with the real image, with a blank image (the same model, no
   visual information: the text-only baseline) and of the majority answer of the task;
2. the length split: accuracy (image / blank) versus the words of distractor text before the question;
3. visual contribution versus text length on the length split: mean ``log p(answer | image) - log p(answer |
   blank image)`` (nats per gold answer) for each preceding-text length.

``--build`` first runs the whole miniature (``vista data synth``, ``vista foundations``, ``vista train`` stage 1
and 2, baseline variant) into ``--out`` and prints the time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.image_reading import (  # noqa: E402
    binding_lines,
    binding_tables,
    generate,
    markdown_table,
    meets_target,
    reading_rows,
    reading_table,
    task_docs,
    wrong_answer_lines,
    wrong_answer_table,
)
from analysis.image_reading import load_for_generation as load  # noqa: E402
from vista.world.scenes import blank_image  # noqa: E402


def normalise(s: str) -> str:
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())


def benchmark_accuracy(model, processor, template, bench: Path, image_size: int) -> pd.DataFrame:
    """Per task: accuracy with image, with a blank image, and of the majority answer."""
    rows = []
    for parquet in sorted((bench / "data").glob("*.parquet")):
        task = parquet.stem
        df, images, prompts = task_docs(bench, task)
        blank = [blank_image(image_size)] * len(df)
        max_new = 160 if task == "world_describe" else 8
        gold = [normalise(a) for a in df["answer"]]
        with_image = generate(model, processor, template, prompts, images, max_new)
        without = generate(model, processor, template, prompts, blank, max_new)
        majority = Counter(gold).most_common(1)[0][1] / len(gold)
        rows.append({
            "task": task, "n": len(df), "preceding_words": float(df["preceding_words"].mean()),
            "acc_image": np.mean([normalise(a) == g for a, g in zip(with_image, gold)]),
            "acc_blank": np.mean([normalise(a) == g for a, g in zip(without, gold)]),
            "acc_majority": majority,
            "gain": [float(normalise(a) == g) - float(normalise(b) == g) for a, b, g in zip(with_image, without, gold)],
        })  # fmt: skip
    return pd.DataFrame(rows)


def paired_gain(acc: pd.DataFrame) -> str:
    """Pooled accuracy gain of image over blank across the tasks' docs, with its paired standard error."""
    gain = np.concatenate([np.asarray(g) for g in acc["gain"]])
    return f"{gain.mean():+.3f} +- {gain.std(ddof=1) / np.sqrt(len(gain)):.3f} (n={len(gain)} docs)"


@torch.inference_mode()
def visual_contribution(model, processor, template, bench: Path, image_size: int) -> pd.DataFrame:
    """Per length-split doc: log p(gold answer | image) - log p(gold answer | blank image), in nats per answer
    (the image-ablation contrast of REFERENCE section 7, summed over the answer's tokens)."""
    tok = processor.tokenizer
    rows = []
    for task in sorted(p.stem for p in (bench / "data").glob("world_len_*.parquet")):
        df, images, prompts = task_docs(bench, task)
        for doc, image, prompt in zip(df.itertuples(), images, prompts):
            text = template.render_prompt([{"role": "user", "content": "<image>\n" + prompt}])
            answer = tok(template.assistant_gap + doc.answer, add_special_tokens=False, return_tensors="pt")
            lp = []
            for im in (image, blank_image(image_size)):
                inputs = processor(text=[text], images=[im], return_tensors="pt")
                ids = torch.cat([inputs["input_ids"], answer["input_ids"]], 1)
                logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0].float()
                n = answer["input_ids"].shape[1]
                logp = torch.log_softmax(logits[-n - 1 : -1], -1).gather(1, answer["input_ids"][0, :, None])
                lp.append(float(logp.sum()))
            rows.append({"task": task, "preceding_words": doc.preceding_words, "prompt_tokens": ids.shape[1] - n,
                         "delta": lp[0] - lp[1], "logp_image": lp[0]})  # fmt: skip
    return pd.DataFrame(rows)


def run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def build(out: Path, size: int, seed: int, bench: int, stage1: list[str], stage2: list[str]) -> Path:
    """The miniature end to end (baseline variant); prints each step's wall time. Returns the stage-2 folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    py = [sys.executable, "-m", "vista.cli"]
    data, found, runs = out / "data", out / "foundations", out / "run"
    times = {"synth": run([*py, "data", "synth", "--out", data, "--seed", seed, "--size", size,
                           "--bench-size", bench], env)}  # fmt: skip
    times["foundations"] = run([*py, "foundations", "--data", data, "--out", found], env)
    common = ["variant=baseline", "training.seed=1", f"data.image_folder={data / 'images'}"]
    times["stage1"] = run([*py, "train", "--config", ROOT / "reproduce/configs/tiny/pretrain.yaml", *common,
                           f"training.output_dir={runs / 'pretrain'}", f"data.json={data / 'pretrain.json'}",
                           f"model.vision_tower={found / 'vision'}", f"model.language_model={found / 'language'}",
                           *stage1], env)  # fmt: skip
    times["stage2"] = run([*py, "train", "--config", ROOT / "reproduce/configs/tiny/finetune.yaml", *common,
                           f"training.output_dir={runs / 'finetune'}", f"data.json={data / 'finetune.json'}",
                           f"model.checkpoint={runs / 'pretrain'}", *stage2], env)  # fmt: skip
    print("wall time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    return runs / "finetune"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="world folder (vista data synth)")
    parser.add_argument("--checkpoint", type=Path, help="stage-2 checkpoint trained on the world")
    parser.add_argument("--build", action="store_true", help="build world, foundations and both stages first")
    parser.add_argument("--out", type=Path, default=Path("/tmp/world_meaningful"))
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench-size", type=int, default=40, help="docs per benchmark task (--build)")
    parser.add_argument(
        "--reading-limit", type=int, default=None, help="docs per attribute task (default: all)"
    )
    parser.add_argument("--stage1", nargs="*", default=[], metavar="KEY=VALUE", help="vista train overrides")
    parser.add_argument("--stage2", nargs="*", default=["data.max_length=512", "data.on_bad_sample=skip"],
                        metavar="KEY=VALUE", help="vista train overrides of stage 2")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.build:
        args.checkpoint = build(args.out, args.size, args.seed, args.bench_size, args.stage1, args.stage2)
        args.world = args.out / "data"
    if not (args.world and args.checkpoint):
        parser.error("give --world and --checkpoint, or --build")
    manifest = json.loads((args.world / "manifest.json").read_text())
    image_size = int(manifest["image_size"])
    print("\n== issue 16: does the model read every attribute? held-out scenes, no preceding text ==")
    rows = reading_rows(args.checkpoint, args.world / "benchmarks", args.reading_limit).assign(seed=1)
    table = reading_table(rows)
    print("\n".join(markdown_table(table)))
    print("target (mean >= 85%, each >= 70%, blank within 5 points of text-only):", meets_target(table))
    print("\n".join(wrong_answer_lines(wrong_answer_table(rows))))
    print("\n".join(binding_lines(*binding_tables(rows))))
    model, processor, template = load(args.checkpoint)
    pd.set_option("display.width", 160)
    acc = benchmark_accuracy(model, processor, template, args.world / "benchmarks", image_size)
    print("\n== accuracy per task: real image vs blank image (text-only) vs majority answer ==")
    print(acc.drop(columns="gain").round(3).to_string(index=False))
    main_tasks = acc[~acc.task.str.startswith("world_len")]
    print(f"mean over the {len(main_tasks)} table tasks: image {main_tasks.acc_image.mean():.3f}, "
          f"blank {main_tasks.acc_blank.mean():.3f}, majority {main_tasks.acc_majority.mean():.3f}")  # fmt: skip
    print(f"pooled gain image - blank over the table tasks: {paired_gain(main_tasks)}")
    length = acc[acc.task.str.startswith("world_len_")]
    print("\n== length split (same questions and images, longer distractor text) ==")
    print(length[["task", "preceding_words", "acc_image", "acc_blank"]].round(3).to_string(index=False))
    print(f"pooled gain image - blank over the length split: {paired_gain(length)}")
    contrib = visual_contribution(model, processor, template, args.world / "benchmarks", image_size)
    table = contrib.groupby("task")[["preceding_words", "prompt_tokens", "delta", "logp_image"]].mean()
    print("\n== visual contribution to the gold answer vs preceding text (length split) ==")
    print("delta = log p(answer | image) - log p(answer | blank image), nats per answer")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
