"""Training objective (v-prediction MSE, spec §3) and the forward process q(x_t | x0)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from i2vgen.diffusion.denoiser import append_dims, v_target
from i2vgen.diffusion.schedule import alpha_bar_at

__all__ = ["offset_noise_like", "q_sample", "v_loss"]


def q_sample(x0: Tensor, t: Tensor, alphas_cumprod: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise (Ho et al. 2020, eq. 4); t (B,), integer or fractional.

    The refiner's SDEdit start is `q_sample(x0, full(599), refiner_alphas_cumprod(), randn)` (ModelScope `diffuse`);
    see `samplers` for the scale ModelScope then (inadvertently) applies before sampling.
    """
    a = alpha_bar_at(alphas_cumprod.detach().cpu(), t.detach().cpu())  # (B,) float64
    return append_dims(a.sqrt(), x0) * x0 + append_dims((1 - a).sqrt(), x0) * noise


def offset_noise_like(x: Tensor, offset_noise: float, generator: torch.Generator | None = None) -> Tensor:
    """eps + offset_noise * N(0, 1) of shape x.shape[:-2] + (1, 1): one offset per sample, channel and frame for
    (B, C, F, H, W) latents (VGen `diffusion_ddim.py`, `noise_strength`; Guttenberg 2023, "Diffusion with Offset Noise").
    Draws eps first, then the offsets.
    """
    device = generator.device if generator is not None else x.device
    eps = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    if offset_noise > 0:
        shape = tuple(x.shape[:-2]) + (1, 1)  # (B, C, F, 1, 1)
        eps = eps + offset_noise * torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return eps.to(x)


def v_loss(
    net_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    alphas_cumprod: Tensor,
    *,
    generator: torch.Generator | None = None,
    offset_noise: float = 0.1,
    t: Tensor | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """The I2VGen-XL training loss (VGen `DiffusionDDIM.loss`, mean_type 'v', loss_type 'mse'; spec §3).

    t ~ U{0, ..., T-1} per sample (unless given), eps with offset noise, x_t = sqrt(a) x0 + sqrt(1 - a) eps,
    `net_fn(x_t, t) -> v` with t as float32 (B,), target v = sqrt(a) eps - sqrt(1 - a) x0, MSE averaged over all
    non-batch dims, then over the batch. Random draws, in order from `generator`: t (if not given), eps, offsets.
    Returns (loss, info) with info = {"t", "noise", "x_t", "target", "loss_per_sample"}.
    """
    b = x0.shape[0]
    if t is None:
        device = generator.device if generator is not None else x0.device
        t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator, device=device)
    t = t.to(x0.device)
    eps = offset_noise_like(x0, offset_noise, generator)
    a = alpha_bar_at(alphas_cumprod.detach().cpu(), t.detach().cpu())  # (B,) float64
    x_t = append_dims(a.sqrt(), x0) * x0 + append_dims((1 - a).sqrt(), x0) * eps
    target = v_target(x0, eps, a)
    pred = net_fn(x_t, t.to(torch.float32))
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    info = {"t": t, "noise": eps, "x_t": x_t, "target": target, "loss_per_sample": per_sample.detach()}
    return per_sample.mean(), info
