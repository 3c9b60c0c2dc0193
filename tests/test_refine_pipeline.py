"""The refinement pipeline (MS-Vid2Vid-XL recipe) on a tiny random refiner: real clips, windows, strength, quirks."""

from __future__ import annotations

import math
import shutil
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_

from i2vgen.diffusion import alpha_bar_at, q_sample, refiner_timesteps
from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.loading import save_unet
from i2vgen.models.tiny_refiner import random_refiner_components, write_refiner_folder
from i2vgen.pipelines.refine import (
    DEFAULT_NEGATIVE_PROMPT,
    POSITIVE_SUFFIX,
    I2VGenRefinePipeline,
    blend_weights,
    resize_frames,
    strength_to_t_start,
    temporal_windows,
    windowed_denoiser,
)

W, H = 32, 24  # tiny VAE downscale 2 -> latent 16x12; the 2-level refiner needs an even latent height
FAST = {"width": W, "height": H, "num_inference_steps": 3}


def random_refiner_folder(dst, seed: int = 0):  # noqa: ANN001, ANN201
    c = random_refiner_components(seed)
    randomize_(c.unet, seed + 1)
    randomize_(c.vae, seed + 2, scale=0.1)
    randomize_(c.text_encoder, seed + 3)
    return write_refiner_folder(c, dst)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_refiner_folder(tmp_path_factory.mktemp("r") / "refiner")


@pytest.fixture(scope="module")
def pipe(folder):
    return I2VGenRefinePipeline.from_pretrained(folder)


