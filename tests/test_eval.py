"""Evaluation metrics: known values, closed forms and the shapes task's ground truth; the `eval` command."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from i2vgen.errors import InputError
from i2vgen.eval import (
    add_eval_command,
    bicubic_upscale,
    colour_drift,
    direction_accuracy,
    evaluate,
    feature_statistics,
    first_frame_fidelity,
    frechet_distance,
    frechet_video_distance,
    load_feature_extractor,
    motion_directions,
    motion_magnitude,
    optical_flow,
    prompt_agreement,
    prompt_agreement_per_item,
    psnr,
    refinement_fidelity,
    refinement_gain,
    resize_like_refiner,
    ssim,
    temporal_flickering,
    track_colours,
)
from i2vgen.io import sidecar_path_field, write_sidecar_json, write_video
from i2vgen.shapes import make_clip, split_seeds

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_and_ssim_of_identical_images():
    img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img, img, channels="rgb") == pytest.approx(1.0, abs=1e-12)
    assert first_frame_fidelity(np.stack([img, img // 2]), img) == {"psnr": math.inf, "ssim": pytest.approx(1.0)}


def test_psnr_of_a_known_noise_level():
    grey = np.full((4, 32, 32, 3), 128, np.uint8)
    noisy = grey.astype(int) + 5 * (2 * (np.indices(grey.shape).sum(0) % 2) - 1)  # +-5: MSE exactly 25
    assert psnr(grey, noisy.astype(np.uint8)) == pytest.approx(10 * math.log10(255**2 / 25))  # 34.15 dB
    assert psnr(grey / 255.0, noisy / 255.0) == pytest.approx(34.1514, abs=1e-4)  # floats in [0, 1] alike
    gaussian = np.clip(128 + RNG.normal(0, 10, grey.shape), 0, 255)
    assert psnr(grey, gaussian / 255) == pytest.approx(10 * math.log10(255**2 / 100), abs=0.1)  # 28.13 dB


def test_ssim_closed_form_and_a_direct_computation():
    # constant images: variances vanish, SSIM = (2 mu_x mu_y + C1) / (mu_x² + mu_y² + C1)
    c1 = (0.01 * 255) ** 2
    x, y = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8)
    assert ssim(x, y) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1), rel=1e-12)
    # a direct window-by-window evaluation of Wang et al.'s formula on luma
    a, b = RNG.integers(0, 256, (2, 14, 13, 3)).astype(np.uint8)
    ya, yb = (a @ [0.299, 0.587, 0.114]), (b @ [0.299, 0.587, 0.114])
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c2 = (0.03 * 255) ** 2
    values = []
    for i in range(14 - 10):
        for j in range(13 - 10):
            pa, pb = ya[i : i + 11, j : j + 11], yb[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb, cov = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2, (w * pa * pb).sum() - ma * mb
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert ssim(a, b) == pytest.approx(np.mean(values), abs=1e-10)
    noisy = [np.clip(128 + RNG.normal(0, s, (32, 32, 3)), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    scores = [ssim(np.full((32, 32, 3), 128, np.uint8) + 0 * n, n) for n in noisy]
    assert scores[0] > scores[1] > scores[2]
    with pytest.raises(InputError):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_bad_frames_are_refused():
    with pytest.raises(InputError):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(InputError):
        psnr(np.full((4, 4, 3), 2.0), np.zeros((4, 4, 3)))  # floats must be in [0, 1]
    with pytest.raises(InputError):
        colour_drift(np.zeros((4, 3, 4, 4), np.uint8))  # channels first


# ----------------------------------------------------------------------------------------- drift and flicker


def test_colour_drift():
    video = np.full((5, 8, 8, 3), 100, np.uint8)
    video[:, :, :, 0] += np.arange(5, dtype=np.uint8)[:, None, None] * 3  # red rises by 3 levels a frame
    drift = colour_drift(video)
    assert drift == {"mean": pytest.approx((1 + 2 + 3 + 4) / 4), "max": pytest.approx(4.0)}  # 3 t / 3 channels
    assert colour_drift(video[:1]) == {"mean": 0.0, "max": 0.0}


def test_temporal_flickering_as_vbench():
    static = np.repeat(RNG.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), 8, axis=0)
    assert temporal_flickering(static) == 1.0
    flicker = static.astype(int)
    flicker[1::2] = np.clip(flicker[1::2] + 20, 0, 255)
    expected_mae = np.mean([np.abs(flicker[i + 1] - flicker[i]).mean() for i in range(7)])
    assert temporal_flickering(flicker.astype(np.uint8)) == pytest.approx((255 - expected_mae) / 255)
    grey = np.full((8, 4, 4, 3), 100, np.uint8)
    grey[1::2] = 120
    assert temporal_flickering(grey) == pytest.approx((255 - 20) / 255)  # 0.9216


# ----------------------------------------------------------------------------------------------- optical flow


def _texture_pair(dx: float, dy: float, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture (12 plane waves) and the same texture translated by (dx, dy), exactly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float)
    waves = [(*rng.uniform(-0.6, 0.6, 2), rng.uniform(0, 2 * np.pi)) for _ in range(12)]

    def image(sx: float, sy: float) -> np.ndarray:
        v = sum(np.sin(kx * (x - sx) + ky * (y - sy) + ph) for kx, ky, ph in waves)
        return np.repeat(((v + 12) / 24)[..., None], 3, axis=-1)  # in [0, 1]

    return image(0, 0), image(dx, dy)


@pytest.mark.parametrize(("dx", "dy"), [(1.0, 0.0), (0.0, -2.0), (1.5, 0.7), (-2.0, 2.0), (0.3, 0.0)])
def test_optical_flow_recovers_translations(dx, dy):
    for seed in range(3):
        a, b = _texture_pair(dx, dy, seed)
        flow = optical_flow(a, b)[8:-8, 8:-8]  # away from the borders
        error = np.linalg.norm(flow - [dx, dy], axis=-1)
        assert error.mean() < 0.15 and np.median(error) < 0.12 and np.percentile(error, 95) < 0.3, seed


def test_motion_magnitude():
    a, _ = _texture_pair(0, 0, 1)
    still = motion_magnitude(np.stack([a] * 4))
    assert still["mean"] == pytest.approx(0, abs=1e-9) and still["top5"] == pytest.approx(0, abs=1e-9)
    video = np.stack([_texture_pair(1.0 * t, 0, 1)[1] for t in range(4)])  # 1 pixel a frame to the right
    inner = motion_magnitude(video[:, 8:-8, 8:-8])
    assert inner["mean"] == pytest.approx(1.0, abs=0.1) and inner["top5"] >= inner["mean"]
    clip = make_clip(3, num_shapes=1)  # a shape over a still background: the top 5 % moves, the mean barely
    motion = motion_magnitude(clip.frames)
    assert motion["top5"] > 3 * motion["mean"] > 0


# ------------------------------------------------------------------------------------- text-motion agreement


def test_direction_tracking_is_exact_on_ground_truth_clips():
    clips = [make_clip(seed) for seed in split_seeds("heldout", 150)]
    clips += [make_clip(seed, size=64) for seed in split_seeds("heldout", 50)]
    assert direction_accuracy([c.frames for c in clips], [c.caption for c in clips]) == 1.0
    for clip in clips[:60]:
        tracks = track_colours(clip.frames, [s.colour for s in clip.shapes])
        for shape, truth in zip(clip.shapes, clip.centroids):
            centroids, counts = tracks[shape.colour]
            assert (counts > 0).all()
            assert np.abs(centroids - truth).max() < 0.03 * clip.frames.shape[1]  # < 1 pixel at 32x32


def test_direction_tracking_rejects_wrong_or_missing_motion():
    clip = make_clip(10**6 + 5, num_shapes=1)
    shape = clip.shapes[0]
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[shape.direction]
    assert prompt_agreement(clip.frames, clip.caption) is True
    assert prompt_agreement(clip.frames, f"a {shape.colour} {shape.kind} moves {opposite}") is False
    still = np.repeat(clip.frames[:1], 16, axis=0)
    assert motion_directions(still, [shape.colour]) == {shape.colour: None}
    assert prompt_agreement(still, clip.caption) is False
    other = "red" if shape.colour != "red" else "blue"
    assert motion_directions(clip.frames, [other]) == {other: None}  # absent colour: no direction
    assert prompt_agreement(clip.frames, "a cat walks") is None
    two = make_clip(next(s for s in range(10**6, 10**6 + 200) if len(make_clip(s).shapes) == 2))
    a_, b_ = two.shapes
    assert prompt_agreement_per_item(two.frames, two.caption) == [True, True]
    wrong = f"a {a_.colour} {a_.kind} moves {opposite_of(a_.direction)} and a {b_.colour} {b_.kind} moves {b_.direction}"
    assert prompt_agreement_per_item(two.frames, wrong) == [False, True]  # each shape on its own
    assert prompt_agreement(two.frames, wrong) is False
    assert direction_accuracy([clip.frames, still, clip.frames], [clip.caption, clip.caption, "a cat"]) == 0.5
    with pytest.raises(InputError):
        direction_accuracy([clip.frames], ["nothing to check"])


# -------------------------------------------------------------------------------------------- refinement gain


def test_refinement_gain_sign():
    seed = 10**6 + 2
    base, truth = make_clip(seed, size=32).frames, make_clip(seed, size=64).frames
    bicubic = bicubic_upscale(base, (64, 64))
    assert refinement_gain(base, bicubic, truth)["psnr_gain_db"] == 0.0
    sharper = 0.5 * truth / 255 + 0.5 * bicubic  # halfway from the bicubic up-scaling to the truth: +6 dB
    gain = refinement_gain(base, sharper, truth)
    assert gain["psnr_gain_db"] == pytest.approx(20 * math.log10(2), abs=0.01) and gain["ssim_gain"] > 0
    assert gain["psnr_gain_db"] == pytest.approx(gain["psnr_refined"] - gain["psnr_bicubic"])
    blurrier = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)  # nearest neighbour: worse than bicubic
    assert refinement_gain(base, blurrier, truth)["psnr_gain_db"] < 0
    with pytest.raises(InputError):
        refinement_gain(base, base, truth)


# ------------------------------------------------------------------------------------------- Fréchet distance


def _sqrtm_denman_beavers(a: np.ndarray, steps: int = 60) -> np.ndarray:
    y, z = a.copy(), np.eye(len(a))
    for _ in range(steps):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)² + (s1 - s2)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # commuting covariances: |mu1 - mu2|² + sum (sqrt(l1) - sqrt(l2))²
    q, _ = np.linalg.qr(RNG.normal(size=(5, 5)))
    l1, l2 = RNG.uniform(0.5, 3, 5), RNG.uniform(0.5, 3, 5)
    mu1, mu2 = RNG.normal(size=5), RNG.normal(size=5)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # general covariances: tr((s1 s2)^½) by an independent iteration (Denman-Beavers on s1 s2)
    a, b = RNG.normal(size=(2, 6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrtm_denman_beavers(s1 @ s2))
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(
        frechet_distance(np.zeros(6), s2, np.zeros(6), s1), rel=1e-10)
    # singular covariance (fewer samples than dimensions): the distance to itself is 0, not NaN
    f = RNG.normal(size=(10, 32))
    mu, sigma = feature_statistics(f)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_of_two_gaussian_samples():
    n = 20_000
    s1, s2 = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[2.0, -0.4], [-0.4, 1.0]])
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
    x = RNG.multivariate_normal(mu1, s1, n)
    y = RNG.multivariate_normal(mu2, s2, n)
    closed = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(*feature_statistics(x), *feature_statistics(y)) == pytest.approx(closed, rel=0.05)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_frechet_video_distance_with_a_random_linear_extractor(tmp_path):
    torch.manual_seed(0)
    linear = torch.nn.Linear(3 * 4 * 8 * 8, 16, dtype=torch.float32)

    def extractor(x: torch.Tensor) -> torch.Tensor:  # (B, 3, F, H, W) in [-1, 1]
        assert x.shape[1:] == (3, 4, 8, 8) and x.min() >= -1 and x.max() <= 1
        return linear(x.flatten(1))

    videos = RNG.uniform(0.2, 0.7, (40, 4, 8, 8, 3))
    shifted = videos + 0.1  # the extractor sees +0.2: the features move by 0.2 W 1, the covariance stays
    assert frechet_video_distance(videos, videos, extractor) == pytest.approx(0, abs=1e-6)
    expected = float(((0.2 * linear.weight.detach().double().sum(1)) ** 2).sum())
    assert frechet_video_distance(videos, shifted, extractor, batch_size=7) == pytest.approx(expected, rel=1e-4)
    # the same from local files: TorchScript and torch.export
    net = torch.nn.Sequential(torch.nn.Flatten(1), linear)
    torch.jit.script(net).save(str(tmp_path / "extractor.pt"))
    example = (torch.zeros(2, 3, 4, 8, 8),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "extractor.pt2"))
    for name in ("extractor.pt", "extractor.pt2"):
        loaded = load_feature_extractor(tmp_path / name)
        assert frechet_video_distance(videos, shifted, loaded) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(InputError):
        load_feature_extractor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError):
        load_feature_extractor(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------- summary and CLI


def test_evaluate_summary_on_ground_truth_clips():
    clips = [make_clip(seed) for seed in split_seeds("heldout", 6)]
    videos = [c.frames for c in clips]
    summary = evaluate(videos, [c.caption for c in clips], [c.first_frame for c in clips], flow=False)
    assert summary["count"] == 6 and summary["direction_accuracy"] == 1.0
    assert summary["mean"]["first_frame_psnr"] == math.inf
    assert summary["mean"]["first_frame_ssim"] == pytest.approx(1.0)
    assert summary["n"]["direction_correct"] == 6 and len(summary["per_video"]) == 6
    assert 0.9 < summary["mean"]["temporal_flickering"] <= 1.0
    assert "motion_mean" not in summary["mean"]
    with pytest.raises(InputError):
        evaluate(videos, ["a red circle moves left"])


def test_importing_eval_stays_light():
    code = "import sys, i2vgen.eval; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_eval_command(tmp_path, capsys):
    from PIL import Image

    clips = [make_clip(seed) for seed in split_seeds("heldout", 3)]
    videos = tmp_path / "videos"
    videos.mkdir()
    # a PNG-frame folder with a NAME.json sidecar and an input image; a gif with NAME.EXT.json; an mp4 whose
    # prompt comes from its own metadata; a video without any prompt (skipped); a "refined" 64x64 clip with
    # its base output and ground truth
    Image.fromarray(clips[0].first_frame).save(tmp_path / "input.png")
    write_video(clips[0].frames, videos / "a", fps=8)
    write_sidecar_json(videos / "a.json", {"prompt": clips[0].caption, "image": "../input.png"})
    write_video(clips[1].frames, videos / "b.gif", fps=8)
    write_sidecar_json(videos / "b.gif.json", {"prompt": clips[1].caption})
    write_video(clips[2].frames, videos / "c.mp4", fps=8, metadata={"prompt": clips[2].caption})
    write_video(clips[2].frames, videos / "d.mp4", fps=8)
    truth = make_clip(clips[0].seed, size=64).frames
    refined = 0.5 * truth / 255 + 0.5 * bicubic_upscale(clips[0].frames, (64, 64))
    write_video(refined, videos / "e", fps=8)
    write_video(clips[0].frames, tmp_path / "base", fps=8)
    write_video(truth, tmp_path / "truth", fps=8)
    write_sidecar_json(videos / "e.json", {"prompt": clips[0].caption, "base": "../base", "ground_truth": "../truth"})
    parser = argparse.ArgumentParser()
    add_eval_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(videos), "--json", "--output", str(tmp_path / "summary.json")])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert printed["count"] == saved["count"] == 4 and saved["skipped"] == ["d.mp4"] and "per_video" not in printed
    assert saved["direction_accuracy"] == 1.0  # mp4 compression included
    assert saved["n"]["first_frame_psnr"] == 1 and saved["mean"]["first_frame_psnr"] is None  # inf → null
    assert [row["video"] for row in saved["per_video"]] == ["a", "b.gif", "c.mp4", "e"]
    assert saved["per_video"][0]["first_frame_ssim"] == pytest.approx(1.0)
    assert saved["per_video"][3]["psnr_gain_db"] == pytest.approx(6.02, abs=0.1)
    assert saved["per_video"][3]["input_psnr"] > 20 and "detail_gain" in saved["per_video"][3]  # vs its base
    assert saved["failed"] == [] and saved["warnings"] == []
    assert saved["mean"]["motion_top5"] > 0
    # Fréchet distance against a reference folder, with a local TorchScript extractor
    net = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(3 * 16 * 32 * 32, 4))
    torch.jit.script(net).save(str(tmp_path / "fx.pt"))
    reference = tmp_path / "reference"
    reference.mkdir()
    for i, clip in enumerate(clips):
        write_video(clip.frames, reference / f"{i}.gif", fps=8)
    args = parser.parse_args(["eval", str(reference), "--json", "--no-flow", "--fvd-reference", str(reference),
                              "--feature-extractor", str(tmp_path / "fx.pt")])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["fvd"] == pytest.approx(0, abs=1e-6) and printed["fvd_counts"] == [3, 3]
    assert printed["skipped"] == ["0.gif", "1.gif", "2.gif"]  # no prompts: no per-video metrics, FVD still
    with pytest.raises(InputError):
        args.func(parser.parse_args(["eval", str(tmp_path / "nowhere")]))


def _run_eval(capsys, *argv: str) -> tuple[int, str, str]:
    """`i2vgen eval ARGV` in this process → (exit status, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    add_eval_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def _noise_clip(seed: int, frames: int = 4, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, *size, 3), dtype=np.uint8)


