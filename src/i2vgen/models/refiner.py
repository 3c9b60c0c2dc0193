"""The refinement-stage 3D UNet (MS-Vid2Vid-XL): the same trunk as the base stage, text-only context, no fps.

With `refiner_resampling=True` (the real checkpoint) down-sampling pads (2, 1) and up-sampling crops a row top and
bottom after nearest x2, so 720p latents (90 rows) pass 90 -> 46 -> 24 -> 13 -> 24 -> 46 -> 90 (spec 2.6). With
`refiner_resampling=False` it is diffusers' `UNet3DConditionModel`, for that format's own models.
"""

from __future__ import annotations

from torch import Tensor

from i2vgen.errors import InputError
from i2vgen.models.configs import UNetConfig
from i2vgen.models.unet import UNet3D, _check, _per_sample


class I2VGenRefinerUNet(UNet3D):
    """v-prediction for a noisy video latent given a text context."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        config = config or UNetConfig(image_conditioning=False, refiner_resampling=True, concat_scale=1.0)
        if config.image_conditioning:
            raise ValueError("I2VGenRefinerUNet needs image_conditioning=False; use I2VGenUNet for the base stage")
        super().__init__(config, conv_in_channels=config.in_channels)

    def forward(self, sample: Tensor, timestep: Tensor | float | int, *, encoder_hidden_states: Tensor) -> Tensor:
        """sample (B, 4, F, H, W), timestep scalar or (B,), encoder_hidden_states (B, 77, D) -> v (B, 4, F, H, W)."""
        cfg = self.config
        _check(sample, 5, "sample", (None, cfg.in_channels, None, None, None))
        b = sample.shape[0]
        _check(encoder_hidden_states, 3, "encoder_hidden_states", (b, None, cfg.cross_attention_dim))
        if cfg.refiner_resampling:
            check_refiner_size(sample.shape[-2], sample.shape[-1], len(cfg.block_out_channels) - 1)
        emb = self.embed_time(_per_sample(timestep, b, sample.device))
        return self.trunk(sample.to(self.dtype), emb, encoder_hidden_states.to(self.dtype))


def check_refiner_size(height: int, width: int, num_down: int) -> None:
    """The (2,1)-padded down / row-cropping up pair restores a height only if it is even before each down-sampling;
    widths use ordinary padding and nearest x2, so they must divide by 2**num_down."""
    if width % 2**num_down:
        raise InputError(f"latent width {width} must be a multiple of {2**num_down} for the refiner")
    h = height
    for _ in range(num_down):
        if h % 2:
            raise InputError(f"latent height {height} cannot pass the refiner's resampling (needs an even height "
                             f"at every level, e.g. 90 for 720p); got odd height {h} on the way down")
        h = h // 2 + 1