def _frames(n: int = 5, h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_defaults_are_the_reference_recipe(pipe):
    assert POSITIVE_SUFFIX.startswith(", cinematic, High Contrast") and POSITIVE_SUFFIX.endswith("4k render")
    assert DEFAULT_NEGATIVE_PROMPT.startswith("worst quality") and DEFAULT_NEGATIVE_PROMPT.endswith("disgusting")
    ts = pipe.timesteps(0.6, "dpmpp-2m-sde")  # 30 steps from 599, penultimate sigma of 31 discarded
    assert torch.equal(ts, refiner_timesteps(30)) and len(ts) == 30
    assert ts[0] == 599 and ts[1] == pytest.approx(579.645, abs=1e-3) and ts[-1] == pytest.approx(37.71, abs=1e-2)
    heun = pipe.timesteps(0.6, "heun")
    assert len(heun) == 50 and heun[0] == 599 and heun[-1] == pytest.approx(11, abs=1e-9)


def test_refines_a_real_clip_with_audio(pipe, real_data_dir):
    clip = f"{real_data_dir}/videos/1066674883.mp4"  # 596x336, 16 fps, with an audio track
    with pytest.warns(UserWarning, match="audio track is ignored"):
        out = pipe(clip, "a man playing guitar", max_frames=3, generator=_gen(0), **FAST)
    assert out.shape == (1, 3, H, W, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 and out.std() > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = pipe(clip, "a man playing guitar", max_frames=3, generator=_gen(0), **FAST)
        other = pipe(clip, "a man playing guitar", max_frames=3, generator=_gen(1), **FAST)
    assert np.array_equal(out, again)  # a seed gives the same video
    assert np.abs(out - other).max() > 1e-3


def test_resize_is_the_reference_bilinear_stretch_or_a_centre_crop():
    frames = torch.from_numpy(_frames(2, 9, 16)).permute(0, 3, 1, 2)  # (2, 3, 9, 16)
    up = resize_frames(frames, 64, 36)  # up-scaling: exactly F.interpolate(..., mode="bilinear") of the reference
    ref = F.interpolate(frames.float() / 255, size=(36, 64), mode="bilinear") * 2 - 1
    assert torch.equal(up, ref)
    square = resize_frames(frames, 36, 36, "crop")  # cover 36x36 (-> 36x64), keep the central 36 columns
    assert square.shape == (2, 3, 36, 36) and torch.equal(square, ref[..., 14:50])
    assert resize_frames(frames, 8, 4).abs().max() <= 1  # down-scaling (antialiased) stays in range


def test_temporal_windows_cover_the_video_with_the_overlap():
    assert temporal_windows(20, 32, 8) == [(0, 20)] and temporal_windows(20, None, 8) == [(0, 20)]
    assert temporal_windows(40, 32, 8) == [(0, 32), (8, 40)]
    spans = temporal_windows(100, 32, 8)
    assert spans == [(0, 32), (23, 55), (45, 77), (68, 100)]
    assert all(a[1] - b[0] >= 8 for a, b in zip(spans, spans[1:]))
    for n, w, o in [(100, 32, 8), (7, 4, 3), (10, 3, 0), (33, 32, 8)]:
        spans = temporal_windows(n, w, o)
        total = torch.zeros(n, dtype=torch.float64)
        for (s, e), wt in zip(spans, blend_weights(spans, n)):
            assert e - s == w and (wt > 0).all()
            total[s:e] += wt
        assert torch.allclose(total, torch.ones(n, dtype=torch.float64), atol=1e-12)


def test_overlapping_windows_blend_linearly():
    """A denoiser that returns each window's first frame index everywhere: the blend ramps linearly between windows,
    and a frame-wise denoiser comes out of the windows unchanged."""
    x = torch.arange(12.0).view(1, 1, 12, 1, 1).expand(1, 2, 12, 3, 3).contiguous()  # frame k holds k

    def first_frame(x, t):  # noqa: ANN001, ANN202
        return torch.full_like(x, x[0, 0, 0, 0, 0].item())

    out = windowed_denoiser(first_frame, 12, 6, 2)(x, torch.zeros(1))[0, 0, :, 0, 0]  # windows start at 0, 3, 6
    assert torch.allclose(out, torch.tensor([0, 0, 0, .75, 1.5, 2.25, 3.75, 4.5, 5.25, 6, 6, 6]), atol=1e-6)

    def framewise(x, t):  # noqa: ANN001, ANN202
        return torch.sin(x) * 2 + t.view(-1, 1, 1, 1, 1)

    t = torch.tensor([3.0])
    assert torch.allclose(windowed_denoiser(framewise, 12, 5, 2)(x, t), framewise(x, t), atol=1e-6)


def test_window_covering_all_frames_equals_unwindowed(pipe):
    frames = _frames(6)
    kw = dict(FAST, output_type="latent")
    whole = pipe(frames, "p", window_size=None, generator=_gen(3), **kw)
    assert torch.equal(pipe(frames, "p", window_size=6, generator=_gen(3), **kw), whole)
    assert torch.equal(pipe(frames, "p", window_size=32, generator=_gen(3), **kw), whole)


def test_overlapping_windows_bound_the_unet_input(pipe):
    frames = _frames(7)
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    try:
        out = pipe(frames, "p", window_size=4, window_overlap=2, generator=_gen(3), output_type="pt", **FAST)
    finally:
        hook.remove()
    assert out.shape == (1, 3, 7, H, W) and torch.isfinite(out).all()
    assert temporal_windows(7, 4, 2) == [(0, 4), (2, 6), (3, 7)]
    assert set(seen) == {4} and len(seen) == 3 * 3  # 3 steps x 3 windows
    whole = pipe(frames, "p", window_size=None, generator=_gen(3), output_type="pt", **FAST)
    assert not torch.equal(out, whole)  # the windows see less temporal context


def test_strength_maps_to_the_start_timestep(pipe):
    assert [strength_to_t_start(s) for s in (0.6, 0.3, 1.0, 0.5, 0.002)] == [599, 299, 999, 499, 1]
    for bad in (0, -0.1, 1.01, 0.0005, float("nan")):
        with pytest.raises(InputError, match="strength"):
            strength_to_t_start(bad)
    for strength, sampler, steps in [(0.6, "dpmpp-2m-sde", 3), (0.3, "heun", 2), (1.0, "dpmpp-2m-sde", 2),
                                     (0.2, "dpmpp-2m", 3)]:
        seen = []
        pipe(_frames(2), "p", width=W, height=H, strength=strength, sampler=sampler, num_inference_steps=steps,
             callback=lambda i, t, x0: seen.append(t), output_type="latent", generator=_gen())
        assert seen[0] == strength_to_t_start(strength) and len(seen) == steps
    with pytest.raises(InputError, match="steps do not fit"):
        pipe(_frames(2), "p", width=W, height=H, strength=0.01, num_inference_steps=30)


def test_full_strength_ignores_the_input(pipe):
    kw = dict(FAST, strength=1.0, output_type="latent")
    a = pipe(_frames(3, seed=1), "p", generator=_gen(5), **kw)
    b = pipe(_frames(3, seed=2), "p", generator=_gen(5), **kw)
    assert torch.equal(a, b)


@pytest.mark.parametrize("modelscope_start", [False, True])
def test_sdedit_start_and_the_modelscope_quirk(pipe, modelscope_start):
    frames = _frames(3)
    noise = torch.randn(1, 4, 3, H // 2, W // 2, generator=_gen(7))
    first = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: first.append((args[0][:1].clone(), args[1])))
    try:
        pipe(frames, "p", noise=noise, sample_posterior=False, modelscope_start=modelscope_start,
             output_type="latent", **FAST)
    finally:
        hook.remove()
    x0 = pipe.encode_video(torch.from_numpy(frames).permute(0, 3, 1, 2), W, H, generator=None,
                           sample_posterior=False)
    t = torch.tensor([599.0])
    expected = q_sample(x0, t, pipe.alphas_cumprod, noise)
    scale = math.sqrt(1 - alpha_bar_at(pipe.alphas_cumprod, t).item())
    assert scale == pytest.approx(0.9724, abs=1e-4)  # sigma_599 (spec 1.4 item 5)
    x, t_seen = first[0]
    assert float(t_seen[0]) == 599
    assert torch.allclose(x, expected * (scale if modelscope_start else 1.0), atol=1e-6)


def test_a_folder_states_how_its_model_was_trained(pipe, folder, tmp_path):
    """`_i2vgen_defaults` sample_posterior / modelscope_start (models trained on posterior means with textbook SDEdit,
    as the tiny-shapes recipe does) become the call's defaults; a folder that says nothing keeps the reference's."""
    import json

    from i2vgen.pipelines.common import ModelConventions

    assert pipe.conventions == ModelConventions(sample_posterior=True, modelscope_start=True)
    own = shutil.copytree(folder, tmp_path / "own")
    index = json.loads((own / "model_index.json").read_text())
    index["_i2vgen_defaults"] = {"sample_posterior": False, "modelscope_start": False, "strength": 0.3}
    (own / "model_index.json").write_text(json.dumps(index))
    mine = I2VGenRefinePipeline.from_pretrained(own)
    assert mine.conventions == ModelConventions(sample_posterior=False, modelscope_start=False)
    kw = dict(FAST, output_type="latent")
    run = lambda p, **k: p(_frames(3), "p", generator=_gen(3), **kw, **k)
    assert torch.equal(run(mine), run(pipe, sample_posterior=False, modelscope_start=False))
    assert not torch.equal(run(mine), run(mine, sample_posterior=True))
    assert not torch.equal(run(mine), run(mine, modelscope_start=True))
    assert torch.equal(run(pipe), run(mine, sample_posterior=True, modelscope_start=True))


@pytest.mark.parametrize("size,needle", [((33, 24), "multiples of 2"), ((34, 24), "refiner"),
                                         ((32, 26), "odd height"), ((0, 24), "multiples")])
def test_target_size_is_checked_first(pipe, size, needle):
    seen = []
    hook = pipe.vae.register_forward_pre_hook(lambda *a: seen.append(1))
    try:
        with pytest.raises(InputError, match=needle) as e:
            pipe(_frames(2), "p", width=size[0], height=size[1], num_inference_steps=1)
    finally:
        hook.remove()
    assert "\n" not in str(e.value) and not seen


def test_variable_frame_rate_input_is_resampled(pipe, tmp_path):
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate([0, 40, 80, 200, 240]):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.warns(UserWarning, match="resampled to a constant 25 fps"):
        out = pipe(path, "p", num_inference_steps=1, width=W, height=H)
    assert out.shape[1] == 7  # 0 .. 240 ms every 40 ms


def test_bad_inputs_give_one_line_errors(pipe, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    cases = [
        (str(tmp_path / "missing.mp4"), "not found"),
        (str(tmp_path / "empty.mp4"), "empty"),
        (str(tmp_path / "text.mp4"), "not a readable video"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        (np.zeros((2, 8, 8, 4), np.uint8), "(F, H, W, 3)"),
        (torch.full((1, 3, 2, 8, 8), 2.0), "lie in"),
        ([1, 2, 3], "list"),
    ]
    for video, needle in cases:
        with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")) as e:
            pipe(video, "p", num_inference_steps=1, width=W, height=H)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="noise has shape"):
        pipe(_frames(2), "p", noise=torch.zeros(1, 4, 3, 12, 16), **FAST)
    with pytest.raises(InputError, match="window_overlap"):
        pipe(_frames(2), "p", window_size=4, window_overlap=4, **FAST)
    with pytest.raises(InputError, match="sampler"):
        pipe(_frames(2), "p", sampler="ddim", **FAST)


def test_base_stage_tensor_output_is_accepted(pipe):
    frames = _frames(3)
    as_float = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255  # (1, 3, F, H, W) in [0, 1]
    a = pipe(frames, "p", generator=_gen(1), output_type="latent", **FAST)
    b = pipe(as_float, "p", generator=_gen(1), output_type="latent", **FAST)
    assert torch.allclose(a, b, atol=1e-5)


def test_loading_a_separate_unet_and_broken_folders(folder, pipe, tmp_path):
    pth = save_unet(pipe.unet, tmp_path / "non_ema.pth", format="vgen")  # ModelScope key layout
    other = I2VGenRefinePipeline.from_pretrained(folder, unet=pth, unet_config=pipe.unet.config)
    assert other.unet.config.refiner_resampling
    kw = dict(FAST, output_type="latent")
    assert torch.equal(other(_frames(2), "p", generator=_gen(), **kw), pipe(_frames(2), "p", generator=_gen(), **kw))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(CheckpointError, match="text_encoder"):
        I2VGenRefinePipeline.from_pretrained(broken)
