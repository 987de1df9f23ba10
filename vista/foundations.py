"""``vista foundations``: the tiny analogues of CLIP and Vicuna, trained on a synthetic world (``vista data synth``).

    vista foundations --data DIR --out OUT [--only vision|language] [--clip-steps N] [--lm-steps N] [--threads 1]

Writes ``OUT/vision`` (a ``CLIPModel`` trained contrastively on the world's image/caption pairs plus a dense
per-patch attribute and position loss on its patch features, :class:`DenseAttributeHead`; saved with its PIL CLIP
image processor; ``vista.builder.load_vision_tower`` takes its image tower), ``OUT/language`` (a
``LlamaForCausalLM`` trained with next-token prediction on the world's captions, text-only conversations and
grounded text QA in the ``vicuna_v1`` template (:func:`lm_corpus`; each batch packed into rows without
cross-document attention, :func:`packed_batch`), plus the byte-level BPE tokenizer trained on
those and the image records' conversations) and
``OUT/foundations_log.json`` (per-step losses, sizes, timings). Only the training split is used; held-out scenes
and benchmarks stay unseen. ``--only vision`` / ``--only language`` builds one part (bit-identical to the same part
of a full build; its log is ``OUT/foundations_log.<part>.json``): the pipeline runs the two as parallel stages.

On 2 shared CPU cores one intra-op thread is much faster for models this small (see ``--threads``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vista.console import progress
from vista.errors import DataError, MissingInputError, UsageError, positive_int
from vista.images import load_image
from vista.layout import FOUNDATION_PART_OPTIONS as PART_OPTIONS
from vista.layout import FOUNDATION_PARTS as PARTS
from vista.layout import foundations_log_path as log_path
from vista.loss import IGNORE_INDEX
from vista.templates import IMAGE_TOKEN, get_template
from vista.tiny import build_image_processor, build_tokenizer, tiny_llama_config
from vista.world import text as T
from vista.world.scenes import COLOURS, GRID, SHAPES, SIZES, Scene, read_scenes


@dataclass(frozen=True)
class FoundationSpec:
    """Sizes and schedules of the two foundations (defaults on the default world, in the pipeline's parallel
    stages of the 3-seed run of f1cf29f on host C: CLIP 58 s, 600 steps; LM 185 s, 773 packed steps)."""

    # enough BPE merges for whole words: about 1 token per word on the world's ~130-word vocabulary
    vocab_size: int = 768
    vision_hidden: int = 64
    vision_layers: int = 3  # LLaVA reads layer -2: with 3 layers, after two blocks
    vision_heads: int = 4
    patch_size: int = 8
    text_encoder_hidden: int = 64  # CLIP's text side (only used for the contrastive objective)
    projection_dim: int = 64
    lm_hidden: int = 128
    lm_layers: int = 2
    lm_heads: int = 4
    lm_intermediate: int = 256
    lm_max_positions: int = 1024
    clip_steps: int | None = None  # None: auto_steps(pairs, clip_batch, CLIP_EPOCHS, CLIP_MAX_STEPS)
    clip_batch: int = 64
    clip_lr: float = 2e-3
    # weight of the dense per-patch attribute loss added to CLIP's (0: contrastive only); see train_clip
    dense_weight: float = 10.0
    lm_steps: int | None = None  # None: auto_steps(documents, lm_batch, LM_EPOCHS, LM_MAX_STEPS)
    lm_batch: int = 16
    lm_lr: float = 3e-3
    # tokens per LM document: none of the default world's is longer (its log counts the documents cut, 0)
    lm_max_length: int = 512
    seed: int = 0


CLIP_EPOCHS, LM_EPOCHS = 20, 2  # passes over the data when the step counts are left to auto_steps
# With the dense term on cell means, shape read from a cell's patches (linear probe, default world): 76% after 400
# steps at weight 5, 93% after 600 at weight 10, 97% after 1000 at weight 5 (contrastive alone: 66% after 400); with
# the per-patch term (DenseAttributeHead), 98.7% from each single patch after 600 at weight 10.
CLIP_MAX_STEPS = 600
LM_MAX_STEPS = 1000


def auto_steps(examples: int, batch: int, epochs: float, cap: int, floor: int = 60) -> int:
    """Steps for ``epochs`` passes over ``examples`` in batches of ``batch``, within [floor, cap]: on the default
    world (2000 scenes) CLIP reaches its cap and the LM takes 773 steps (6,187 documents, 2 epochs); the
    pipeline's --quick world (300) trains in well under a minute."""
    return int(min(cap, max(floor, round(epochs * examples / batch))))


