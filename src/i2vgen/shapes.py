"""The synthetic "shapes" task (issue 6, item 1): seeded clips of coloured shapes that move as the caption says.

A clip shows one or two shapes (circle, square, triangle; eight named colours) on a near-neutral background (six
named tints, optionally with a mild static gradient). Each shape moves left, right, up or down by a fixed distance
over the clip, and may also grow or shrink. The caption ("a red circle moves left", "an orange square moves up and
grows and a blue triangle moves right") is the only place the direction shows: the first frame does not reveal it,
because every start position is drawn uniformly from a region from which each of the four directions stays in
frame, whatever direction was drawn (`_sample_shape`).

Geometry is in fractions of the frame side and rendering is resolution-free (signed-distance coverage, i.e.
analytic antialiasing), so `make_clip(seed, size=32)` and `make_clip(seed, size=64)` show the same scene: the base
stage trains at 32x32 and the refiner, and its ground truth, at 64x64. Frames are square.

Ground truth (`ShapesClip.centroids`) is in pixels, (x, y) with pixel centres at integer coordinates (x to the right,
y downwards): the centre of mass of each shape, which is also what a coverage-weighted pixel centroid measures (for
a triangle it lies below the centre of its bounding box, the position `Shape.start` gives).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from i2vgen.errors import InputError
from i2vgen.io import clip_preprocess

# Saturated shape colours, far from each other (RGB distance >= 83) and from the near-neutral backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 220),
    "purple": (140, 60, 200),
    "pink": (235, 80, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 24),
    "dark grey": (64, 64, 64),
    "grey": (128, 128, 128),
    "light grey": (196, 196, 196),
    "white": (242, 242, 242),
    "beige": (226, 212, 184),
}
KINDS = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SCALES: dict[str, float] = {"": 1.0, "grows": 1.3, "shrinks": 1 / 1.3}  # radius at the last frame / at the first

MAX_SHAPES = 2
FPS = 8
SPLITS = {"train": 0, "heldout": 10**6}  # first seed of each split; train has at most 10**6 seeds

_RADIUS = {1: (0.1, 0.14), 2: (0.08, 0.105)}  # by number of shapes; a lane needs _EXTENT * 0.105 + 0.11 <= 0.25
_TRAVEL = 0.2  # distance moved over the clip (along the long side of a lane with two shapes)
_LANE_TRAVEL = 0.11  # ... across a half-frame lane (two shapes)
_EXTENT = max(SCALES.values())  # largest half-extent / first radius: every kind fits in a 2r x 2r box
_SQUARE = 0.88  # half-side / radius: about the circle's area
_TRIANGLE = 1.15  # circumradius / radius of the upward equilateral triangle: half-width 0.996 r, height 1.725 r

_COLOUR_WORDS = {**{c: c for c in COLOURS}, "violet": "purple", "magenta": "pink"}
_SHAPE_WORDS = {
    **{k: k for k in KINDS},
    **{k + "s": k for k in KINDS},
    "ball": "circle",
    "disc": "circle",
    "disk": "circle",
    "box": "square",
}
_DIRECTION_WORDS = {
    **{d: d for d in DIRECTIONS},
    **{d + "ward": d for d in DIRECTIONS},
    **{d + "wards": d for d in DIRECTIONS},
}


@dataclass(frozen=True)
class Shape:
    """One shape of a clip. Positions and sizes are fractions of the frame side."""

    kind: str  # one of KINDS
    colour: str  # a key of COLOURS
    direction: str  # a key of DIRECTIONS
    scale: str  # a key of SCALES: "", "grows" or "shrinks"
    start: tuple[float, float]  # centre (x, y) of the bounding box at the first frame
    radius: float  # at the first frame; the shape lies within +-radius of its centre along each axis
    travel: float  # distance moved between the first and the last frame


@dataclass(frozen=True)
class ShapesClip:
    """A rendered clip and its ground truth."""

    seed: int
    frames: np.ndarray  # uint8 (F, H, W, 3)
    caption: str
    shapes: tuple[Shape, ...]
    background: str  # a key of BACKGROUNDS
    centroids: np.ndarray  # float32 (num_shapes, F, 2): centre of mass (x, y) in pixels, pixel centres at integers
    radii: np.ndarray  # float32 (num_shapes, F) in pixels
    gradient: tuple[float, float] | None = None  # the background's (strength, angle), as `render` takes it

    @property
    def first_frame(self) -> np.ndarray:
        """uint8 (H, W, 3): the image the model animates."""
        return self.frames[0]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(shapes: tuple[Shape, ...] | list[Shape]) -> str:
    """'a red circle moves left', 'an orange square moves up and grows and a blue triangle moves right'."""
    clauses = []
    for s in shapes:
        clauses.append(f"{_article(s.colour)} {s.colour} {s.kind} moves {s.direction}" + (f" and {s.scale}" if s.scale else ""))
    return " and ".join(clauses)


def parse_prompt(text: str) -> list[tuple[str, str | None, str]]:
    """Prompt → [(colour, shape, direction), ...]: every named colour (a key of COLOURS; 'violet' and 'magenta'
    are read as purple and pink) followed, before the next named colour, by a direction word (left, right, up,
    down, optionally with -ward(s)). The shape is the word right after the colour when it names one, else None.
    Colours without a direction are left out. Inverts `caption`."""
    words = re.findall(r"[a-z]+", text.lower())
    items: list[tuple[str, str | None, str]] = []
    i = 0
    while i < len(words):
        colour = _COLOUR_WORDS.get(words[i])
        if colour is None:
            i += 1
            continue
        kind = _SHAPE_WORDS.get(words[i + 1]) if i + 1 < len(words) else None
        j, direction = i + 1, None
        while j < len(words) and words[j] not in _COLOUR_WORDS:
            direction = direction or _DIRECTION_WORDS.get(words[j])
            j += 1
        if direction is not None:
            items.append((colour, kind, direction))
        i = j
    return items


def make_clip(
    seed: int,
    *,
    size: int = 32,
    num_frames: int = 16,
    num_shapes: int | None = None,
    p_two_shapes: float = 0.5,
    p_scale: float = 0.25,
    p_gradient: float = 0.5,
) -> ShapesClip:
    """The clip of `seed`: the scene is drawn from `random.Random(seed)` (independently of `size` and `num_frames`),
    then rendered at `size` x `size` with `num_frames` frames.

    `num_shapes`: 1 or 2 (None: two with probability `p_two_shapes`). Each shape grows or shrinks with probability
    `p_scale`; the background has a mild gradient with probability `p_gradient`.
    """
    if num_shapes not in (None, 1, 2):
        raise InputError(f"num_shapes must be 1, 2 or None, got {num_shapes!r}")
    rng = random.Random(seed)
    if num_shapes is None:
        num_shapes = 2 if rng.random() < p_two_shapes else 1
    background = rng.choice(sorted(BACKGROUNDS))
    gradient = (rng.uniform(10, 25), rng.uniform(0, 2 * math.pi)) if rng.random() < p_gradient else None
    colours = rng.sample(sorted(COLOURS), num_shapes)  # distinct: a colour names one shape
    if num_shapes == 1:
        boxes = [(0.0, 0.0, 1.0, 1.0)]
    elif rng.random() < 0.5:  # two lanes, one shape each, so they never overlap: top / bottom ...
        boxes = [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)]
    else:  # ... or left / right
        boxes = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
    shapes = tuple(_sample_shape(rng, colour, box, num_shapes, p_scale) for colour, box in zip(colours, boxes))
    frames, centroids, radii = render(shapes, background, size=size, num_frames=num_frames, gradient=gradient)
    return ShapesClip(seed, frames, caption(shapes), shapes, background, centroids, radii, gradient)


PLACE_MARGIN = 0.1  # a shape this far (fraction of the side) from the centre along an axis gets that axis's word


def place_caption(clip: ShapesClip, frame: int) -> str:
    """Frame `frame` of `clip` described by colour, shape, place and background, with the direction words for the
    place: 'a red circle is up left on a beige background' (a shape within `PLACE_MARGIN` of the centre along an
    axis gets no word for it: 'a blue square is right', 'a green triangle is on a grey background'). The captions of
    the text-to-image stage of the tiny recipe: they teach the spatial layers to read colour, shape and the words
    left / right / up / down before the video stage needs them for motion."""
    size = clip.frames.shape[1]
    clauses = []
    for k, shape in enumerate(clip.shapes):
        x, y = (clip.centroids[k, frame] + 0.5) / size - 0.5  # offset from the centre, fraction of the side
        words = ["up" if y < -PLACE_MARGIN else "down" if y > PLACE_MARGIN else "",
                 "left" if x < -PLACE_MARGIN else "right" if x > PLACE_MARGIN else ""]
        place = " ".join(w for w in words if w)
        clauses.append(f"{_article(shape.colour)} {shape.colour} {shape.kind}" + (f" is {place}" if place else ""))
    return " and ".join(clauses) + f" on a {clip.background} background"


class ShapesFramesDataset(torch.utils.data.Dataset):
    """Single frames of the train clips with `place_caption` captions, in the training data layout (frames
    (3, 1, H, W)): item i is frame `i % num_frames` of clip `seeds[i // num_frames]`, so every frame of a clip is an
    item of its own."""

    def __init__(self, split: str = "train", length: int = 10_000, *, size: int = 32, num_frames: int = 16,
                 **clip_kwargs: Any) -> None:
        self.seeds = split_seeds(split, length)
        self.size, self.num_frames, self.clip_kwargs = size, num_frames, clip_kwargs

    def __len__(self) -> int:
        return len(self.seeds) * self.num_frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = make_clip(self.seeds[index // self.num_frames], size=self.size, num_frames=self.num_frames,
                         **self.clip_kwargs)
        k = index % self.num_frames
        one = dataclasses.replace(clip, frames=clip.frames[k:k + 1], centroids=clip.centroids[:, k:k + 1],
                                  radii=clip.radii[:, k:k + 1])
        return {**to_sample(one), "caption": place_caption(clip, k)}


def with_direction(clip: ShapesClip, direction: str, start: tuple[float, float] | None = None) -> ShapesClip:
    """`clip` (one shape) re-rendered with its shape moving in `direction` (and starting at `start`, if given)."""
    if len(clip.shapes) != 1:
        raise InputError("with_direction takes a one-shape clip")
    return with_directions(clip, (direction,), None if start is None else (start,))


def with_directions(clip: ShapesClip, directions: tuple[str, ...],
                    starts: tuple[tuple[float, float], ...] | None = None, *, axis_travel: bool = False) -> ShapesClip:
    """`clip` re-rendered with shape i moving in `directions[i]` (and starting at `starts[i]`, if given), each shape
    keeping the travel drawn for its own direction. One shape travels the same distance along either axis, so any
    direction fits. Two shapes travel 0.2 of the side along their lane and 0.11 across it (`_sample_shape`): a shape
    turned onto the other axis keeps its drawn distance, so it moves across its lane twice as far as a clip of that
    direction would (its start leaves room for 0.11: in 401 of the 2,048 clips of the first 128 two-shape
    `DirectionsDataset` scenes a shape ends with over 1 % of its area out of frame, none with each axis's own
    distance; `benchmarks/shapes_two_shape_overfit.py --travel-census`) or along it about half as far. The
    `tiny-shapes-text` recipe's two-shape curriculum stages were trained on these clips, so that stays the default;
    `axis_travel=True` (the shipped recipe's) gives a shape turned onto the other axis the distance `make_clip` draws
    for that axis, as a clip of that direction has (docs/tiny-shapes.md, sections 15 and 16)."""
    if len(directions) != len(clip.shapes) or (starts is not None and len(starts) != len(clip.shapes)):
        raise InputError(f"{len(clip.shapes)} shape(s) need as many directions (and starts), got {directions}")
    shapes = tuple(dataclasses.replace(sh, direction=d, start=sh.start if starts is None else starts[i],
                                       travel=_axis_travel(sh, d, len(clip.shapes)) if axis_travel else sh.travel)
                   for i, (sh, d) in enumerate(zip(clip.shapes, directions)))
    return dataclasses.replace(_rerendered(clip, shapes), caption=caption(shapes))


def _axis_travel(shape: Shape, direction: str, num_shapes: int) -> float:
    """The distance `_sample_shape` draws for a shape of a `num_shapes`-shape clip moving in `direction`, from the one
    it drew for `shape.direction`: the same on the same axis or with one shape (both axes travel `_TRAVEL`); with two,
    the lanes are halves of the frame, so the other axis travels the other of `_TRAVEL` and `_LANE_TRAVEL`."""
    if num_shapes == 1 or (DIRECTIONS[direction][0] != 0) == (DIRECTIONS[shape.direction][0] != 0):
        return shape.travel
    return _LANE_TRAVEL if math.isclose(shape.travel, _TRAVEL) else _TRAVEL


def _rerendered(clip: ShapesClip, shapes: tuple[Shape, ...]) -> ShapesClip:
    """`clip` with `shapes` drawn on its background at its size and frame count; ground truth to match, caption
    kept."""
    frames, centroids, radii = render(shapes, clip.background, size=clip.frames.shape[1],
                                      num_frames=clip.frames.shape[0], gradient=clip.gradient)
    return dataclasses.replace(clip, frames=frames, shapes=shapes, centroids=centroids, radii=radii)


def with_travel_changes(clip: ShapesClip, changes: tuple[float, ...] | list[float]) -> ShapesClip:
    """`clip` re-rendered with shape i's travel changed by `changes[i]` (a fraction of the side; the position error
    grows linearly from 0 at the first frame, as a base stage's does). Its ground truth follows the new rendering."""
    if len(changes) != len(clip.shapes):
        raise InputError(f"{len(clip.shapes)} shape(s) need as many travel changes, got {len(changes)}")
    shapes = tuple(dataclasses.replace(sh, travel=sh.travel + c) for sh, c in zip(clip.shapes, changes))
    return _rerendered(clip, shapes)


def with_colour_drift(clip: ShapesClip, colours: tuple[str, ...] | list[str], weight: float) -> ShapesClip:
    """`clip` with shape i's colour blended toward the named colour `colours[i]`, by a weight growing linearly from 0
    at the first frame to `weight` at the last (as a base stage's colours drift); shapes and ground truth unchanged."""
    if len(colours) != len(clip.shapes):
        raise InputError(f"{len(clip.shapes)} shape(s) need as many colours, got {len(colours)}")
    shapes = tuple(dataclasses.replace(sh, colour=c) for sh, c in zip(clip.shapes, colours))
    other = _rerendered(clip, shapes).frames  # (F, H, W, 3)
    w = weight * np.linspace(0.0, 1.0, clip.frames.shape[0], dtype=np.float32)[:, None, None, None]  # (F, 1, 1, 1)
    frames = np.rint((1 - w) * clip.frames + w * other).astype(np.uint8)  # (F, H, W, 3)
    return dataclasses.replace(clip, frames=frames)


class DirectionsDataset(torch.utils.data.Dataset):
    """Every direction combination of `scenes` scenes with `num_shapes` shapes each (the first frames of
    `make_clip(seed, num_shapes=num_shapes)` for the first `scenes` seeds of `split`): 4 clips per one-shape scene,
    16 per two-shape scene (item i is scene i // 16, the first shape moving `sorted(DIRECTIONS)[i % 16 // 4]`, the
    second `[i % 4]`). Clips that share a first frame and differ only in the direction words: with few scenes the
    text is the only thing that varies, which is how a curriculum gets a model to read it, and with two shapes the
    only way to lower the loss is to move each shape by the word after its own colour (docs/tiny-shapes.md).
    `axis_travel`: see `with_directions` (off: `tiny-shapes-text`'s data; on: the shipped recipe's)."""

    def __init__(self, split: str = "train", scenes: int = 1, *, size: int = 32, num_frames: int = 16,
                 num_shapes: int = 1, axis_travel: bool = False) -> None:
        if num_shapes not in (1, 2):
            raise InputError(f"num_shapes must be 1 or 2, got {num_shapes!r}")
        self.seeds = split_seeds(split, scenes)
        self.size, self.num_frames, self.num_shapes, self.axis_travel = size, num_frames, num_shapes, axis_travel
        self.combos = list(itertools.product(sorted(DIRECTIONS), repeat=num_shapes))

    def __len__(self) -> int:
        return len(self.combos) * len(self.seeds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, combo = divmod(index, len(self.combos))
        clip = make_clip(self.seeds[scene], size=self.size, num_frames=self.num_frames, num_shapes=self.num_shapes)
        return to_sample(with_directions(clip, self.combos[combo], axis_travel=self.axis_travel))


def write_clip_list(folder: str | os.PathLike, split: str = "train", length: int = 100, *, size: int = 32,
                    num_frames: int = 16, crf: int = 0, **clip_kwargs: Any) -> Path:
    """Render clips `split_seeds(split, length)` to `folder/NNNNNNN.mp4` (H.264 at `crf`, 0: lossless luma) and
    write `folder/captions.txt` in the reference's `path|||caption` list format; -> the list's path. The data a user
    would bring, for training through `VideoTextDataset` (and its latent cache) instead of `ShapesDataset`."""
    from i2vgen.io import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed in split_seeds(split, length):
        clip = make_clip(seed, size=size, num_frames=num_frames, **clip_kwargs)
        name = f"{seed:07d}.mp4"
        write_video(clip.frames, folder / name, fps=FPS, crf=crf)
        lines.append(f"{name}|||{clip.caption}")
    path = folder / "captions.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def direction_pair(*, size: int = 32, num_frames: int = 16, directions: tuple[str, str] = ("left", "right"),
                   background: str = "grey") -> list[ShapesClip]:
    """Two clips that differ only in the direction: one red circle starting in the middle ("a red circle moves
    left" / "... right" by default). The same first frame, so only the caption tells them apart: the two-clip check
    of the text pathway (`i2vgen.train.text_probe.two_clip_check`)."""
    clips = []
    for i, d in enumerate(directions):
        shape = Shape("circle", "red", d, "", (0.5, 0.5), 0.12, _TRAVEL)
        frames, centroids, radii = render([shape], background, size=size, num_frames=num_frames)
        clips.append(ShapesClip(-1 - i, frames, caption([shape]), (shape,), background, centroids, radii))
    return clips


def _sample_shape(
    rng: random.Random, colour: str, box: tuple[float, float, float, float], num_shapes: int, p_scale: float
) -> Shape:
    """A shape in `box` = (x0, y0, x1, y1). The start is uniform in the box shrunk by the shape's largest half-extent
    (grown) plus the travel along each axis, a region that depends neither on the direction nor on the scale change,
    so that the first frame tells nothing about either."""
    kind = rng.choice(KINDS)
    direction = rng.choice(sorted(DIRECTIONS))
    scale = rng.choice(("grows", "shrinks")) if rng.random() < p_scale else ""
    radius = rng.uniform(*_RADIUS[num_shapes])
    x0, y0, x1, y1 = box
    travel_x = _TRAVEL if x1 - x0 == 1.0 else _LANE_TRAVEL
    travel_y = _TRAVEL if y1 - y0 == 1.0 else _LANE_TRAVEL
    margin_x, margin_y = _EXTENT * radius + travel_x, _EXTENT * radius + travel_y
    start = (rng.uniform(x0 + margin_x, x1 - margin_x), rng.uniform(y0 + margin_y, y1 - margin_y))
    travel = travel_x if DIRECTIONS[direction][0] else travel_y
    return Shape(kind, colour, direction, scale, start, radius, travel)


def render(
    shapes: tuple[Shape, ...] | list[Shape],
    background: str,
    *,
    size: int = 32,
    num_frames: int = 16,
    gradient: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw `shapes` over `background` → (uint8 frames (F, H, W, 3), centroids (n, F, 2), radii (n, F)) in pixels.

    Shape k at frame t (s = t / (F - 1)): centre = start + s * travel * direction, radius = radius * scale**s.
    Coverage of a pixel is clip(0.5 - d, 0, 1) with d the signed distance (pixels) from the pixel centre to the
    shape's outline: analytic antialiasing, exact for straight edges. `gradient` = (amplitude in levels, angle):
    the background varies linearly by +-amplitude/2 across the frame along the angle.
    """
    if not isinstance(size, int) or size < 4:
        raise InputError(f"size must be an integer >= 4, got {size!r}")
    if not isinstance(num_frames, int) or num_frames < 2:
        raise InputError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    if background not in BACKGROUNDS:
        raise InputError(f"unknown background {background!r}; choose one of {sorted(BACKGROUNDS)}")
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size  # pixel centres, fraction of the side
    xs, ys = coords[None, None, :], coords[None, :, None]  # (1, 1, W), (1, H, 1)
    canvas = np.broadcast_to(np.asarray(BACKGROUNDS[background], np.float32), (size, size, 3)).copy()
    if gradient is not None:
        amplitude, angle = gradient
        ramp = (xs[0] - 0.5) * math.cos(angle) + (ys[0] - 0.5) * math.sin(angle)  # (H, W) in [-0.71, 0.71]
        canvas += (amplitude / math.sqrt(2)) * ramp[..., None]
    frames = np.broadcast_to(canvas, (num_frames, size, size, 3)).copy()  # (F, H, W, 3)
    s = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)[:, None, None]  # (F, 1, 1)
    centroids = np.zeros((len(shapes), num_frames, 2), np.float32)
    radii = np.zeros((len(shapes), num_frames), np.float32)
    for k, shape in enumerate(shapes):
        _check_shape(shape)
        dx, dy = DIRECTIONS[shape.direction]
        cx = shape.start[0] + s * shape.travel * dx  # (F, 1, 1)
        cy = shape.start[1] + s * shape.travel * dy
        r = shape.radius * SCALES[shape.scale] ** s
        # the triangle's centroid lies R / 4 below the centre of its bounding box (R: circumradius)
        cy_mass = cy + (0.25 * _TRIANGLE * r if shape.kind == "triangle" else 0.0)
        alpha = np.clip(0.5 - _signed_distance(shape.kind, xs - cx, ys - cy_mass, r) * size, 0.0, 1.0)[..., None]
        frames = frames * (1 - alpha) + np.asarray(COLOURS[shape.colour], np.float32) * alpha
        centroids[k, :, 0], centroids[k, :, 1] = cx.ravel() * size - 0.5, cy_mass.ravel() * size - 0.5
        radii[k] = r.ravel() * size
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), centroids, radii


def _check_shape(shape: Shape) -> None:
    for name, value, allowed in (
        ("kind", shape.kind, KINDS),
        ("colour", shape.colour, COLOURS),
        ("direction", shape.direction, DIRECTIONS),
        ("scale", shape.scale, SCALES),
    ):
        if value not in allowed:
            raise InputError(f"unknown shape {name} {value!r}; choose one of {sorted(allowed)}")


def _signed_distance(kind: str, px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (fraction of the side; < 0 inside) from offsets (px, py) to a shape of radius r whose centre
    of mass is at 0."""
    if kind == "circle":
        return np.sqrt(px * px + py * py) - r
    if kind == "square":  # exact box distance
        qx, qy = np.abs(px) - _SQUARE * r, np.abs(py) - _SQUARE * r
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    # Upward equilateral triangle, centroid at 0, circumradius R: edges at distance R/2 from the centroid,
    # outward normals (0, 1), (+-sqrt(3)/2, -1/2). The max of the three half-plane distances is exact inside and
    # along the edges; it rounds the outside of the corners, which only matters well beyond a pixel.
    half = 0.5 * _TRIANGLE * r
    c = math.sqrt(3) / 2
    return np.maximum(np.maximum(py, c * px - 0.5 * py), -c * px - 0.5 * py) - half


def split_seeds(split: str, length: int) -> range:
    """The seeds of the first `length` clips of `split` ("train": 0, 1, ...; "heldout": 10**6, ...)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if not 0 < length <= 10**6:
        raise InputError(f"length must be between 1 and 10**6 (the size of a split), got {length}")
    return range(SPLITS[split], SPLITS[split] + length)


def frames_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (3, F, H, W) in [-1, 1], the training data layout."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1


def to_sample(clip: ShapesClip) -> dict[str, Any]:
    """A clip in the training data layout, plus "meta": its ground truth, padded to MAX_SHAPES shapes so that
    torch's default collate batches it (absent shapes: "" names and NaN coordinates)."""
    frames = frames_tensor(clip.frames)  # (3, F, H, W)
    n, num_frames, size = len(clip.shapes), clip.frames.shape[0], clip.frames.shape[1]
    pad = [""] * (MAX_SHAPES - n)
    centroids = torch.full((MAX_SHAPES, num_frames, 2), float("nan"))
    radii = torch.full((MAX_SHAPES, num_frames), float("nan"))
    centroids[:n], radii[:n] = torch.from_numpy(clip.centroids), torch.from_numpy(clip.radii)
    meta = {
        "seed": clip.seed,
        "num_shapes": n,
        "colours": [s.colour for s in clip.shapes] + pad,
        "kinds": [s.kind for s in clip.shapes] + pad,
        "directions": [s.direction for s in clip.shapes] + pad,
        "scales": [s.scale for s in clip.shapes] + pad,
        "background": clip.background,
        "centroids": centroids,  # (MAX_SHAPES, F, 2) pixels (x, y)
        "radii": radii,  # (MAX_SHAPES, F) pixels
        "first_frame": torch.from_numpy(clip.first_frame.copy()),  # uint8 (H, W, 3)
    }
    return {
        "frames": frames,
        "clip_pixels": clip_preprocess(Image.fromarray(clip.first_frame), size),  # (3, 224, 224)
        "caption": clip.caption,
        "fps": FPS,
        "num_frames": num_frames,
        "is_image": False,
        "path": f"shapes://{clip.seed}",
        "meta": meta,
    }


class ShapesDataset(torch.utils.data.Dataset):
    """Clips `split_seeds(split, length)`, rendered on the fly; item i is `to_sample(make_clip(seed_i, ...))`.

    The train and held-out splits use disjoint seed ranges (`SPLITS`). `clip_kwargs` go to `make_clip`.

    `travel_error` or `colour_drift` > 0 pair every clip with a source clip for a refiner ("source_frames",
    (3, F, H, W), see `i2vgen.train.trainer.refine_loss`): with probability `source_prob` the clip with each
    shape's travel changed by N(0, travel_error) (a fraction of the side; `with_travel_changes`) and its colour
    blended toward another named colour by a weight growing from 0 at the first frame to U(0, colour_drift) at the
    last (`with_colour_drift`), otherwise the clip itself. The draws are fixed per seed. A refiner trained on such
    pairs learns how far to trust what a base stage gets wrong: its shapes are off by up to a few pixels at the last
    frame and drift in colour (docs/tiny-shapes.md, section 13).
    """

    def __init__(
        self, split: str = "train", length: int = 10_000, *, size: int = 32, num_frames: int = 16,
        travel_error: float = 0.0, colour_drift: float = 0.0, source_prob: float = 1.0, **clip_kwargs: Any
    ) -> None:
        if travel_error < 0 or not 0 <= colour_drift <= 1 or not 0 <= source_prob <= 1:
            raise InputError(f"travel_error must be >= 0, colour_drift and source_prob in [0, 1], got "
                             f"{travel_error}, {colour_drift}, {source_prob}")
        self.seeds = split_seeds(split, length)
        self.size, self.num_frames, self.clip_kwargs = size, num_frames, clip_kwargs
        self.travel_error, self.colour_drift, self.source_prob = travel_error, colour_drift, source_prob

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed = self.seeds[index]
        clip = make_clip(seed, size=self.size, num_frames=self.num_frames, **self.clip_kwargs)
        sample = to_sample(clip)
        if self.travel_error > 0 or self.colour_drift > 0:
            rng = random.Random(f"source:{seed}")  # str seeds do not depend on PYTHONHASHSEED
            source = clip
            if rng.random() < self.source_prob:
                if self.travel_error > 0:
                    source = with_travel_changes(source, [rng.gauss(0.0, self.travel_error) for _ in clip.shapes])
                if self.colour_drift > 0:
                    others = [rng.choice(sorted(set(COLOURS) - {sh.colour})) for sh in clip.shapes]
                    source = with_colour_drift(source, others, rng.uniform(0.0, self.colour_drift))
            sample["source_frames"] = frames_tensor(source.frames)  # (3, F, H, W)
        return sample
