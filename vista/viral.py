"""VIRAL-style representation alignment (arXiv 2509.07979), a loss part beside :func:`vista.loss.vista_loss`.

    L_viral = lambda * mean_i [ -cos( MLP(h_i^(l)), F_i ) ]

over every image-token position ``i`` of the batch (all images of all samples pooled; with one image per sample
and a fixed token count this is the mean over samples of the per-sample mean). ``h^(l)`` is the output of the
LLM's ``l``-th decoder layer (``l`` layers applied; the paper aligns layer 16 of Vicuna-7B's 32), captured with a
forward hook on that layer (no forked modeling file). ``F`` are a frozen vision encoder's patch features of the
same images (DINOv2 in the paper; the tiny CLIP in the miniature), computed without a graph. The MLP
(Linear-GELU-Linear, LLM hidden -> LLM hidden -> teacher dim; an assumption, the paper's exact head is not in
REFERENCE.md) is trainable and lives on the model as ``model.viral_projector`` so that DeepSpeed ZeRO-3 partitions
it and gathers its weights around its forward like any other submodule.

Where the gradient goes: into the MLP, the decoder layers ``0 .. l-1`` and whatever feeds them (the projector at
image positions, the token-embedding table through text positions that image positions attend to, the vision tower
if it were trainable). Never into layers ``l ..``, the final norm or the LM head, nor into the teacher.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vista.errors import UsageError

ATTRIBUTE = "viral_projector"
_COSINE_EPS = 1e-8  # F.cosine_similarity's default


@dataclass(frozen=True)
class ViralConfig:
    """How the VIRAL-style term is computed. Defaults follow the paper (lambda 0.5, half depth).

    Attributes:
        enabled: add the term.
        coefficient: lambda (the paper's 0.5).
        layer: ``l``, the number of decoder layers below the aligned states (1..num_layers); None: half depth.
        teacher: folder of a frozen vision encoder (``save_pretrained`` layout, e.g. a CLIP/DINOv2 checkpoint);
            None: the model's own (frozen) vision tower, which in the miniature is the tiny CLIP.
        teacher_layer: index into the teacher's ``hidden_states`` (-1: its last layer).
    """

    enabled: bool = False
    coefficient: float = 0.5
    layer: int | None = None
    teacher: str | None = None
    teacher_layer: int = -1

    def __post_init__(self) -> None:
        if not float(self.coefficient) >= 0.0:
            raise ValueError(f"ViralConfig.coefficient must be >= 0, got {self.coefficient!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or int(self.layer) < 1):
            raise ValueError(f"ViralConfig.layer must be a positive layer count or None, got {self.layer!r}")


def viral_loss(
    layer_states: Tensor,
    teacher_features: Tensor,
    image_mask: Tensor,
    projector: nn.Module,
    coefficient: float,
) -> Tensor:
    """The VIRAL-style term (module docstring).

    Args:
        layer_states: (B, S, H) output of the ``l``-th decoder layer.
        teacher_features: (N, D) patch features, one row per image-token position in row-major (B, S) order of
            ``image_mask`` (the order LLaVA scatters image features in).
        image_mask: (B, S) bool image-token positions.
        projector: the trainable MLP, H -> D.
        coefficient: lambda.

    Returns:
        scalar; 0 with the graph intact when the batch has no image token.

    Raises:
        ValueError: shapes disagree (the number of rows of ``teacher_features`` is checked asynchronously).
    """
    if layer_states.dim() != 3 or image_mask.shape != layer_states.shape[:2]:
        raise ValueError(
            f"layer_states must be (B, S, H) and image_mask (B, S); got {tuple(layer_states.shape)}, "
            f"{tuple(image_mask.shape)}"
        )
    torch._assert_async(
        image_mask.sum() == teacher_features.shape[0],
        "viral_loss: the teacher gives a different number of patch features than there are image tokens",
    )
    predicted = projector(layer_states)  # (B, S, D)
    mask = image_mask[..., None]
    target = torch.zeros_like(predicted).masked_scatter(mask, teacher_features.to(predicted.dtype).detach())
    cos = torch.nn.functional.cosine_similarity(predicted, target, dim=-1, eps=_COSINE_EPS)  # (B, S)
    count = image_mask.sum()
    total = (cos * image_mask).sum()
    return -coefficient * total / count.clamp(min=1).to(total.dtype)


def make_projector(hidden_size: int, teacher_dim: int) -> nn.Module:
    """The trainable MLP ``H -> H -> D`` (Linear-GELU-Linear)."""
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, teacher_dim))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The LLM's decoder layers of a transformers VLM (``model.language_model.layers``)."""
    from vista.model import _unwrap

    base = _unwrap(model)
    language_model = getattr(getattr(base, "model", base), "language_model", None)
    layers = getattr(language_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(base).__name__}: no language_model.layers to hook for the VIRAL-style term")
    return layers


def resolve_layer(model: nn.Module, config: ViralConfig) -> int:
    """``l`` for this model: the config's, or half the decoder depth (at least 1); checked against the depth."""
    depth = len(decoder_layers(model))
    layer = config.layer if config.layer is not None else max(1, depth // 2)
    if not 1 <= layer <= depth:
        raise UsageError(
            f"objectives.viral.layer={layer} but the LLM has {depth} decoder layers (expected 1..{depth})"
        )
    return layer


def check_teacher_layer(layer: int, num_hidden_layers: int) -> int:
    """``layer`` if it indexes the teacher's ``hidden_states`` (embeddings + ``num_hidden_layers`` layers).

    Raises:
        UsageError: out of range (checked before training, not at the first step).
    """
    states = num_hidden_layers + 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not -states <= layer < states:
        raise UsageError(
            f"objectives.viral.teacher_layer={layer!r} but the teacher has {states} hidden states (embeddings + "
            f"{num_hidden_layers} layers): expected {-states}..{states - 1} (-1: the last layer)"
        )
    return layer


@contextmanager
def capture_layer_output(model: nn.Module, layer: int) -> Iterator[list[Tensor]]:
    """Record the output of decoder layer ``layer - 1`` (the state after ``layer`` layers) during one forward."""
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layers(model)[layer - 1].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def load_teacher(folder: str | Path) -> nn.Module:
    """A frozen vision encoder from a ``save_pretrained`` folder, built outside ``deepspeed.zero.Init``.

    Built from its config and loaded with a strict ``load_state_dict`` (not ``from_pretrained``): under ZeRO-3,
    ``from_pretrained`` would partition the teacher, which is never wrapped by the DeepSpeed engine that gathers
    partitioned weights. The teacher is small next to the LLM, so each rank keeps a full copy.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(f"viral.teacher={folder}: expected config.json and model.safetensors there")
    config = AutoConfig.from_pretrained(folder)
    teacher = AutoModel.from_config(config)
    state = load_file(str(weights))
    result = teacher.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(
            f"objectives.viral.teacher={folder}: not the vision encoder its config describes ({type(teacher).__name__}"
            f" weights missing: {result.missing_keys[:3]} ...); give the save_pretrained folder of a vision encoder "
            "(e.g. CLIPVisionModel), or leave it unset for the model's own vision tower"
        )
    return teacher.eval().requires_grad_(False)


@torch.no_grad()
def teacher_features(
    teacher: nn.Module, pixel_values: Tensor, tokens_per_image: int, layer: int = -1
) -> Tensor:
    """(N_images * P, D) patch features of a frozen encoder; a leading CLS row is dropped when it is one too many.

    Raises:
        ValueError: the encoder's patch count is neither ``tokens_per_image`` nor one more.
    """
    dtype = next(teacher.parameters()).dtype
    output = teacher(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
    features = output.hidden_states[layer]  # (N, P', D)
    if features.shape[1] == tokens_per_image + 1:
        features = features[:, 1:]
    if features.shape[1] != tokens_per_image:
        raise ValueError(
            f"VIRAL teacher gives {features.shape[1]} patch features per image but the LLM sees {tokens_per_image} "
            "image tokens; use a teacher with the same patch grid (or the model's own vision tower)"
        )
    return features.reshape(-1, features.shape[-1])


def attach_projector(model: nn.Module, teacher_dim: int, seed: int = 0) -> nn.Module:
    """Create ``model.viral_projector`` (H -> H -> ``teacher_dim``) if absent; returns it.

    Call before the Trainer (and DeepSpeed) wrap the model so the optimizer and ZeRO-3 see its parameters. Its
    initial weights depend on ``seed`` only (a forked RNG), not on how much of the global RNG building the model
    consumed: plain, DDP and ZeRO-3 (``zero.Init``) runs start from the same projector.
    """
    from vista.model import _unwrap

    base = _unwrap(model)
    head = getattr(base, ATTRIBUTE, None)
    if head is None:
        hidden = base.config.get_text_config().hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = make_projector(hidden, teacher_dim)
        head = head.to(dtype=next(base.parameters()).dtype)
        setattr(base, ATTRIBUTE, head)
    return head
