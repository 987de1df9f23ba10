"""`vista probe` on checkpoints of every HF VLM family that runs here (issue 15 item 4).

The checkpoints are the session's 2-step `vista train` runs (``trained_families`` in tests/conftest.py, on the tiny
world of ``vista data synth``). Ground truth: the scorer's log-probabilities of the answer tokens equal an
independent forward pass of the model on the processor's own inputs, under the own image, a blank image and an
image of another size (another tiling for LLaVA-NeXT and Idefics3); masking the image block makes the scores
independent of the image's pixels; text before the image cannot depend on it (causal attention).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import family_params
from PIL import Image

from analysis.probes.chat_scoring import ChatScorer, chat_samples
from analysis.probes.runner import PROBES, run_probes
from analysis.probes.scoring import BLANK, MASKED, OWN, Condition
from vista.chat_data import ChatDataset

FAMILIES = family_params()  # a family that cannot run here is a skip with the reason
TILED = {
    "llava_next",
    "idefics3",
    "smolvlm",
    "llava_onevision",
    "internvl",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
}
# families whose number of image tokens follows the image's size (tiles or resolution)


def _skip_unbuilt(trained_families, family):
    if family not in trained_families:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")


@pytest.fixture(scope="module")
def scored(trained_families, family_world):
    """``family -> (model, processor, samples)``: the trained checkpoint and 3 held-out samples, loaded once."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = {}
    for family, path in trained_families.items():
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
        processor = AutoProcessor.from_pretrained(path)
        data = ChatDataset(
            family_world / "heldout.json", family_world / "images", processor, max_samples=3, num_images=1
        )
        out[family] = (model, processor, chat_samples(data))
    return out


def _answer_log_probs(model, processor, text: str, image: Image.Image) -> torch.Tensor:
    """Independent reference: log p(answer token | prefix) from one plain forward pass on the processor's inputs,
    for every token training supervises (labels recomputed here from the rendered text by the chat template)."""
    inputs = processor(text=[text], images=[[image]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0].double()
    ids = inputs["input_ids"][0]
    return torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[1:, None])[:, 0], ids


def _supervised(scorer, sample, values: torch.Tensor) -> torch.Tensor:
    return values[torch.from_numpy(scorer.text_positions(sample)["supervised"])]


