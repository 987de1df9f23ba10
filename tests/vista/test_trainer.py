"""VistaTrainer in-process: window-averaged metrics against an independent recomputation, the non-finite stop,
the modality-grouped sampler and the end-of-run skip report. About 20 s on 2 cores."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from train_helpers import make_world_dataset, world_tokenizer
from transformers import TrainerCallback, TrainingArguments

from vista.builder import freeze_for_stage
from vista.data import DataCollatorForVista, LlavaJsonDataset
from vista.loss import VistaConfig, VistaLossOutput
from vista.model import VistaForwardOutput, forward_with_vista
from vista.tiny import build_tiny_llava
from vista.trainer import METRICS, Metric, NonFiniteLossError, VistaTrainer

MAX_LENGTH = 512  # the tiny recipe's data.max_length: the world's long-context records fit whole


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    data = make_world_dataset(
        root / "data"
    )  # vista data synth --size 64: 58 image + 6 text-only instructions
    model, processor = build_tiny_llava(tokenizer=world_tokenizer(data), seed=0)
    dataset = LlavaJsonDataset(
        data["finetune"], data["images"], processor, "vicuna_v1", MAX_LENGTH, show_progress=False
    )
    return {"root": root, "data": data, "model": model, "processor": processor, "dataset": dataset}


def _trainer(
    setup, name: str, dataset=None, callbacks=(), vista=None, cls=VistaTrainer, **overrides
) -> VistaTrainer:
    model = copy.deepcopy(setup["model"])
    freeze_for_stage(model, "finetune")
    args = dict(
        output_dir=str(setup["root"] / name),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        max_steps=6,
        disable_tqdm=True,
        seed=0,
    )
    args.update(overrides)
    return cls(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=dataset or setup["dataset"],
        data_collator=DataCollatorForVista(setup["processor"]),
        vista_config=vista or VistaConfig(),
        callbacks=list(callbacks),
    )


class RecordBatches(VistaTrainer):
    """Keeps a copy of every micro-batch the Trainer trains on."""

    batches: list

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            self.batches.append({k: v.clone() for k, v in inputs.items()})
        return super().compute_loss(model, inputs, *args, **kwargs)


def test_window_metrics_match_an_independent_recomputation(setup):
    """lr = 0 keeps the weights fixed, so every micro-batch's CE and VISTA parts can be recomputed afterwards."""
    trainer = _trainer(setup, "window", learning_rate=0.0, logging_steps=3, gradient_accumulation_steps=2)
    trainer.__class__ = RecordBatches
    trainer.batches = []
    trainer.train()
    rows = [r for r in trainer.state.log_history if "ce_loss" in r]
    assert [r["step"] for r in rows] == [3, 6]
    model = trainer.model.eval()
    config = VistaConfig()
    parts = []
    with torch.no_grad():
        for batch in trainer.batches:
            ce = model(**batch).loss.item()  # the model's own cross-entropy, not the code under test
            out = forward_with_vista(model, batch, config)
            image_samples = int((batch["input_ids"] == model.config.image_token_id).any(dim=1).sum())
            parts.append((ce, out.vista.loss.item(), out.vista.similarity.item(), image_samples))
    assert len(parts) == 12  # 6 optimizer steps x 2 micro-batches
    for row, window in zip(rows, (parts[:6], parts[6:])):
        assert row["ce_loss"] == pytest.approx(sum(p[0] for p in window) / 6, rel=1e-5)
        assert row["vista_loss"] == pytest.approx(sum(p[1] for p in window) / 6, rel=1e-5)
        samples = sum(p[3] for p in window)
        assert row["vista_samples"] == samples
        assert row["vista_similarity"] == pytest.approx(sum(p[2] * p[3] for p in window) / samples, rel=1e-5)
        assert row["loss"] == pytest.approx(row["ce_loss"] + row["vista_loss"], rel=1e-5)


def test_baseline_logs_vista_without_adding_it(setup):
    trainer = _trainer(setup, "baseline", vista=VistaConfig(enabled=False), max_steps=2)
    trainer.train()
    for row in (r for r in trainer.state.log_history if "ce_loss" in r):
        assert row["loss"] == pytest.approx(row["ce_loss"], rel=1e-6)
        assert row["vista_loss"] > 0


