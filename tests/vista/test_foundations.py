"""`vista foundations` on a small world: both losses fall, both parts reload, and the assembled tiny LLaVA
trains through `vista train` stage 1 then stage 2 (reduced sizes and steps; about a minute on 2 busy cores)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, CLIPModel, LlamaForCausalLM

from vista.foundations import FoundationSpec, build_foundations
from vista.world.cli import synth

REPO = Path(__file__).resolve().parents[2]
SPEC = FoundationSpec(
    clip_steps=60, clip_batch=32, lm_steps=60, lm_batch=8, lm_max_length=160, vocab_size=768
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("foundations")
    synth(root / "world", seed=3, size=160, bench_size=4)
    log = build_foundations(root / "world", root / "found", SPEC)
    return {"root": root, "log": log}


@pytest.mark.parametrize("part,factor", [("clip", 0.8), ("lm", 0.6)])
def test_losses_fall(built, part, factor):
    losses = built["log"][part]["losses"]
    assert len(losses) == 60 and all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < factor * first, (part, first, last)
    saved = json.loads((built["root"] / "found" / "foundations_log.json").read_text())
    assert saved[part]["losses"] == losses


def test_parts_reload_offline(built):
    found = built["root"] / "found"
    clip = CLIPModel.from_pretrained(found / "vision")
    assert clip.config.vision_config.image_size == 32 and clip.config.vision_config.patch_size == 8
    lm = LlamaForCausalLM.from_pretrained(found / "language")
    tokenizer = AutoTokenizer.from_pretrained(found / "language")
    ids = tokenizer("What colour is the red circle?", return_tensors="pt")["input_ids"]
    assert tokenizer.unk_token_id not in ids[0].tolist()
    assert lm(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_assembled_llava_trains_through_both_stages(built):
    from vista.cli import main

    root, world, found = built["root"], built["root"] / "world", built["root"] / "found"
    common = [f"data.image_folder={world / 'images'}", "training.logging_steps=1"]
    previous = Path.cwd()
    os.chdir(root)
    try:
        code = main(
            ["train", "--config", str(REPO / "reproduce/configs/tiny/pretrain.yaml"), *common,
             f"data.json={world / 'pretrain.json'}", f"model.vision_tower={found / 'vision'}",
             f"model.language_model={found / 'language'}", "training.output_dir=runs/pretrain"]
        )  # fmt: skip
        assert code == 0
        code = main(
            ["train", "--config", str(REPO / "reproduce/configs/tiny/finetune.yaml"), *common,
             f"data.json={world / 'finetune.json'}", "model.checkpoint=runs/pretrain",
             "training.output_dir=runs/finetune", "data.max_length=512"]
        )  # fmt: skip
        assert code == 0
    finally:
        os.chdir(previous)
    for stage in ("pretrain", "finetune"):
        history = json.loads((root / "runs" / stage / "trainer_state.json").read_text())["log_history"]
        losses = [row["loss"] for row in history if "loss" in row]
        assert len(losses) >= 10 and all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), (stage, losses)
