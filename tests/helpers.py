"""Shared test utilities (imported by test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from i2vgen.models.configs import UNetConfig


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Fill every parameter with random values: zero-initialised layers hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".weight") and p.ndim == 1:  # norm gains around 1
                p.copy_(1.0 + scale * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def diffusers_kwargs(cfg: UNetConfig) -> dict:
    """Constructor arguments of diffusers' I2VGenXLUNet / UNet3DConditionModel for one of our configs."""
    return {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_")}


def image_latents_with_positions(latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The diffusers pipeline's `image_latents` input: frame 0 = latent, frame k = k/(F-1). (B,4,H,W)->(B,4,F,H,W)"""
    frames = [latent[:, :, None]]
    frames += [torch.ones_like(latent[:, :, None]) * (k / (num_frames - 1)) for k in range(1, num_frames)]
    return torch.cat(frames, dim=2)
