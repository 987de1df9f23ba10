"""Any HF vision-language family: tiny checkpoints, chat-template labels, `vista train` with VISTA (issue 15).

One tiny checkpoint per family (``family_checkpoints``), one tiny synthetic world (``family_world``, ``vista data
synth``, 8 records) and one 2-step ``vista train`` run per family (``trained_families``) are built once per session
in ``tests/conftest.py`` (the probe, MI and plugin tests of the families share them). Families whose processor
cannot be constructed here (no torchvision) are checked to fail with the named error, and that transformers itself
fails without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAMILY_CONFIG, family_params
from PIL import Image
from train_helpers import REPO
from transformers import AutoModelForImageTextToText, AutoProcessor

from vista.chat_data import (
    ChatCollator,
    ChatDataset,
    LabelAlignmentError,
    PlaceholderMismatchError,
    encode_chat,
    to_messages,
)
from vista.families import FAMILIES, freeze_for_stage, missing_requirements, part_of
from vista.loss import IGNORE_INDEX, VistaConfig, build_vista_masks, vista_loss
from vista.tiny_models import MissingDependencyError, save_tiny_model
from vista.train import free_port

BLOCKED = sorted(f for f in FAMILIES if missing_requirements(FAMILIES[f]))
CONFIG = FAMILY_CONFIG

# One multi-turn, two-image record, and the supervised text of each assistant turn worked out by hand from each
# family's template (answer + end-of-turn text; a trailing separator the tokenizer merges into the next turn's
# first token stays unsupervised).
RECORD = {
    "id": "two-images",
    "messages": [
        {"role": "user", "content": "<image>\nDescribe the image."},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "<image>\nHow many?"},
        {"role": "assistant", "content": "Two."},
    ],
    "images": ["a.png", "b.png"],
}
EXPECTED_ANSWERS = {
    "llava": [" A red square.</s>", " Two.</s> "],
    "llava_next": [" A red square.</s>", " Two.</s> "],
    "idefics3": [" A red square.<end_of_utterance>\n", " Two.<end_of_utterance>\n"],
    "smolvlm": [" A red square.<end_of_utterance>\n", " Two.<end_of_utterance>\n"],
    "gemma3": ["A red square.<end_of_turn>\n", "Two.<end_of_turn>\n"],
    "qwen2_vl": ["A red square.<|im_end|>\n", "Two.<|im_end|>\n"],
    "qwen2_5_vl": ["A red square.<|im_end|>\n", "Two.<|im_end|>\n"],
    "qwen3_vl": ["A red square.<|im_end|>\n", "Two.<|im_end|>\n"],
    "llava_onevision": ["A red square.<|im_end|>\n", "Two.<|im_end|>\n"],
    "internvl": ["A red square.<|im_end|>\n", "Two.<|im_end|>\n"],
}
# The token right after the anchor (the last image token of the last image), from each family's token layout.
AFTER_ANCHOR = {
    "llava": "\n",
    "llava_next": "\n",
    "idefics3": "<fake_token_around_image>",
    "smolvlm": "<fake_token_around_image>",
    "gemma3": "<end_of_image>",
    "qwen2_vl": "<|vision_end|>",
    "qwen2_5_vl": "<|vision_end|>",
    "qwen3_vl": "<|vision_end|>",
    "llava_onevision": "\n",
    "internvl": "</img>",
}


@pytest.fixture(scope="session")
def loaded(family_checkpoints) -> dict:
    """``family -> (model, processor)`` loaded back with the Auto classes. Do not mutate."""
    return {
        f: (AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path))
        for f, path in family_checkpoints.items()
    }


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)) for _ in range(n)]


def _runs(labels: list[int]) -> list[tuple[int, int]]:
    """Contiguous [start, end) spans where labels are set."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("family", family_params())
def test_checkpoint_loads_with_auto_classes(loaded, family):
    if family not in loaded:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    model, processor = loaded[family]
    assert model.config.model_type == family
    image_id = processor.tokenizer.convert_tokens_to_ids(FAMILIES[family].image_token)
    assert model.config.image_token_id == image_id
    assert processor.chat_template == FAMILIES[family].chat_template


