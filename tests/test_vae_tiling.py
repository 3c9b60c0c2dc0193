"""VAE spatial tiling (`models/vae_tiling.py`, `VideoVAE.decode/encode(tile=...)`): the tiled passes give the untiled
result, on the trained tiny-shapes VAE and on a random VAE of the real structure, for strips that do not divide the
frame; the pipelines take `vae_tile`; bad values are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from helpers import randomize_
from i2vgen.errors import InputError
from i2vgen.models.vae import VideoVAE, tiny_vae
from i2vgen.shapes import make_clip

ASSETS = Path(__file__).resolve().parents[1] / "src" / "i2vgen" / "assets"
# The real VAE's structure (4 levels, 2 layers per block, a 1x1 shortcut where the width changes) at a small width.
REAL_STRUCTURE = {"block_out_channels": (16, 32, 32, 32), "layers_per_block": 2, "latent_channels": 4,
                  "norm_num_groups": 8, "down_block_types": ("DownEncoderBlock2D",) * 4,
                  "up_block_types": ("UpDecoderBlock2D",) * 4}


@pytest.fixture(scope="module")
def trained() -> VideoVAE:
    return VideoVAE.from_pretrained(ASSETS / "tiny-shapes" / "vae")


@pytest.fixture(scope="module")
def real_structure() -> VideoVAE:
    return VideoVAE(randomize_(AutoencoderKL(**REAL_STRUCTURE), seed=3, scale=0.1))  # every weight random


def shapes_video(size: int, frames: int = 2) -> torch.Tensor:
    """(1, 3, F, size, size) shapes frames in [-1, 1]: flat backgrounds and shapes, far from uniform statistics."""
    clip = make_clip(3, size=size, num_frames=max(frames, 2), num_shapes=2)
    x = torch.from_numpy(np.ascontiguousarray(clip.frames[:frames])).float()
    return x.permute(3, 0, 1, 2)[None] / 127.5 - 1


@pytest.mark.parametrize("tile", [1, 3, 7, 40])  # 3 and 7 do not divide the 20-row latent; 40 is one strip
def test_tiled_decode_and_encode_equal_untiled_on_the_trained_vae(trained: VideoVAE, tile: int) -> None:
    x = shapes_video(40)[..., :24]  # 40x24 pixels, latent 20x12 (downscale 2)
    with torch.no_grad():
        z = trained.encode(x, sample=False)
        ref = trained.decode(z)
        torch.testing.assert_close(trained.decode(z, tile=tile), ref, rtol=0, atol=2e-5)
        torch.testing.assert_close(trained.encode(x, sample=False, tile=tile), z, rtol=0, atol=2e-5)
    assert ref.abs().max() > 0.5 and z.abs().max() > 1  # not a trivially small output


@pytest.mark.parametrize("tile", [1, 2, 5])  # latent 7 rows: 2 and 5 leave a short last strip
def test_tiled_passes_equal_untiled_on_a_random_vae_of_the_real_structure(real_structure: VideoVAE,
                                                                          tile: int) -> None:
    vae = real_structure
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 3, 7, 5, generator=g)  # (B, 4, F, h, w): 56x40 frames
    x = torch.rand(1, 3, 2, 56, 40, generator=g) * 2 - 1
    with torch.no_grad():
        ref, mean = vae.decode(z), vae.encode(x, sample=False)
        out = vae.decode(z, tile=tile, chunk_size=2)
        enc = vae.encode(x, sample=False, tile=tile)
        sampled = [vae.encode(x, generator=torch.Generator().manual_seed(1), tile=t) for t in (None, tile)]
    scale = ref.abs().max().item()
    assert scale > 1
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(enc, mean, rtol=0, atol=1e-5 * mean.abs().max().item())
    torch.testing.assert_close(sampled[1], sampled[0], rtol=0, atol=1e-5)  # the same posterior noise


def test_each_convolution_of_the_tiled_decode_computes_one_strip(real_structure: VideoVAE) -> None:
    """No convolution of the tiled decode produces a whole full-resolution frame (benchmarks/vae_tiling.py measures
    the memory this saves)."""
    vae = real_structure
    z = torch.randn(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(0))  # 128x128 frames
    largest: dict[str, int] = {}

    def track(name: str):
        def hook(module, inputs, output):
            largest[name] = max(largest.get(name, 0), output.numel())
        return hook

    handles = [vae.vae.decoder.up_blocks[-1].resnets[0].conv1.register_forward_hook(track("untiled conv"))]
    with torch.no_grad():
        vae.decode(z)
        for h in handles:
            h.remove()
        full = largest["untiled conv"]  # one full-resolution layer output (16 channels, 128x128)
        conv2d = torch.nn.functional.conv2d
        sizes = []

        def spy(*args, **kwargs):
            out = conv2d(*args, **kwargs)
            sizes.append(out.numel())
            return out

        torch.nn.functional.conv2d = spy
        try:
            vae.decode(z, tile=2)
        finally:
            torch.nn.functional.conv2d = conv2d
    # a strip is 2 latent rows of 16, an eighth of the frame, at most 32 channels wide where a full layer has 16
    assert sizes and max(sizes) <= full // 4


def test_pipelines_take_vae_tile(tmp_path: Path) -> None:
    from i2vgen.pipelines.base import I2VGenPipeline

    pipe = I2VGenPipeline.from_pretrained("tiny-shapes")
    image = shapes_video(32)[0, :, 0].permute(1, 2, 0).add(1).mul(127.5).round().byte().numpy()
    kw = {"num_frames": 2, "width": 32, "height": 32, "num_inference_steps": 2, "output_type": "pt"}
    a = pipe(image, "a red circle moves left", generator=torch.Generator().manual_seed(0), **kw)
    b = pipe(image, "a red circle moves left", generator=torch.Generator().manual_seed(0), vae_tile=3, **kw)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    with pytest.raises(InputError, match="tile"):
        pipe(image, "p", vae_tile=0, **kw)


@pytest.mark.parametrize("tile", [0, -2, 1.5, True, "8"])
def test_bad_tiles_are_refused(tile: object) -> None:
    vae = tiny_vae()
    with pytest.raises(InputError, match="tile"):
        vae.decode(torch.zeros(1, 4, 1, 4, 4), tile=tile)
    with pytest.raises(InputError, match="tile"):
        vae.encode(torch.zeros(1, 3, 1, 8, 8), tile=tile)


def test_bf16_tiles_keep_float32_statistics() -> None:
    """Low-precision VAEs take their group statistics in float32, as the native kernel does."""
    vae32 = VideoVAE.from_pretrained(ASSETS / "tiny-shapes" / "vae")
    vae16 = VideoVAE.from_pretrained(ASSETS / "tiny-shapes" / "vae", dtype=torch.bfloat16)
    z = torch.randn(1, 4, 2, 20, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, untiled, tiled = vae32.decode(z), vae16.decode(z), vae16.decode(z, tile=3)
    assert tiled.dtype == torch.bfloat16
    # no worse than the untiled bf16 decode (2e-2 on frames of magnitude ~0.5: bf16 keeps 8 bits)
    assert (tiled.float() - ref).abs().max() <= max(2e-2, 1.5 * (untiled.float() - ref).abs().max().item())
