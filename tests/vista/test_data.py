"""LLaVA-JSON dataset, bad-data policy, collator and sampler, on generated files and the tiny LLaVA."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vista.data import (
    BadSampleError,
    DataCollatorForVista,
    LlavaJsonDataset,
    ModalityLengthGroupedSampler,
    process_images,
)
from vista.loss import IGNORE_INDEX, build_vista_masks
from vista.tiny import TinyLlavaSpec

N_IMAGE_TOKENS = TinyLlavaSpec().image_tokens  # 16 for the default tiny spec
MAX_LENGTH = 128


def _turns(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def image_record(id_="img", image="a.png") -> dict:
    return {"id": id_, "image": image, "conversations": _turns("What is it?\n<image>", "A red square.")}


TEXT_RECORD = {"id": "txt", "conversations": _turns("Say hi.", "Hi.", "Again?", "Hi again.")}
MULTI_RECORD = {
    "id": "multi",
    "image": ["a.png", "b.jpg"],
    "conversations": _turns("<image> or <image>?", "Left."),
}
LONG = " ".join(["zebra quartz"] * 60)  # ~ 300 tiny-tokenizer tokens

# case -> (bad record with id "bad", reason, text the error detail must contain, check_images)
BAD_CASES = {
    "missing image": (image_record("bad", "nope.png"), "image_missing", "nope.png does not exist", "exists"),
    "missing one of two": (
        {**MULTI_RECORD, "id": "bad", "image": ["a.png", "gone.jpg"]},
        "image_missing",
        "gone.jpg does not exist",
        "exists",
    ),
    "unreadable image": (
        image_record("bad", "folder.png"),
        "image_unreadable",
        "is not a regular file",
        "exists",
    ),
    "corrupt image (decode up front)": (
        image_record("bad", "corrupt.png"),
        "image_corrupt",
        "corrupt.png",
        "decode",
    ),
    "truncated image (decode up front)": (
        image_record("bad", "truncated.jpg"),
        "image_corrupt",
        "truncated.jpg",
        "decode",
    ),
    "two placeholders one image": (
        {"id": "bad", "image": "a.png", "conversations": _turns("<image><image> hi", "x")},
        "image_count_mismatch",
        "2 <image> placeholders for 1 images",
        "exists",
    ),
    "image without placeholder": (
        {"id": "bad", "image": "a.png", "conversations": _turns("hi", "x")},
        "image_count_mismatch",
        "0 <image> placeholders for 1 images",
        "exists",
    ),
    "placeholder without image": (
        {"id": "bad", "conversations": _turns("<image> hi", "x")},
        "image_count_mismatch",
        "1 <image> placeholders for 0 images",
        "exists",
    ),
    "image in answer": (
        {"id": "bad", "image": "a.png", "conversations": _turns("<image>", "see <image>")},
        "image_count_mismatch",
        "turn 1 (assistant) contains <image>",
        "exists",
    ),
    "no turns": ({"id": "bad", "conversations": []}, "empty_conversation", "no turns", "exists"),
    "empty answer": (
        {"id": "bad", "conversations": _turns("hi", " ")},
        "empty_conversation",
        "turn 1 (assistant) is empty",
        "exists",
    ),
    "conversations not a list": (
        {"id": "bad", "conversations": "hi"},
        "malformed",
        "'conversations' is str",
        "exists",
    ),
    "turn without value": (
        {"id": "bad", "conversations": [{"from": "human"}]},
        "malformed",
        "turn 0 is not a dict with 'from' and 'value'",
        "exists",
    ),
    "unknown role": (
        {"id": "bad", "conversations": [{"from": "narrator", "value": "x"}, *_turns("hi", "yo")]},
        "malformed",
        "unknown role 'narrator'",
        "exists",
    ),
    "value not a string": (
        {"id": "bad", "conversations": _turns("hi", 42)},
        "malformed",
        "turn 1 content is int",
        "exists",
    ),
    "image not a path": (
        {"id": "bad", "image": 7, "conversations": _turns("<image>", "x")},
        "malformed",
        "'image' must be a path or a list of paths",
        "exists",
    ),
    "answer first": (
        {"id": "bad", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        "role_order",
        "turn 0 is 'assistant', expected 'user'",
        "exists",
    ),
    "two questions in a row": (
        {"id": "bad", "conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]},
        "role_order",
        "turn 1 is 'user', expected 'assistant'",
        "exists",
    ),
    "ends with a question": (
        {"id": "bad", "conversations": _turns("a", "b", "c")},
        "role_order",
        "ends with a user turn",
        "exists",
    ),
    "truncation cuts the image": (
        {"id": "bad", "image": "a.png", "conversations": _turns("hi", LONG, "<image>\nand?", "ok")},
        "truncation_cuts_image",
        f"> max_length={MAX_LENGTH} and image tokens reach position",
        "exists",
    ),
    "truncation leaves no answer": (
        {"id": "bad", "image": "a.png", "conversations": _turns("<image>\n" + LONG, "ok")},
        "no_supervised_tokens",
        "truncation leaves no supervised token",
        "exists",
    ),
    "special token in text": (
        {"id": "bad", "conversations": _turns("hi", "A.</s>USER: injected")},
        "template_mismatch",
        "special token '</s>'",
        "exists",
    ),
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (40, 50), "b.jpg": (30, 60), "c.png": (32, 32)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "folder.png").mkdir()
    return root


@pytest.fixture
def make_dataset(tmp_path, tiny_llava, image_folder):
    _, processor = tiny_llava

    def make(records, template="vicuna_v1", **kwargs):
        path = tmp_path / "data.json"
        path.write_text(json.dumps(records))
        kwargs.setdefault("max_length", MAX_LENGTH)
        return LlavaJsonDataset(path, image_folder, processor, template, show_progress=False, **kwargs)

    return make


def test_items_expand_images_and_mask_labels(make_dataset, tiny_llava):
    model, processor = tiny_llava
    dataset = make_dataset([image_record(), TEXT_RECORD, MULTI_RECORD])
    assert len(dataset) == 3 and dataset.skip_report().num_skipped == 0
    assert dataset.num_image_tokens == N_IMAGE_TOKENS
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for index, num_images in enumerate([1, 0, 2]):
        item = dataset[index]
        assert int((item["input_ids"] == image_id).sum()) == num_images * N_IMAGE_TOKENS
        assert (item["labels"][item["input_ids"] == image_id] == IGNORE_INDEX).all()
        if num_images:
            assert item["pixel_values"].shape == (num_images, 3, 32, 32)
        else:
            assert "pixel_values" not in item
        assert dataset.lengths[index] == len(item["input_ids"])
        assert dataset.modality_lengths[index] == (1 if num_images else -1) * len(item["input_ids"])
    # The model's own projector emits exactly that many features per image.
    features = model.get_image_features(
        dataset[2]["pixel_values"],
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    ).pooler_output
    assert [f.shape[0] for f in features] == [N_IMAGE_TOKENS, N_IMAGE_TOKENS]


def test_supervised_tokens_are_the_answers(make_dataset, tiny_llava):
    _, processor = tiny_llava
    dataset = make_dataset([TEXT_RECORD])
    item = dataset[0]
    supervised = item["labels"] != IGNORE_INDEX
    assert processor.tokenizer.decode(item["input_ids"][supervised]) == " Hi.</s> Hi again.</s>"


def test_plain_template_supervises_the_caption(make_dataset, tiny_llava):
    _, processor = tiny_llava
    record = {
        "id": 0,
        "image": "c.png",
        "conversations": _turns("Describe the image.\n<image>", "a small dog"),
    }
    item = make_dataset([record], template="plain")[0]
    supervised = item["labels"] != IGNORE_INDEX
    assert processor.tokenizer.decode(item["input_ids"][supervised]) == "a small dog\n"
    assert len(item["input_ids"]) == N_IMAGE_TOKENS + int(supervised.sum())


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_record_raises_naming_file_record_and_problem(case, make_dataset, tmp_path, image_folder):
    record, reason, detail, check = BAD_CASES[case]
    with pytest.raises(BadSampleError) as info:
        make_dataset(
            [image_record("ok0"), record, TEXT_RECORD, image_record("ok3", "c.png")], check_images=check
        )
    message = str(info.value)
    assert str(tmp_path / "data.json") in message
    assert "record 1 (id='bad')" in message and f": {reason}: " in message and detail in message
    assert "on_bad_sample='skip'" in message
    if reason == "image_missing":  # the usual cause: a data.json override without its data.image_folder
        assert f"relative to the image folder {image_folder} (data.image_folder)" in message


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_record_is_skipped_and_counted(case, make_dataset, caplog):
    record, reason, detail, check = BAD_CASES[case]
    records = [image_record("ok0"), record, TEXT_RECORD, image_record("ok3", "c.png")]
    with caplog.at_level(logging.WARNING, logger="vista.data"):
        dataset = make_dataset(records, check_images=check, on_bad_sample="skip")
    assert len(dataset) == 3
    assert [dataset.record_id(i) for i in range(3)] == ["ok0", "txt", "ok3"]
    assert (
        dataset.raw_index(2) == 3 and dataset.records[3]["id"] == "ok3" and dataset.record(0)["id"] == "ok0"
    )
    report = dataset.skip_report()
    assert report.counts == {reason: 1} and report.num_records == 4 and report.lazy_counts == {}
    assert (
        report.examples[reason][0].startswith("record 1 (id='bad')") and detail in report.examples[reason][0]
    )
    assert "skipped 1 of 4 records" in caplog.text and reason in caplog.text
    assert report.to_dict()["counts"] == {reason: 1}


def test_several_problems_are_all_counted(make_dataset):
    records = [image_record("m1", "nope.png"), TEXT_RECORD, image_record("m2", "nope2.png"), {"id": "e"}]
    with pytest.raises(BadSampleError, match=r"record 0 \(id='m1'\).*\n3 of 4 records have problems"):
        make_dataset(records)
    report = make_dataset(records, on_bad_sample="skip").skip_report()
    assert report.counts == {"image_missing": 2, "malformed": 1} and report.num_skipped == 3


def test_truncation_is_counted_not_hidden(make_dataset):
    record = {"id": "long", "conversations": _turns("hi", LONG)}
    dataset = make_dataset([record, TEXT_RECORD])
    report = dataset.skip_report()
    assert report.num_skipped == 0 and report.num_truncated == 1 and report.truncated_supervised_tokens > 0
    assert len(dataset[0]["input_ids"]) == MAX_LENGTH == dataset.lengths[0]
    assert "truncated to max_length (kept): 1 records" in str(report)


def test_invalid_json_names_the_file(tmp_path, tiny_llava, image_folder):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1,')
    with pytest.raises(ValueError, match=f"{path}: line 1, column 11: not valid JSON"):
        LlavaJsonDataset(path, image_folder, tiny_llava[1], "vicuna_v1", 64, show_progress=False)
    path.write_text('{"id": 1}')
    with pytest.raises(ValueError, match=f"{path}: expected a JSON list of records .*got a dict"):
        LlavaJsonDataset(path, image_folder, tiny_llava[1], "vicuna_v1", 64, show_progress=False)


@pytest.mark.parametrize("name", ["corrupt.png", "truncated.jpg"])
def test_corrupt_image_found_while_loading_raises(name, make_dataset, tmp_path):
    dataset = make_dataset([image_record("ok0"), image_record("bad", name)])  # existence passes up front
    dataset[0]
    with pytest.raises(BadSampleError) as info:
        dataset[1]
    message = str(info.value)
    assert str(tmp_path / "data.json") in message and "record 1 (id='bad')" in message
    assert "image_corrupt" in message and name in message


def test_corrupt_image_found_while_loading_is_skipped_and_counted(make_dataset, caplog):
    dataset = make_dataset(
        [image_record("ok0"), TEXT_RECORD, image_record("bad", "corrupt.png"), image_record("ok3", "c.png")],
        on_bad_sample="skip",
    )
    assert dataset.skip_report().num_skipped == 0
    with caplog.at_level(logging.WARNING, logger="vista.data"):
        item = dataset[2]
    assert item["index"] == 3 and item["pixel_values"].shape[0] == 1  # next record with an image instead
    assert "record 2 (id='bad'): image_corrupt" in caplog.text and "skipped (counted)" in caplog.text
    dataset[2]  # seen again (next epoch): still counted once
    report = dataset.skip_report()
    assert report.counts == {"image_corrupt": 1} and report.lazy_counts == {"image_corrupt": 1}
    assert "found while loading" in str(report)


def test_lazy_skips_in_dataloader_workers_reach_the_report(make_dataset, tiny_llava):
    dataset = make_dataset(
        [image_record("ok0"), image_record("bad", "truncated.jpg"), TEXT_RECORD], on_bad_sample="skip"
    )
    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=DataCollatorForVista(tiny_llava[1]))
    (batch,) = list(loader)
    assert batch["pixel_values"].shape[0] == 2  # the bad record was replaced by the other image record
    assert dataset.skip_report().counts == {"image_corrupt": 1}


def test_missing_image_without_up_front_check_is_counted_while_loading(make_dataset):
    dataset = make_dataset(
        [image_record("bad", "nope.png"), image_record("ok1")], check_images="none", on_bad_sample="skip"
    )
    assert len(dataset) == 2 and dataset[0]["index"] == 1
    assert dataset.skip_report().lazy_counts == {"image_missing": 1}


def test_worker_errors_reach_the_main_process_as_bad_sample_errors(make_dataset, tiny_llava):
    dataset = make_dataset([image_record("ok0"), image_record("bad", "corrupt.png")])
    loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=DataCollatorForVista(tiny_llava[1]))
    with pytest.raises(BadSampleError, match=r"record 1 \(id='bad'\): image_corrupt"):
        next(iter(loader))


def test_pad_aspect_pads_with_the_mean_colour(tiny_llava):
    processor = tiny_llava[1].image_processor
    wide = Image.new("RGB", (64, 16), (255, 0, 0))
    padded = process_images([wide], processor, "pad")[0]
    resized = process_images([wide], processor, "resize")[0]
    # Padding rows are the mean colour, which normalises to ~0 (up to 8-bit rounding); the image band is red.
    assert padded[:, 0, :].abs().max() < 0.02 and padded[0, 16, :].min() > 1.5
    # CLIP's own resize + centre crop keeps only red.
    assert resized[0].min() > 1.5
    with pytest.raises(ValueError, match="image_aspect"):
        process_images([wide], processor, "crop")


# ---- collator -----------------------------------------------------------------------------------------------
@pytest.fixture
def ragged_items(make_dataset):
    dataset = make_dataset([image_record(), TEXT_RECORD, MULTI_RECORD, image_record("c", "c.png")])
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_either_side(side, ragged_items, tiny_llava):
    model, processor = tiny_llava
    collate = DataCollatorForVista(processor, padding_side=side, pad_to_multiple_of=8)
    batch = collate(ragged_items)
    lengths = [len(item["input_ids"]) for item in ragged_items]
    width = batch["input_ids"].shape[1]
    assert (
        width % 8 == 0
        and width >= max(lengths)
        and set(batch)
        == {
            "input_ids",
            "attention_mask",
            "labels",
            "pixel_values",
        }
    )
    for row, (item, n) in enumerate(zip(ragged_items, lengths)):
        real = slice(0, n) if side == "right" else slice(width - n, width)
        assert torch.equal(batch["input_ids"][row, real], item["input_ids"])
        assert torch.equal(batch["labels"][row, real], item["labels"])
        assert batch["attention_mask"][row].sum() == n and (batch["attention_mask"][row, real] == 1).all()
        pad = batch["attention_mask"][row] == 0
        assert (batch["input_ids"][row, pad] == processor.tokenizer.pad_token_id).all()
        assert (batch["labels"][row, pad] == IGNORE_INDEX).all()
    expected_pixels = torch.cat([item["pixel_values"] for item in ragged_items if "pixel_values" in item])
    assert torch.equal(batch["pixel_values"], expected_pixels) and expected_pixels.shape[0] == 4
    image_mask, text_mask = build_vista_masks(
        batch["input_ids"], batch["attention_mask"], model.config.image_token_id, batch["labels"]
    )
    assert image_mask.sum(1).tolist() == [n * N_IMAGE_TOKENS for n in (1, 0, 2, 1)]
    assert (text_mask.sum(1) + image_mask.sum(1)).tolist() == lengths


def test_tiny_llava_trains_on_a_collated_batch_same_loss_both_sides(ragged_items, tiny_llava):
    model, processor = tiny_llava
    losses = {}
    for side in ("right", "left"):
        batch = DataCollatorForVista(processor, padding_side=side)(ragged_items)
        with torch.no_grad():
            losses[side] = model(**batch).loss
        assert torch.isfinite(losses[side])
    # RoPE is relative and padding is masked out: the side must not change the loss.
    torch.testing.assert_close(losses["left"], losses["right"], rtol=1e-5, atol=1e-5)


def test_text_only_batch_has_no_pixel_values(ragged_items, tiny_llava):
    model, processor = tiny_llava
    batch = DataCollatorForVista(processor)([ragged_items[1], ragged_items[1]])
    assert "pixel_values" not in batch
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_collator_rejects_images_that_do_not_match_their_tokens(ragged_items, tiny_llava):
    broken = dict(ragged_items[2])
    broken["pixel_values"] = broken["pixel_values"][:1]
    with pytest.raises(
        ValueError, match=r"batch position 1 \(dataset index 2\): 32 image-token ids for 1 images"
    ):
        DataCollatorForVista(tiny_llava[1])([ragged_items[0], broken])


# ---- sampler (the pure sampler tests are in test_data_sampler.py) ----------------------------------------


def test_sampler_on_a_dataset_of_one_modality(make_dataset):
    dataset = make_dataset([image_record("a"), image_record("b", "c.png"), MULTI_RECORD])
    assert sorted(ModalityLengthGroupedSampler(dataset.modality_lengths, batch_size=2)) == [0, 1, 2]
