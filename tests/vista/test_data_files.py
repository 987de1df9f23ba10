"""Reading data files (JSON, JSON Lines, BOMs, encodings), the record layouts of other toolkits, and other
people's real LLaVA-style files (``shared/realdata/llava_data/``) through the dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vista.data import BadSampleError, DataFileError, LlavaJsonDataset, load_records, parse_record
from vista.templates import get_template

REPO = Path(__file__).resolve().parents[2]
RECORDS = [
    {"id": i, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                  {"from": "gpt", "value": f"Thing {i}. Café."}]}
    for i in range(6)
]  # fmt: skip
VICUNA = get_template("vicuna_v1")


# ---- unreadable files: file, line and reason ------------------------------------------------------------------
def test_jsonl_record_cut_off_on_line_4_names_line_4(tmp_path):
    lines = [json.dumps(r) for r in RECORDS]
    lines[3] = lines[3][: len(lines[3]) // 2]  # a record cut off on line 4
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=rf"^{path}: line 4: not valid JSON \(Unterminated string"):
        load_records(path)


def test_broken_json_list_names_the_line_of_the_file(tmp_path):
    text = json.dumps(RECORDS, indent=1)
    path = tmp_path / "data.json"
    cut = text.index('"id": 4')
    path.write_text(text[:cut] + "oops" + text[cut:], encoding="utf-8")
    line = text[:cut].count("\n") + 1
    with pytest.raises(DataFileError, match=rf"^{path}: line {line}, column 3: not valid JSON"):
        load_records(path)


def test_latin1_json_names_the_file_line_and_byte(tmp_path):
    text = json.dumps(RECORDS, indent=1, ensure_ascii=False)
    path = tmp_path / "latin1.json"
    path.write_bytes(text.encode("latin-1"))
    first = text.index("é")
    line, column = text[:first].count("\n") + 1, first - text[:first].rfind("\n")
    with pytest.raises(
        DataFileError, match=rf"^{path}: line {line}, column {column} .*bytes e9 .*UTF-8.*iconv"
    ):
        load_records(path)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_byte_order_marks_are_read(tmp_path, encoding):
    path = tmp_path / "bom.json"
    path.write_bytes(json.dumps(RECORDS, ensure_ascii=False).encode(encoding))
    assert load_records(path) == RECORDS


def test_json_lines_in_a_json_file_and_blank_lines(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS[:3]) + "\n\n", encoding="utf-8")
    assert load_records(path) == RECORDS[:3]


def test_top_level_object_is_refused(tmp_path):
    path = tmp_path / "object.json"
    path.write_text(json.dumps({"data": RECORDS}), encoding="utf-8")
    with pytest.raises(
        DataFileError, match=rf"^{path}: expected a JSON list.*got a dict with keys \['data'\]"
    ):
        load_records(path)


def test_dry_run_reads_data_with_the_dataset_loader(tmp_path, capsys):
    """``vista train --dry-run`` counts a .jsonl file (it crashed on one) as the dataset would, says when the run
    would stop on it (it said "0 refused" for records whose images are missing), and reports a broken line cleanly."""
    from vista.cli import main

    config = str(REPO / "reproduce/configs/tiny/finetune.yaml")
    good = tmp_path / "data.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in [*RECORDS, {"conversations": []}]), encoding="utf-8")
    argv = ["train", "--config", config, "--dry-run", f"data.json={good}", f"data.image_folder={tmp_path}"]
    assert main(argv) == 3  # no image file: every record is refused
    out, err = capsys.readouterr()
    # classified by the dataset's own parser: the record without turns is refused, as training would refuse it,
    # and so is every record whose image file is missing
    assert "7 records" in out and "7 refused" in out and "image_missing: 6" in out
    assert f"WARNING: 6 image files not found under {tmp_path}" in out
    assert "the run would stop: no usable records" in err
    (tmp_path / "a.png").write_bytes(b"")  # the images exist: only the record without turns is refused
    assert main(argv) == 3  # data.on_bad_sample=raise: the run would stop at the first refused record
    out, err = capsys.readouterr()
    assert "1 refused" in out and "image_missing" not in out
    assert "the run would stop: 1 refused records" in err and "data.on_bad_sample=skip" in err
    assert main([*argv, "data.on_bad_sample=skip"]) == 0  # skipped and counted: the run goes on
    capsys.readouterr()
    assert main([*argv, "data.on_bad_sample=skip", "data.max_length=16"]) == 3  # the tiny image is 16 tokens
    assert "leaves no room after an image's 16 tokens" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + '\n{"id": 1,\n', encoding="utf-8")
    assert main(["train", "--config", config, "--dry-run", f"data.json={bad}"]) == 3  # as the real run
    assert f"{bad}: line 2: not valid JSON" in capsys.readouterr().err


# ---- record layouts -------------------------------------------------------------------------------------------
def _parse(record):
    return parse_record(record, VICUNA)


def test_layouts_of_llava_llama_factory_and_mantis_give_the_same_turns():
    llava = {"image": "x.jpg", "conversations": [{"from": "human", "value": "Q?\n<image>"},
                                                 {"from": "gpt", "value": "A."}]}  # fmt: skip
    messages = {"images": ["x.jpg"], "messages": [{"role": "user", "content": "Q?\n<image>"},
                                                  {"role": "assistant", "content": "A."}]}  # fmt: skip
    mantis = {"images": ["x.jpg"], "conversation": [{"role": "user", "content": "Q?\n<image>"},
                                                    {"role": "assistant", "content": "A."}]}  # fmt: skip
    expected = (
        [{"role": "user", "content": "Q?\n<image>"}, {"role": "assistant", "content": "A."}],
        ["x.jpg"],
    )
    assert _parse(llava) == _parse(messages) == _parse(mantis) == expected


@pytest.mark.parametrize(
    ("record", "reason", "detail"),
    [
        ({"videos": ["v.mp4"], "messages": []}, "unsupported_video", "key 'videos'"),
        ({"system_prompt": "Be brief.", "conversations": []}, "unsupported_system_prompt", "key 'system_prompt'"),
        ({"conversations": [{"from": "human", "value": "<ImageHere> Q"}, {"from": "bot", "value": "A"}]},
         "unsupported_format", r"<ImageHere> \(InternLM-XComposer\)"),
        ({"conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}]},
         "unsupported_format", "role 'bot'"),
        ({"conversations": [{"from": "system", "value": "Be brief."}]}, "unsupported_system_prompt", "system turn"),
        ({"dialogue": []}, "malformed", "expected LLaVA 'conversations'.*'messages'.*Mantis 'conversation'"),
        ({"image": "a.png", "images": ["a.png"], "conversations": []}, "malformed", "both 'image' and 'images'"),
    ],
)  # fmt: skip
def test_unsupported_records_are_refused_with_a_named_reason(record, reason, detail):
    from vista.templates import ConversationError

    with pytest.raises(ConversationError, match=detail) as info:
        _parse(record)
    assert info.value.reason == reason


# ---- other people's real files ------------------------------------------------------------------------------
# file -> (records kept, {reason: records refused}) with the tiny LLaVA and vicuna_v1
REAL_LLAVA = {
    "InternLM-XComposer__multi_turn_multi_images_example.json": (0, {"unsupported_format": 2}),
    "InternLM-XComposer__only_text_example.json": (0, {"unsupported_format": 2}),
    "InternLM-XComposer__single_turn_single_image_example.json": (0, {"unsupported_format": 2}),
    "LLaMA-Factory__llava_instruct_100.json": (100, {}),
    "LLaMA-Factory__mllm_demo.json": (6, {}),
    "LLaMA-Factory__mllm_video_demo.json": (0, {"unsupported_video": 3}),
    "Mantis__examples_chat_train.json": (100, {}),
    "Mantis__training_example.json": (2, {}),
    "lmms-finetune__celeba_image_train.json": (90, {}),
    "lmms-finetune__multi_images.json": (0, {"unsupported_system_prompt": 2}),
    "lmms-finetune__single_image.json": (1, {"unsupported_system_prompt": 1}),
    "lmms-finetune__single_image_has_text_only.json": (3, {"unsupported_system_prompt": 1}),
    "lmms-finetune__video.json": (0, {"unsupported_video": 2}),
}


@pytest.fixture(scope="module")
def stand_in_images(realdata, tmp_path_factory) -> Path:
    """A 48x32 image at every path the real records name (no images come with them)."""
    root = tmp_path_factory.mktemp("realdata_images")
    for path in sorted((realdata / "llava_data").glob("*.json")):
        for record in load_records(path):
            images = record.get("images", record.get("image")) or []
            for name in [images] if isinstance(images, str) else images:
                target = root / name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (48, 32), (200, 40, 40)).save(target, format="PNG")
    return root


def test_every_real_llava_file_is_covered(realdata):
    assert sorted(p.name for p in (realdata / "llava_data").glob("*.json")) == sorted(REAL_LLAVA)


@pytest.mark.parametrize("name", sorted(REAL_LLAVA))
def test_real_llava_file_loads_or_is_refused_with_a_reason(name, realdata, stand_in_images, tiny_llava):
    kept, refused = REAL_LLAVA[name]
    path = realdata / "llava_data" / name
    dataset = LlavaJsonDataset(path, stand_in_images, tiny_llava[1], "vicuna_v1", 4096, on_bad_sample="skip",
                               show_progress=False)  # fmt: skip
    assert (len(dataset), dataset.skip_report().counts) == (kept, refused)
    if refused:
        with pytest.raises(BadSampleError, match=rf"{path}: record \d+ .*{next(iter(refused))}"):
            LlavaJsonDataset(path, stand_in_images, tiny_llava[1], "vicuna_v1", 4096, show_progress=False)
    image_id = tiny_llava[1].tokenizer.convert_tokens_to_ids("<image>")
    for index in range(min(len(dataset), 3)):
        item = dataset[index]
        images = dataset.num_images[index]
        assert int((item["input_ids"] == image_id).sum()) == images * dataset.num_image_tokens
        assert (images == 0) == ("pixel_values" not in item)


def test_llava_instruct_image_at_the_end_trains_like_image_at_the_start(
    realdata, stand_in_images, tiny_llava
):
    """54 of the 100 real records end their first turn with <image>: it is moved first, as LLaVA does, so such
    a record tokenizes exactly like the same record with <image>\\n first."""
    path = realdata / "llava_data" / "LLaMA-Factory__llava_instruct_100.json"
    records = load_records(path)
    at_end = [i for i, r in enumerate(records) if r["conversations"][0]["value"].rstrip().endswith("<image>")]
    assert len(at_end) == 54
    dataset = LlavaJsonDataset(path, stand_in_images, tiny_llava[1], "vicuna_v1", 4096, show_progress=False)
    record = records[at_end[0]]
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    moved = json.loads(json.dumps(record))
    moved["conversations"][0]["value"] = "<image>\n" + question
    tokens = VICUNA.tokenize(_parse(moved)[0], tiny_llava[1].tokenizer, dataset.num_image_tokens)
    item = dataset[at_end[0]]
    assert torch.equal(item["input_ids"], torch.from_numpy(tokens.input_ids))
    assert torch.equal(item["labels"], torch.from_numpy(tokens.labels))
    image_id = tiny_llava[1].tokenizer.convert_tokens_to_ids("<image>")
    assert int((item["input_ids"] == image_id).nonzero()[0]) < 40  # the image comes before the question
