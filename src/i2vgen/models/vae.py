"""Frozen SD-2.1 VAE applied frame by frame to videos: a thin wrapper around diffusers' `AutoencoderKL`.

Videos are (B, C, F, H, W); frames are folded into the batch and run through the 2D VAE in chunks of `chunk_size`
images, so peak activation memory is bounded by the chunk, not by the video (VGen decodes 2 frames at a time,
spec §1.3 step 9). That is the temporal tiling, exact because the SD VAE works frame by frame. `tile=N` adds
spatial tiling (`models/vae_tiling.py`): each chunk goes through the VAE layer by layer, its convolutions on strips
of N latent rows at a time and its group norms with whole-frame statistics, which bounds the full-frame temporaries
to about two layer outputs and gives the untiled result up to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import Tensor, nn

from i2vgen.errors import CheckpointError, InputError
from i2vgen.models import vae_tiling

REFERENCE_SCALING_FACTOR = 0.18215  # VGen `scale_factor` (spec §3); the Hub config's 0.18125 is a typo
DEFAULT_CHUNK_SIZE = 2  # frames per VAE call, VGen's `decoder_bs`


def _one_line(err: BaseException) -> str:
    """First non-empty line of an exception message (library errors are often multi-line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _fold(x: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), frames of one video adjacent."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _unfold(x: Tensor, batch: int) -> Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W); inverse of `_fold`."""
    bf, c, h, w = x.shape
    return x.reshape(batch, bf // batch, c, h, w).permute(0, 2, 1, 3, 4)


class VideoVAE(nn.Module):
    """`AutoencoderKL` over video frames, with the latent scaling folded in.

    `encode` returns scaled latents (`z * scaling_factor`), `decode` takes them back; the UNet only ever sees scaled
    latents.

    Args:
        vae: a diffusers `AutoencoderKL` (SD 2.1 VAE for the real model).
        scaling_factor: latent scale. Defaults to the reference 0.18215 (VGen) and deliberately ignores
            `vae.config.scaling_factor`: the Hub's `ali-vilab/i2vgen-xl/vae/config.json` says 0.18125, a known typo
            (spec §3, §8.3) that shifts latents by 0.5 %. Pass a value to override.
        force_upcast: decode in float32 when the VAE is float16 (defaults to `vae.config.force_upcast`, true on
            the Hub). As diffusers' pipelines do, the decoder half (`post_quant_conv`, `decoder`) is then kept in
            float32 while the encoder stays float16, and `decode` returns float32 frames. Casting the module again
            afterwards (`.half()`) undoes this.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        scaling_factor: float = REFERENCE_SCALING_FACTOR,
        *,
        force_upcast: bool | None = None,
    ):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.scaling_factor = float(scaling_factor)
        self.force_upcast = bool(vae.config.force_upcast if force_upcast is None else force_upcast)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)  # 8 for the SD VAE
        if self.force_upcast and vae.dtype == torch.float16:
            if vae.post_quant_conv is not None:
                vae.post_quant_conv.float()
            vae.decoder.float()

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        dtype: torch.dtype = torch.float32,
        variant: str | None = None,
        *,
        scaling_factor: float | None = None,
    ) -> VideoVAE:
        """Load a diffusers `vae/` folder (local only); `variant="fp16"` reads `*.fp16.safetensors`.

        The folder config's `scaling_factor` is ignored unless passed here explicitly (see the class docstring).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"VAE folder not found: {folder}")
        try:
            vae, info = AutoencoderKL.from_pretrained(
                folder, torch_dtype=dtype, variant=variant, local_files_only=True, output_loading_info=True
            )
        except Exception as err:  # OSError, ValueError, safetensors errors, ... all mean "cannot load"
            raise CheckpointError(f"cannot load the VAE from {folder}: {_one_line(err)}") from err
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise CheckpointError(f"the VAE in {folder} lacks {len(missing)} weight(s), e.g. {missing[0]!r}")
        return cls(vae, REFERENCE_SCALING_FACTOR if scaling_factor is None else scaling_factor)

    @classmethod
    def from_model_folder(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None, **kwargs: Any
    ) -> VideoVAE:
        """Load from a diffusers-format model folder (`root/vae`)."""
        return cls.from_pretrained(Path(root) / "vae", dtype, variant, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the encoder weights (the decoder may be float32, see `force_upcast`)."""
        return self.vae.encoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.encoder.conv_in.weight.device

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    def encode(
        self,
        frames: Tensor,
        *,
        generator: torch.Generator | None = None,
        sample: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        tile: int | None = None,
    ) -> Tensor:
        """(B, 3, F, H, W) frames in [-1, 1] -> (B, 4, F, H/8, W/8) latents × `scaling_factor`.

        `sample=True` draws from the posterior as VGen does (spec §1.3 step 3), with noise taken from `generator`
        in one draw for the whole video, so the result does not depend on `chunk_size`; `sample=False` returns
        the posterior mean. `tile`: spatial tiling in strips of this many latent rows (module docstring).
        """
        _check_chunk_size(chunk_size)
        self.check_tile(tile)
        _check_video(frames, self.vae.config.in_channels, "frames", self.downscale)
        peak = frames.abs().amax().item()
        if peak > 1.5:  # allow resampling overshoot, catch 0..255 pixels
            raise InputError(f"frames must be in [-1, 1], got values up to {peak:.3g} in magnitude")
        batch = frames.shape[0]
        x = _fold(frames)  # (B*F, 3, H, W)
        means, stds = [], []
        for chunk in x.split(chunk_size):
            m, s = self._encode_images(chunk.to(self.device, self.dtype), tile)  # (n, 4, h, w) each
            means.append(m)
            stds.append(s)
        mean = _unfold(torch.cat(means), batch)  # (B, 4, F, h, w)
        if not sample:
            return mean * self.scaling_factor
        std = _unfold(torch.cat(stds), batch)  # (B, 4, F, h, w)
        # Drawn in float32 on the generator's device, so a CPU generator gives the same latents on any device/dtype.
        noise_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=noise_device, dtype=torch.float32)
        return (mean + std * noise.to(mean.device, mean.dtype)) * self.scaling_factor

    def _encode_images(self, x: Tensor, tile: int | None) -> tuple[Tensor, Tensor]:
        """(n, 3, H, W) -> posterior (mean, std), each (n, 4, H/8, W/8); in strips of `tile` latent rows."""
        if tile is None:
            posterior = self.vae.encode(x).latent_dist
        else:
            posterior = DiagonalGaussianDistribution(vae_tiling.encode(self.vae, x, tile))
        return posterior.mean, posterior.std

    def encode_image(
        self, image: Tensor, *, generator: torch.Generator | None = None, sample: bool = True,
        tile: int | None = None,
    ) -> Tensor:
        """(B, 3, H, W) image in [-1, 1] -> (B, 4, H/8, W/8) latent × `scaling_factor` (one-frame `encode`)."""
        if image.ndim != 4:
            raise InputError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
        return self.encode(image.unsqueeze(2), generator=generator, sample=sample, tile=tile)[:, :, 0]

    def decode(
        self, latents: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE, tile: int | None = None
    ) -> Tensor:
        """(B, 4, F, h, w) scaled latents -> (B, 3, F, 8h, 8w) frames, nominally in [-1, 1] (not clamped).

        Latents are divided by `scaling_factor` first. Runs in the decoder's dtype (float32 when upcast). Frames
        are decoded `chunk_size` at a time into one preallocated output; `tile`: spatial tiling in strips of this
        many latent rows (module docstring).
        """
        _check_chunk_size(chunk_size)
        self.check_tile(tile)
        _check_video(latents, self.latent_channels, "latents", 1)
        batch = latents.shape[0]
        decoder_dtype = self.vae.decoder.conv_in.weight.dtype
        z = _fold(latents) / self.scaling_factor  # (B*F, 4, h, w)
        out = None
        for start in range(0, z.shape[0], chunk_size):
            frames = self._decode_images(z[start:start + chunk_size].to(self.device, decoder_dtype), tile)
            if out is None:
                out = frames.new_empty((z.shape[0], *frames.shape[1:]))  # (B*F, 3, H, W)
            out[start:start + chunk_size] = frames
        return _unfold(out, batch)  # (B, 3, F, H, W)

    def check_tile(self, tile: object) -> None:
        """Raise `InputError` unless `tile` is None or a positive number of latent rows this VAE can tile by."""
        if tile is None:
            return
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise InputError(f"tile must be a positive integer (latent rows) or None, got {tile!r}")
        vae_tiling.check_tileable(self.vae)

    def _decode_images(self, z: Tensor, tile: int | None) -> Tensor:
        """(n, 4, h, w) unscaled latents -> (n, 3, 8h, 8w); in strips of `tile` latent rows."""
        return self.vae.decode(z).sample if tile is None else vae_tiling.decode(self.vae, z, tile)


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _check_video(x: Tensor, channels: int, name: str, multiple: int) -> None:
    """Raise `InputError` unless `x` is (B, channels, F, H, W) with H and W divisible by `multiple`."""
    if x.ndim != 5 or x.shape[1] != channels:
        raise InputError(f"{name} must be (B, {channels}, F, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise InputError(
            f"{name} height and width must be multiples of {multiple}, got {tuple(x.shape[-2:])}"
        )
    if x.numel() == 0:
        raise InputError(f"{name} is empty: shape {tuple(x.shape)}")


# --- tiny VAE for tests ---------------------------------------------------------------------------------------


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """`AutoencoderKL` kwargs for a 2-level, 8/16-channel VAE (downscale 2, about 44k parameters)."""
    cfg: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 2,
        "sample_size": 32,
    }
    return {**cfg, **overrides}


def tiny_vae(seed: int = 0, **overrides: Any) -> VideoVAE:
    """A randomly initialised tiny `VideoVAE` (float32) built from `tiny_vae_config(**overrides)`."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        return VideoVAE(AutoencoderKL(**tiny_vae_config(**overrides)))