def test_eval_reports_a_corrupt_video_and_evaluates_the_rest(tmp_path, capsys):
    for name, seed in (("a.gif", 1), ("c.gif", 2)):
        write_video(_noise_clip(seed), tmp_path / name, fps=8)
        write_sidecar_json(tmp_path / f"{name}.json", {"prompt": "a noisy clip"})
    (tmp_path / "b.mp4").write_bytes(b"not a video" * 100)
    write_sidecar_json(tmp_path / "b.mp4.json", {"prompt": "a broken clip"})
    status, out, err = _run_eval(capsys, str(tmp_path), "--no-flow", "--json")
    assert status == 1
    summary = json.loads(out)
    assert summary["count"] == 2 and summary["n"]["temporal_flickering"] == 2
    assert [f["video"] for f in summary["failed"]] == [str(tmp_path / "b.mp4")]
    errors = [line for line in err.splitlines() if "b.mp4" in line]
    assert len(errors) == 1 and errors[0].startswith(f"i2vgen: error: {tmp_path / 'b.mp4'}: ")
    status, out, err = _run_eval(capsys, str(tmp_path), "--no-flow")  # the table: the good ones, no b.mp4
    names = [line.split()[0] for line in out.splitlines()]
    assert status == 1 and "a.gif" in names and "c.gif" in names and "b.mp4" not in names
    write_sidecar_json(tmp_path / "b.mp4.json", {})  # no prompt: skipped before reading, not a failure
    status, _, err = _run_eval(capsys, str(tmp_path), "--no-flow")
    assert status == 0 and "b.mp4: skipped" in err