# ---- data -----------------------------------------------------------------------------------------------------
def load_world(data: str | Path) -> tuple[dict, list[dict], list[dict], list[Scene]]:
    """(manifest, pretrain records, finetune records, pretraining scenes) of a ``vista data synth`` folder."""
    data = Path(data)
    needed = ("manifest.json", "pretrain.json", "finetune.json", "scenes/pretrain.jsonl")
    missing = [n for n in needed if not (data / n).is_file()]
    if missing:
        raise MissingInputError(
            f"--data {data}: not a world folder (missing {', '.join(missing)}); "
            f"write one with: vista data synth --out {data}"
        )
    read = lambda name: json.loads((data / name).read_text(encoding="utf-8"))  # noqa: E731
    pretrain = read("pretrain.json")
    scenes = read_scenes(data / "scenes/pretrain.jsonl")
    if len(scenes) != len(pretrain):
        raise DataError(f"{data}: {len(scenes)} scenes in scenes/pretrain.jsonl for {len(pretrain)} records")
    return read("manifest.json"), pretrain, read("finetune.json"), scenes


def grounded_conversation(record: dict, scene: Scene, rng: random.Random, questions: int = 2) -> dict:
    """A text-only conversation: a pretraining caption, then the scene's description and questions about it.

    It teaches the LM to read attributes from earlier context, the skill LLaVA's projector then exploits (a
    real LLM has it from web text); without it the frozen tiny LM of stage 1 cannot be steered by image tokens.
    """
    turns = [
        (f"Here is a description of a picture: {caption_of(record)}\n{rng.choice(T.DESCRIBE_PROMPTS)}",
         T.describe(scene, rng, detail=2)),
    ]  # fmt: skip
    for _ in range(questions):
        q = T.sample_question(scene, rng)
        turns.append((f"{T.question_text(q)}\n{T.SHORT_ANSWER_PROMPT}", q["answer"]))
    return {
        "conversations": [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]
    }


def conversation_text(record: dict, template_name: str = "vicuna_v1") -> str:
    """A record's training text in ``template_name`` with its ``<image>`` placeholders removed (LM pretraining)."""
    turns = [
        {
            "role": "user" if t["from"] == "human" else "assistant",
            "content": t["value"].replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, ""),
        }
        for t in record["conversations"]
    ]
    return get_template(template_name).render_prompt(turns, add_generation_prompt=False)


def caption_of(record: dict) -> str:
    return record["conversations"][-1]["value"]


# Questions of the grounded conversations per pretraining scene: one conversation per entry. Text-QA accuracy of the
# LM on fresh scenes (reproduce/benchmarks/foundation_text_qa.py --n 300, default world): (2,) with 500 steps 38.0%
# (colour 20%, at chance); (2, 6) with 1000 steps 57.7% (colour 62, shape 44, size 84, position 32, count 70).
# 2026-12-01, 773 steps: 41.7% when 32% of the documents (77% of the 6-question ones) were cut at 256 tokens and
# each began with a <s> the VLM never shows; 55.3% with whole documents (lm_max_length 512) tokenized as the VLM does.
GROUNDED_QUESTIONS: tuple[int, ...] = (2, 6)


def lm_corpus(pretrain: list[dict], finetune: list[dict], scenes: list[Scene], seed: int = 0) -> list[str]:
    """The LM's documents in vicuna_v1 text, one each: captions, the text-only instruction conversations, and
    grounded text-only conversations per pretraining scene (:func:`grounded_conversation`, one per entry of
    ``GROUNDED_QUESTIONS``). Never the image records' conversations: without their images those teach the LM to
    answer image questions from priors (Vicuna never saw LLaVA's instruction data either)."""
    rng = random.Random(f"lm-corpus/{seed}")
    grounded = [
        conversation_text(grounded_conversation(r, s, rng, questions=n))
        for n in GROUNDED_QUESTIONS
        for r, s in zip(pretrain, scenes)
    ]
    text_only = [conversation_text(r) for r in finetune if "image" not in r]
    return [caption_of(r) for r in pretrain] + text_only + grounded