@pytest.mark.parametrize("family", BLOCKED)
def test_blocked_family_is_a_named_error(tmp_path, family):
    """Without torchvision (and num2words for SmolVLM) transformers itself cannot build these processors."""
    with pytest.raises(MissingDependencyError, match=missing_requirements(FAMILIES[family])[0]):
        save_tiny_model(family, tmp_path / family)
    if "torchvision" in missing_requirements(FAMILIES[family]):
        import transformers

        with pytest.raises(AttributeError, match="_extra_content"):
            transformers.Qwen2VLProcessor(
                image_processor=transformers.Qwen2VLImageProcessorPil(),
                tokenizer=__import__("vista.tiny", fromlist=["x"]).build_tokenizer(),
                video_processor=None,
            )


@pytest.mark.parametrize("family", family_params())
def test_labels_match_hand_computed_spans(loaded, family):
    if family not in loaded:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    _, processor = loaded[family]
    messages, paths = to_messages(RECORD)
    sample = encode_chat(processor, messages, _images(len(paths)))
    ids, labels = sample["input_ids"], sample["labels"]
    spans = _runs(labels)
    decoded = [processor.tokenizer.decode(ids[a:b]) for a, b in spans]
    assert decoded == EXPECTED_ANSWERS[family]
    assert all(labels[i] == ids[i] for a, b in spans for i in range(a, b))
    image_id = processor.tokenizer.convert_tokens_to_ids(FAMILIES[family].image_token)
    assert sum(i == image_id for i in ids) > 0 and not any(label == image_id for label in labels), (
        "image tokens must be present and never supervised"
    )
    # The answers come after every image of their turn: the last span starts after the last image token.
    assert spans[-1][0] > max(i for i, t in enumerate(ids) if t == image_id)


@pytest.mark.parametrize("family", family_params(list(AFTER_ANCHOR)))
def test_anchor_is_last_image_token_of_last_image(loaded, family):
    if family not in loaded:
        pytest.skip("family not built here")
    model, processor = loaded[family]
    messages, paths = to_messages(RECORD)
    sample = encode_chat(processor, messages, _images(len(paths)))
    ids = torch.tensor([sample["input_ids"]])
    image_mask, _ = build_vista_masks(
        ids, None, model.config.image_token_id, torch.tensor([sample["labels"]]), "text"
    )
    last = int(image_mask[0].nonzero().max())
    assert processor.tokenizer.decode(ids[0, last + 1 : last + 2]).strip() == AFTER_ANCHOR[family].strip()
    # anchor="last" uses exactly that position: a hidden-state change elsewhere leaves the term unchanged.
    hidden, embeds = torch.randn(1, ids.shape[1], 4), torch.randn(1, ids.shape[1], 4)
    text_mask = ~image_mask
    base = vista_loss(hidden, embeds, image_mask, text_mask).loss
    moved = hidden.clone()
    moved[0, last - 1] += 1.0
    assert torch.equal(vista_loss(moved, embeds, image_mask, text_mask).loss, base)
    moved[0, last] += 1.0
    assert not torch.equal(vista_loss(moved, embeds, image_mask, text_mask).loss, base)
    assert not torch.equal(
        vista_loss(moved, embeds, image_mask, text_mask, VistaConfig(anchor="mean")).loss, base
    )


def test_placeholder_mismatch_is_named_or_counted(loaded, tmp_path):
    family = "llava" if "llava" in loaded else next(iter(loaded))
    _, processor = loaded[family]
    _images(1)[0].save(tmp_path / "a.png")
    good = {
        "id": "ok",
        "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yes."}],
        "image": "a.png",
    }
    bad = {
        **good,
        "id": "bad",
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nHi"},
            {"from": "gpt", "value": "Yes."},
        ],
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(
        PlaceholderMismatchError, match=r"record 1 \(id='bad'\).*2 image placeholders for 1 images"
    ):
        ChatDataset(path, tmp_path, processor)
    dataset = ChatDataset(path, tmp_path, processor, on_bad_sample="skip")
    assert len(dataset) == 1 and dataset.skip_report.counts == {"image_count_mismatch": 1}
    no_answer = {"id": "q", "conversations": [{"from": "human", "value": "<image>\nHi"}], "image": "a.png"}
    messages, paths = to_messages(no_answer)
    with pytest.raises(LabelAlignmentError, match="no assistant tokens"):
        encode_chat(processor, messages, _images(1))


