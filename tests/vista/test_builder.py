"""vista.builder: assembling LLaVA from pretrained parts without copies, token counts against transformers' own
forward, stage freezing, parameter reports (real and on the meta device). About 15 s on 2 cores."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from train_helpers import make_foundations
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vista import builder, model_plan
from vista.templates import IMAGE_TOKEN
from vista.tiny import TinyLlavaSpec, build_image_processor, build_tiny_llava

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


@pytest.fixture(scope="module")
def foundations(tmp_path_factory):
    return make_foundations(tmp_path_factory.mktemp("foundations"))


def _llama(vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config)


def _tokenizer_without_image_token() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["a red square", "USER: ASSISTANT:"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_build_from_components_shares_the_loaded_weights(foundations):
    vision = CLIPVisionModel.from_pretrained(foundations["vision"])
    lm = LlamaForCausalLM.from_pretrained(foundations["lm"])
    model, processor = builder.build_from_components(foundations["vision"], foundations["lm"])
    assert isinstance(model, LlavaForConditionalGeneration)
    for ours, theirs in (
        (model.model.vision_tower, vision),
        (model.model.language_model, lm.model),
        (model.lm_head, lm.lm_head),
    ):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # nn.Linear's default init bounds every projector weight by 1/sqrt(fan_in).
    projector = model.model.multi_modal_projector
    for layer, fan_in in ((projector.linear_1, 32), (projector.linear_2, 64)):
        assert layer.weight.abs().max() <= 1 / math.sqrt(fan_in) and layer.weight.std() > 0
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_assemble_moves_modules_without_copying():
    vision = CLIPVisionModel(CLIPVisionConfig(**VISION))
    tokenizer = _tokenizer_without_image_token()
    lm = _llama(len(tokenizer))
    vocab = len(tokenizer)
    model, processor = builder.assemble_llava(vision, lm, tokenizer, build_image_processor(32))
    assert model.model.vision_tower is vision and model.model.language_model is lm.model
    # <image> was missing: added as a special token, embeddings and lm_head grew by one row.
    assert IMAGE_TOKEN in tokenizer.get_vocab() and len(tokenizer) == vocab + 1
    assert model.get_input_embeddings().num_embeddings == vocab + 1 == model.lm_head.out_features
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert processor.tokenizer.pad_token is not None


def test_dual_encoder_image_side_is_copied_exactly():
    clip = CLIPModel(
        CLIPConfig(
            vision_config=VISION,
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=100,
            ),
        )
    )
    tokenizer = _tokenizer_without_image_token()
    model, _ = builder.assemble_llava(clip, _llama(len(tokenizer)), tokenizer, build_image_processor(32))
    ours = model.model.vision_tower.state_dict()
    theirs = {
        k.removeprefix("vision_model."): v
        for k, v in clip.state_dict().items()
        if k.startswith("vision_model.")
    }
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize(
    "vision_model, strategy, expected",
    [
        (lambda: CLIPVisionModel(CLIPVisionConfig(**VISION)), "default", 16),  # CLS dropped
        (lambda: CLIPVisionModel(CLIPVisionConfig(**VISION)), "full", 17),
        (lambda: SiglipVisionModel(SiglipVisionConfig(**VISION)), "full", 16),  # no CLS: every patch
        (
            lambda: SiglipVisionModel(SiglipVisionConfig(**VISION)),
            "default",
            15,
        ),  # LLaVA drops position 0 anyway
    ],
)
def test_image_tokens_match_the_models_own_features(vision_model, strategy, expected):
    tokenizer = _tokenizer_without_image_token()
    model, processor = builder.assemble_llava(
        vision_model(), _llama(len(tokenizer)), tokenizer, build_image_processor(32), select_strategy=strategy
    )
    assert builder.vision_tokens_per_image(model.config.vision_config, strategy) == expected
    assert model.config.image_seq_length == expected
    inputs = processor(
        images=[Image.new("RGB", (40, 40), (200, 10, 10))],
        text=[f"{IMAGE_TOKEN} a red square"],
        return_tensors="pt",
    )
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == expected
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"])
        features = features.pooler_output if hasattr(features, "pooler_output") else features
        count = (
            sum(f.shape[0] for f in features) if isinstance(features, (list, tuple)) else features.shape[-2]
        )
        assert count == expected
        assert torch.isfinite(model(**inputs, labels=inputs["input_ids"]).loss)


def _count(module: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_freeze_for_stage_and_report(stage):
    model, _ = build_tiny_llava()
    builder.freeze_for_stage(model, stage)
    report = builder.parameter_report(model)
    vision, projector = model.model.vision_tower, model.model.multi_modal_projector
    lm_total = _count(model.model.language_model) + _count(model.lm_head)
    assert report["vision_tower"] == {"trainable": 0, "total": _count(vision)}
    assert report["projector"] == {"trainable": _count(projector), "total": _count(projector)}
    assert report["language_model"] == {
        "trainable": lm_total if stage == "finetune" else 0,
        "total": lm_total,
    }
    assert report["all"]["total"] == _count(model)
    assert report["all"]["trainable"] == _count(model, trainable=True)
    assert "projector" in builder.format_parameter_report(report)


def test_finetune_top_layers_trains_only_the_last_decoder_layers_and_the_final_norm():
    model, _ = build_tiny_llava(TinyLlavaSpec(text_layers=3))
    builder.freeze_for_stage(model, "finetune", top_layers=2)
    lm = model.model.language_model
    assert [_count(layer, trainable=True) > 0 for layer in lm.layers] == [False, True, True]
    assert all(_count(layer, trainable=False) == 0 for layer in lm.layers[1:])
    assert _count(lm.norm, trainable=False) == 0
    frozen = (model.model.multi_modal_projector, lm.embed_tokens, model.lm_head, model.model.vision_tower)
    assert all(_count(module, trainable=True) == 0 for module in frozen)
    report = builder.parameter_report(model)
    expected = _count(lm.layers[1]) + _count(lm.layers[2]) + _count(lm.norm)
    assert report["language_model"]["trainable"] == report["all"]["trainable"] == expected
    config, _ = model_plan.plan_llava_config({"tiny": {"text_layers": 3}})
    assert model_plan.planned_parameter_report(config, "finetune", 2) == report
    for stage, top in (("pretrain", 1), ("finetune", 0), ("finetune", 4)):
        with pytest.raises(ValueError, match="finetune_top_layers"):
            builder.freeze_for_stage(model, stage, top_layers=top)


def test_planned_report_on_meta_equals_the_real_model(foundations):
    spec = TinyLlavaSpec()
    real, _ = build_tiny_llava(spec)
    config, _ = model_plan.plan_llava_config({"tiny": {}})
    components, _ = builder.build_from_components(foundations["vision"], foundations["lm"])
    planned_components, _ = model_plan.plan_llava_config(
        {"vision_tower": str(foundations["vision"]), "language_model": str(foundations["lm"])}
    )
    for model, planned in ((real, config), (components, planned_components)):
        for stage in ("pretrain", "finetune"):
            builder.freeze_for_stage(model, stage)
            assert model_plan.planned_parameter_report(planned, stage) == builder.parameter_report(model)


def test_saved_model_reloads_with_auto_classes(foundations, tmp_path):
    model, processor = builder.build_from_components(foundations["vision"], foundations["lm"])
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    inputs = reprocessor(
        images=[Image.new("RGB", (36, 36), (20, 200, 20))],
        text=[f"{IMAGE_TOKEN} a green bar"],
        return_tensors="pt",
    )
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    loaded, _ = builder.load_llava_checkpoint(tmp_path)
    assert isinstance(loaded, LlavaForConditionalGeneration)


def test_sources_and_errors(tmp_path):
    assert (
        builder.resolve_source({"checkpoint": "x", "vision_tower": "v", "language_model": "l"})
        == "checkpoint"
    )
    assert builder.resolve_source({"vision_tower": "v", "language_model": "l"}) == "components"
    assert builder.resolve_source({}) == "tiny"
    with pytest.raises(ValueError, match="must be given together"):
        builder.resolve_source({"vision_tower": "v"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        builder.load_llava_checkpoint(tmp_path / "missing")
    with pytest.raises(ValueError, match="not in vista.presets.KNOWN_COMPONENTS"):
        model_plan.plan_llava_config(
            {"vision_tower": "nobody/unknown-vision", "language_model": "nobody/unknown-lm"}
        )
    language_model_only = tmp_path / "lm"
    build_tiny_llava()[0].config.text_config.save_pretrained(language_model_only)
    for load in (
        builder.load_llava_checkpoint,
        lambda p: model_plan.plan_llava_config({"checkpoint": str(p)}),
    ):
        with pytest.raises(ValueError, match="is a 'llama' checkpoint, not a LLaVA one"):
            load(language_model_only)
    with pytest.raises(ValueError, match="unknown stage"):
        builder.freeze_for_stage(torch.nn.Linear(1, 1), "stage3")
    assert builder.resolve_dtype("auto", bf16=True) == torch.bfloat16
    model, _ = builder.build_model({"source": "tiny", "tiny": {"text_layers": 1}}, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.config.text_config.num_hidden_layers == 1
