"""Image preprocessing, one place for training, evaluation, probes and MI.

Two decisions change what a model sees, and both must be the same at training and at evaluation time:

1. **Colour conversion** (:func:`to_rgb`): every PIL mode becomes 8-bit RGB without losing its content.
   ``Image.convert("RGB")`` alone clips 16-bit (``I;16``), 32-bit (``I``) and float (``F``) greyscale to white and
   drops transparency onto whatever colour the transparent pixels happen to store. Here high-bit-depth images are
   scaled to 8 bits and transparent images are composited onto white.
2. **Aspect handling** (:func:`prepare_images`): ``"pad"`` pads each image to a centred square with the image
   processor's mean colour first (LLaVA-1.5's ``image_aspect_ratio="pad"``, ``expand2square``); ``"resize"`` hands
   it straight to the image processor (CLIP: shortest edge + centre crop; SigLIP: square resize; TinyLLaVA's
   ``square``). A checkpoint's setting is the one recorded in its run metadata (:func:`resolve_image_aspect`).

:func:`pixel_values` = image processor applied to :func:`prepare_images`; a processor called on
``prepare_images(...)`` (as the lmms-eval plugin does, to expand the text's ``<image>`` too) computes exactly the
same pixels, because it calls the same image processor on the same images.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile

from vista.run_metadata import read_run_metadata, recorded_image_aspect
from vista.templates import ConversationError

IMAGE_ASPECTS = ("pad", "resize")
DEFAULT_ASPECT = "pad"
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def image_token_count(
    image_size: int, patch_size: int, num_additional_tokens: int, select_strategy: str
) -> int:
    """Image tokens one image contributes to a LLaVA sequence: ``(image_size // patch_size)^2`` patch features plus
    ``num_additional_tokens`` (a CLS token: 1 for CLIP, 0 for SigLIP), minus the first position under
    ``select_strategy="default"`` (transformers' LLaVA drops it whatever the tower; ``LlavaProcessor`` expands
    ``<image>`` by the same formula)."""
    patches = (image_size // patch_size) ** 2
    return patches + num_additional_tokens - (1 if select_strategy == "default" else 0)


def _grey_to_rgb(values: np.ndarray, bits: int) -> Image.Image:
    """(H, W) integer/float grey levels on a ``bits``-bit scale -> 8-bit RGB (rounded, ``255 / (2**bits - 1)``)."""
    top = float(2**bits - 1)
    scaled = np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """``I;16*``, ``I`` (int32) and ``F`` (float32) greyscale -> 8-bit RGB, keeping the picture's contrast.

    ``I;16*``: 16-bit levels (divided by 257). ``I``: 8-bit if every value is in 0..255, 16-bit if in 0..65535
    (PIL opens 16-bit PNGs as ``I`` in some versions), else scaled from its own min..max. ``F``: 0..1 floats are
    scaled by 255, 0..255 kept, anything else scaled from its min..max. Non-finite floats raise.
    """
    values = np.asarray(image)
    if image.mode in _SIXTEEN_BIT:
        return _grey_to_rgb(values, 16)
    if image.mode == "F" and not np.isfinite(values).all():
        raise ValueError("float (mode F) image has NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0 and high <= 1:
        return _grey_to_rgb(values * 255.0, 8)
    if low >= 0 and high <= 255:
        return _grey_to_rgb(values, 8)
    if image.mode == "I" and low >= 0 and high <= 65535:
        return _grey_to_rgb(values, 16)
    span = high - low or 1.0
    return _grey_to_rgb((values - low) * (255.0 / span), 8)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` whatever its PIL mode, without losing its content.

    Modes: ``RGB`` (returned decoded, as is), ``L``/``1``/``P``/``CMYK``/``YCbCr``/``RGBX`` (PIL's conversion),
    ``I;16``/``I;16B``/``I;16L``/``I``/``F`` (scaled to 8 bits, see :func:`_high_depth_to_rgb`), ``RGBA``/``LA``/
    ``PA``/``P`` with a ``transparency`` entry (composited onto white). Raises ``ValueError`` for a mode PIL
    cannot turn into RGB (e.g. ``LAB``, ``HSV``) or a float image with non-finite pixels.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        image.load()
        return image
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    if mode in _ALPHA or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "RGBX"):
        return image.convert("RGB")
    raise ValueError(f"image mode {mode!r} has no defined conversion to RGB")


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Refuse truncated files even where a library switched PIL's global ``LOAD_TRUNCATED_IMAGES`` on
    (lmms-eval does at import), which would otherwise fill the missing rows with grey, silently."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB PIL image (:func:`to_rgb`).

    Raises :class:`~vista.templates.ConversationError` with reason ``image_missing``, ``image_unreadable`` or
    ``image_corrupt`` (the data pipeline counts these per reason).
    """
    try:
        with _strict_decoding(), Image.open(path) as image:
            return to_rgb(image).copy()  # decodes every pixel: truncated files fail here
    except FileNotFoundError:
        raise ConversationError("image_missing", f"{path} does not exist") from None
    except (PermissionError, IsADirectoryError) as error:
        raise ConversationError("image_unreadable", f"{path}: {error}") from None
    except Exception as error:  # PIL raises many types for undecodable data (OSError, SyntaxError...)
        raise ConversationError("image_corrupt", f"{path}: {type(error).__name__}: {error}") from None


def as_rgb_images(visuals: object) -> list[Image.Image]:
    """Flatten visuals (None, a PIL image, a path, or nested lists/tuples of them) into 8-bit RGB images."""
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        return [image for v in visuals for image in as_rgb_images(v)]
    if isinstance(visuals, (str, Path)):
        return [load_image(visuals)]
    if isinstance(visuals, Image.Image):
        return [to_rgb(visuals)]
    raise TypeError(f"unsupported visual of type {type(visuals).__name__} (images only)")


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad to a centred square with ``background`` (LLaVA-1.5's ``expand2square``)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def check_image_aspect(image_aspect: str) -> str:
    """``image_aspect`` if it is one of :data:`IMAGE_ASPECTS`, else ``ValueError``."""
    if image_aspect not in IMAGE_ASPECTS:
        raise ValueError(f"image_aspect={image_aspect!r}; expected one of {IMAGE_ASPECTS}")
    return image_aspect


def prepare_images(
    images: Sequence[Image.Image], image_processor: Any, image_aspect: str
) -> list[Image.Image]:
    """RGB ``images`` ready for the image processor: converted (:func:`to_rgb`) and, for ``"pad"``, padded to a
    square with the processor's mean colour (``int(255 * mean)`` per channel, as LLaVA-1.5)."""
    check_image_aspect(image_aspect)
    images = [to_rgb(image) for image in images]
    if image_aspect == "pad":
        background = tuple(int(x * 255) for x in image_processor.image_mean)
        images = [expand2square(image, background) for image in images]
    return images


def pixel_values(images: Sequence[Image.Image], image_processor: Any, image_aspect: str) -> torch.Tensor:
    """(N, 3, H, W) float pixel values of ``images`` (see the module docstring for what ``image_aspect`` does)."""
    prepared = prepare_images(images, image_processor, image_aspect)
    return image_processor(images=prepared, return_tensors="pt")["pixel_values"]


def resolve_image_aspect(checkpoint: str | Path, image_aspect: str | None = None) -> str:
    """The image aspect handling a checkpoint was trained with.

    Order: the run metadata beside the checkpoint (``vista_run.json``: ``config.data.image_aspect``; also
    ``image_aspect_ratio``, LLaVA's name); an explicit ``image_aspect`` that contradicts it is used but warned about
    loudly (evaluating with other preprocessing than training is a known cause of wrong scores). Without metadata:
    the explicit value, else ``"pad"`` (LLaVA-1.5) with a warning.
    """
    meta, path = read_run_metadata(checkpoint)
    recorded = recorded_image_aspect(meta)
    if recorded is not None:
        check_image_aspect(recorded)
    if image_aspect is not None:
        check_image_aspect(image_aspect)
        if recorded is not None and recorded != image_aspect:
            warnings.warn(
                f"image_aspect={image_aspect!r} contradicts the checkpoint's training setting "
                f"{recorded!r} ({path}): images will be preprocessed differently from training, a known cause "
                "of wrong scores",
                stacklevel=2,
            )
        return image_aspect
    if recorded is not None:
        return str(recorded)
    warnings.warn(
        f"checkpoint {checkpoint}: no recorded image_aspect ({path or 'no run metadata'}); using "
        f"{DEFAULT_ASPECT!r} (LLaVA-1.5). Pass image_aspect explicitly if it was trained otherwise",
        stacklevel=2,
    )
    return DEFAULT_ASPECT
