"""`vista mi checkpoint` on checkpoints of every HF VLM family that runs here (issue 15 item 4).

The checkpoints are the session's 2-step `vista train` runs (``trained_families`` in tests/conftest.py).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import family_params

from vista.chat_data import ChatDataset
from vista.loss import IGNORE_INDEX


@pytest.mark.parametrize("family", family_params())
def test_vista_mi_states_are_the_models_own(trained_families, family_world, tmp_path, family):
    """`vista mi checkpoint` runs on the family's checkpoint; its h_v / e_t are the final hidden state at the last
    image token and the input embeddings of the text tokens (VISTA's definitions), from an independent forward."""
    if family not in trained_families:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from analysis.mi.states import load_states
    from vista.cli import main

    checkpoint, out = trained_families[family], tmp_path / "mi"
    argv = ["mi", "checkpoint", "--checkpoint", str(checkpoint), "--data", str(family_world / "finetune.json"),
            "--image-folder", str(family_world / "images"), "--out", str(out), "--methods", "gaussian",
            "--pca-dim", "2", "--min-samples", "4", "--max-position", "4", "--save-states"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "mi_by_position.csv")
    assert table["mi"].notna().any() and summary["samples"] == 8
    states = load_states(out / "states.npz")
    assert len(states) == 8 - summary["no_image"] >= 4

    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    dataset = ChatDataset(family_world / "finetune.json", family_world / "images", processor)
    first = states[0]
    sample = dataset[first.index]
    inputs = processor(text=[sample["text"]], images=[sample["images"]], return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state[0]
        embeds = model.get_input_embeddings()(inputs["input_ids"])[0]
    ids = inputs["input_ids"][0]
    image = ids == model.config.image_token_id
    last = int(image.nonzero().max())
    assert np.allclose(first.h_v, hidden[last].numpy(), atol=1e-5)
    assert np.allclose(first.e_t, embeds[~image].numpy(), atol=1e-6)
    assert first.supervised.tolist() == (torch.tensor(sample["labels"])[~image] != IGNORE_INDEX).tolist()
