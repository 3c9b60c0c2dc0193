"""VideoVAE: chunked frame-wise encode/decode, seeded posterior sampling, scaling factor, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.vae import REFERENCE_SCALING_FACTOR, VideoVAE, tiny_vae, tiny_vae_config

HUB_TYPO_SCALE = 0.18125  # what hf: ali-vilab/i2vgen-xl/vae/config.json says


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    return tiny_vae(seed=0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    # B=2, F=3: odd frame count so chunks of 2 straddle the two videos
    return torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, C, F, H, W)


def test_encode_matches_per_frame_diffusers_mean(vae: VideoVAE, frames: torch.Tensor) -> None:
    with torch.no_grad():
        latents = vae.encode(frames, sample=False)
        for f in range(frames.shape[2]):
            ref = vae.vae.encode(frames[:, :, f]).latent_dist.mean * REFERENCE_SCALING_FACTOR
            torch.testing.assert_close(latents[:, :, f], ref, rtol=0, atol=1e-6)
            torch.testing.assert_close(
                vae.encode_image(frames[:, :, f], sample=False), ref, rtol=0, atol=1e-6
            )
    assert latents.shape == (2, 4, 3, 8, 8)  # tiny VAE downsamples by 2


def test_decode_matches_per_frame_diffusers(vae: VideoVAE) -> None:
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # (B, 4, F, h, w)
    with torch.no_grad():
        video = vae.decode(latents)
        for f in range(latents.shape[2]):
            ref = vae.vae.decode(latents[:, :, f] / REFERENCE_SCALING_FACTOR).sample
            torch.testing.assert_close(video[:, :, f], ref, rtol=0, atol=1e-5)  # see the chunking test
    assert video.shape == (2, 3, 3, 16, 16)


def test_chunking_does_not_change_results(vae: VideoVAE, frames: torch.Tensor) -> None:
    with torch.no_grad():
        for sample in (False, True):
            outs = [
                vae.encode(frames, sample=sample, chunk_size=n, generator=torch.Generator().manual_seed(7))
                for n in (1, 2, 6, 100)
            ]
            for out in outs[1:]:
                torch.testing.assert_close(out, outs[0], rtol=0, atol=1e-6)
        latents = outs[0]
        videos = [vae.decode(latents, chunk_size=n) for n in (1, 4, 6)]
        # oneDNN picks batch-size-dependent conv kernels: diffusers' own decoder differs by ~1e-6 (a few float32
        # ulps at |x| ~ 5) between batch sizes, so decode is compared at 1e-5 here and exactly below.
        for video in videos[1:]:
            torch.testing.assert_close(video, videos[0], rtol=0, atol=1e-5)
        # Exactly what diffusers gives for the same chunks of the (B*F) frame batch, frames of a video adjacent.
        z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / REFERENCE_SCALING_FACTOR  # (B*F, 4, h, w)
        ref = torch.cat([vae.vae.decode(chunk).sample for chunk in z.split(4)])
        torch.testing.assert_close(videos[1], ref.unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4), rtol=0, atol=0)


def test_posterior_sampling_is_seeded(vae: VideoVAE, frames: torch.Tensor) -> None:
    def encode(seed: int) -> torch.Tensor:
        return vae.encode(frames, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        a, b, c = encode(3), encode(3), encode(4)
        mean = vae.encode(frames, sample=False)
        # By hand: one N(0, 1) draw in the (B, 4, F, h, w) layout, then mean + std * noise, scaled.
        posterior = vae.vae.encode(frames.permute(0, 2, 1, 3, 4).flatten(0, 1)).latent_dist
        std = posterior.std.unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3 and (a - mean).abs().max() > 1e-3
    torch.testing.assert_close(a, mean + std * noise * REFERENCE_SCALING_FACTOR, rtol=0, atol=1e-6)


def test_scaling_factor_ignores_hub_typo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    AutoencoderKL(**tiny_vae_config(scaling_factor=HUB_TYPO_SCALE)).save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["scaling_factor"] == HUB_TYPO_SCALE

    default = VideoVAE.from_model_folder(tmp_path)
    explicit = VideoVAE.from_pretrained(tmp_path / "vae", scaling_factor=HUB_TYPO_SCALE)
    assert default.scaling_factor == REFERENCE_SCALING_FACTOR == 0.18215
    assert explicit.scaling_factor == HUB_TYPO_SCALE
    image = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        ratio = default.encode_image(image, sample=False) / explicit.encode_image(image, sample=False)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.18215 / 0.18125))


def test_fp16_variant_loads_and_decodes_upcast(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = AutoencoderKL(**tiny_vae_config(force_upcast=True)).half()
    reference.save_pretrained(tmp_path / "vae", variant="fp16")
    vae16 = VideoVAE.from_pretrained(tmp_path / "vae", torch.float16, "fp16")
    assert vae16.dtype == torch.float16 and vae16.vae.encoder.conv_in.weight.dtype == torch.float16
    assert vae16.vae.decoder.conv_in.weight.dtype == torch.float32  # force_upcast: decode in fp32
    vae32 = VideoVAE.from_pretrained(tmp_path / "vae", variant="fp16")  # same fp16 numbers, upcast on load
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        video16, video32 = vae16.decode(latents), vae32.decode(latents)
        encoded16 = vae16.encode(torch.zeros(1, 3, 2, 16, 16), sample=False)
    assert video16.dtype == torch.float32 and encoded16.dtype == torch.float16
    torch.testing.assert_close(video16, video32, rtol=0, atol=1e-6)

    no_upcast = VideoVAE(AutoencoderKL(**tiny_vae_config(force_upcast=False)).half())
    assert no_upcast.vae.decoder.conv_in.weight.dtype == torch.float16
    with pytest.raises(CheckpointError, match="vae"):  # only fp16 files there
        VideoVAE.from_pretrained(tmp_path / "vae")


def test_loading_failures_raise_one_line_checkpoint_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    for folder in (tmp_path / "nowhere", tmp_path / "empty", tmp_path / "broken"):
        with pytest.raises(CheckpointError) as info:
            VideoVAE.from_pretrained(folder)
        assert "\n" not in str(info.value) and str(folder) in str(info.value)


def test_bad_inputs_raise_input_error(vae: VideoVAE) -> None:
    bad_calls = [
        lambda: vae.encode(torch.zeros(1, 3, 16, 16)),  # image, not video
        lambda: vae.encode(torch.zeros(1, 4, 2, 16, 16)),  # 4 channels
        lambda: vae.encode(torch.zeros(1, 3, 2, 15, 16)),  # H not a multiple of the downscale
        lambda: vae.encode(torch.full((1, 3, 1, 16, 16), 255.0)),  # 0..255 pixels
        lambda: vae.encode(torch.zeros(1, 3, 1, 16, 16), chunk_size=0),
        lambda: vae.encode_image(torch.zeros(1, 3, 1, 16, 16)),
        lambda: vae.decode(torch.zeros(1, 3, 2, 8, 8)),  # 3 latent channels
        lambda: vae.decode(torch.zeros(1, 4, 8, 8)),
    ]
    for call in bad_calls:
        with pytest.raises(InputError):
            call()


def test_tiny_vae_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    tiny_vae(seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