class PoisonAtStep(TrainerCallback):
    """Sets one LM weight to NaN after optimizer step ``step``: the next step's loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.model.language_model.norm.weight[0] = float("nan")


def test_nan_loss_stops_before_the_next_checkpoint(setup):
    trainer = _trainer(
        setup, "nan", callbacks=[PoisonAtStep(2)], logging_steps=5, save_strategy="steps", save_steps=1
    )
    assert trainer.args.logging_nan_inf_filter is False
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    assert "non-finite training loss at optimizer step 3" in message
    assert "loss=nan ce_loss=nan vista_loss=nan" in message
    folder = setup["root"] / "nan"
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def _result(loss: float, ce: float, vista: float, similarity: float = 0.5, samples: int = 4):
    """A forward result with the given parts (what compute_loss hands to the trainer's recorder)."""
    t = torch.tensor
    parts = VistaLossOutput(loss=t(vista), similarity=t(similarity), num_samples=t(samples))
    return VistaForwardOutput(loss=t(loss), ce_loss=t(ce), vista=parts, outputs=None)


def test_inf_loss_is_reported_with_its_parts(setup):
    trainer = _trainer(setup, "inf")
    trainer._record(_result(1.0, 1.0, 0.0))
    trainer.state.global_step = 6
    trainer._record(_result(math.inf, math.inf, 0.25))
    trainer._record(_result(math.nan, math.nan, 0.0))
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(rank 0\): loss=inf ce_loss=inf vista_loss=0.25"):
        trainer.check_finite()


def _modality_mix(trainer: VistaTrainer, image_token_id: int) -> int:
    mixed = 0
    for batch in trainer.get_train_dataloader():
        has_image = (batch["input_ids"] == image_token_id).any(dim=1)
        mixed += int(bool(has_image.any()) and not bool(has_image.all()))
    return mixed


def test_group_by_modality_length_gives_single_modality_batches(setup):
    """The world's instruction mix (58 image + 6 text-only samples) in batches of 4: LLaVA's sampler leaves at most
    one mixed batch."""
    counts = json.loads(setup["data"]["manifest"].read_text())["counts"]
    assert (counts["finetune"], counts["finetune_text_only"]) == (64, 6)
    image_token_id = setup["model"].config.image_token_id
    grouped = _trainer(setup, "grouped")
    grouped.group_by_modality_length = True
    assert type(grouped._get_train_sampler()).__name__ == "ModalityLengthGroupedSampler"
    assert _modality_mix(grouped, image_token_id) <= 1
    assert _modality_mix(_trainer(setup, "random"), image_token_id) >= 2  # a random order mixes them


def test_length_group_megabatches_batches_similar_lengths(setup):
    """Pools of 8 megabatches sorted by length pad less than LLaVA's single megabatch (one process, batch 4)."""
    lengths = np.abs(np.asarray(setup["dataset"].modality_lengths))

    def padded_tokens(trainer) -> int:
        order = np.asarray(list(trainer._get_train_sampler()))
        batches = [lengths[order[i : i + 4]] for i in range(0, len(order), 4)]
        return int(sum(batch.max() * len(batch) for batch in batches))

    plain, pooled = _trainer(setup, "plain"), _trainer(setup, "pooled")
    for trainer, pools in ((plain, 1), (pooled, 8)):
        trainer.group_by_modality_length, trainer.length_group_megabatches = True, pools
    assert pooled._get_train_sampler().megabatch_mult == 8
    assert padded_tokens(pooled) < padded_tokens(plain)
    assert sorted(pooled._get_train_sampler()) == list(range(len(lengths)))


def test_sorted_micro_batches_keep_each_steps_records_and_pad_less(setup):
    """With gradient accumulation 2 on one process, an optimizer step's records are the same with LLaVA's balanced
    micro-batches and with length-sorted ones; sorted, the longest come first and the batches pad less."""
    lengths = np.abs(np.asarray(setup["dataset"].modality_lengths))
    balanced = _trainer(setup, "balanced", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    ordered = _trainer(setup, "ordered", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    for trainer, flag in ((balanced, False), (ordered, True)):
        trainer.group_by_modality_length, trainer.sorted_micro_batches = True, flag
    a, b = (np.asarray(list(t._get_train_sampler())) for t in (balanced, ordered))
    steps = len(a) // 4 * 4
    assert [sorted(a[i : i + 4]) for i in range(0, steps, 4)] == [
        sorted(b[i : i + 4]) for i in range(0, steps, 4)
    ]
    for i in range(0, steps, 4):
        assert lengths[b[i : i + 2]].min() >= lengths[b[i + 2 : i + 4]].max()  # longest micro-batch first

    def padded_tokens(order: np.ndarray) -> int:
        return int(sum(lengths[order[i : i + 2]].max() * 2 for i in range(0, steps, 2)))

    assert padded_tokens(b) < padded_tokens(a)


def test_skip_report_is_logged_at_the_end(setup, tmp_path):
    records = json.loads(setup["data"]["pretrain"].read_text())[:8]
    records[3]["image"] = "does-not-exist.png"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    dataset = LlavaJsonDataset(
        path,
        setup["data"]["images"],
        setup["processor"],
        "plain",
        MAX_LENGTH,
        on_bad_sample="skip",
        show_progress=False,
    )
    trainer = _trainer(setup, "skips", dataset=dataset, max_steps=1)
    trainer.train()
    report = trainer.state.log_history[-1]["data_skip_report"]
    assert report["num_records"] == 8 and report["num_skipped"] == 1
    assert report["counts"] == {"image_missing": 1}
    assert f"id={records[3]['id']!r}" in report["examples"]["image_missing"][0]


class ExtraMetrics(VistaTrainer):
    """A loss part and a weighted metric added with one line each."""

    metrics = (
        *METRICS,
        Metric("double_vista", lambda r: 2 * r.vista.loss),
        Metric("per_sample_ce", lambda r: r.ce_loss, lambda r: r.vista.num_samples, "counted"),
    )


def test_a_metric_is_one_line_and_is_logged_and_checked(setup):
    trainer = _trainer(setup, "extra", cls=ExtraMetrics, max_steps=2)
    trainer.train()
    rows = [r for r in trainer.state.log_history if "ce_loss" in r]
    assert len(rows) == 2
    for row in rows:
        assert row["double_vista"] == pytest.approx(2 * row["vista_loss"], rel=1e-6)
        assert row["counted"] == row["vista_samples"] > 0
        assert math.isfinite(row["per_sample_ce"])
    trainer._record(_result(math.nan, math.nan, 0.5))  # the new loss part is named in the non-finite report
    with pytest.raises(NonFiniteLossError, match=r"ce_loss=nan vista_loss=0.5 double_vista=1.0"):
        trainer.check_finite()


def test_sorted_micro_batches_are_refused_on_several_processes():
    from vista.errors import UsageError
    from vista.trainer import check_sorted_micro_batches

    check_sorted_micro_batches(True, 1)
    check_sorted_micro_batches(False, 4)
    with pytest.raises(UsageError, match="data.sorted_micro_batches with 2 processes"):
        check_sorted_micro_batches(True, 2)
