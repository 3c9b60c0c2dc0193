"""The synthetic shapes task: determinism, coverage, no direction in the first frame, ground truth, captions."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from i2vgen.errors import InputError
from i2vgen.shapes import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    KINDS,
    DirectionsDataset,
    ShapesDataset,
    caption,
    make_clip,
    parse_prompt,
    render,
    split_seeds,
    to_sample,
    with_colour_drift,
    with_directions,
    with_travel_changes,
)

N_SEEDS = 600


@pytest.fixture(scope="module")
def clips():
    return [make_clip(seed) for seed in range(N_SEEDS)]


def test_same_seed_same_clip_and_seeds_differ():
    a, b, c = make_clip(7), make_clip(7), make_clip(8)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption and a.shapes == b.shapes
    assert np.array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.frames, c.frames)


def test_layout_and_speed():
    clip = make_clip(3, size=32, num_frames=16)
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.centroids.shape == (len(clip.shapes), 16, 2) and clip.radii.shape == (len(clip.shapes), 16)
    assert np.array_equal(clip.first_frame, clip.frames[0])
    start = time.perf_counter()
    for seed in range(100):
        make_clip(seed)
    assert (time.perf_counter() - start) / 100 < 0.01  # a few ms per 32x32 clip (about 0.5 ms here)


def test_every_colour_kind_direction_background_and_scale_is_drawn(clips):
    shapes = [s for c in clips for s in c.shapes]
    assert {s.colour for s in shapes} == set(COLOURS) and len(COLOURS) >= 6
    assert {s.kind for s in shapes} == set(KINDS)
    assert {s.direction for s in shapes} == set(DIRECTIONS)
    assert {s.scale for s in shapes} == {"", "grows", "shrinks"}
    assert {c.background for c in clips} == set(BACKGROUNDS)
    assert {len(c.shapes) for c in clips} == {1, 2}
    assert all(len({s.colour for s in c.shapes}) == len(c.shapes) for c in clips)  # colours name shapes
    assert not set(COLOURS) & set(BACKGROUNDS)
    distances = [np.linalg.norm(np.subtract(a, b)) for a in COLOURS.values() for b in BACKGROUNDS.values()]
    assert min(distances) > 95  # backgrounds are far from every shape colour (purple-grey: 99.8)


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    return float(np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                        - np.searchsorted(np.sort(b), grid, "right") / len(b)).max())


def test_start_position_distribution_does_not_depend_on_direction():
    # 4000 single-shape clips: the start (x, y) of each direction against all the others, two-sample KS.
    shapes = [make_clip(seed, num_shapes=1).shapes[0] for seed in range(4000)]
    starts = np.array([s.start for s in shapes])
    directions = np.array([s.direction for s in shapes])
    for d in DIRECTIONS:
        group, rest = starts[directions == d], starts[directions != d]
        assert len(group) > 800
        for axis in (0, 1):
            # critical value at alpha = 0.001: 1.95 * sqrt((n + m) / (n m)) ≈ 0.078 here
            assert _ks_statistic(group[:, axis], rest[:, axis]) < 0.078, (d, axis)
            assert abs(group[:, axis].mean() - rest[:, axis].mean()) < 0.01


def test_first_frame_is_the_same_whatever_the_direction_or_scale():
    clip = make_clip(11, num_shapes=2)
    first = clip.frames[0]
    for direction in DIRECTIONS:
        for scale in ("", "grows", "shrinks"):
            changed = tuple(dataclasses.replace(s, direction=direction, scale=scale) for s in clip.shapes)
            frames, _, _ = render(changed, clip.background, size=32)
            assert np.array_equal(frames[0], first)


def test_ground_truth_moves_the_captioned_way_and_stays_in_frame(clips):
    for clip in clips:
        for shape, track, radii in zip(clip.shapes, clip.centroids, clip.radii):
            step = track[-1] - track[0]
            axis = 0 if DIRECTIONS[shape.direction][0] else 1
            assert np.sign(step[axis]) == sum(DIRECTIONS[shape.direction]), clip.caption
            assert abs(step[axis]) >= 0.1 * 32  # at least 3.2 pixels at 32x32
            # a growing or shrinking triangle's centroid moves a little across (its centroid is off-centre)
            assert abs(step[1 - axis]) < 0.1 * abs(step[axis])
            if shape.scale == "grows":
                assert radii[-1] > 1.25 * radii[0]
            elif shape.scale == "shrinks":
                assert radii[-1] < 0.8 * radii[0]
            else:
                assert radii[-1] == pytest.approx(radii[0])
            # every kind lies within +-radius of its bounding-box centre along each axis; that box stays in frame
            s = np.linspace(0, 1, 16)[:, None]
            centre = np.asarray(shape.start) + s * shape.travel * np.asarray(DIRECTIONS[shape.direction])
            reach = radii[:, None] / 32
            assert (centre - reach >= 0).all() and (centre + reach <= 1).all(), clip.caption


def test_pixel_centroid_matches_ground_truth():
    # The coverage-weighted centroid of the shape's colour is the centre of mass (a single shape, plain grey).
    for seed in range(20):
        clip = make_clip(seed, num_shapes=1, size=64, p_gradient=0.0)
        shape, bg = clip.shapes[0], np.asarray(BACKGROUNDS[clip.background], float)
        colour = np.asarray(COLOURS[shape.colour], float)
        frames = clip.frames.astype(float)
        # coverage from the colour mix: project (pixel - bg) on (colour - bg)
        alpha = np.clip(((frames - bg) @ (colour - bg)) / ((colour - bg) @ (colour - bg)), 0, 1)
        ys, xs = np.mgrid[:64, :64]
        cx = (alpha * xs).sum((1, 2)) / alpha.sum((1, 2))
        cy = (alpha * ys).sum((1, 2)) / alpha.sum((1, 2))
        np.testing.assert_allclose(np.stack([cx, cy], 1), clip.centroids[0], atol=0.15)


def test_sizes_show_the_same_scene_antialiased():
    # Rendering is resolution-free: 64x64 box-downsampled to 32x32 ≈ the 32x32 render (same seed, same scene).
    for seed in range(10):
        small, big = make_clip(seed, size=32), make_clip(seed, size=64)
        assert small.caption == big.caption
        down = big.frames.astype(float).reshape(16, 32, 2, 32, 2, 3).mean((2, 4))
        assert np.abs(down - small.frames).mean() < 1.0
        np.testing.assert_allclose(big.centroids, 2 * small.centroids + 0.5, atol=1e-4)


def test_shapes_are_visible_at_32x32(clips):
    # pixels of (nearly) the shape's own colour: at least 3 in every frame (a small shrinking triangle of a
    # two-shape clip), 20 in the median first frame
    counts = []
    for clip in clips:
        for shape in clip.shapes:
            colour = np.asarray(COLOURS[shape.colour], float)
            near = np.linalg.norm(clip.frames.astype(float) - colour, axis=-1) < 40
            assert near.sum((1, 2)).min() >= 3, clip.caption
            counts.append(near[0].sum())
    assert np.median(counts) >= 20


def test_captions_and_parse_prompt_round_trip(clips):
    for clip in clips:
        assert clip.caption == caption(clip.shapes)
        assert parse_prompt(clip.caption) == [(s.colour, s.kind, s.direction) for s in clip.shapes]
    assert make_clip(0, num_shapes=1).caption.count(" moves ") == 1
    assert any(c.caption.startswith("an orange") for c in clips)
    assert any(" and grows" in c.caption for c in clips) and any(" and shrinks" in c.caption for c in clips)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red circle moves left", [("red", "circle", "left")]),
        ("A Blue square moves UP.", [("blue", "square", "up")]),
        ("the violet ball is moving to the right", [("purple", "circle", "right")]),
        ("an orange triangle drifts downwards and a green box goes upward",
         [("orange", "triangle", "down"), ("green", "square", "up")]),
        ("a red thing moves left", [("red", None, "left")]),
        ("a red circle on a white background", []),
        ("", []),
    ],
)
def test_parse_prompt_free_text(text, expected):
    assert parse_prompt(text) == expected


def test_dataset_sample_layout_and_collate():
    ds = ShapesDataset("heldout", 4, size=32, num_frames=16)
    assert list(ds.seeds) == [10**6, 10**6 + 1, 10**6 + 2, 10**6 + 3]
    item = ds[1]
    assert item["frames"].shape == (3, 16, 32, 32) and item["frames"].dtype == torch.float32
    assert -1 <= item["frames"].min() and item["frames"].max() <= 1
    assert item["clip_pixels"].shape == (3, 224, 224) and item["clip_pixels"].dtype == torch.float32
    assert item["caption"] == make_clip(10**6 + 1).caption
    assert (item["fps"], item["num_frames"], item["is_image"], item["path"]) == (8, 16, False, "shapes://1000001")
    clip = make_clip(10**6 + 1)
    np.testing.assert_array_equal(((item["frames"][:, 0].permute(1, 2, 0) + 1) * 127.5).round().numpy(),
                                  clip.first_frame)
    meta = item["meta"]
    assert np.array_equal(meta["first_frame"].numpy(), clip.first_frame)
    n = meta["num_shapes"]
    assert meta["colours"][:n] == [s.colour for s in clip.shapes] and meta["directions"][:n] == [
        s.direction for s in clip.shapes]
    assert torch.equal(meta["centroids"][:n], torch.from_numpy(clip.centroids))
    assert torch.isnan(meta["centroids"][n:]).all()
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])  # variable shape counts still batch
    assert batch["frames"].shape == (4, 3, 16, 32, 32) and batch["meta"]["centroids"].shape == (4, 2, 16, 2)


def test_sources_with_misplaced_shapes_and_drifting_colours_for_a_refiner():
    """`with_travel_changes` moves each shape's last-frame position by its change along its direction (nothing at the
    first frame); `with_colour_drift` blends each shape's colour toward another by a weight growing from 0 at the
    first frame; `ShapesDataset(travel_error=..., colour_drift=...)` pairs a clip with such a source, drawn per seed,
    with probability `source_prob` (else the clip itself)."""
    clip = make_clip(7, size=32, num_frames=8, num_shapes=2)
    moved = with_travel_changes(clip, [0.1, -0.05])
    for k, (shape, change) in enumerate(zip(clip.shapes, (0.1, -0.05))):
        step = np.asarray(DIRECTIONS[shape.direction], np.float32) * change * 32
        np.testing.assert_allclose(moved.centroids[k, -1] - clip.centroids[k, -1], step, atol=0.15)
        np.testing.assert_allclose(moved.centroids[k, 0], clip.centroids[k, 0], atol=1e-4)
    assert moved.caption == clip.caption
    with pytest.raises(InputError, match="travel changes"):
        with_travel_changes(clip, [0.1])
    one = make_clip(3, size=32, num_frames=5, num_shapes=1)
    drifted = with_colour_drift(one, ["blue" if one.shapes[0].colour != "blue" else "red"], 0.5)
    np.testing.assert_array_equal(drifted.frames[0], one.frames[0])
    centre = np.rint(one.centroids[0, -1]).astype(int)  # (x, y)
    target = np.asarray(COLOURS["blue" if one.shapes[0].colour != "blue" else "red"], np.float64)
    shape_now = one.frames[-1, centre[1], centre[0]].astype(np.float64)
    np.testing.assert_allclose(drifted.frames[-1, centre[1], centre[0]], (shape_now + target) / 2, atol=1)
    background = (0, 0) if np.linalg.norm(one.centroids[0, -1]) > 8 else (31, 31)
    assert np.array_equal(drifted.frames[:, background[1], background[0]], one.frames[:, background[1], background[0]])
    with pytest.raises(InputError, match="colours"):
        with_colour_drift(clip, ["red"], 0.5)
    ds = ShapesDataset("train", 40, size=32, num_frames=4, travel_error=2 / 32, colour_drift=0.3, source_prob=0.5)
    items = [ds[i] for i in range(40)]
    changed = sum(not torch.equal(it["source_frames"], it["frames"]) for it in items)
    assert 10 <= changed <= 30, changed
    assert all(torch.equal(it["source_frames"], ds[i]["source_frames"]) for i, it in enumerate(items[:5]))
    assert torch.equal(items[3]["frames"], ShapesDataset("train", 40, size=32, num_frames=4)[3]["frames"])
    assert "source_frames" not in ShapesDataset("train", 4)[0]
    same = ShapesDataset("train", 8, size=32, num_frames=4, colour_drift=0.3, source_prob=0.0)
    assert all(torch.equal(same[i]["source_frames"], same[i]["frames"]) for i in range(8))
    with pytest.raises(InputError, match="travel_error"):
        ShapesDataset("train", 4, travel_error=-1.0)
    with pytest.raises(InputError, match="colour_drift"):
        ShapesDataset("train", 4, colour_drift=1.5)


def test_directions_dataset_holds_every_direction_combination_of_a_scene():
    """Two-shape scenes: 16 clips per scene, one first frame, each shape moving the way its own clause says."""
    from i2vgen import eval as ev

    ds = DirectionsDataset("train", 2, size=32, num_frames=8, num_shapes=2)
    assert len(ds) == 32 and len(DirectionsDataset("train", 3).combos) == 4
    items = [ds[i] for i in range(16)]
    firsts = {items[i]["frames"][:, 0].numpy().tobytes() for i in range(16)}
    assert len(firsts) == 1 and len({it["caption"] for it in items}) == 16
    for it in items[::5]:
        video = ((it["frames"].permute(1, 2, 3, 0) + 1) * 127.5).round().numpy().astype(np.uint8)  # (F, H, W, 3)
        colours, directions = it["meta"]["colours"][:2], it["meta"]["directions"][:2]
        assert ev.motion_directions(video, colours) == dict(zip(colours, directions)), it["caption"]
    assert items[6]["meta"]["directions"][:2] == [sorted(DIRECTIONS)[1], sorted(DIRECTIONS)[2]]
    with pytest.raises(InputError, match="num_shapes"):
        DirectionsDataset("train", 1, num_shapes=3)


def test_with_directions_keeps_each_shapes_drawn_travel():
    """The shipped recipe's two-shape curriculum data: a shape turned onto the other axis keeps the distance drawn
    for its own direction (0.2 along a lane, 0.11 across), as its docstring says; changing that changes the data the
    shipped model was trained on."""
    clip = next(c for c in (make_clip(s, num_frames=8, num_shapes=2) for s in range(50))
                if DIRECTIONS[c.shapes[0].direction][0] == 0)  # first shape drawn vertical
    turned = with_directions(clip, ("left", clip.shapes[1].direction))
    assert turned.shapes[0].travel == clip.shapes[0].travel
    moved = turned.centroids[0, -1] - turned.centroids[0, 0]  # (x, y) pixels
    assert moved[0] == pytest.approx(-clip.shapes[0].travel * 32, abs=1e-3) and abs(moved[1]) < 1e-3


def test_axis_travel_gives_a_turned_shape_its_new_axis_distance():
    """`axis_travel=True` (the tiny-shapes-axis recipe's two-shape data): a shape of two turned onto the other axis
    travels that axis's distance (0.11 across a lane where it drew 0.2 along it), one kept on its axis keeps its
    own, one shape keeps 0.2 either way, and `DirectionsDataset` renders through it."""
    clip = next(c for c in (make_clip(s, num_frames=8, num_shapes=2) for s in range(50))
                if DIRECTIONS[c.shapes[0].direction][0] == 0 and DIRECTIONS[c.shapes[1].direction][0] == 0)
    travels = sorted({round(sh.travel, 6) for sh in clip.shapes})
    assert len(travels) == 1  # both vertical: the same lane orientation, the same distance
    turned = with_directions(clip, ("left", "up"), axis_travel=True)
    assert turned.shapes[0].travel != clip.shapes[0].travel and turned.shapes[1].travel == clip.shapes[1].travel
    assert {turned.shapes[0].travel, clip.shapes[0].travel} == {0.2, 0.11}
    moved = turned.centroids[0, -1] - turned.centroids[0, 0]  # (x, y) pixels
    assert moved[0] == pytest.approx(-turned.shapes[0].travel * 32, abs=1e-3)
    one = make_clip(3, num_frames=8, num_shapes=1)
    assert all(with_directions(one, (d,), axis_travel=True).shapes[0].travel == one.shapes[0].travel
               for d in DIRECTIONS)
    k = 4 * sorted(DIRECTIONS).index("left") + sorted(DIRECTIONS).index("up")  # scene 0's combination (left, up)
    seed = split_seeds("train", 1)[0]
    scene = make_clip(seed, num_frames=8, num_shapes=2)
    item = DirectionsDataset("train", 1, num_frames=8, num_shapes=2, axis_travel=True)[k]
    expected = to_sample(with_directions(scene, ("left", "up"), axis_travel=True))
    assert item["caption"] == expected["caption"] and torch.equal(item["frames"], expected["frames"])


def test_splits_are_disjoint_and_checked():
    train, heldout = split_seeds("train", 10**6), split_seeds("heldout", 1000)
    assert train[-1] < heldout[0]
    with pytest.raises(InputError):
        split_seeds("test", 10)
    with pytest.raises(InputError):
        ShapesDataset("train", 10**6 + 1)
    with pytest.raises(InputError):
        make_clip(0, num_shapes=3)
    with pytest.raises(InputError):
        render(make_clip(0).shapes, "navy")
