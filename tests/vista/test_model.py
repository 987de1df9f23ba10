"""forward_with_vista / capture_vista_states on tiny LLaVA, LLaVA-NeXT and Qwen2-VL models (CPU, from configs)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from vista.loss import VistaConfig, vista_loss
from vista.model import capture_vista_states, forward_with_vista, image_token_id
from vista.templates import IMAGE_TOKEN
from vista.tiny import CLIP_MEAN, CLIP_STD

TEXTS = [
    "USER: <image>\nDescribe the image. ASSISTANT: A red square.",
    "USER: What is in the picture? ASSISTANT: Two green triangles and a yellow star.",  # no image
    "USER: <image> and <image>\nHow many? ASSISTANT: Three.",  # two images
]


def reference_vista(model, batch, config: VistaConfig):
    """CE and VISTA term from an independent forward: output_hidden_states=True and an explicit embedding call."""
    with torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
        embeds = model.get_input_embeddings()(batch["input_ids"])
    real = batch["attention_mask"].bool()
    image_mask = (batch["input_ids"] == model.config.image_token_id) & real
    text_mask = real & ~image_mask
    vista = vista_loss(
        outputs.hidden_states[-1],
        embeds,
        image_mask,
        text_mask,
        VistaConfig(distance=config.distance, weighting=config.weighting),
    )
    return outputs.loss, vista


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.norm()) for p in module.parameters() if p.grad is not None)


@pytest.fixture
def llava(tiny_llava):
    """A private copy of the session tiny LLaVA (tests here freeze, checkpoint and backprop)."""
    model, processor = tiny_llava
    return copy.deepcopy(model), processor


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_forward_matches_model_loss_and_independent_states(
    tiny_llava, make_tiny_batch, padding_side, distance
):
    model, processor = tiny_llava
    batch = make_tiny_batch(processor, TEXTS, padding_side=padding_side)
    config = VistaConfig(distance=distance)
    with torch.no_grad():
        out = forward_with_vista(model, batch, config)
    ref_ce, ref_vista = reference_vista(model, batch, config)
    torch.testing.assert_close(out.ce_loss, ref_ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.vista.loss, ref_vista.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.vista.similarity, ref_vista.similarity, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.loss, out.ce_loss + out.vista.loss)
    assert int(out.vista.num_samples) == 2  # the text-only sample is excluded
    assert abs(float(out.vista.loss)) > 1e-4  # a real, non-trivial term


def test_gradients_reach_projector_llm_embeddings_not_frozen_tower(llava, make_tiny_batch):
    model, processor = llava
    model.model.vision_tower.requires_grad_(False)  # stage 2: projector + LLM train, vision tower frozen
    batch = make_tiny_batch(processor, TEXTS, padding_side="left")
    out = forward_with_vista(model, batch, VistaConfig())
    out.vista.loss.backward()  # the VISTA term alone must reach every trainable part
    assert grad_norm(model.model.multi_modal_projector) > 0
    assert grad_norm(model.model.language_model.layers) > 0
    assert grad_norm(model.get_input_embeddings()) > 0
    assert all(p.grad is None for p in model.model.vision_tower.parameters())


def test_disabled_config_logs_term_without_adding_it(tiny_llava, make_tiny_batch):
    model, processor = tiny_llava
    batch = make_tiny_batch(processor, TEXTS)
    on = forward_with_vista(model, batch, VistaConfig())
    off = forward_with_vista(model, batch, VistaConfig(enabled=False))
    assert torch.equal(off.loss, off.ce_loss)
    assert off.vista.loss.grad_fn is None and on.vista.loss.grad_fn is not None
    torch.testing.assert_close(off.vista.loss, on.vista.loss.detach())
    torch.testing.assert_close(on.loss, on.ce_loss + on.vista.loss)


def test_forward_kwargs_pass_through(tiny_llava, make_tiny_batch):
    model, processor = tiny_llava
    batch = make_tiny_batch(processor, TEXTS)
    with torch.no_grad():
        out = forward_with_vista(model, batch, VistaConfig(), num_items_in_batch=torch.tensor(1000))
        summed = model(**batch, num_items_in_batch=torch.tensor(1))
    torch.testing.assert_close(out.ce_loss, summed.loss / 1000)


def test_supervised_targets_and_coefficient(tiny_llava, make_tiny_batch):
    model, processor = tiny_llava
    batch = make_tiny_batch(processor, TEXTS)
    batch["labels"][:, : batch["labels"].shape[1] // 2] = -100
    with torch.no_grad():
        out = forward_with_vista(model, batch, VistaConfig(targets="supervised", coefficient=0.5))
        with capture_vista_states(model) as capture:
            model(**batch)
    hidden, embeds = capture.states()
    real = batch["attention_mask"].bool()
    image_mask = (batch["input_ids"] == image_token_id(model)) & real
    text_mask = real & ~image_mask & (batch["labels"] != -100)
    expected = vista_loss(hidden, embeds, image_mask, text_mask, VistaConfig(coefficient=0.5))
    torch.testing.assert_close(out.vista.loss, expected.loss)


def test_training_computes_logits_only_where_a_token_is_supervised(llava, make_tiny_batch):
    """In training the LM head runs on the supervised positions only (``logits_to_keep``), and the loss and every
    gradient equal those of the model's own loss on full logits plus an independently computed VISTA term."""
    model, processor = llava
    model.train()
    batch = make_tiny_batch(processor, TEXTS, padding_side="left")
    batch["labels"][0, : batch["labels"].shape[1] - 3] = -100  # rows with different supervised spans
    model.zero_grad(set_to_none=True)
    out = forward_with_vista(model, batch, VistaConfig())
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    assert out.outputs.logits.shape == (supervised, model.config.text_config.vocab_size)
    assert supervised < batch["labels"].numel() // 2  # the slicing is not vacuous

    model.zero_grad(set_to_none=True)
    full = model(**batch, output_hidden_states=True)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    real = batch["attention_mask"].bool()
    image_mask = (batch["input_ids"] == model.config.image_token_id) & real
    reference = vista_loss(full.hidden_states[-1], embeds, image_mask, real & ~image_mask, VistaConfig())
    (full.loss + reference.loss).backward()
    assert full.logits.shape[:2] == batch["labels"].shape
    torch.testing.assert_close(out.ce_loss, full.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.loss, full.loss + reference.loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, dict(model.named_parameters())[name].grad, rtol=1e-5, atol=1e-7, msg=name
        )