def test_eval_from_another_working_directory(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "out").mkdir(parents=True)
    elsewhere.mkdir()
    clip = _noise_clip(3)
    from PIL import Image

    Image.fromarray(clip[0]).save(project / "input.png")
    write_video(clip, project / "out" / "v", fps=8)  # PNG frames: lossless, so the first frame is the image
    sidecar = project / "out" / "v.json"
    write_sidecar_json(sidecar, {"prompt": "a noisy clip", "image": "input.png"})  # relative to where it ran
    monkeypatch.chdir(project)
    status, out, err = _run_eval(capsys, "out", "--no-flow", "--json")
    assert status == 0 and json.loads(out)["n"]["first_frame_ssim"] == 1 and "warning" not in err
    monkeypatch.chdir(elsewhere)  # the old relative path is found neither here nor next to the sidecar: said so
    status, out, err = _run_eval(capsys, str(project / "out"), "--no-flow", "--json")
    assert status == 0 and "first_frame_ssim" not in json.loads(out)["n"]
    warnings = [line for line in err.splitlines() if line.startswith("i2vgen: warning:")]
    assert len(warnings) == 1 and str(project / "out" / "v") in warnings[0] and "'input.png'" in warnings[0]
    assert sidecar_path_field(project / "input.png", sidecar) == "../input.png"
    write_sidecar_json(sidecar, {"prompt": "a noisy clip", "image": sidecar_path_field("../project/input.png",
                                                                                          sidecar)})
    status, out, err = _run_eval(capsys, str(project / "out"), "--no-flow", "--json", "-o", "summary.json")
    saved = json.loads((elsewhere / "summary.json").read_text())
    assert status == 0 and "warning" not in err and saved["per_video"][0]["first_frame_ssim"] == pytest.approx(1)
    assert sidecar_path_field("/nonexistent-i2vgen/x.png", sidecar) == "/nonexistent-i2vgen/x.png"  # only / shared


