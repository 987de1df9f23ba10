"""L2T label masks, the VIRAL-style term against an independent computation, and where its gradient goes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import build_tiny_batch

from vista.builder import freeze_for_stage
from vista.errors import UsageError
from vista.loss import IGNORE_INDEX, VistaConfig
from vista.objectives import ObjectivesRuntime, forward_with_objectives, l2t_template, objectives_config_from
from vista.templates import get_template
from vista.tiny import TinyLlavaSpec, build_tiny_llava
from vista.viral import ViralConfig

TURNS = [
    {"role": "user", "content": "<image>\nWhat is it?"},
    {"role": "assistant", "content": "A red square."},
    {"role": "user", "content": "How many?"},
    {"role": "assistant", "content": "Three."},
]
TEXTS = [
    "USER: <image>\nDescribe the image. ASSISTANT: A red square above a blue circle.",
    "USER: <image>\nHow many? ASSISTANT: Three.",
]


def supervised_runs(tokenizer, input_ids, labels) -> list[str]:
    runs, current = [], []
    for token, label in zip(input_ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(int(token))
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_l2t_refuses_a_template_without_instruction_text():
    # stage 1's plain template renders the user turn as the image only: L2T would silently equal the baseline
    with pytest.raises(ValueError, match="renders no instruction text"):
        l2t_template(get_template("plain"))
    assert l2t_template(get_template("plain"), objectives_config_from({}).l2t) is get_template("plain")


def test_l2t_labels_equal_the_expected_masks_on_a_multi_turn_record(tiny_tokenizer):
    base = get_template("vicuna_v1")
    plain = base.tokenize(TURNS, tiny_tokenizer, num_image_tokens=3)
    l2t = l2t_template(base).tokenize(TURNS, tiny_tokenizer, num_image_tokens=3)
    np.testing.assert_array_equal(plain.input_ids, l2t.input_ids)  # same text, only the labels differ
    assert supervised_runs(tiny_tokenizer, plain.input_ids, plain.labels) == [
        " A red square.</s>",
        " Three.</s>",
    ]
    # user text supervised too; the three image tokens, the system prompt and the role tags are not
    assert supervised_runs(tiny_tokenizer, l2t.input_ids, l2t.labels) == [
        " ", "\nWhat is it?", " A red square.</s>", " How many?", " Three.</s>",
    ]  # fmt: skip
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert (l2t.input_ids == image_id).sum() == 3
    assert (l2t.labels[l2t.input_ids == image_id] == IGNORE_INDEX).all()
    assert set(np.flatnonzero(plain.labels != IGNORE_INDEX)) < set(np.flatnonzero(l2t.labels != IGNORE_INDEX))
    assert l2t_template(base, objectives_config_from({}).l2t) is base  # disabled: unchanged


def test_objectives_section_errors_name_the_key():
    with pytest.raises(ValueError, match="objectives.viral.lyer"):
        objectives_config_from({"viral": {"lyer": 3}})
    with pytest.raises(ValueError, match="objectives.l2"):
        objectives_config_from({"l2": {}})
    with pytest.raises(ValueError, match="coefficient"):
        objectives_config_from({"viral": {"coefficient": -1.0}})


@pytest.fixture(scope="module")
def deep_llava(tiny_tokenizer):
    """A float64 tiny LLaVA with 4 decoder layers (so 'below l=2' and 'above' are both non-empty)."""
    model, processor = build_tiny_llava(TinyLlavaSpec(text_layers=4), tokenizer=tiny_tokenizer, seed=1)
    return model.double(), processor


def independent_viral(model, batch, layer: int, coefficient: float) -> torch.Tensor:
    """Per sample, per image token: -cos(MLP(h^(l)_i), F_i) by hand; mean over all image tokens; times lambda."""
    out = model(**batch, output_hidden_states=True)
    states = out.hidden_states[layer]  # embeddings are index 0, so index l is the output of l layers
    vision = model.model.vision_tower(pixel_values=batch["pixel_values"], output_hidden_states=True)
    features = vision.hidden_states[-1][:, 1:]  # drop CLS
    image_id = model.config.image_token_id
    values, image = [], 0
    for b in range(batch["input_ids"].shape[0]):
        positions = (batch["input_ids"][b] == image_id).nonzero().flatten().tolist()
        for k, pos in enumerate(positions):
            predicted = model.viral_projector(states[b, pos])
            target = features[image, k]
            values.append(-(predicted @ target) / (predicted.norm() * target.norm()))
        image += 1 if positions else 0
    return coefficient * torch.stack(values).mean()


def test_viral_term_equals_an_independent_per_sample_computation(deep_llava):
    model, processor = copy.deepcopy(deep_llava[0]), deep_llava[1]
    runtime = ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True}}))
    assert runtime.layer == 2  # half of 4 layers, the paper's default
    batch = build_tiny_batch(processor, TEXTS)
    batch["pixel_values"] = batch["pixel_values"].double()
    out = forward_with_objectives(model, batch, VistaConfig(enabled=False), runtime, diagnostics=False)
    expected = independent_viral(model, batch, layer=2, coefficient=0.5)
    assert out.viral_loss.dtype == torch.float64
    assert abs(out.viral_loss.item() - expected.item()) < 1e-9
    assert abs(out.loss.item() - (out.base.ce_loss + expected).item()) < 1e-9


def test_viral_gradient_reaches_only_the_mlp_and_the_layers_below_l(deep_llava):
    model, processor = copy.deepcopy(deep_llava[0]), deep_llava[1]
    freeze_for_stage(model, "finetune")  # as in training: vision tower frozen, projector + LLM trainable
    runtime = ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True, "layer": 2}}))
    batch = build_tiny_batch(processor, TEXTS)
    batch["pixel_values"] = batch["pixel_values"].double()
    out = forward_with_objectives(model, batch, VistaConfig(enabled=False), runtime, diagnostics=False)
    out.viral_loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}

    def reached(prefix: str) -> bool:
        return any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix))

    layers = "model.language_model.layers"
    for upstream in ("viral_projector", f"{layers}.0.", f"{layers}.1.", "model.multi_modal_projector",
                     "model.language_model.embed_tokens"):  # fmt: skip
        assert reached(upstream), upstream
    for downstream in (
        f"{layers}.2.",
        f"{layers}.3.",
        "model.language_model.norm",
        "lm_head",
        "model.vision_tower",
    ):
        assert not reached(downstream), downstream


def test_viral_layer_out_of_range_is_a_clear_error(tiny_llava):
    model = copy.deepcopy(tiny_llava[0])
    with pytest.raises(ValueError, match="viral.layer=5 but the LLM has 2 decoder layers"):
        ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True, "layer": 5}}))
    assert ViralConfig().coefficient == 0.5 and ViralConfig().layer is None


def test_viral_teacher_layer_out_of_range_is_refused_before_training(tiny_llava):
    """It used to pass set-up and stop at the first step with ``IndexError: tuple index out of range``."""
    model = copy.deepcopy(tiny_llava[0])
    depth = model.config.vision_config.num_hidden_layers
    with pytest.raises(UsageError, match=rf"teacher_layer=50 but the teacher has {depth + 1} hidden states"):
        ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True, "teacher_layer": 50}}))
    for layer in (-(depth + 1), depth):  # the first and the last hidden state are fine
        ObjectivesRuntime(
            copy.deepcopy(tiny_llava[0]),
            objectives_config_from({"viral": {"enabled": True, "teacher_layer": layer}}),
        )


def test_viral_term_on_a_text_only_batch_is_zero_with_the_projector_in_the_graph(tiny_llava):
    model, processor = copy.deepcopy(tiny_llava[0]), tiny_llava[1]
    runtime = ObjectivesRuntime(model, objectives_config_from({"viral": {"enabled": True}}))
    batch = build_tiny_batch(processor, ["USER: What is it? ASSISTANT: A square."])
    assert "pixel_values" not in batch or batch["pixel_values"] is None
    out = forward_with_objectives(model, batch, VistaConfig(), runtime, diagnostics=True)
    assert out.viral_loss.item() == 0.0
    out.loss.backward()  # the projector took part (ZeRO-3/DDP: every rank runs the same modules every step)
    assert all(p.grad is not None for p in model.viral_projector.parameters())
