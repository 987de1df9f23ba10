"""`vista foundations` on a small world: both losses fall, both parts reload, and the assembled tiny LLaVA
trains through `vista train` stage 1 then stage 2 (reduced sizes and steps; about a minute on 2 busy cores)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, LlamaForCausalLM

from vista.foundations import FoundationSpec, build_foundations
from vista.world.cli import synth

REPO = Path(__file__).resolve().parents[2]
SPEC = FoundationSpec(
    clip_steps=60, clip_batch=32, lm_steps=60, lm_batch=8, lm_max_length=160, vocab_size=768
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("foundations")
    synth(root / "world", seed=3, size=160, bench_size=4)
    log = build_foundations(root / "world", root / "found", SPEC)
    return {"root": root, "log": log}


@pytest.mark.parametrize("part,factor", [("clip", 0.8), ("lm", 0.6)])
def test_losses_fall(built, part, factor):
    losses = built["log"][part]["losses"]
    assert len(losses) == 60 and all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < factor * first, (part, first, last)
    saved = json.loads((built["root"] / "found" / "foundations_log.json").read_text())
    assert saved[part]["losses"] == losses


def test_parts_reload_offline(built):
    found = built["root"] / "found"
    clip = CLIPModel.from_pretrained(found / "vision")
    assert clip.config.vision_config.image_size == 32 and clip.config.vision_config.patch_size == 8
    lm = LlamaForCausalLM.from_pretrained(found / "language")
    tokenizer = AutoTokenizer.from_pretrained(found / "language")
    ids = tokenizer("What colour is the red circle?", return_tensors="pt")["input_ids"]
    assert tokenizer.unk_token_id not in ids[0].tolist()
    assert lm(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_lm_never_reads_image_conversations_but_its_tokenizer_knows_their_words(built):
    """Without its image, an image record's answer is a guess: the LM must not learn to answer from priors. The
    tokenizer still trains on those conversations, so long-context passages get whole-word tokens."""
    from vista.foundations import caption_of, conversation_text, image_conversations, lm_corpus, load_world

    _, pretrain, finetune, scenes = load_world(built["root"] / "world")
    docs = lm_corpus(pretrain, finetune, scenes)
    with_image = {conversation_text(r) for r in finetune if "image" in r}
    text_only = [conversation_text(r) for r in finetune if "image" not in r]
    assert with_image and text_only
    assert not with_image & set(docs)
    assert set(text_only) <= set(docs) and {caption_of(r) for r in pretrain} <= set(docs)
    assert set(image_conversations(finetune)) == with_image
    tokenizer = AutoTokenizer.from_pretrained(built["root"] / "found" / "language")
    passage = "The background of every picture is dark grey. Objects in these pictures never overlap."
    assert len(tokenizer(passage, add_special_tokens=False)["input_ids"]) <= 18


def test_lm_documents_start_as_the_vlm_records_do_and_cuts_are_counted(built):
    """The LM is pretrained on its text exactly as stage 1, stage 2 and evaluation tokenize it (the tokenizer's own
    special prefix: none for the tiny tokenizer, so no ``<s>`` the VLM never shows it), and a cut document is
    counted in the log rather than dropped silently."""
    from vista.foundations import lm_documents
    from vista.templates import special_prefix

    tokenizer = AutoTokenizer.from_pretrained(built["root"] / "found" / "language")
    text = "USER: What colour is the red circle? ASSISTANT: red</s>"
    (doc,), cut = lm_documents(tokenizer, [text], max_length=512)
    prefix = special_prefix(tokenizer)
    assert prefix == [] and tokenizer.bos_token_id not in doc
    assert doc == prefix + tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cut == 0
    short = tokenizer("red")["input_ids"]
    assert len(short) < 5 < len(doc)
    assert lm_documents(tokenizer, [text, "red"], max_length=5) == ([doc[:5], short], 1)
    assert (
        built["log"]["lm"]["documents_cut"] == lm_documents(tokenizer, _corpus(built), SPEC.lm_max_length)[1]
    )


def test_packed_batch_is_the_padded_batch_without_the_padding():
    """Packing a batch into rows changes where documents sit, not what the LM computes: every document's logits
    and the batch loss equal those of the padded batch (one document per row), no document spans two rows, and no
    document's last token is trained to predict the next document's first."""
    from transformers import LlamaConfig

    from vista.foundations import IGNORE_INDEX, pack_documents, packed_batch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128, pad_token_id=0)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    docs = [rng.integers(1, 50, size=n).tolist() for n in (40, 3, 25, 1, 17, 9, 30, 12)]
    width = max(map(len, docs))
    padded = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros_like(padded)
    for i, doc in enumerate(docs):
        padded[i, : len(doc)], mask[i, : len(doc)] = torch.tensor(doc), 1
    labels = padded.masked_fill(mask == 0, IGNORE_INDEX)

    rows = pack_documents(docs)
    assert sorted(map(len, (d for row in rows for d in row))) == sorted(map(len, docs))
    assert len(rows) < len(docs) and all(sum(map(len, row)) <= width for row in rows)
    batch = packed_batch(docs, pad_token_id=0)
    assert batch["input_ids"].shape == (len(rows), width)
    with torch.no_grad():
        reference = model(input_ids=padded, attention_mask=mask, labels=labels)
        packed = model(**batch)
    torch.testing.assert_close(packed.loss, reference.loss, rtol=0, atol=1e-5)
    unused = list(range(len(docs)))
    for r, row in enumerate(rows):
        start = 0
        for doc in row:
            i = next(k for k in unused if docs[k] == doc)
            unused.remove(i)
            torch.testing.assert_close(
                packed.logits[r, start : start + len(doc)], reference.logits[i, : len(doc)], rtol=0, atol=1e-5
            )
            assert batch["labels"][r, start] == IGNORE_INDEX  # nothing predicts a document's first token
            assert batch["position_ids"][r, start : start + len(doc)].tolist() == list(range(len(doc)))
            start += len(doc)
    assert (batch["labels"] != IGNORE_INDEX).sum() == sum(len(d) - 1 for d in docs)


def _corpus(built) -> list[str]:
    from vista.foundations import lm_corpus, load_world

    _, pretrain, finetune, scenes = load_world(built["root"] / "world")
    return lm_corpus(pretrain, finetune, scenes, SPEC.seed)


def test_assembled_llava_trains_through_both_stages(built):
    from vista.cli import main

    root, world, found = built["root"], built["root"] / "world", built["root"] / "found"
    common = [f"data.image_folder={world / 'images'}", "training.logging_steps=1"]
    previous = Path.cwd()
    os.chdir(root)
    try:
        code = main(
            ["train", "--config", str(REPO / "reproduce/configs/tiny/pretrain.yaml"), *common,
             f"data.json={world / 'pretrain.json'}", f"model.vision_tower={found / 'vision'}",
             f"model.language_model={found / 'language'}", "training.output_dir=runs/pretrain"]
        )  # fmt: skip
        assert code == 0
        code = main(
            ["train", "--config", str(REPO / "reproduce/configs/tiny/finetune.yaml"), *common,
             f"data.json={world / 'finetune.json'}", "model.checkpoint=runs/pretrain",
             "training.output_dir=runs/finetune", "data.max_length=512"]
        )  # fmt: skip
        assert code == 0
    finally:
        os.chdir(previous)
    for stage in ("pretrain", "finetune"):
        history = json.loads((root / "runs" / stage / "trainer_state.json").read_text())["log_history"]
        losses = [row["loss"] for row in history if "loss" in row]
        assert len(losses) >= 10 and all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), (stage, losses)


def test_cell_labels_are_the_scene_attributes():
    from vista.foundations import DENSE_ATTRIBUTES, cell_labels
    from vista.world.scenes import SHAPES, Scene, SceneObject

    scene = Scene(
        objects=(
            SceneObject("triangle", "red", "large", 0, 1),
            SceneObject("cross", "white", "small", 1, 0),
        )
    )
    labels = cell_labels([scene])
    empty = [len(v) for v in DENSE_ATTRIBUTES.values()]
    colours = DENSE_ATTRIBUTES["colour"]
    assert labels.shape == (1, 4, 3)
    assert labels[0, 0].tolist() == empty and labels[0, 3].tolist() == empty
    assert labels[0, 1].tolist() == [SHAPES.index("triangle"), colours.index("red"), 1]
    assert labels[0, 2].tolist() == [SHAPES.index("cross"), colours.index("white"), 0]


def test_dense_head_supervises_every_patch_with_its_cell_and_averages_the_losses():
    import torch

    from vista.foundations import DenseAttributeHead

    torch.manual_seed(0)
    head = DenseAttributeHead(hidden=8)
    patches = torch.randn(2, 16, 8)  # 4x4 patches: each cell of the 2x2 grid is 2x2 patches
    labels = torch.randint(0, 3, (2, 4, 3))
    cell_of_patch = torch.tensor([(i // 4) // 2 * 2 + (i % 4) // 2 for i in range(16)])  # row-major patches
    patch_labels = labels[:, cell_of_patch]  # (2, 16, 3): each patch gets its cell's attributes
    losses = [
        torch.nn.functional.cross_entropy(h(patches).reshape(32, -1), patch_labels[..., k].reshape(32))
        for k, h in enumerate(head.heads)
    ]
    losses.append(
        torch.nn.functional.cross_entropy(head.position(patches).reshape(32, -1), cell_of_patch.repeat(2))
    )
    expected = torch.stack(losses).mean()
    assert torch.allclose(head(patches, labels), expected)


def test_dense_loss_puts_shape_and_position_into_the_patches(built):
    """The dense term is what makes the patch features say which shape a cell holds and where a patch is: a CLIP
    trained with it (same steps, same seed) beats one trained contrastively alone on both logistic probes (held
    out). Position is the large effect (RoPE gives the LM no absolute position, so it must come from here)."""
    from dataclasses import replace

    from sklearn.linear_model import LogisticRegression

    from vista.foundations import (
        caption_of,
        cell_labels,
        encode_captions,
        load_world,
        pixel_values,
        train_clip,
    )

    world = built["root"] / "world"
    _, pretrain, _, scenes = load_world(world)
    pixels = pixel_values(world / "images", [r["image"] for r in pretrain], 32)
    tokenizer = AutoTokenizer.from_pretrained(built["root"] / "found" / "language")
    captions = encode_captions(tokenizer, [caption_of(r) for r in pretrain])
    dense_labels = cell_labels(scenes)
    shapes = dense_labels[..., 0].reshape(-1).numpy()  # shape class per cell (4 = empty)
    patch_cell = np.array([(i // 4) // 2 * 2 + (i % 4) // 2 for i in range(16)] * len(pretrain))

    def held_out_score(x: np.ndarray, y: np.ndarray) -> float:
        half = len(y) // 2
        return LogisticRegression(max_iter=500).fit(x[:half], y[:half]).score(x[half:], y[half:])

    # the shape class of each patch's cell, patches in row-major order (as patch_cell)
    patch_shapes = dense_labels[:, patch_cell[:16], 0].reshape(-1).numpy()

    def probes(dense_weight: float) -> tuple[float, float, float]:
        spec = replace(SPEC, clip_steps=150, dense_weight=dense_weight)
        vision = train_clip(spec, tokenizer, pixels, captions, dense_labels)[0].vision_model
        with torch.no_grad():
            h = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        cells = h.reshape(len(h), 2, 2, 2, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(len(h) * 4, -1).numpy()
        occupied = shapes < 4
        shape = held_out_score(cells[occupied], shapes[occupied])
        patches = h.reshape(-1, h.shape[-1]).numpy()
        in_object = patch_shapes < 4
        one_patch = held_out_score(patches[in_object], patch_shapes[in_object])
        return shape, held_out_score(patches, patch_cell), one_patch

    (shape_dense, where_dense, patch_dense), (shape_clip, where_clip, patch_clip) = probes(10.0), probes(0.0)
    assert shape_dense > shape_clip, (shape_dense, shape_clip)
    assert where_dense > where_clip + 0.2 and where_dense > 0.9, (where_dense, where_clip)
    # a single patch (which sees a quarter of its object) names the object's shape better with the dense term
    # (on this small world 0.63 vs 0.52; the loss's per-patch form is pinned by the dense-head test above)
    assert patch_dense > patch_clip + 0.1, (patch_dense, patch_clip)


def test_each_part_built_alone_is_the_same_as_in_a_full_build(built, tmp_path):
    """The pipeline builds vision and language in two processes at once: each part, its tokenizer included, must be
    bit-identical to the same part of a full build (a different tokenizer would change the captions CLIP trains on)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from vista.foundations import PARTS, log_path

    spec = replace(SPEC, clip_steps=4, lm_steps=4)
    world, full, alone = built["root"] / "world", tmp_path / "full", tmp_path / "alone"
    full_log = build_foundations(world, full, spec)
    logs = {part: build_foundations(world, alone, spec, parts=(part,)) for part in PARTS}
    assert sorted(p.name for p in alone.glob("foundations_log*.json")) == [
        "foundations_log.language.json",
        "foundations_log.vision.json",
    ]
    assert json.loads(log_path(alone, ("vision",)).read_text())["clip"] == logs["vision"]["clip"]
    assert "lm" not in logs["vision"] and "clip" not in logs["language"]
    assert (
        logs["vision"]["tokenizer_sha256"]
        == logs["language"]["tokenizer_sha256"]
        == full_log["tokenizer_sha256"]
    )
    assert logs["vision"]["clip"]["losses"] == full_log["clip"]["losses"]
    assert logs["language"]["lm"]["losses"] == full_log["lm"]["losses"]
    for part in PARTS:
        a, b = load_file(full / part / "model.safetensors"), load_file(alone / part / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert (full / "language" / "tokenizer.json").read_bytes() == (
        alone / "language" / "tokenizer.json"
    ).read_bytes()
    assert not (alone / "vision" / "tokenizer.json").exists()  # only the language part saves the tokenizer