def test_eval_refine_sidecar_gets_the_refinement_figures(tmp_path, monkeypatch, capsys):
    source = _noise_clip(4, frames=6, size=(12, 20))  # refined from its first 4 frames (--max-frames 4)
    write_video(source, tmp_path / "inputs" / "in", fps=8)
    out = tmp_path / "out"
    faithful = resize_like_refiner(source[:4], (24, 24), "crop")  # what a refiner that changes nothing gives
    sharper = np.clip(faithful + _noise_clip(5, size=(24, 24)) / 255 * 0.5 - 0.25, 0, 1)  # added detail
    for name, frames in (("faithful", faithful), ("sharper", sharper)):
        write_video(frames, out / name, fps=8)
        sidecar = out / f"{name}.json"
        write_sidecar_json(sidecar, {"prompt": "a noisy clip", "stage": "refine", "strength": 0.6, "width": 24,
                                     "height": 24, "resize": "crop", "frames": 4,
                                     "input": sidecar_path_field(tmp_path / "inputs" / "in", sidecar)})
    monkeypatch.chdir(out)
    status, table, err = _run_eval(capsys, ".", "--no-flow", "-o", str(tmp_path / "summary.json"))
    assert status == 0 and "warning" not in err
    rows = {row["video"]: row for row in json.loads((tmp_path / "summary.json").read_text())["per_video"]}
    assert rows["faithful"]["input_psnr"] > 45 and rows["faithful"]["input_ssim"] > 0.99  # uint8 rounding only
    assert rows["faithful"]["detail_gain"] == pytest.approx(1, abs=0.01)
    assert rows["sharper"]["detail_gain"] > 1.05 and rows["sharper"]["input_psnr"] < rows["faithful"]["input_psnr"]
    assert "psnr_gain_db" not in rows["sharper"]  # no ground truth: no gain over bicubic
    assert table.splitlines()[0].split()[-3:] == ["in_psnr", "in_ssim", "detail"]
    stretched = refinement_fidelity(source[:4], faithful, resize="stretch")  # the wrong geometry scores worse
    assert stretched["input_psnr"] < rows["faithful"]["input_psnr"] - 10