def image_conversations(finetune: list[dict]) -> list[str]:
    """The image records' conversations without their images, in vicuna_v1 text: only the tokenizer trains on
    them (with the LM's documents), so that the instruction data's words (long-context passages included) get
    whole-word tokens."""
    return [conversation_text(r) for r in finetune if "image" in r]


# ---- CLIP -----------------------------------------------------------------------------------------------------
def clip_config(spec: FoundationSpec, tokenizer: PreTrainedTokenizerFast, image_size: int) -> CLIPConfig:
    """A tiny CLIP. Its text side pools at the first ``<pad>`` (its ``eos_token_id``; every caption gets one):
    the tokenizer's ``</s>`` has id 2, which CLIP's text model treats as a legacy value and pools wrongly."""
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.text_encoder_hidden,
        "intermediate_size": 4 * spec.text_encoder_hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "image_size": image_size,
        "patch_size": spec.patch_size,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": 4 * spec.vision_hidden,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec.projection_dim)


def encode_captions(
    tokenizer: PreTrainedTokenizerFast, captions: list[str], max_length: int = 127
) -> torch.Tensor:
    """(N, L) token ids, each caption followed by at least one ``<pad>`` (the pooling position)."""
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"][:max_length] for c in captions]
    width = max(map(len, ids)) + 1
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    return out


def pixel_values(folder: Path, names: list[str], image_size: int) -> torch.Tensor:
    """(N, 3, image_size, image_size) float32: the CLIP preprocessing the LLaVA processor applies too."""
    processor = build_image_processor(image_size)
    images = [load_image(folder / n) for n in names]
    return torch.as_tensor(np.stack(processor(images=images, return_tensors="np")["pixel_values"]))


def _cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))


def _train(model: torch.nn.Module, steps: int, lr: float, batch_loss, desc: str) -> list[float]:
    """AdamW + warmup/cosine for ``steps`` steps; ``batch_loss(step)`` returns the step's loss. Per-step losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for step in (bar := progress(range(steps), desc=desc)):
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr, warmup=max(1, steps // 20))
        loss = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


# The attributes a grid cell's patches are supervised on, each with a last "empty cell" class.
DENSE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(sorted(COLOURS)),
    "size": SIZES,
}


def cell_labels(scenes: list[Scene]) -> torch.Tensor:
    """(N, GRID*GRID, len(DENSE_ATTRIBUTES)) class ids per image, cell (row-major) and attribute; an empty cell
    gets each attribute's last class (``len(values)``)."""
    labels = torch.tensor([len(v) for v in DENSE_ATTRIBUTES.values()]).repeat(len(scenes), GRID * GRID, 1)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            cell = obj.row * GRID + obj.col
            for k, (name, values) in enumerate(DENSE_ATTRIBUTES.items()):
                labels[i, cell, k] = values.index(getattr(obj, name))
    return labels


