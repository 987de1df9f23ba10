"""The paper presets' real tokenizers (../shared/tokenizers) on the real multi-turn LLaVA-Instruct records.

Vicuna-7B v1.5 (LLaVA-1.5): the Llama-2 SentencePiece vocabulary. Phi-2 (TinyLLaVA-3B): GPT-2 plus 38 whitespace
tokens (:func:`vista.builder.phi2_tokenizer`). For every record: the supervised labels are exactly the answer tokens
(with ``</s>`` / ``<|endoftext|>`` after each answer; ``plain``: the caption and its newline), and the evaluation
prompt that the processor tokenises (image expanded to 576 / 729 tokens) is token for token a prefix of the training
sequence, with the answer starting right after it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vista.builder import PHI2_ADDED_TOKENS, phi2_tokenizer
from vista.data import parse_record
from vista.model_plan import planned_processor
from vista.presets import preset_defaults
from vista.templates import IGNORE_INDEX, IMAGE_TOKEN, get_template

RECORDS = "realdata/llava_data/LLaMA-Factory__llava_instruct_100.json"
PHOTO = Image.new("RGB", (640, 480), (120, 90, 60))  # a non-square stand-in photo


@pytest.fixture(scope="module")
def records(shared):
    return json.loads((shared / RECORDS).read_text())


@pytest.fixture(scope="module")
def processors(shared, tmp_path_factory):
    """``{preset: LlavaProcessor}`` with the real tokenizers and the towers' preprocessing."""
    phi2 = tmp_path_factory.mktemp("phi2-tokenizer")
    phi2_tokenizer(shared / "tokenizers/gpt-2").save_pretrained(phi2)
    folders = {"llava-1.5-7b": shared / "tokenizers/llama2-vicuna", "tinyllava-3b": phi2}
    result = {}
    for preset, folder in folders.items():
        model_cfg = preset_defaults(preset, "pretrain")["model"] | {
            "tokenizer": str(folder),
            "source": "random",
        }
        _, result[preset] = planned_processor(model_cfg)
    return result


def test_phi2_tokenizer_is_gpt2_plus_the_whitespace_tokens(shared, processors):
    gpt2 = processors["tinyllava-3b"].tokenizer.__class__.from_pretrained(shared / "tokenizers/gpt-2")
    phi2 = phi2_tokenizer(shared / "tokenizers/gpt-2")
    assert len(phi2) == 50295 and len(PHI2_ADDED_TOKENS) == 38
    assert phi2.convert_tokens_to_ids([" " * 31, "  ", "\t" * 9, "\t\t"]) == [50257, 50286, 50287, 50294]
    assert (phi2.bos_token_id, phi2.eos_token_id, phi2("a")["input_ids"]) == (
        50256,
        50256,
        [64],
    )  # no BOS added
    text = "What is the man doing in the back of the pickup truck?"
    assert phi2(text)["input_ids"] == gpt2(text)["input_ids"]  # single spaces: the GPT-2 encoding
    assert phi2("\n    return x")["input_ids"] == [198, 50284, 7783, 2124]  # 4 spaces: one added token
    processor = processors["tinyllava-3b"]
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == 50295  # inside Phi-2's 51,200-row table


def _supervised_runs(input_ids: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    supervised = labels != IGNORE_INDEX
    assert (labels[supervised] == input_ids[supervised]).all()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], supervised.astype(int), [0]])))
    return [input_ids[a:b].tolist() for a, b in zip(edges[::2], edges[1::2])]


PROMPT_CHECKS = 15  # records whose every turn's prompt goes through the processor (the rest: the first turn)
CASES = [("llava-1.5-7b", "vicuna_v1", 576), ("tinyllava-3b", "phi", 729)]
CASES += [("llava-1.5-7b", "plain", 576), ("tinyllava-3b", "plain", 729)]


@pytest.mark.parametrize(("preset", "template_name", "image_tokens"), CASES)
def test_labels_are_the_answers_and_prompts_are_prefixes(
    records, processors, preset, template_name, image_tokens
):
    processor, template = processors[preset], get_template(template_name)
    tokenizer = processor.tokenizer
    end_of_turn = template.end_of_turn
    image_at_end = 0
    for index, record in enumerate(records):
        turns, images = parse_record(
            record, get_template("vicuna_v1" if template.single_exchange else template_name)
        )
        assert len(images) == 1
        image_at_end += turns[0]["content"].rstrip().endswith(IMAGE_TOKEN)
        if template.single_exchange:
            turns = [{"role": "user", "content": IMAGE_TOKEN}, turns[1]]  # plain: a caption of the image
        tokens = template.tokenize(turns, tokenizer, num_image_tokens=image_tokens)
        answers = [t["content"] for t in turns if t["role"] == "assistant"]
        runs = _supervised_runs(tokens.input_ids, tokens.labels)
        assert len(runs) == len(answers), record["id"]
        for run, answer in zip(runs, answers):
            # The answer's own tokens (in context: SentencePiece's leading "▁" merges into the first word)...
            assert tokenizer.decode(run[:-1]).strip() == answer.strip(), record["id"]
            # ...then exactly one end-of-turn token (LLaVA's "</s>", TinyLLaVA's "<|endoftext|>", plain's "\n").
            assert (
                run[-1] == tokenizer.convert_tokens_to_ids(end_of_turn) or tokenizer.decode(run[-1:]) == "\n"
            )
        assert int((tokens.input_ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum()) == image_tokens
        for k in range(0, len(turns) if index < PROMPT_CHECKS else 1, 2):
            prompt = template.render_prompt(turns[: k + 1])
            prompt_ids = processor(text=prompt, images=[PHOTO] if IMAGE_TOKEN in prompt else None)[
                "input_ids"
            ][0]
            n = len(prompt_ids)
            assert tokens.input_ids[:n].tolist() == list(prompt_ids), (record["id"], k)
            assert tokens.labels[n - 1] == IGNORE_INDEX and tokens.labels[n] != IGNORE_INDEX, (
                record["id"],
                k,
            )
    assert image_at_end > 0  # records whose <image> ends the first turn are among those checked