def test_a_batch_without_supervised_tokens_is_refused_not_nan(llava, make_tiny_batch):
    """The mean cross-entropy over no token is NaN; training says why instead (with ``num_items_in_batch``, as the
    Trainer passes under gradient accumulation, an empty micro-batch adds 0)."""
    model, processor = llava
    model.train()
    batch = make_tiny_batch(processor, TEXTS, padding_side="left")
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="no supervised token"):
        forward_with_vista(model, batch, VistaConfig())
    out = forward_with_vista(model, batch, VistaConfig(), num_items_in_batch=4)
    assert out.ce_loss.item() == 0.0


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_parity(llava, make_tiny_batch, use_reentrant):
    model, processor = llava
    model.train()
    batch = make_tiny_batch(processor, TEXTS, padding_side="left")

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        out = forward_with_vista(model, batch, VistaConfig())
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    plain, plain_grads = loss_and_grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.model.language_model.gradient_checkpointing
    ckpt, ckpt_grads = loss_and_grads()
    torch.testing.assert_close(ckpt.loss, plain.loss)
    torch.testing.assert_close(ckpt.vista.loss, plain.vista.loss)
    assert plain_grads.keys() == ckpt_grads.keys()
    assert any("layers" in name for name in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_hooks_removed_after_context_even_on_error(tiny_llava, make_tiny_batch):
    model, processor = tiny_llava
    decoder, embeddings = model.model.language_model, model.get_input_embeddings()

    def count():
        return len(decoder._forward_hooks) + len(embeddings._forward_hooks)

    before = count()
    with capture_vista_states(model):
        assert count() == before + 2
    assert count() == before
    with pytest.raises(ZeroDivisionError), capture_vista_states(model):
        1 / 0  # noqa: B018
    assert count() == before
    forward_with_vista(model, make_tiny_batch(processor, TEXTS[:1]), VistaConfig())
    assert count() == before


def test_misfired_hooks_and_bad_inputs_fail_loudly(tiny_llava, make_tiny_batch):
    model, processor = tiny_llava
    batch = make_tiny_batch(processor, TEXTS)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        with capture_vista_states(model) as capture:
            pass
        with pytest.raises(RuntimeError, match="fired 0 times"):
            capture.states()
        with capture_vista_states(model) as capture:
            model(**inputs)
            model(**inputs)
        with pytest.raises(RuntimeError, match="fired 2 times"):
            capture.states()
        with capture_vista_states(model) as capture:
            out = model(**inputs, logits_to_keep=1)
        assert out.logits.shape[1] == 1  # the LM head saw one position; the capture still has every position
        assert capture.states()[0].shape == (*batch["input_ids"].shape, model.config.text_config.hidden_size)
        with pytest.raises(ValueError, match="logits_to_keep"):
            forward_with_vista(model, batch, VistaConfig(), logits_to_keep=1)
        with pytest.raises(KeyError, match="labels"):
            forward_with_vista(model, inputs, VistaConfig())


# ---- a second family: LLaVA-NeXT with anyres tiling (a different number of image tokens per image) ----


@pytest.fixture(scope="module")
def tiny_llava_next(tiny_tokenizer):
    """A tiny LLaVA-NeXT (CLIP + Llama, anyres grids up to 2x2 tiles of 32 px) and its processor."""
    size, patch, pinpoints = 32, 8, [[32, 64], [64, 32], [64, 64]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=pinpoints,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            image_size=size,
            patch_size=patch,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            pad_token_id=tiny_tokenizer.pad_token_id,
        ),
        image_token_index=tiny_tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(size // patch) ** 2,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration._from_config(config, attn_implementation="eager")
    return model, processor


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_llava_next_variable_image_tokens(tiny_llava_next, make_tiny_batch, padding_side):
    model, processor = copy.deepcopy(tiny_llava_next)
    model.model.vision_tower.requires_grad_(False)
    sizes = [(30, 70), (20, 20), (64, 64)]  # 1 image, none, 2 images: different anyres tilings
    batch = make_tiny_batch(processor, TEXTS, padding_side=padding_side, image_sizes=sizes)
    counts = (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert counts[1] == 0 and len({counts[0], counts[2]}) == 2 and counts[0] > 0
    config = VistaConfig()
    out = forward_with_vista(model, batch, config)
    ref_ce, ref_vista = reference_vista(model, batch, config)
    torch.testing.assert_close(out.ce_loss, ref_ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.vista.loss, ref_vista.loss, rtol=1e-6, atol=1e-7)
    assert int(out.vista.num_samples) == 2
    out.vista.loss.backward()
    assert grad_norm(model.model.multi_modal_projector) > 0
    assert grad_norm(model.model.language_model.layers) > 0
    assert all(p.grad is None for p in model.model.vision_tower.parameters())


# ---- a third family: Qwen2-VL (its own vision tower, merged patches, multimodal RoPE) ----


@pytest.fixture(scope="module")
def tiny_qwen2_vl(tiny_tokenizer):
    """A tiny Qwen2-VL sharing the tiny tokenizer: ``<image>`` is the image pad, ``<s>``/``</s>`` bracket images."""
    tok = tiny_tokenizer
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tok.unk_token_id,
        vision_start_token_id=tok.bos_token_id,
        vision_end_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration._from_config(config, attn_implementation="eager")
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=8 * 8, max_pixels=32 * 32
    )
    return model, image_processor, tok


def qwen2_vl_batch(model, image_processor, tokenizer, texts, sizes, padding_side):
    """Expand each ``<image>`` into ``<s> + <image> x (t*h*w / merge^2) + </s>``, as Qwen2-VL's processor does."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    vision = image_processor(images=images, return_tensors="pt")
    counts = iter((vision["image_grid_thw"].prod(dim=-1) // 4).tolist())
    config = model.config
    rows = []
    for text in texts:
        row = []
        for token in tokenizer(text)["input_ids"]:
            if token == config.image_token_id:
                row += [config.vision_start_token_id] + [token] * next(counts) + [config.vision_end_token_id]
            else:
                row.append(token)
        rows.append(row)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    labels = input_ids.masked_fill((attention_mask == 0) | (input_ids == config.image_token_id), -100)
    mm_token_type_ids = (input_ids == config.image_token_id).int()  # 1 = image (for M-RoPE), as the processor
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "mm_token_type_ids": mm_token_type_ids,
        **vision,
    }


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_qwen2_vl(tiny_qwen2_vl, padding_side):
    model, image_processor, tokenizer = tiny_qwen2_vl
    model = copy.deepcopy(model)
    model.model.visual.requires_grad_(False)
    batch = qwen2_vl_batch(
        model, image_processor, tokenizer, TEXTS, [(16, 24), (32, 16), (24, 24)], padding_side
    )
    counts = (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert counts == [6, 0, 8 + 9]
    config = VistaConfig(distance="cosine", weighting="position")
    out = forward_with_vista(model, batch, config)
    ref_ce, ref_vista = reference_vista(model, batch, config)
    torch.testing.assert_close(out.ce_loss, ref_ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.vista.loss, ref_vista.loss, rtol=1e-6, atol=1e-7)
    assert int(out.vista.num_samples) == 2
    out.vista.loss.backward()
    assert all(p.grad is None for p in model.model.visual.parameters())  # frozen (merger included)
    assert grad_norm(model.model.language_model.layers) > 0
    assert grad_norm(model.get_input_embeddings()) > 0


def test_forward_with_vista_refuses_a_config_that_is_not_a_vista_config():
    """A dict used to fail later with ``AttributeError: 'dict' object has no attribute 'targets'``."""
    with pytest.raises(
        TypeError, match=r"config must be a VistaConfig, got dict \(e.g. VistaConfig\(\*\*d\)\)"
    ):
        forward_with_vista(None, {"input_ids": None, "labels": None}, {"distance": "l2"})
