"""Can the tiny foundation LM answer questions about a scene *described in text*? (no image involved)

    python reproduce/benchmarks/foundation_text_qa.py --language results/tiny/foundations/language [--n 300]

A VLM's LM reads the image through the same skill it uses to read context: find the object the question names and
copy its attribute. A real LLM (Vicuna) has it from web text; the tiny one has only what `vista foundations` taught
it. This prints greedy exact-match accuracy per question kind on fresh scenes (seeded, never in any world split):
the user turn is "Here is a description of a picture: <caption>\\n<question>\\n<short-answer prompt>" in the
vicuna_v1 template; questions are balanced (text-only chance: colour 1/6, shape 1/4, size 1/2, position 1/4).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from vista.templates import get_template  # noqa: E402
from vista.world import text as T  # noqa: E402
from vista.world.scenes import sample_scene  # noqa: E402

KINDS = ("colour", "shape", "size", "position", "count", "exist")


def text_qa_accuracy(language: Path, n: int, seed: int = 12345) -> dict[str, float]:
    """Per-kind and mean accuracy (%) of greedy answers, ``n`` questions cycling through ``KINDS``."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(language)
    lm = LlamaForCausalLM.from_pretrained(language).eval()
    template = get_template("vicuna_v1")
    rng = random.Random(seed)
    right, total = Counter(), Counter()
    for i in range(n):
        scene, kind = sample_scene(rng), KINDS[i % len(KINDS)]
        question = None
        while question is None:
            question = T.make_question(scene, kind, rng, balanced=True)
        user = (
            f"Here is a description of a picture: {T.caption(scene, rng)}\n"
            f"{T.question_text(question)}\n{T.SHORT_ANSWER_PROMPT}"
        )
        prompt = template.render_prompt([{"role": "user", "content": user}], add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = lm.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip().lower()
        total[kind] += 1
        right[kind] += answer.split(".")[0].strip() == question["answer"]
    scores = {k: 100 * right[k] / total[k] for k in KINDS if total[k]}
    scores["mean"] = 100 * sum(right.values()) / sum(total.values())
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", type=Path, required=True, help="a foundations/language folder")
    parser.add_argument("--n", type=int, default=300, help="questions (cycling through the six kinds)")
    args = parser.parse_args()
    if not (args.language / "config.json").is_file():
        print(
            f"--language {args.language}: no config.json (write one with `vista foundations`)",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    scores = text_qa_accuracy(args.language, args.n)
    print("| " + " | ".join(scores) + " |")
    print("|" + "---|" * len(scores))
    print("| " + " | ".join(f"{v:.1f}" for v in scores.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