@pytest.mark.parametrize("family", FAMILIES)
def test_scorer_matches_an_independent_forward_under_each_image(scored, family):
    if family not in scored:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    model, processor, samples = scored[family]
    scorer = ChatScorer(model, processor, batch_size=2)  # 3 samples: one padded batch of 2, one of 1
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 64, 3), dtype=np.uint8))
    others = [wide] * len(samples)
    mean = tuple(round(255 * m) for m in processor.image_processor.image_mean)
    conditions = {
        "own": (OWN, [s.image for s in samples]),
        "blank": (BLANK, [Image.new("RGB", s.image.size, mean) for s in samples]),
        "other": (Condition.other(others), others),
    }
    for name, (condition, images) in conditions.items():
        got = scorer.token_log_probs(samples, condition)
        for sample, values, image in zip(samples, got, images):
            reference, ids = _answer_log_probs(model, processor, sample.text, image)
            labels = sample.supervised  # the answer tokens of the sample, in order
            # the answer is the same tokens at the end of both sequences (only the image block may differ in length)
            tail = len(ids) - len(sample.input_ids)
            answer_positions = labels.nonzero().flatten() + tail
            assert torch.equal(ids[answer_positions], sample.input_ids[labels])
            expected = reference[answer_positions - 1]
            assert len(expected) > 0
            assert _supervised(scorer, sample, values).numpy() == pytest.approx(expected.numpy(), abs=2e-5), (
                name
            )
    n_own = int((samples[0].input_ids == scorer.image_token_id).sum())
    n_wide = int((processor(text=[samples[0].text], images=[[wide]], return_tensors="pt")["input_ids"][0]
                  == scorer.image_token_id).sum())  # fmt: skip
    assert (n_wide != n_own) == (family in TILED), (n_own, n_wide)


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_the_image_block_removes_the_image(scored, family):
    """Masked scores are the same whatever the pixels (another image of the same size, so the same tiling),
    while the own-image scores change with them."""
    if family not in scored:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    from dataclasses import replace

    model, processor, samples = scored[family]
    scorer = ChatScorer(model, processor)
    rng = np.random.default_rng(2)
    noisy = [
        replace(s, image=Image.fromarray(rng.integers(0, 256, (*s.image.size[::-1], 3), dtype=np.uint8)))
        for s in samples
    ]
    masked, masked_noisy = scorer.token_log_probs(samples, MASKED), scorer.token_log_probs(noisy, MASKED)
    own, own_noisy = scorer.token_log_probs(samples, OWN), scorer.token_log_probs(noisy, OWN)
    for a, b, c, d in zip(masked, masked_noisy, own, own_noisy):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
        assert (c - d).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_every_probe_gives_finite_rows(scored, family):
    if family not in scored:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    model, processor, samples = scored[family]
    scorer = ChatScorer(model, processor)
    rows = run_probes(scorer, samples, PROBES, num_swaps=2)
    assert set(rows["probe"]) == set(PROBES) and np.isfinite(rows["value"]).all()
    positions = sum(len(scorer.scored_positions(s)) for s in samples)  # one row per text position and variant
    layers = model.config.get_text_config().num_hidden_layers
    counts = rows.groupby(["probe", "variant"]).size()
    assert (counts.drop("attention") == positions).all() and (counts["attention"] == positions * layers).all()
    swap = rows[rows["probe"] == "swap"]
    assert (swap["value"] <= swap["bound"] + 1e-9).all() and (swap["bound"] == math.log(3)).all()
    attention = rows[rows["probe"] == "attention"].pivot_table(
        index=["sample_id", "abs_position", "layer"], columns="variant", values="value"
    )
    assert np.allclose(attention["image"] + attention["text"], 1.0) and attention["image"].max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_vista_probe_on_a_trained_checkpoint(trained_families, family_world, tmp_path, family):
    """`vista probe` on the saved checkpoint: per-position rows for the 4 held-out samples, and a blank image that
    changes the text after the image and nothing before it."""
    _skip_unbuilt(trained_families, family)
    from vista.cli import main

    out = tmp_path / "probe"
    argv = ["probe", "--checkpoint", str(trained_families[family]), "--data", str(family_world / "heldout.json"),
            "--out", str(out), "--probes", "ablation", "--bootstrap", "20", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(out / "probes.parquet")
    run = json.loads((out / "probe_run.json").read_text())
    info = next(iter(run["checkpoints"].values()))
    assert info["template"] == "chat_template" and info["probed"] == 4 and info["skipped"] == {}
    assert rows["sample_id"].nunique() == 4 and np.isfinite(rows["value"]).all()
    for sample_id, part in rows.groupby("sample_id"):
        blank = part[part["variant"] == "blank"].sort_values("position")
        # positions are 2..T (the text tokens outside the image block, the first one has no prefix)
        assert blank["position"].tolist() == list(range(2, int(blank["text_len"].iloc[0]) + 1)), sample_id
        before, after = blank[~blank["after_image"]], blank[blank["after_image"]]
        assert len(before) and len(after)
        assert before["value"].abs().max() < 1e-9  # causal: the text before the image cannot see it
        assert after["value"].abs().max() > 1e-4  # the blank image really changes what follows it


def test_wrong_family_commands_are_one_line(trained_families, tiny_llava, tmp_path, capsys):
    """Data without any usable image, and `--template chat_template` on a checkpoint without a chat template."""
    from vista.cli import main

    family = "idefics3" if "idefics3" in trained_families else next(iter(trained_families))
    records = [{"id": f"r{i}", "image": f"missing{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]} for i in range(2)]  # fmt: skip
    (tmp_path / "no_images.json").write_text(json.dumps(records))
    data = ["--data", str(tmp_path / "no_images.json"), "--out", str(tmp_path / "out")]
    model, processor = tiny_llava
    recipe = tmp_path / "recipe"
    model.save_pretrained(recipe)
    processor.save_pretrained(recipe)
    wrong = [
        (
            ["probe", "--checkpoint", str(trained_families[family]), *data],
            3,
            "no usable sample with one image",
        ),
        (["mi", "checkpoint", "--checkpoint", str(trained_families[family]), *data], 3, "no usable sample"),
        (
            ["probe", "--checkpoint", str(recipe), "--template", "chat_template", *data],
            2,
            "has no chat template",
        ),
    ]
    for argv, code, text in wrong:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith(f"vista {argv[0]}")]
        assert len(lines) == 1 and text in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("family", family_params(["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]))
def test_m_rope_positions_come_from_the_model_and_survive_masking(scored, family):
    """Qwen2/2.5/3-VL: the scorer's positions are the model's own M-RoPE positions (3 axes; image tokens on their
    grid, so not 0..S-1), and masking the image block leaves them unchanged (the text after it is not shifted). That
    they are the positions the model uses without being given any is checked by the independent-forward test."""
    if family not in scored:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    model, processor, samples = scored[family]
    scorer = ChatScorer(model, processor)
    own, masked = scorer.batch_inputs(samples, OWN), scorer.batch_inputs(samples, MASKED)
    positions = own["position_ids"]
    assert positions.shape == (3, *own["input_ids"].shape)
    assert torch.equal(masked["position_ids"], positions)
    assert not torch.equal(masked["attention_mask"], own["attention_mask"])
    image = own["input_ids"][0] == scorer.image_token_id
    n = int(own["attention_mask"][0].sum())
    assert not torch.equal(positions[:, 0, :n], torch.arange(n).expand(3, -1))  # the grid, not 1-D
    assert len(set(positions[1, 0][image].tolist())) > 1 and len(set(positions[0, 0][image].tolist())) == 1
    text = positions[:, 0, :n][:, ~image[:n]]
    assert (text[0] == text[1]).all() and (text[1] == text[2]).all()  # text: the same position on every axis