def test_eval_table_has_a_header_and_a_mean_row(tmp_path, capsys):
    for i in range(3):
        write_video(_noise_clip(10 + i, frames=3), tmp_path / f"{i}.gif", fps=8)
        write_sidecar_json(tmp_path / f"{i}.gif.json", {"prompt": "a red circle moves left"})
    status, out, _ = _run_eval(capsys, str(tmp_path), "-o", str(tmp_path / "summary.json"))
    lines = out.splitlines()
    assert status == 0 and len(lines) == 7 and len({len(line) for line in lines}) == 1  # aligned
    assert lines[0].split() == ["video", "dir_ok", "drift", "drift_max", "flicker", "motion", "motion5"]
    assert set(lines[1]) == set(lines[5]) == {"-", " "}
    assert [line.split()[0] for line in lines[2:5]] == ["0.gif", "1.gif", "2.gif"]
    assert lines[2].split()[1] in ("yes", "no") and lines[6].split()[0] == "mean"
    saved = json.loads((tmp_path / "summary.json").read_text())
    drift = np.mean([row["colour_drift_mean"] for row in saved["per_video"]])
    assert float(lines[6].split()[2]) == pytest.approx(drift, abs=0.005)
    status, out, _ = _run_eval(capsys, str(tmp_path), "--json")
    summary = json.loads(out)
    assert summary["count"] == 3 and summary["mean"]["colour_drift_mean"] == pytest.approx(drift)
    assert summary["failed"] == [] and summary["skipped"] == []


def opposite_of(direction: str) -> str:
    return {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
