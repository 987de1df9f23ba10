"""The lmms-eval plugin (``--model vista``) on checkpoints of every HF VLM family that runs here (issue 15 item 5).

The checkpoints are the session's 2-step `vista train` runs (``trained_families`` in tests/conftest.py; their
``vista_run.json`` records template ``chat_template``). Ground truth is computed here without the plugin: prompts
rendered by hand through ``processor.apply_chat_template``, greedy answers from ``model.generate`` stopping at the
end-of-turn token named per family below, and continuation losses from the model's own ``labels`` loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import family_params, write_lmms_tasks
from PIL import Image

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance, unwrap_generation_output  # noqa: E402

from vista.chat_data import assistant_affixes  # noqa: E402
from vista.lmms_plugin import VistaLlava  # noqa: E402

FAMILIES = family_params()  # a family that cannot run here is a skip with the reason
QUESTIONS = ["What colour is the square?", "How many shapes are there?", "Is it red?"]
CHOICES = ["red", "two"]
MAX_NEW = 5
# What each family's chat template writes between the generation prompt and an answer, and after the answer,
# read off the templates in vista/families.py by hand; the end-of-turn token generation stops at.
AFFIXES = {
    "llava": (" ", "</s> ", "</s>"),
    "llava_next": (" ", "</s> ", "</s>"),
    "idefics3": (" ", "<end_of_utterance>\n", "<end_of_utterance>"),
    "smolvlm": (" ", "<end_of_utterance>\n", "<end_of_utterance>"),
    "gemma3": ("", "<end_of_turn>\n", "<end_of_turn>"),
    **{
        f: ("", "<|im_end|>\n", "<|im_end|>")
        for f in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "internvl")
    },
}


def _images() -> list[Image.Image]:
    """Three images of different sizes (different tilings for LLaVA-NeXT and Idefics3)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24 + 12 * i, 40, 3), dtype=np.uint8)) for i in range(3)]


def _plugin(path, **kwargs) -> VistaLlava:
    lm = VistaLlava(pretrained=str(path), **kwargs)
    lm.task_dict = {"t": {"test": [{"image": im, "question": q} for im, q in zip(_images(), QUESTIONS)]}}
    return lm


def _inst(kind: str, args: tuple, doc_id: int) -> Instance:
    return Instance(kind, args, 0, {"task": "t", "doc_id": doc_id, "repeats": 1})


def _prompt(processor, question: str) -> str:
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_template_affixes_are_found_by_rendering(family_checkpoints, family):
    if family not in family_checkpoints:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(family_checkpoints[family])
    assert assistant_affixes(processor) == AFFIXES[family][:2]


def _reference(model, processor, family) -> tuple[list[str], list[list[float]]]:
    """Without the plugin: greedy answers to :data:`QUESTIONS` and the mean NLL of each of :data:`CHOICES`."""
    tokenizer = processor.tokenizer
    gap, _, end_token = AFFIXES[family]
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_token)]
    answers, losses = [], []
    for question, image in zip(QUESTIONS, _images()):
        prompt = processor(text=[_prompt(processor, question)], images=[[image]], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**prompt, do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=stop,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        text = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.append(text.split("\n")[0].strip())
        row = []
        for choice in CHOICES:
            cont = tokenizer(gap + choice, add_special_tokens=False, return_tensors="pt")["input_ids"]
            inputs = dict(prompt)
            inputs["input_ids"] = torch.cat([prompt["input_ids"], cont], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            for key in ("token_type_ids", "mm_token_type_ids"):  # Gemma 3, Qwen: nonzero on image tokens only
                if key in prompt:
                    inputs[key] = torch.cat([prompt[key], torch.zeros_like(cont)], dim=1)
            labels = torch.full_like(inputs["input_ids"], -100)
            labels[:, -cont.shape[1] :] = cont
            with torch.no_grad():
                row.append(float(model(**inputs, labels=labels).loss))  # mean NLL of the continuation
        losses.append(row)
    return answers, losses


@pytest.fixture(scope="module")
def reference(trained_families) -> dict:
    """``family -> (answers, losses)`` of :func:`_reference` on the trained checkpoint."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = {}
    for family, path in trained_families.items():
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        out[family] = _reference(model, AutoProcessor.from_pretrained(path), family)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_plugin_generates_the_models_greedy_answer_batched(trained_families, reference, family):
    if family not in trained_families:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    answers, _ = reference[family]
    assert (
        json.loads((trained_families[family] / "vista_run.json").read_text())["template"] == "chat_template"
    )
    kwargs = {"max_new_tokens": MAX_NEW, "until": ["\n"]}
    requests = [_inst("generate_until", (q, dict(kwargs), lambda d: [d["image"]], i, "t", "test"), i)
                for i, q in enumerate(QUESTIONS)]  # fmt: skip
    lm = _plugin(trained_families[family], batch_size=2)  # two left-padded batches, images of different sizes
    assert lm.chat and lm.build_prompt(QUESTIONS[0], 1) == _prompt(lm.processor, QUESTIONS[0])
    assert lm.build_prompt("<image>\n" + QUESTIONS[0], 1) == lm.build_prompt(QUESTIONS[0], 1)
    assert lm.generate_until(requests) == answers
    assert any(answers)  # the tiny model does generate something before any stop


@pytest.mark.parametrize("family", FAMILIES)
def test_plugin_loglikelihood_is_the_models_continuation_loss(trained_families, reference, family):
    if family not in trained_families:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    _, losses = reference[family]
    lm = _plugin(trained_families[family])
    requests = [_inst("loglikelihood", (q, c, lambda d: [d["image"]], i, "t", "test"), i)
                for i, q in enumerate(QUESTIONS) for c in CHOICES]  # fmt: skip
    scores = [unwrap_generation_output(x)[0] for x in lm.loglikelihood(requests)]  # as lmms-eval reads them
    assert [s for s, _ in scores] == pytest.approx([v for row in losses for v in row], abs=1e-4)
    assert all(isinstance(greedy, bool) for _, greedy in scores)


def _write_tasks(root, answers: list[str], labels: list[int]) -> None:
    """A generation and a multiple-choice lmms-eval task over :data:`QUESTIONS` and :func:`_images`."""
    columns = {"question": QUESTIONS, "image": _images(), "answer": answers,
               "choices": [CHOICES] * len(QUESTIONS), "label": labels}  # fmt: skip
    write_lmms_tasks(root, columns, "family", MAX_NEW)


@pytest.mark.parametrize("family", ["idefics3"])
def test_vista_eval_end_to_end(trained_families, reference, tmp_path, family):
    """`vista eval` through lmms-eval on the family's checkpoint: 2 of 3 answers planted right (the model's own
    greedy answers, its lowest-loss choices), so exact_match and acc must be exactly 2/3."""
    if family not in trained_families:
        pytest.skip(f"{family} not built here")
    from vista import evaluation

    answers, losses = reference[family]
    best = [min(range(len(CHOICES)), key=row.__getitem__) for row in losses]
    _write_tasks(tmp_path, [answers[0], answers[1], "zzz impossible"], [best[0], best[1], 1 - best[2]])
    record = evaluation.evaluate(trained_families[family], "family_gen,family_mc", tmp_path / "out",
                                 include_paths=[tmp_path], batch_size=2)  # fmt: skip
    assert record["template"] == "chat_template"
    results = json.loads((tmp_path / "out" / record["results_files"][0]).read_text())["results"]
    assert results["family_gen"]["exact_match,none"] == pytest.approx(2 / 3)
    assert results["family_mc"]["acc,none"] == pytest.approx(2 / 3)