def test_freezing_table_covers_every_parameter(loaded):
    for family, (model, _) in loaded.items():
        import copy

        report = freeze_for_stage(copy.deepcopy(model), FAMILIES[family], "finetune")
        assert report["vision"]["total"] > 0 and report["vision"]["trainable"] == 0, family
        assert (
            report["projector"]["total"] > 0
            and report["projector"]["trainable"] == report["projector"]["total"]
        )
        assert report["all"]["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", family_params())
def test_vista_train_two_steps_logs_the_independent_vista_term(family_checkpoints, trained_families, family_world,
                                                               family):  # fmt: skip
    """Two optimizer steps of `vista train` (one batch = the 4 records; the ``trained_families`` run); step 1's
    logged VISTA term equals ``vista_loss`` on states captured without hooks (the base model's last hidden state,
    the embedding layer)."""
    if family not in family_checkpoints:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    checkpoint, out = family_checkpoints[family], trained_families[family]
    history = [
        row
        for row in json.loads((out / "trainer_state.json").read_text())["log_history"]
        if "vista_loss" in row
    ]
    assert len(history) == 2 and history[0]["vista_samples"] == 4

    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    dataset = ChatDataset(family_world / "finetune_4.json", family_world / "images", processor)
    batch = ChatCollator(processor)([dataset[i] for i in range(len(dataset))])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state
        embeds = model.get_input_embeddings()(batch["input_ids"])
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"], batch["attention_mask"], model.config.image_token_id, batch["labels"], "text"
    )
    expected = vista_loss(hidden, embeds, image_mask, text_mask).loss.item()
    assert history[0]["vista_loss"] == pytest.approx(expected, rel=1e-4)
    trained = AutoModelForImageTextToText.from_pretrained(out)
    assert trained.config.model_type == family
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, model.state_dict()[n])]
    # part_of, not the vision prefix alone: the Qwen projector (model.visual.merger.) lies inside model.visual.
    assert changed and not any(part_of(FAMILIES[family], n) == "vision" for n in changed), (
        "vision tower frozen"
    )
    assert any(part_of(FAMILIES[family], n) == "projector" for n in changed)