class DenseAttributeHead(torch.nn.Module):
    """Linear classifiers on the patch features LLaVA reads, discarded after training: from each patch alone, the
    attributes of the object in the patch's grid cell and which cell the patch is in.

    Contrastive image/caption training alone leaves the tiny CLIP's patches poor at two things questions need
    (linear probes on its layer -2 features): the shape of the object in a cell (66%; colour, size and occupancy
    >= 99.9%) and where a patch is (which cell: 62%, chance 25%). The language model cannot get the latter from
    RoPE, which only sees relative offsets. Dense supervision of the patch features, as in SigLIP 2's
    localisation objectives, closes both gaps.

    Every object straddles the four patches of its cell (it is drawn around the cell centre), so each patch sees a
    quarter of it. Supervising the mean of a cell's patches left each single patch a poor witness of its object
    (linear probe per patch, occupied cells: shape 64%, colour 81%, size 85%); the LLM then has to gather four
    tokens to find an object. Supervising every patch makes the tower mix the quarters (98.7%, 100%, 100%), and the
    tiny LLaVA baseline read the image better (1 seed, 50 documents per attribute: 58.0% -> 65.3% on the default
    world; count 64% -> 94%).
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(
            torch.nn.Linear(hidden, len(v) + 1) for v in DENSE_ATTRIBUTES.values()
        )
        self.position = torch.nn.Linear(hidden, GRID * GRID)

    def forward(self, patches: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """patches (B, P*P, H) without the class token, labels (B, GRID*GRID, A) -> mean cross-entropy (scalar)
        over the A attribute heads (each patch against its cell's labels) and the position head."""
        b, n, h = patches.shape
        side = int(round(n**0.5))
        per = side // GRID
        grid = patches.reshape(b, GRID, per, GRID, per, h)
        ce = torch.nn.functional.cross_entropy
        # every patch of a cell is supervised with the cell's attributes
        per_patch = labels.reshape(b, GRID, 1, GRID, 1, -1).expand(b, GRID, per, GRID, per, -1)
        losses = [
            ce(head(grid).reshape(-1, head.out_features), per_patch[..., k].reshape(-1))
            for k, head in enumerate(self.heads)
        ]
        cell_of_patch = torch.arange(GRID * GRID).reshape(GRID, 1, GRID, 1).expand(GRID, per, GRID, per)
        position_logits = self.position(grid).reshape(-1, GRID * GRID)
        losses.append(ce(position_logits, cell_of_patch.reshape(1, -1).expand(b, -1).flatten()))
        return torch.stack(losses).mean()


def train_clip(
    spec: FoundationSpec,
    tokenizer: PreTrainedTokenizerFast,
    pixels: torch.Tensor,
    captions: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[CLIPModel, list[float]]:
    """Contrastive (InfoNCE both ways, CLIP's own loss) on random batches of image/caption pairs, plus
    ``spec.dense_weight`` x the :class:`DenseAttributeHead` loss on the patch features LLaVA reads (layer -2) when
    per-cell ``labels`` (:func:`cell_labels`) are given."""
    torch.manual_seed(spec.seed)
    model = CLIPModel(clip_config(spec, tokenizer, pixels.shape[-1]))
    dense = DenseAttributeHead(spec.vision_hidden) if labels is not None and spec.dense_weight > 0 else None
    trained = torch.nn.ModuleList([model, dense]) if dense is not None else model
    generator = torch.Generator().manual_seed(spec.seed)
    mask = (captions != tokenizer.pad_token_id).long()
    mask[:, 0] = 1

    def batch_loss(step: int) -> torch.Tensor:
        idx = torch.randperm(len(pixels), generator=generator)[: spec.clip_batch]
        width = int(mask[idx].sum(1).max()) + 1  # through the first <pad> of the longest caption
        out = model(
            input_ids=captions[idx, :width],
            attention_mask=mask[idx, :width],
            pixel_values=pixels[idx],
            return_loss=True,
            output_hidden_states=dense is not None,
        )
        if dense is None:
            return out.loss
        patches = out.vision_model_output.hidden_states[-2][:, 1:]
        return out.loss + spec.dense_weight * dense(patches, labels[idx])

    steps = spec.clip_steps or auto_steps(len(pixels), spec.clip_batch, CLIP_EPOCHS, CLIP_MAX_STEPS)
    return model, _train(trained, steps, spec.clip_lr, batch_loss, "CLIP (contrastive + dense)")


# ---- language model -------------------------------------------------------------------------------------------
def lm_config(spec: FoundationSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return tiny_llama_config(
        tokenizer,
        hidden=spec.lm_hidden,
        intermediate=spec.lm_intermediate,
        layers=spec.lm_layers,
        heads=spec.lm_heads,
        max_positions=spec.lm_max_positions,
    )


def lm_documents(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], max_length: int
) -> tuple[list[list[int]], int]:
    """(token ids of each document, how many were cut). A document is tokenized as the VLM will see its text,
    ``tokenizer(text)``, so with the same special prefix (none for the tiny tokenizer: stage 1 and 2 records and
    evaluation prompts start without ``<s>`` too), and cut to ``max_length`` tokens; the count goes to the log."""
    ids = tokenizer(texts)["input_ids"]
    return [d[:max_length] for d in ids], sum(len(d) > max_length for d in ids)


def pack_documents(docs: list[list[int]]) -> list[list[list[int]]]:
    """Rows of documents, first-fit decreasing, each row at most as long as the longest document (the width a
    padded batch of ``docs`` would have). On the default world a padded batch of 16 documents is 48% tokens and
    52% padding; packed rows are 84% tokens."""
    width = max(map(len, docs))
    rows: list[list[list[int]]] = []
    used: list[int] = []
    for doc in sorted(docs, key=len, reverse=True):
        row = next((i for i, n in enumerate(used) if n + len(doc) <= width), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(doc)
        used[row] += len(doc)
    return rows


def packed_batch(docs: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor | bool]:
    """The LM's keyword arguments for ``docs`` packed by :func:`pack_documents`: ``input_ids``, ``position_ids`` and
    ``labels`` (R, W), and ``use_cache=False``.

    Positions restart at 0 for every document (and for a row's padding), which transformers reads as packed
    sequences: with no ``attention_mask`` and ``use_cache=False`` (with a cache it skips the detection) each token
    attends only to earlier tokens of its own document (``transformers.masking_utils``, packed-sequence
    detection). The first token of every document is not a target, so no document is trained to predict the next
    one's first token: the loss (mean over targets) is the padded batch's, up to float rounding
    (``tests/vista/test_foundations.py``)."""
    rows = pack_documents(docs)
    width = max(map(len, docs))
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        start = 0
        for doc in row:
            end = start + len(doc)
            ids[r, start:end] = labels[r, start:end] = torch.tensor(doc)
            labels[r, start] = IGNORE_INDEX
            positions[r, start:end] = torch.arange(len(doc))
            start = end
        positions[r, start:] = torch.arange(width - start)
    return {"input_ids": ids, "position_ids": positions, "labels": labels, "use_cache": False}


def train_lm(
    spec: FoundationSpec, tokenizer: PreTrainedTokenizerFast, docs: list[list[int]]
) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token prediction on random batches of ``docs`` (:func:`lm_documents`), each batch packed into rows
    (:func:`packed_batch`: the loss of the padded batch at ~57% of its token slots)."""
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(lm_config(spec, tokenizer))
    rng = random.Random(spec.seed)

    def batch_loss(step: int) -> torch.Tensor:
        batch = rng.sample(docs, min(spec.lm_batch, len(docs)))
        return model(**packed_batch(batch, tokenizer.pad_token_id)).loss

    steps = spec.lm_steps or auto_steps(len(docs), spec.lm_batch, LM_EPOCHS, LM_MAX_STEPS)
    return model, _train(model, steps, spec.lm_lr, batch_loss, "Llama (next token)")


# ---- entry points ---------------------------------------------------------------------------------------------
def _summary(losses: list[float], seconds: float) -> dict:
    k = max(1, len(losses) // 10)
    return {
        "steps": len(losses),
        "losses": losses,
        "first_mean": float(np.mean(losses[:k])),
        "last_mean": float(np.mean(losses[-k:])),
        "seconds": round(seconds, 2),
    }


def tokenizer_sha256(tokenizer: PreTrainedTokenizerFast) -> str:
    """SHA-256 of the tokenizer's JSON: both parts record it, so a log shows that they used the same tokenizer."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def build_foundations(
    data: str | Path, out: str | Path, spec: FoundationSpec = FoundationSpec(), parts: tuple[str, ...] = PARTS
) -> dict:
    """Train and save the foundations in ``parts`` (see the module docstring); returns the log written beside them.

    Each part is the same whether built alone or with the other: both train on the same tokenizer (byte-level BPE
    trained on the same corpus, deterministic; CLIP encodes its captions with it, the LM saves it) and each
    training starts from ``spec.seed``, so ``vista foundations --only vision`` and ``--only language`` can run in
    two processes at once. Raises ``UsageError`` for a part not in ``PARTS``.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise UsageError(f"--only {','.join(unknown) or '(nothing)'}: the parts are {', '.join(PARTS)}")
    data, out = Path(data), Path(out)
    manifest, pretrain, finetune, scenes = load_world(data)
    image_size = int(manifest["image_size"])
    texts = lm_corpus(pretrain, finetune, scenes, spec.seed)
    start = time.perf_counter()
    tokenizer = build_tokenizer(texts + image_conversations(finetune), vocab_size=spec.vocab_size)
    if "vision" in parts:
        pixels = pixel_values(data / "images", [r["image"] for r in pretrain], image_size)
        captions = encode_captions(tokenizer, [caption_of(r) for r in pretrain])
    prep = time.perf_counter() - start

    log = {
        "data": str(data),
        "world_seed": manifest.get("seed"),
        "spec": asdict(spec),
        "parts": list(parts),
        "threads": torch.get_num_threads(),
        "prepare_seconds": round(prep, 2),
    }
    if "vision" in parts:
        start = time.perf_counter()
        clip, clip_losses = train_clip(spec, tokenizer, pixels, captions, cell_labels(scenes))
        clip_seconds = time.perf_counter() - start
        clip.save_pretrained(out / "vision")
        build_image_processor(image_size).save_pretrained(out / "vision")
        log["clip"] = _summary(clip_losses, clip_seconds)

    if "language" in parts:
        start = time.perf_counter()
        docs, cut = lm_documents(tokenizer, texts, spec.lm_max_length)
        lm, lm_losses = train_lm(spec, tokenizer, docs)
        lm_seconds = time.perf_counter() - start
        lm.save_pretrained(out / "language")
        tokenizer.save_pretrained(out / "language")
        log["lm"] = _summary(lm_losses, lm_seconds)
        log["lm"]["documents_cut"] = cut

    log.update(
        {
            "lm_documents": len(texts),
            "vocab_size": len(tokenizer),
            "tokenizer_sha256": tokenizer_sha256(tokenizer),
        }
    )
    log_path(out, parts).write_text(json.dumps(log, indent=1) + "\n")
    return log


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = FoundationSpec()
    parser.add_argument("--data", required=True, help="a world folder written by `vista data synth`")
    parser.add_argument(
        "--out", required=True, help="output folder (vision/, language/, foundations_log.json)"
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        default=None,
        help="build one part (its log: foundations_log.<part>.json); the two can run at once (default: both)",
    )
    parser.add_argument(
        "--clip-steps",
        type=positive_int,
        default=d.clip_steps,
        help=f"CLIP steps (vision part; default: {CLIP_EPOCHS} epochs, at most {CLIP_MAX_STEPS})",
    )
    parser.add_argument(
        "--lm-steps",
        type=positive_int,
        default=d.lm_steps,
        help=f"LM steps (language part; default: {LM_EPOCHS} epochs, at most {LM_MAX_STEPS})",
    )
    parser.add_argument(
        "--dense-weight",
        type=float,
        default=d.dense_weight,
        help="weight of the per-patch attribute loss added to CLIP's contrastive loss (vision part; 0: contrastive "
        "only)",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch intra-op threads (1 is fastest here)"
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.dense_weight < 0:
        raise SystemExit(f"--dense-weight must be >= 0, got {args.dense_weight}")
    parts = (args.only,) if args.only else PARTS
    defaults = FoundationSpec()
    for part, options in PART_OPTIONS.items():
        given = [o for o in options if getattr(args, o) != getattr(defaults, o)]
        if part not in parts and given:
            flag = "--" + given[0].replace("_", "-")
            raise UsageError(f"{flag} sets the {part} part, which --only {args.only} does not build; drop it")
    spec = FoundationSpec(
        clip_steps=args.clip_steps, lm_steps=args.lm_steps, dense_weight=args.dense_weight, seed=args.seed
    )
    log = build_foundations(args.data, args.out, spec, parts)
    for name in ("clip", "lm"):
        if name in log:
            s = log[name]
            print(f"{name}: loss {s['first_mean']:.3f} -> {s['last_mean']:.3f} in {s['seconds']:.1f} s")
    if log.get("lm", {}).get("documents_cut"):
        print(
            f"lm: {log['lm']['documents_cut']} of {log['lm_documents']} documents were cut at {spec.lm_max_length} "
            "tokens (FoundationSpec.lm_max_length)"
        )
    written = [f"{args.out}/{part}" for part in parts]
    print(f"wrote {', '.join(written)}, {log_path(args.out, parts)}")
    return 0
