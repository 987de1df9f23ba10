"""One table per family of HF vision-language model: image-token layout, chat template, stage freezing, anchor.

Every family here is an ``AutoModelForImageTextToText`` model that marks each image position in ``input_ids`` with
one image-token id (``config.image_token_id``); the processor expands one placeholder per image into that many
ids. VISTA's anchor is the final hidden state at the **last image token of the last image** of a sample
(:func:`vista.loss.vista_loss` with ``anchor="last"``: the largest position where ``input_ids == image_token_id``),
or the mean over all image tokens (``anchor="mean"``). What "last image token" is, per family, is
:attr:`Family.anchor_note`.

Stage freezing: each family's parameters split into ``vision`` (the vision tower), ``projector`` (the connector
mapping vision features into the LM) and ``llm`` (the language model and LM head) by name prefixes
(:attr:`Family.parts`); :func:`part_of` is the one place that decides which part a parameter belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# The stages of the LLaVA recipe and the parts each one trains (the paper: pretrain = projector, finetune =
# projector + LLM; "full" also trains the vision tower: Python API only, `freeze_for_stage(model, family, "full")`,
# since `vista train` takes stage=pretrain|finetune).
STAGE_TRAINS: dict[str, tuple[str, ...]] = {
    "pretrain": ("projector",),
    "finetune": ("projector", "llm"),
    "full": ("vision", "projector", "llm"),
}

_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ ' ' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _chatml(image: str) -> str:
    """A ChatML template (Qwen2-VL, LLaVA-OneVision, InternVL) rendering each image item as ``image``."""
    return (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '" + image + "' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


_IDEFICS3_TEMPLATE = (
    "{{ '<|im_start|>' }}{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ '<end_of_utterance>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_GEMMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """What vista needs to know about one ``model_type``.

    Attributes:
        model_type: transformers' ``config.model_type``.
        placeholder: the text a user writes for one image; the processor expands it into the image tokens.
        image_token: the token repeated once per image position (its id is ``config.image_token_id``).
        special_tokens: tokens the family's template and processor need in the vocabulary.
        chat_template: Jinja template of the tiny checkpoint (mirrors the real checkpoints' layout).
        parts: parameter-name prefixes (of ``model.named_parameters()``) of ``vision`` and ``projector``; all
            other parameters are ``llm``.
        anchor_note: what the last image token of the last image is in this family's token layout.
        qwen_vocabulary: the tiny checkpoint uses the real Qwen2 vocabulary (``shared/tokenizers/qwen2``).
        requires: packages the family's processor needs beyond the lock (see below).
        image_block: the tokens the processor writes when it expands one image (image tokens, tile and row
            markers, begin/end-of-image tokens; default: ``image_token`` only). The span from the first to the last
            of them is one image's block, whatever the tiling (:func:`image_block_mask`): probes score the text
            outside it and swap images inside it.
    """

    model_type: str
    placeholder: str
    image_token: str
    special_tokens: tuple[str, ...]
    chat_template: str
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    anchor_note: str = ""
    qwen_vocabulary: bool = False
    requires: tuple[str, ...] = ()
    image_block: tuple[str, ...] = ()

    def block_tokens(self) -> tuple[str, ...]:
        """:attr:`image_block`, or ``(image_token,)`` when the family writes nothing else around an image."""
        return self.image_block or (self.image_token,)


_QWEN_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|image_pad|>",
    "<|vision_end|>",
    "<|video_pad|>",
)
_LLAVA_PARTS = {
    "vision": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.", "model.image_newline"),
}
_QWEN_PARTS = {
    "vision": ("model.visual.",),
    "projector": ("model.visual.merger.", "model.visual.deepstack_merger_list."),
}
_IDEFICS_PARTS = {"vision": ("model.vision_model.",), "projector": ("model.connector.",)}

FAMILIES: dict[str, Family] = {
    "llava": Family(
        "llava",
        "<image>",
        "<image>",
        ("<image>",),
        _LLAVA_TEMPLATE,
        _LLAVA_PARTS,
        "one block of (side/patch)^2 <image> tokens per image; the anchor is the block's last patch of the last image",
    ),
    "llava_next": Family(
        "llava_next",
        "<image>",
        "<image>",
        ("<image>",),
        _LLAVA_TEMPLATE,
        _LLAVA_PARTS,
        "per image: base-resolution patches, then the AnyRes tiles row by row with one image_newline token per row, "
        "all as <image>; the anchor is the last image's final row-end (image_newline) position",
    ),
    "llava_onevision": Family(
        "llava_onevision",
        "<image>",
        "<image>",
        ("<image>", "<video>", "<|im_start|>", "<|im_end|>"),
        _chatml("<image>\n"),
        _LLAVA_PARTS,
        "as llava_next (base patches, AnyRes tiles with image_newline per row, one trailing newline), all <image>; "
        "the anchor is the last image's final image_newline position",
        requires=("torchvision",),
    ),
    "qwen2_vl": Family(
        "qwen2_vl",
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|image_pad|>",
        _QWEN_TOKENS,
        _chatml("<|vision_start|><|image_pad|><|vision_end|>"),
        _QWEN_PARTS,
        "<|vision_start|>, (h/28)*(w/28) <|image_pad|> (2x2-merged patches, row-major), <|vision_end|>; the anchor "
        "is the last image's bottom-right merged patch (the token before <|vision_end|>)",
        qwen_vocabulary=True,
        requires=("torchvision",),
        image_block=("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),
    ),
    "gemma3": Family(
        "gemma3",
        "<start_of_image>",
        "<image_soft_token>",
        ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"),
        _GEMMA3_TEMPLATE,
        {"vision": ("model.vision_tower.",), "projector": ("model.multi_modal_projector.",)},
        "\\n\\n<start_of_image>, mm_tokens_per_image <image_soft_token> (pooled patches), <end_of_image>\\n\\n; "
        "the anchor is the last image's last soft token",
        image_block=("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
    ),
    "idefics3": Family(
        "idefics3",
        "<image>",
        "<image>",
        ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|im_start|>")
        + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
        _IDEFICS3_TEMPLATE,
        _IDEFICS_PARTS,
        "per image: tiles <fake_token_around_image><row_r_col_c> + image_seq_len <image> each, then the global "
        "<fake_token_around_image><global-img> + image_seq_len <image>; the anchor is the last image's global view",
        image_block=("<image>", "<fake_token_around_image>", "<global-img>")
        + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
    ),
    "internvl": Family(
        "internvl",
        "<IMG_CONTEXT>",
        "<IMG_CONTEXT>",
        ("<IMG_CONTEXT>", "<img>", "</img>", "<video>") + _QWEN_TOKENS[:2],
        _chatml("<IMG_CONTEXT>\n"),
        {"vision": ("model.vision_tower.",), "projector": ("model.multi_modal_projector.",)},
        "<img>, image_seq_length <IMG_CONTEXT> per tile (tiles, then the thumbnail), </img>; the anchor is the "
        "last image's thumbnail's last token",
        qwen_vocabulary=True,
        requires=("torchvision",),
        image_block=("<img>", "<IMG_CONTEXT>", "</img>"),
    ),
}
FAMILIES["qwen2_5_vl"] = Family(**{**FAMILIES["qwen2_vl"].__dict__, "model_type": "qwen2_5_vl"})
FAMILIES["qwen3_vl"] = Family(**{**FAMILIES["qwen2_vl"].__dict__, "model_type": "qwen3_vl"})
FAMILIES["smolvlm"] = Family(
    **{**FAMILIES["idefics3"].__dict__, "model_type": "smolvlm", "requires": ("torchvision", "num2words")}
)
# Why ``requires``: a processor with a ``video_processor`` attribute (Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL,
# SmolVLM) checks it against ``BaseVideoProcessor``, which transformers 5.23 defines only with torchvision
# installed; without it the constructor (and ``AutoProcessor.from_pretrained``) raises "AttributeError: type
# object 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'", even for ``video_processor=None``.
# SmolVLM's processor also imports num2words.


# What to do about them: the optional second environment of reproduce/lock/families.txt (torch 2.14.1 + torchvision
# 0.29.1 + num2words); PyPI's torchvision does not import beside the main lock's CPU torch 2.13.0.
FAMILIES_ENV_HINT = (
    "the optional families environment has them: `bash reproduce/setup_env.sh --families`, then run "
    '.venv-families/bin/vista (README, "Any HF vision-language model"); a plain `pip install torchvision` beside '
    "the main lock's CPU torch 2.13.0 breaks `import transformers`"
)


def missing_requirements(family: Family) -> list[str]:
    """The packages ``family``'s processor needs that are not installed here (empty when it can run)."""
    import importlib.util

    return [name for name in family.requires if importlib.util.find_spec(name) is None]


def family_of(model_type: str) -> Family:
    """The :class:`Family` of ``model_type``; raises ``KeyError`` naming the supported ones."""
    if model_type not in FAMILIES:
        raise KeyError(f"model_type {model_type!r} is not a supported family; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def image_block_mask(input_ids: torch.Tensor, block_ids: Sequence[int]) -> torch.Tensor:
    """(S,) bool: the positions of one image's block in a sequence holding one image.

    The block runs from the first to the last position whose id is in ``block_ids`` (the ids of
    :meth:`Family.block_tokens`), so it also covers what the processor writes between tiles (row breaks). All
    False when no block token occurs.

    Raises:
        ValueError: ``input_ids`` is not 1-D.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D, got shape {tuple(input_ids.shape)}")
    hits = torch.isin(input_ids, torch.as_tensor(list(block_ids), dtype=input_ids.dtype)).nonzero().flatten()
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    if len(hits):
        mask[int(hits[0]) : int(hits[-1]) + 1] = True
    return mask


def part_of(family: Family, parameter_name: str) -> str:
    """``"projector"``, ``"vision"`` or ``"llm"`` for one parameter name (projector prefixes win over vision)."""
    for part in ("projector", "vision"):
        if parameter_name.startswith(family.parts.get(part, ())):
            return part
    return "llm"


def freeze_for_stage(model: torch.nn.Module, family: Family, stage: str) -> dict[str, dict[str, int]]:
    """Train only the parts :data:`STAGE_TRAINS` lists for ``stage``.

    Returns:
        ``{part: {"trainable": n, "total": n}}`` for vision, projector, llm and ``all`` (parameter counts; the
        shape of :func:`vista.builder.parameter_report`, printed with ``format_parameter_report``).

    Raises:
        ValueError: unknown stage.
    """
    if stage not in STAGE_TRAINS:
        raise ValueError(f"stage {stage!r}; expected one of {sorted(STAGE_TRAINS)}")
    report = {part: {"trainable": 0, "total": 0} for part in ("vision", "projector", "llm", "all")}
    for name, parameter in model.named_parameters():
        part = part_of(family, name)
        parameter.requires_grad_(part in STAGE_TRAINS[stage])
        count = int(getattr(parameter, "ds_numel", 0) or parameter.numel())
        for key in (part, "all"):
            report[key]["total"] += count
            report[key]["trainable"] += count if parameter.requires_grad else 0
    return report