@pytest.mark.slow
def test_text_only_batch_under_zero3_in_two_processes_does_not_hang(
    family_checkpoints, family_world, tmp_path
):
    """Two ranks, one micro-batch each: one rank's batch has no image. Without the text-only guard
    (vista.any_vlm._TextOnlyGuardMixin) the image rank waits forever in the vision tower's ZeRO-3 all-gather."""
    import subprocess
    import sys

    from train_helpers import REPO, cli_env

    family = "idefics3" if "idefics3" in family_checkpoints else next(iter(family_checkpoints))
    records = json.loads((family_world / "finetune_4.json").read_text())
    text_only = json.loads(json.dumps(records[1]))
    text_only.pop("image")
    text_only["conversations"][0]["value"] = (
        text_only["conversations"][0]["value"].replace("<image>", "").strip()
    )
    (tmp_path / "mixed.json").write_text(json.dumps([records[0], text_only]))
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "deepspeed"),
        "--no_local_rank",
        "--num_gpus",
        "2",
        "--master_port",
        str(port),
        "--module",
        "vista.cli",
        "train",
        "--config",
        str(REPO / CONFIG),
        f"model.pretrained={family_checkpoints[family]}",
        f"data.json={tmp_path / 'mixed.json'}",
        f"data.image_folder={family_world / 'images'}",
        "training.max_steps=2",
        "training.per_device_train_batch_size=1",
        f"training.output_dir={tmp_path / 'z3'}",
        "training.report_to=[]",
        "model.attn_implementation=eager",
        f"training.deepspeed={REPO / 'reproduce/configs/deepspeed/zero3.json'}",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = json.loads((tmp_path / "z3" / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "vista_loss" in row]
    assert len(steps) == 2 and all(row["vista_samples"] == 1 for row in steps)  # one image sample per step
    assert not list(
        Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")
    )  # each rank freed its buffer


def _recipe_run(trainer_class, args, family_checkpoints, family_world, hf_dataset=False, **extra):
    from vista.loss import VistaConfig
    from vista.recipes import as_hf_dataset, with_vista

    family = "llava" if "llava" in family_checkpoints else next(iter(family_checkpoints))
    model = AutoModelForImageTextToText.from_pretrained(family_checkpoints[family])
    processor = AutoProcessor.from_pretrained(family_checkpoints[family])
    dataset = ChatDataset(family_world / "finetune_4.json", family_world / "images", processor)
    dataset = as_hf_dataset(dataset) if hf_dataset else dataset
    trainer = with_vista(trainer_class)(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ChatCollator(processor),
        vista_config=VistaConfig(),
        **extra,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    return trainer, model, before


def _recipe_arguments(tmp_path) -> dict:
    """Two CPU steps at a visible learning rate, nothing saved or reported (TrainingArguments / SFTConfig)."""
    return dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                save_strategy="no", remove_unused_columns=False, use_cpu=True, learning_rate=1e-3)  # fmt: skip


def test_stock_trainer_recipe_trains_with_vista(family_checkpoints, family_world, tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(**_recipe_arguments(tmp_path))
    trainer, model, before = _recipe_run(Trainer, args, family_checkpoints, family_world)
    assert isinstance(trainer, Trainer) and type(trainer).__name__ == "TrainerWithVista"
    assert int(trainer.last_vista.num_samples) == 2 and float(trainer.last_vista.loss.detach()) > 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_trl_sft_trainer_recipe_trains_with_vista(family_checkpoints, family_world, tmp_path):
    """TRL's SFTTrainer for a VLM with VISTA: our dataset/collator (assistant-only labels), dataset preparation off."""
    trl = pytest.importorskip("trl", reason="TRL is an optional extra (pip install 'vista-mllm[trl]')")

    args = trl.SFTConfig(**_recipe_arguments(tmp_path), dataset_kwargs={"skip_prepare_dataset": True})
    family = "llava" if "llava" in family_checkpoints else next(iter(family_checkpoints))
    processor = AutoProcessor.from_pretrained(family_checkpoints[family])
    trainer, model, before = _recipe_run(
        trl.SFTTrainer, args, family_checkpoints, family_world, hf_dataset=True, processing_class=processor
    )
    assert isinstance(trainer, trl.SFTTrainer) and type(trainer).__name__ == "SFTTrainerWithVista"
    assert int(trainer.last_vista.num_samples) == 2 and float(trainer.last_vista.loss.detach()) > 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("family", family_params())
def test_collator_mixes_image_and_text_only_samples(loaded, family):
    if family not in loaded:
        pytest.skip("needs the shared Qwen2 vocabulary (set VISTA_SHARED)")
    model, processor = loaded[family]
    with_image = encode_chat(processor, to_messages(RECORD)[0][:2], _images(1))
    text_only = to_messages(
        {"messages": [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "Two."}]}
    )
    batch = ChatCollator(processor)([with_image, encode_chat(processor, text_only[0], [])])
    image_rows = (batch["input_ids"] == model.config.image_token_id).any(dim=1)
    assert image_rows.tolist() == [True, False]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize(
    ("name", "local"),
    [("Qwen/Qwen2.5-VL-3B-Instruct", False), ("llava-hf/llava-1.5-7b-hf", False), ("./runs/x", True),
     ("/abs/folder", True), ("~/models/x", True), ("a/b/c", True)],
)  # fmt: skip
def test_hub_ids_with_dots_are_not_taken_for_folders(name, local):
    from vista.any_vlm import _looks_local

    assert _looks_local(name) is local


def test_any_vlm_config_without_pretrained_is_a_config_error(tmp_path):
    from vista.train_config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.pretrained"):
        load_config(REPO / "reproduce/configs/any-vlm/finetune.yaml", [])


def test_tiny_model_refuses_a_non_empty_out_folder(tmp_path):
    from vista.errors import UsageError
    from vista.tiny_models import check_out

    (tmp_path / "model.safetensors").write_text("trained")
    with pytest.raises(UsageError, match="not empty"):
        check_out(tmp_path, overwrite=False)
    check_out(tmp_path, overwrite=True)
    with pytest.raises(UsageError, match="is a file"):
        check_out(tmp_path / "model.safetensors", overwrite=True)


@pytest.mark.parametrize("objective", ["objectives.l2t.enabled=true", "objectives.viral.enabled=true"])
def test_objectives_with_pretrained_are_refused_not_ignored(objective):
    from vista.any_vlm import train_any
    from vista.train_config import ConfigError, load_config

    config = load_config(
        REPO / "reproduce/configs/any-vlm/finetune.yaml", ["model.pretrained=org/model", objective]
    )
    with pytest.raises(ConfigError, match="not supported with model.pretrained"):
        train_any(config)


def test_pretrained_training_groups_by_modality_length(
    family_checkpoints, family_world, tmp_path, monkeypatch
):
    """``data.group_by_modality_length`` (the paper presets' stage 2) and its two options reach the trainer of a
    ``model.pretrained`` run: LLaVA's sampler over the chat records' signed token lengths (they were ignored
    silently before 2026-12-02)."""
    from vista.any_vlm import train_any
    from vista.data import ModalityLengthGroupedSampler
    from vista.train_config import load_config
    from vista.trainer import VistaTrainer

    if not family_checkpoints:
        pytest.skip("no family checkpoint could be built here")
    family = (
        "llava" if "llava" in family_checkpoints else sorted(family_checkpoints)[0]
    )  # the families env: no llava
    records = json.loads((family_world / "finetune.json").read_text())
    text_only = {"id": "text", "conversations": [{"from": "human", "value": "Name a colour."},
                                                 {"from": "gpt", "value": "Red."}]}  # fmt: skip
    records = [*records, text_only, {**text_only, "id": "text2"}]
    (tmp_path / "mixed.json").write_text(json.dumps(records))
    config = load_config(REPO / CONFIG, [
        f"model.pretrained={family_checkpoints[family]}", f"data.json={tmp_path / 'mixed.json'}",
        f"data.image_folder={family_world / 'images'}", f"training.output_dir={tmp_path / 'out'}",
        "training.report_to=[]", "data.group_by_modality_length=true", "data.length_group_megabatches=2",
        "data.sorted_micro_batches=true", "training.gradient_accumulation_steps=2",
        "training.per_device_train_batch_size=2",
    ])  # fmt: skip
    seen = {}

    def record_sampler(trainer, *args, **kwargs):
        seen["sampler"], seen["dataset"] = trainer._get_train_sampler(), trainer.train_dataset
        raise KeyboardInterrupt  # stop before any step: the sampler is what this test is about

    monkeypatch.setattr(VistaTrainer, "train", record_sampler)
    with pytest.raises(KeyboardInterrupt):
        train_any(config)
    sampler, dataset = seen["sampler"], seen["dataset"]
    assert isinstance(sampler, ModalityLengthGroupedSampler)
    assert sampler.modality_lengths == dataset.modality_lengths
    lengths = dataset.modality_lengths
    assert [abs(n) for n in lengths] == [len(s["input_ids"]) for s in dataset.samples]
    assert [n > 0 for n in lengths] == [bool(s["images"]) for s in dataset.samples]
    assert sampler.megabatch_mult == 2 and sampler.balance is False
    assert sorted(sampler) == list(range(len(dataset)))


def test_collator_says_which_trainer_argument_dropped_its_columns():
    """With a stock Trainer's default remove_unused_columns=True the collator got samples without ``text`` and
    failed with a bare ``KeyError: 'text'``."""
    with pytest.raises(KeyError, match=r"no 'images', 'text'.*remove_unused_columns=False"):
        ChatCollator(processor=None)([{"input_ids": [1, 2], "labels": [-100, 2]}])
