"""vista.lmms_plugin + vista.evaluation: an lmms-eval run on CPU of a tiny checkpoint on local tasks.

Ground truth is planted: the answers of half the documents are the model's greedy output computed here
independently (``model.generate`` on the template's prompt), the other half cannot be produced, so lmms-eval's
exact_match must be exactly 0.5; likewise for a multiple-choice task scored by log-likelihood (HF's own loss).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval")

from conftest import write_lmms_tasks  # noqa: E402
from lmms_eval.api.instance import Instance, unwrap_generation_output  # noqa: E402

from vista import evaluation  # noqa: E402
from vista.lmms_plugin import MANIFEST, VistaLlava  # noqa: E402
from vista.run_metadata import recorded_package_version, resolve_template_name  # noqa: E402
from vista.templates import get_template  # noqa: E402
from vista.tiny import build_tiny_llava, save_tiny_llava  # noqa: E402

TEMPLATE = "vicuna_v1"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 20)]
QUESTIONS = ["What colour is the square?", "Describe the image.", "What is in the picture?", "Is it red?"]
CHOICES = ["red", "green", "blue", "yellow"]
MAX_NEW = 4


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 36), c) for c in COLOURS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model, processor = build_tiny_llava(seed=0)
    path = save_tiny_llava(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny-vista")
    run = {"preset": "tiny", "stage": "finetune", "variant": "vista", "template": TEMPLATE, "seed": 3,
           "config": {"data": {"template": TEMPLATE, "image_aspect": "resize"}}}  # the keys vista train writes  # fmt: skip
    (path / "vista_run.json").write_text(json.dumps(run))
    return path


@pytest.fixture(scope="module")
def reference(checkpoint):
    """Independent computations on the saved checkpoint: greedy answers and continuation log-likelihoods."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    template = get_template(TEMPLATE)
    answers, logliks = [], []
    for q, img in zip(QUESTIONS, _images()):
        prompt = f"{template.system}USER: <image>\n{q} ASSISTANT:"
        assert prompt == template.render_prompt([{"role": "user", "content": q.join(["<image>\n", ""])}])
        inputs = processor(text=[prompt], images=[img], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW,
                                 pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
        answers.append(processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                       .split("\n")[0].strip())  # fmt: skip
        row = []
        for choice in CHOICES:
            cont = processor.tokenizer(" " + choice, add_special_tokens=False, return_tensors="pt")[
                "input_ids"
            ]
            ids = torch.cat([inputs["input_ids"], cont], dim=1)
            labels = torch.full_like(ids, -100)
            labels[:, -cont.shape[1] :] = cont
            with torch.no_grad():
                loss = model(input_ids=ids, pixel_values=inputs["pixel_values"], labels=labels).loss
            row.append(float(loss))  # mean NLL over the continuation tokens
        logliks.append(row)
    return answers, logliks


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, reference) -> Path:
    """Two local lmms-eval tasks over a parquet file with embedded images; half the answers planted right."""

    answers, logliks = reference
    best = [min(range(len(CHOICES)), key=row.__getitem__) for row in logliks]  # lowest loss wins
    root = tmp_path_factory.mktemp("tasks")
    write_lmms_tasks(root, {
        "question": QUESTIONS,
        "image": _images(),
        "answer": [answers[0], answers[1], "zzz impossible", "qqq impossible"],
        "choices": [CHOICES] * 4,
        "label": [best[0], best[1], (best[2] + 1) % 4, (best[3] + 2) % 4],
    }, "vista_tiny", MAX_NEW)  # fmt: skip
    return root


def _plugin(checkpoint, **kwargs) -> VistaLlava:
    lm = VistaLlava(pretrained=str(checkpoint), **kwargs)
    lm.task_dict = {"t": {"test": [{"image": img, "question": q} for img, q in zip(_images(), QUESTIONS)]}}
    return lm


def _inst(kind: str, args: tuple, doc_id: int = 0) -> Instance:
    return Instance(kind, args, 0, {"task": "t", "doc_id": doc_id, "repeats": 1})


def _gen_requests(n: int = 4) -> list[Instance]:
    kwargs = {"max_new_tokens": MAX_NEW, "until": ["\n"]}
    return [_inst("generate_until", (QUESTIONS[i], dict(kwargs), lambda d: [d["image"]], i, "t", "test"), i)
            for i in range(n)]  # fmt: skip


# ------------------------------------------------------------------ the plugin on its own


def test_manifest_and_template_resolution(checkpoint, tmp_path):
    import lmms_eval.models as models

    manifest = MANIFEST()
    assert manifest.model_id == "vista" and models.get_model("vista") is VistaLlava
    assert resolve_template_name(checkpoint) == TEMPLATE
    (tmp_path / "nested" / "final").mkdir(parents=True)  # metadata in the parent folder, template nested
    (tmp_path / "nested" / "run_metadata.json").write_text(
        json.dumps({"config": {"data": {"template": "phi"}}})
    )
    assert resolve_template_name(tmp_path / "nested" / "final") == "phi"
    assert resolve_template_name(checkpoint, "phi") == "phi"
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="cannot tell the conversation template.*--template vicuna_v1"):
        resolve_template_name(tmp_path / "bare")


