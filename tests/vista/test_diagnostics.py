"""Logged diagnostics and viral_loss equal an independent recomputation (numpy, explicit unique rows) on logged steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import make_world_dataset, world_tokenizer
from transformers import TrainingArguments

from vista.builder import freeze_for_stage
from vista.data import DataCollatorForVista, LlavaJsonDataset
from vista.diagnostics import NAMES
from vista.loss import VistaConfig
from vista.objective_trainer import ObjectivesTrainer
from vista.objectives import ObjectivesRuntime, forward_with_objectives, objectives_config_from
from vista.tiny import build_tiny_llava


class RecordBatches(ObjectivesTrainer):
    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            self.batches.append(({k: v.clone() for k, v in inputs.items()}, self._logs_this_step()))
        return super().compute_loss(model, inputs, *args, **kwargs)


def independent_diagnostics(model, batch) -> np.ndarray:
    """The five diagnostics from the model's own hidden states and embedding table, sample by sample."""
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    hidden = out.hidden_states[-1].double().numpy()  # after the final norm
    table = model.get_input_embeddings().weight.detach().double().numpy()
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)
    image = (ids == model.config.image_token_id) & mask
    text = mask & ~image
    hv_norms, cosines, used = [], [], set()
    for b in range(ids.shape[0]):
        if not image[b].any() or not text[b].any():
            continue
        h_v = hidden[b, np.flatnonzero(image[b])[-1]]
        target = table[ids[b][text[b]]].mean(axis=0)
        hv_norms.append(np.linalg.norm(h_v))
        cosines.append(h_v @ target / (np.linalg.norm(h_v) * np.linalg.norm(target)))
        used |= set(ids[b][text[b]].tolist())
    rows = table[sorted(set(ids[text].tolist()))]
    n = len(rows)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    pair = unit @ unit.T
    pair_mean = (pair.sum() - np.trace(pair)) / (n * (n - 1))
    s = np.linalg.svd(rows, compute_uv=False)
    p = s[s > 0] / s.sum()
    erank = np.exp(-(p * np.log(p)).sum())
    return np.array(
        [np.mean(hv_norms), np.linalg.norm(rows, axis=1).mean(), pair_mean, erank, np.mean(cosines)]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnostics")
    data = make_world_dataset(root / "data")  # vista data synth --size 64
    model, processor = build_tiny_llava(tokenizer=world_tokenizer(data), seed=0)
    freeze_for_stage(model, "finetune")
    dataset = LlavaJsonDataset(
        data["finetune"],
        data["images"],
        processor,
        "vicuna_v1",
        512,  # the tiny recipe's max_length: the world's long-context records fit whole
        show_progress=False,
    )
    runtime = ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True}}))
    args = TrainingArguments(
        output_dir=str(root / "run"), per_device_train_batch_size=4, learning_rate=0.0, logging_steps=2,
        gradient_accumulation_steps=2, save_strategy="no", report_to=[], remove_unused_columns=False,
        max_steps=4, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = RecordBatches(
        runtime=runtime, model=model, args=args, train_dataset=dataset,
        data_collator=DataCollatorForVista(processor), vista_config=VistaConfig(),
    )  # fmt: skip
    trainer.batches = []
    trainer.train()
    return trainer


def test_logged_diagnostics_equal_an_independent_recomputation(trained):
    rows = [r for r in trained.state.log_history if "ce_loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    flags = [logged for _, logged in trained.batches]
    assert flags == [False, False, True, True] * 2  # only the logged step's micro-batches are diagnosed
    model = trained.model.eval()
    for row, window in zip(rows, (trained.batches[2:4], trained.batches[6:8])):
        expected = np.nanmean([independent_diagnostics(model, b) for b, _ in window], axis=0)
        logged = np.array([row[name] for name in NAMES])
        np.testing.assert_allclose(logged, expected, rtol=2e-4)


def test_logged_viral_loss_is_the_window_mean(trained):
    rows = [r for r in trained.state.log_history if "viral_loss" in r]
    model = trained.model.eval()
    values = []
    with torch.no_grad():
        for batch, _ in trained.batches:
            out = forward_with_objectives(model, batch, VistaConfig(), trained.runtime, diagnostics=False)
            values.append(out.viral_loss.item())
    assert [r["viral_loss"] for r in rows] == pytest.approx(
        [np.mean(values[:4]), np.mean(values[4:])], rel=1e-5
    )
    for row in rows:
        assert row["loss"] == pytest.approx(row["ce_loss"] + row["vista_loss"] + row["viral_loss"], rel=1e-5)
