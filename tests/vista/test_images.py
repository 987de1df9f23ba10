"""vista.images: every PIL mode to 8-bit RGB without losing content, and one preprocessing for training,
evaluation (the lmms-eval plugin), probes and MI, decided by the checkpoint's recorded ``image_aspect``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vista.images import load_image, pixel_values, resolve_image_aspect, to_rgb
from vista.run_metadata import TemplateMismatchWarning, resolve_template_name
from vista.templates import ConversationError

DARK, LIGHT = 6500, 59000  # 16-bit levels; 8-bit: round(6500 / 257) = 25, round(59000 / 257) = 230


def sixteen_bit(mode: str = "I;16") -> Image.Image:
    """A 16-bit greyscale image, dark left half, light right half (PIL's own convert to I;16B clips)."""
    levels = np.full((6, 8), DARK, dtype=np.uint16)
    levels[:, 4:] = LIGHT
    dtype = {"I;16": "<u2", "I;16B": ">u2"}[mode]
    return Image.frombytes(mode, (8, 6), levels.astype(dtype).tobytes())


def halves(image: Image.Image) -> tuple[list[int], list[int]]:
    """RGB of the top-left and top-right pixels of ``to_rgb(image)``."""
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    return rgb[0, 0].tolist(), rgb[0, -1].tolist()


# ---- modes ----------------------------------------------------------------------------------------------------
def test_sixteen_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    path = tmp_path / "grey16.png"
    sixteen_bit().save(path)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")  # PIL opens 16-bit PNGs as one of these
        assert np.asarray(image.convert("RGB")).min() == 255  # the bug: all white
    rgb = np.asarray(load_image(path))
    assert (rgb[:, :4] == 25).all() and (rgb[:, 4:] == 230).all()


def _transparent_palette() -> Image.Image:
    image = Image.new("P", (8, 6), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.paste(1, (4, 0, 8, 6))
    image.info["transparency"] = 0  # index 0 (the left half) is transparent
    return image


def _half_alpha(mode: str, colour: tuple) -> Image.Image:
    image = Image.new("RGBA", (8, 6), (*colour, 0))  # left half fully transparent (stored colour: `colour`)
    image.paste((*colour, 255), (4, 0, 8, 6))
    return image.convert(mode)


MODES = {  # name -> (image, expected left RGB, expected right RGB)
    "I;16": (sixteen_bit("I;16"), [25] * 3, [230] * 3),
    "I;16B": (sixteen_bit("I;16B"), [25] * 3, [230] * 3),
    "I (16-bit levels)": (sixteen_bit().convert("I"), [25] * 3, [230] * 3),
    "I (8-bit levels)": (Image.fromarray(np.array([[40] * 4 + [200] * 4] * 6, dtype=np.int32)), [40] * 3,
                         [200] * 3),
    "F (0-1)": (Image.fromarray(np.array([[0.1] * 4 + [0.9] * 4] * 6, dtype=np.float32)), [26] * 3, [230] * 3),
    "F (0-255)": (Image.fromarray(np.array([[40.0] * 4 + [200.0] * 4] * 6, dtype=np.float32)), [40] * 3,
                  [200] * 3),
    "LA": (_half_alpha("LA", (0, 0, 0)), [255] * 3, [0] * 3),
    "RGBA": (_half_alpha("RGBA", (0, 0, 0)), [255] * 3, [0] * 3),
    "PA": (_half_alpha("RGBA", (0, 0, 0)).convert("PA"), [255] * 3, [0] * 3),
    "P with transparency": (_transparent_palette(), [255] * 3, [200, 100, 50]),
    "P": (Image.new("RGB", (8, 6), (200, 100, 50)).convert("P", palette=Image.Palette.ADAPTIVE), [200, 100, 50],
          [200, 100, 50]),
    "CMYK": (Image.new("CMYK", (8, 6), (255, 0, 0, 0)), [0, 255, 255], [0, 255, 255]),
    "L": (Image.new("L", (8, 6), 77), [77] * 3, [77] * 3),
    "1": (Image.new("1", (8, 6), 1), [255] * 3, [255] * 3),
    "RGB": (Image.new("RGB", (8, 6), (1, 2, 3)), [1, 2, 3], [1, 2, 3]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_photo_mode_keeps_its_content(name):
    image, left, right = MODES[name]
    assert halves(image) == (left, right)


def test_modes_without_an_rgb_conversion_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode 'LAB'"):
        to_rgb(Image.new("LAB", (4, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_rgb(Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)))
    path = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4)).save(path)
    with pytest.raises(ConversationError, match="image_corrupt: .*lab.tif: ValueError: image mode 'LAB'"):
        load_image(path)


# ---- one preprocessing for all four paths ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny checkpoint per image_aspect (with its vista_run.json), one non-square and one 16-bit image, data."""
    from vista.tiny import build_tiny_llava, save_tiny_llava

    root = tmp_path_factory.mktemp("images_world")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 52, 3), dtype=np.uint8)).save(root / "wide.png")
    sixteen_bit().resize((52, 30), Image.Resampling.NEAREST).save(root / "grey16.png")
    records = [{"id": name, "image": f"{name}.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                  {"from": "gpt", "value": "A picture."}]} for name in ("wide", "grey16")]  # fmt: skip
    (root / "data.json").write_text(json.dumps(records))
    model, processor = build_tiny_llava(seed=0)
    checkpoints = {}
    for aspect in ("pad", "resize"):
        path = save_tiny_llava(model, processor, root / f"ckpt-{aspect}")
        data = {"json": str(root / "data.json"), "image_folder": str(root), "template": "vicuna_v1",
                "max_length": 256, "on_bad_sample": "raise", "image_aspect": aspect, "check_images": "exists"}  # fmt: skip
        run = {"preset": "tiny", "variant": "vista", "template": "vicuna_v1", "config": {"data": data}}
        (path / "vista_run.json").write_text(json.dumps(run))
        checkpoints[aspect] = path
    return {"root": root, "checkpoints": checkpoints, "data": root / "data.json"}


def _training(checkpoint: Path) -> torch.Tensor:
    from transformers import AutoProcessor

    from vista.train import build_dataset

    run = json.loads((checkpoint / "vista_run.json").read_text())
    dataset = build_dataset(run["config"]["data"], AutoProcessor.from_pretrained(checkpoint))
    return torch.cat([dataset[i]["pixel_values"] for i in range(len(dataset))])


def _evaluation(checkpoint: Path, root: Path) -> torch.Tensor:
    pytest.importorskip("lmms_eval")
    from vista.lmms_plugin import VistaLlava, _to_images

    plugin = VistaLlava(pretrained=str(checkpoint))
    out = []
    for name in ("wide", "grey16"):
        images = _to_images([str(root / f"{name}.png")])
        out.append(plugin._encode([plugin.build_prompt("What is it?", 1)], images)["pixel_values"])
    return torch.cat(out)


def _probes(checkpoint: Path, data: Path, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoProcessor

    from analysis.probes.cli import load_samples, read_run
    from analysis.probes.scoring import HFScorer
    from vista.tiny import build_tiny_llava

    processor = AutoProcessor.from_pretrained(checkpoint)
    args = SimpleNamespace(template=None, max_length=None, limit=None)
    samples, info = load_samples(data, root, processor, checkpoint, read_run(checkpoint), args)
    scorer = HFScorer(build_tiny_llava(seed=0)[0], processor, image_aspect=info["image_aspect"])
    from_pil = torch.stack([scorer.pixels(load_image(root / f"{n}.png")) for n in ("wide", "grey16")])
    return torch.stack([s.image for s in samples]), from_pil


def _mi(checkpoint: Path, data: Path, root: Path, monkeypatch) -> torch.Tensor:
    import analysis.mi.states as mi_states

    seen = []

    def capture(model, batch, indices):  # the batch MI runs the model on
        seen.append(batch["pixel_values"])
        return []

    monkeypatch.setattr(mi_states, "extract_states", capture)
    mi_states.collect_states(checkpoint, data, image_folder=root, max_samples=2, batch_size=2)
    return torch.cat(seen)


@pytest.mark.parametrize("aspect", ["pad", "resize"])
def test_training_evaluation_probes_and_mi_see_the_same_pixels(aspect, world, monkeypatch):
    checkpoint, root, data = world["checkpoints"][aspect], world["root"], world["data"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        training = _training(checkpoint)
        paths = {"evaluation": _evaluation(checkpoint, root), "mi": _mi(checkpoint, data, root, monkeypatch)}
        paths["probes (dataset)"], paths["probes (PIL image)"] = _probes(checkpoint, data, root)
    assert not [w for w in caught if "image_aspect" in str(w.message)]  # the recorded setting was found
    assert training.shape == (2, 3, 32, 32)
    for name, pixels in paths.items():
        assert torch.equal(pixels, training), name
    other = "resize" if aspect == "pad" else "pad"
    images = [load_image(root / "wide.png"), load_image(root / "grey16.png")]
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint).image_processor
    assert not torch.equal(pixel_values(images, processor, other), training)  # the setting matters here
    # The 16-bit image reaches the model exactly as the 8-bit image with halves 25 and 230 would, not white.
    expected = np.full((30, 52, 3), 25, dtype=np.uint8)
    expected[:, 26:] = 230
    assert torch.equal(training[1], pixel_values([Image.fromarray(expected)], processor, aspect)[0])


def test_explicit_settings_contradicting_the_checkpoint_warn_loudly(world):
    checkpoint = world["checkpoints"]["pad"]
    with pytest.warns(UserWarning, match="image_aspect='resize' contradicts .* 'pad'"):
        assert resolve_image_aspect(checkpoint, "resize") == "resize"
    with pytest.warns(
        TemplateMismatchWarning, match="template 'plain' given explicitly contradicts .*'vicuna_v1'"
    ):
        assert resolve_template_name(checkpoint, "plain") == "plain"
    pytest.importorskip("lmms_eval")
    from vista.lmms_plugin import VistaLlava

    with pytest.warns(TemplateMismatchWarning, match="known cause of wrong scores"):
        VistaLlava(pretrained=str(checkpoint), template="plain")


def test_checkpoint_without_a_recorded_aspect_warns_and_pads(tmp_path):
    with pytest.warns(UserWarning, match="no recorded image_aspect .*using 'pad'"):
        assert resolve_image_aspect(tmp_path) == "pad"


def test_truncated_file_is_refused_even_when_a_library_allows_truncated_images(tmp_path, monkeypatch):
    """lmms-eval sets PIL's global LOAD_TRUNCATED_IMAGES at import; the loader must still refuse a cut file."""
    from PIL import ImageFile

    from vista.images import load_image
    from vista.templates import ConversationError

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConversationError, match="image_corrupt|photo.png"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


@pytest.mark.parametrize("strategy", ["default", "full"])
@pytest.mark.parametrize(("image_size", "patch_size"), [(32, 8), (40, 10)])
def test_image_token_formula_matches_what_the_processor_expands(strategy, image_size, patch_size):
    """vista.images.image_token_count (the tiny spec, builder's configs) == what LlavaProcessor puts in the text."""
    from vista.data import image_tokens_per_image
    from vista.tiny import TinyLlavaSpec, build_image_processor, build_processor, build_tokenizer

    spec = TinyLlavaSpec(image_size=image_size, patch_size=patch_size, select_strategy=strategy)
    processor = build_processor(
        build_tokenizer(), build_image_processor(image_size), patch_size=patch_size, select_strategy=strategy
    )
    assert (
        image_tokens_per_image(processor)
        == spec.image_tokens
        == (image_size // patch_size) ** 2 + (strategy == "full")
    )