def test_generate_matches_direct_greedy_and_batching(checkpoint, reference):
    answers, _ = reference
    single = _plugin(checkpoint).generate_until(_gen_requests())
    assert single == answers
    batched = _plugin(checkpoint, batch_size=3).generate_until(_gen_requests())  # left padding, 2 batches
    assert batched == answers


def test_loglikelihood_matches_hf_loss(checkpoint, reference):
    _, logliks = reference
    lm = _plugin(checkpoint)
    pairs = [(i, c) for i in range(4) for c in CHOICES]
    requests = [
        _inst("loglikelihood", (QUESTIONS[i], c, lambda d: [d["image"]], i, "t", "test"), i) for i, c in pairs
    ]
    scores = [unwrap_generation_output(x)[0] for x in lm.loglikelihood(requests)]  # as lmms-eval reads them
    got = [s for s, _ in scores]
    assert got == pytest.approx([v for row in logliks for v in row], abs=1e-4)
    assert all(s > 0 for s in got) and all(isinstance(g, bool) for _, g in scores)


def test_multi_round_follows_the_task_protocol(checkpoint, reference):
    answers, _ = reference
    lm = _plugin(checkpoint)

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        if round_idx == 2:
            return None, None, True, previous_output, None
        return [lm.task_dict["t"]["test"][1]["image"]], QUESTIONS[1], False, previous_output, {"k": round_idx}

    args = (
        QUESTIONS[0],
        {"max_new_tokens": MAX_NEW, "until": ["\n"]},
        lambda d: [d["image"]],
        doc_to_text,
        0,
        "t",
        "test",
    )
    (result,) = lm.generate_until_multi_round([_inst("generate_until_multi_round", args)])
    assert result == (answers[0], answers[1])


# ------------------------------------------------------------------ end to end through lmms-eval


def test_vista_eval_end_to_end_and_tables_loader(checkpoint, tasks, tmp_path):
    from analysis.tables import load_lmms_results
    from vista.cli import main

    out = tmp_path / "results" / "run"
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--tasks",
        "local",
        "--include-path",
        str(tasks),
        "--out",
        str(out),
    ]
    assert main([*argv, "--log-samples"]) == 0
    record = json.loads((out / evaluation.SIDECAR).read_text())
    assert (record["family"], record["variant"], record["seed"]) == ("tiny", "vista", 3)
    assert record["template"] == TEMPLATE and record["packages"]["lmms_eval"] == "0.7.3"
    assert recorded_package_version(record, "lmms-eval") == "0.7.3" and record["git"]["commit"]
    assert sorted(record["tasks"]) == ["vista_tiny_gen", "vista_tiny_mc"]
    results_file = out / record["results_files"][0]
    assert results_file.parent.parent == out and results_file.name.endswith("_results.json")
    raw = json.loads(results_file.read_text())
    assert raw["config"]["model_backend"].startswith("vista.lmms_plugin.VistaLlava")

    long = load_lmms_results([tmp_path / "results"])
    values = {(r.task, r.metric_key): r.value for r in long.itertuples()}
    assert values[("vista_tiny_gen", "exact_match,none")] == pytest.approx(0.5)
    assert values[("vista_tiny_mc", "acc,none")] == pytest.approx(0.5)
    assert set(long.layout) == {"0.7.x"} and set(long.run) == {"tiny/vista/3"}
    assert set(long.lmms_eval_version) == {"0.7.3"}
    samples = list(out.rglob("*_samples_vista_tiny_gen.jsonl"))
    assert len(samples) == 1


def test_eval_fails_loudly(checkpoint, tasks, tmp_path, monkeypatch):
    """lmms-eval's own failures stay loud (an unknown task name is the user's: see the one-line test below)."""
    import lmms_eval.__main__ as lmms_main

    def crash(args):
        raise RuntimeError("model backend exploded")

    monkeypatch.setattr(lmms_main, "cli_evaluate_single", crash)
    with pytest.raises(evaluation.EvaluationError, match="lmms-eval failed.*model backend exploded"):
        evaluation.evaluate(checkpoint, "vista_tiny_gen", tmp_path / "a", include_paths=[tasks])
    monkeypatch.setattr(lmms_main, "cli_evaluate_single", lambda args: (None, None))
    with pytest.raises(evaluation.EvaluationError, match="wrote no results file"):
        evaluation.evaluate(checkpoint, "vista_tiny_gen", tmp_path / "b", include_paths=[tasks])
    with pytest.raises(ValueError, match="--tasks local needs --include-path"):
        evaluation.expand_tasks("local")


def test_paper_preset_is_the_benchmark_map():
    from analysis.tables import load_benchmark_map

    assert evaluation.expand_tasks("paper") == list(dict.fromkeys(b.task for b in load_benchmark_map()))
    assert evaluation.expand_tasks("paper,gqa,extra")[-1] == "extra"


def test_vista_eval_unknown_task_is_one_line(checkpoint, tasks, tmp_path, capsys):
    """A mistyped task name is the user's error: one line naming it, exit 2, no traceback."""
    from vista.cli import main

    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--tasks",
        "vista_tiny_gne",
        "--include-path",
        str(tasks),
    ]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "lmms-eval knows no task vista_tiny_gne" in err and "Traceback" not in err, err
