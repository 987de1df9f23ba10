"""Synthetic scenes: a few coloured shapes on a 2x2 grid, sampled with exact attributes and rendered with PIL.

A scene is a tuple of objects, each with a shape, a colour, a size and a grid cell (row, column), plus a small
pixel jitter inside its cell. Objects never share a cell, so positions and spatial relations are unambiguous.
Rendering draws without anti-aliasing, so every object pixel has exactly its colour's RGB value: the ground truth
can be read back from the pixels (see ``tests/vista/test_world.py``).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUND: tuple[int, int, int] = (40, 40, 40)
# A 2x2 grid: at 32 px each cell is exactly 2x2 patches of the tiny CLIP (patch 8), so every object sits in its
# own patches; finer grids make the miniature's visual task too hard for a projector trained in a few hundred steps.
GRID = 2
# (row, col) -> the position's name, also the answer word(s) of position questions
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top right",
    (1, 0): "bottom left",
    (1, 1): "bottom right",
}
MAX_OBJECTS = 4
_RADIUS_FRACTION = {"small": 0.19, "large": 0.42}  # object radius as a fraction of the cell size


@dataclass(frozen=True)
class SceneObject:
    """One object; ``dx``/``dy`` are its pixel offset from the centre of its cell."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    dx: int = 0
    dy: int = 0

    @property
    def position(self) -> str:
        return POSITIONS[(self.row, self.col)]


@dataclass(frozen=True)
class Scene:
    """A scene: objects in row-major reading order and the side of the square image in pixels."""

    objects: tuple[SceneObject, ...]
    image_size: int = 32

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(objects=tuple(SceneObject(**o) for o in d["objects"]), image_size=int(d["image_size"]))


def radius(size: str, image_size: int) -> int:
    """Object radius in pixels (half the side of its bounding box)."""
    return max(2, round(_RADIUS_FRACTION[size] * image_size / GRID))


def cell_centre(row: int, col: int, image_size: int) -> tuple[int, int]:
    """Pixel (x, y) of the centre of grid cell (row, col)."""
    cell = image_size / GRID
    return int(cell * (col + 0.5)), int(cell * (row + 0.5))


def object_centre(obj: SceneObject, image_size: int) -> tuple[int, int]:
    x, y = cell_centre(obj.row, obj.col, image_size)
    return x + obj.dx, y + obj.dy


def max_jitter(size: str, image_size: int) -> int:
    """Largest |dx|, |dy| that keeps an object inside its cell with a 1-pixel gap."""
    return max(0, int(image_size / GRID / 2) - radius(size, image_size) - 1)


def sample_scene(
    rng: random.Random, image_size: int = 32, n_objects: int | None = None, max_objects: int = MAX_OBJECTS
) -> Scene:
    """Sample a scene: ``n_objects`` (uniform in 1..max_objects if None) in distinct cells, attributes i.i.d. uniform."""
    if not 32 <= image_size <= 128:
        raise ValueError(f"image_size must be in [32, 128] pixels, got {image_size}")
    n = rng.randint(1, max_objects) if n_objects is None else n_objects
    if not 1 <= n <= GRID * GRID:
        raise ValueError(f"n_objects must be in [1, {GRID * GRID}], got {n}")
    cells = sorted(rng.sample(range(GRID * GRID), n))
    objects = []
    for cell in cells:
        size = rng.choice(SIZES)
        j = max_jitter(size, image_size)
        objects.append(
            SceneObject(
                shape=rng.choice(SHAPES),
                colour=rng.choice(sorted(COLOURS)),
                size=size,
                row=cell // GRID,
                col=cell % GRID,
                dx=rng.randint(-j, j),
                dy=rng.randint(-j, j),
            )
        )
    return Scene(objects=tuple(objects), image_size=image_size)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, image_size: int) -> None:
    x, y = object_centre(obj, image_size)
    r = radius(obj.size, image_size)
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    elif obj.shape == "cross":
        w = max(1, r // 3)
        draw.rectangle((x - r, y - w, x + r, y + w), fill=fill)
        draw.rectangle((x - w, y - r, x + w, y + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


def render(scene: Scene) -> Image.Image:
    """Render ``scene`` to an RGB PIL image of ``image_size`` x ``image_size`` pixels (no anti-aliasing)."""
    image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, scene.image_size)
    return image


def blank_image(image_size: int = 32) -> Image.Image:
    """The background alone: the 'no visual information' input of text-only baselines."""
    return Image.new("RGB", (image_size, image_size), BACKGROUND)


def read_scenes(path: str | Path, limit: int | None = None) -> list[Scene]:
    """The scenes of a ``vista data synth`` ``scenes/<split>.jsonl`` file (one ``{"id", "scene"}`` per line, blank
    lines ignored), the first ``limit`` if given."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Scene.from_dict(json.loads(line)["scene"]) for line in lines[:limit]]
