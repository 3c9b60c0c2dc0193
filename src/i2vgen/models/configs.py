"""Typed configurations of the networks, with named presets.

`UNetConfig` describes both 3D UNets of I2VGen-XL: the base stage (image + text conditioned, `image_conditioning=True`)
and the refinement stage (text-only, MS-Vid2Vid-XL, `image_conditioning=False` with its asymmetric down/up-sampling).
Module names follow diffusers' `I2VGenXLUNet` / `UNet3DConditionModel`, so `to_diffusers_config` and
`from_diffusers_config` translate the few fields whose names differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from i2vgen.errors import CheckpointError


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # One flag per resolution level: spatial + temporal transformers after each ResBlock (diffusers CrossAttn*Block3D).
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    cross_attention_dim: int = 1024
    attention_head_dim: int = 64  # heads = channels // attention_head_dim (5/10/20 in the real model)
    transformer_in_heads: int = 8  # the temporal transformer right after conv_in: 8 heads x attention_head_dim
    dropout: float = 0.1  # temporal-conv dropout (VGen TemporalConvBlock_v2); inactive in eval mode
    # Base stage (I2VGen-XL) only: CLIP-image tokens, first-frame latent tokens and concat branch, fps embedding.
    image_conditioning: bool = True
    num_image_tokens: int = 4
    # The released VGen checkpoint adds the concat branch twice (spec 2.3b); diffusers' port adds it once.
    concat_scale: float = 2.0
    # Refiner (MS-Vid2Vid-XL) only: Downsample padding (2, 1) and Upsample cropping a row top and bottom (spec 2.6).
    refiner_resampling: bool = False

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.attention_levels) != n:
            raise ValueError(
                f"attention_levels has {len(self.attention_levels)} entries, block_out_channels has {n}"
            )
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"channel count {c} is not divisible by norm_num_groups {self.norm_num_groups}")
            if c % self.attention_head_dim:
                raise ValueError(f"channel count {c} is not divisible by attention_head_dim {self.attention_head_dim}")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    def replace(self, **changes: Any) -> UNetConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"_class_name", "_i2vgen_version"})
        if unknown:
            raise CheckpointError(f"unknown UNet config fields: {', '.join(unknown)}")
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("block_out_channels", "attention_levels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    # diffusers config.json <-> ours -----------------------------------------------------------------------------
    def to_diffusers_config(self) -> dict[str, Any]:
        down = ["CrossAttnDownBlock3D" if a else "DownBlock3D" for a in self.attention_levels]
        up = ["CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(self.attention_levels)]
        cfg: dict[str, Any] = {
            "_class_name": "I2VGenXLUNet" if self.image_conditioning else "UNet3DConditionModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "block_out_channels": list(self.block_out_channels),
            "down_block_types": down,
            "up_block_types": up,
            "layers_per_block": self.layers_per_block,
            "norm_num_groups": self.norm_num_groups,
            "cross_attention_dim": self.cross_attention_dim,
            "attention_head_dim": self.attention_head_dim,
            "sample_size": 32,
        }
        if self.image_conditioning:
            cfg["num_attention_heads"] = None
            cfg["concat_scale"] = self.concat_scale  # ours; absent from Hub configs, where 2.0 (VGen) applies
        return cfg

    @classmethod
    def from_diffusers_config(cls, d: dict[str, Any], **overrides: Any) -> UNetConfig:
        name = d.get("_class_name", "I2VGenXLUNet")
        if name not in ("I2VGenXLUNet", "UNet3DConditionModel"):
            raise CheckpointError(f"config.json describes a {name}, not an I2VGenXLUNet or UNet3DConditionModel")
        down = d.get("down_block_types", ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"])
        # Old I2VGen-XL configs call the head dimension `num_attention_heads` (spec 2.5).
        head_dim = d.get("attention_head_dim") or d.get("num_attention_heads") or 64
        if not isinstance(head_dim, int):
            head_dim = head_dim[0]
        kw: dict[str, Any] = dict(
            in_channels=d.get("in_channels", 4),
            out_channels=d.get("out_channels", 4),
            block_out_channels=tuple(d.get("block_out_channels", (320, 640, 1280, 1280))),
            attention_levels=tuple(t.startswith("CrossAttn") for t in down),
            layers_per_block=d.get("layers_per_block", 2),
            norm_num_groups=d.get("norm_num_groups", 32),
            cross_attention_dim=d.get("cross_attention_dim", 1024),
            attention_head_dim=head_dim,
            image_conditioning=name == "I2VGenXLUNet",
        )
        if name == "I2VGenXLUNet":
            kw["num_image_tokens"] = kw["in_channels"]
            kw["concat_scale"] = float(d.get("concat_scale", 2.0))
        kw.update(overrides)
        return cls(**kw)


UNET_PRESETS: dict[str, UNetConfig] = {
    # The released base model (VGen i2vgen_xl_00854500.pth == diffusers ali-vilab/i2vgen-xl), 1,420,469,224 params.
    "i2vgen-xl": UNetConfig(),
    # MS-Vid2Vid-XL, the public refinement stage: text-only, no fps, 1,411,233,860 params.
    "ms-vid2vid-xl": UNetConfig(image_conditioning=False, refiner_resampling=True, concat_scale=1.0),
    # Benchmark sizes (issue: "small, where overhead dominates" and "mid, where compute dominates").
    "bench-small": UNetConfig(block_out_channels=(32, 64, 64), attention_levels=(True, True, False),
                              layers_per_block=2, norm_num_groups=16, cross_attention_dim=64, attention_head_dim=16),
    "bench-mid": UNetConfig(block_out_channels=(64, 128, 256, 256), layers_per_block=2, norm_num_groups=32,
                            cross_attention_dim=1024, attention_head_dim=64),
    # Tiny configurations for tests.
    "tiny": UNetConfig(block_out_channels=(16, 32), attention_levels=(True, False), layers_per_block=1,
                       norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8),
    "tiny-refiner": UNetConfig(block_out_channels=(16, 32), attention_levels=(True, False), layers_per_block=1,
                               norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8,
                               image_conditioning=False, refiner_resampling=True, concat_scale=1.0),
    # The shipped tiny cascade (`i2vgen train-recipe tiny-shapes`): base at 16x16 latents (32 px, downscale-2 VAE),
    # refiner at 16x16 (64 px, downscale 4).
    "tiny-shapes": UNetConfig(block_out_channels=(32, 64), attention_levels=(True, True), layers_per_block=1,
                              norm_num_groups=8, cross_attention_dim=32, attention_head_dim=16),
    "tiny-shapes-refiner": UNetConfig(block_out_channels=(32, 64), attention_levels=(True, False),
                                      layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                                      attention_head_dim=16, image_conditioning=False, refiner_resampling=True,
                                      concat_scale=1.0),
}


def unet_preset(name: str) -> UNetConfig:
    try:
        return UNET_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown UNet preset {name!r}; choose from {', '.join(UNET_PRESETS)}") from None

