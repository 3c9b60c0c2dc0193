"""Noise schedules (as `alphas_cumprod`, float64, length 1000) and sampling timestep grids.

Both stages use variance-preserving schedules with zero terminal SNR, so `alphas_cumprod[-1] == 0` exactly and the
k-diffusion sigma `sqrt((1 - a) / a)` is infinite at t = 999. Everything here is therefore indexed by alpha_bar or by
(possibly fractional) training timesteps, never by sigma.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "alpha_bar_at",
    "base_alphas_cumprod",
    "cosine_alphas_cumprod",
    "logsnr_cosine_interp_alphas_cumprod",
    "make_timesteps",
    "refiner_alphas_cumprod",
    "refiner_timesteps",
    "rescale_zero_terminal_snr",
]


def cosine_alphas_cumprod(n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. 17, with beta_t clipped at `max_beta`. Returns (n,) float64."""
    i = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((i + s) / (1 + s) * math.pi / 2) ** 2  # (n + 1,) alpha_bar(t / n) before clipping
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Lin et al. (2024), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.

    Shifts sqrt(alpha_bar) so the last value is exactly 0 and rescales it so the first value is unchanged.
    """
    sqrt_ab = alphas_cumprod.to(torch.float64).sqrt()
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    return sqrt_ab**2


def base_alphas_cumprod(n: int = 1000) -> Tensor:
    """The I2VGen-XL base schedule: cosine (s = 0.008) + zero-terminal-SNR rescale (spec §3). (n,) float64.

    alpha_bar[0] = 0.99996, alpha_bar[500] = 0.49226, alpha_bar[981] = 7.84e-4, alpha_bar[999] = 0.
    """
    return rescale_zero_terminal_snr(cosine_alphas_cumprod(n))


def logsnr_cosine_interp_alphas_cumprod(
    n: int = 1000,
    logsnr_min: float = -15.0,
    logsnr_max: float = 15.0,
    scale_min: float = 2.0,
    scale_max: float = 4.0,
) -> Tensor:
    """ "Shifted cosine" logSNR schedule interpolated between two resolution shifts (Hoogeboom et al. 2023, simple
    diffusion, §3.1), as ModelScope's `logsnr_cosine_interp_schedule`. Returns alpha_bar = sigmoid(logSNR), (n,) float64.
    """
    u_min = math.atan(math.exp(-0.5 * logsnr_min))  # u at which logSNR = logsnr_min
    u_max = math.atan(math.exp(-0.5 * logsnr_max))
    r = torch.linspace(1, 0, n, dtype=torch.float64)  # 1 at t = 0 (clean), 0 at t = n - 1 (noisy)
    logsnr = -2 * torch.log(torch.tan(u_min + r * (u_max - u_min)))
    # shifting by a factor `scale` subtracts 2 log(scale); interpolate the shifts from scale_min (t=0) to scale_max
    logsnr = logsnr - 2 * (r * math.log(scale_min) + (1 - r) * math.log(scale_max))
    return torch.sigmoid(logsnr)


def refiner_alphas_cumprod(n: int = 1000) -> Tensor:
    """The MS-Vid2Vid-XL refiner schedule (spec §1.4 item 4). (n,) float64.

    logsnr_cosine_interp (scale 2 -> 4, logSNR in [-15, 15]), then ModelScope's zero-terminal-SNR rescale, which acts
    on sigma = sqrt(1 - alpha_bar) (not on sqrt(alpha_bar) as Lin et al.): sigma is stretched affinely so that its
    minimum is kept and its maximum becomes 1. sigma_599 = 0.9724, sqrt(alpha_bar_599) = 0.2335.
    """
    sigmas = (1 - logsnr_cosine_interp_alphas_cumprod(n)).sqrt()
    lo, hi = sigmas.min(), sigmas.max()
    if hi == 1.0:
        return 1 - sigmas**2
    # new sigma = lo + (1 - lo) (sigma - lo) / (hi - lo); written through 1 - sigma so the maximum maps to exactly 1
    one_minus = (1 - lo) * (hi - sigmas) / (hi - lo)  # (n,) 1 - new sigma
    return one_minus * (2 - one_minus)  # 1 - sigma^2 = (1 - sigma)(1 + sigma)


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor | float) -> Tensor:
    """alpha_bar at (possibly fractional) timesteps t, interpolating log(sigma) with sigma = sqrt((1 - a) / a) linearly in
    t, as k-diffusion's `DiscreteSchedule.t_to_sigma` and ModelScope's `_t_to_sigma` do. Exact at integer t; returns
    float64 with t's shape; alpha_bar = 0 (sigma = inf) is handled (any t > 998 then maps to 0 for the base schedule).
    """
    acp = alphas_cumprod.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64, device=acp.device)
    if (t < 0).any() or (t > len(acp) - 1).any():
        raise ValueError(
            f"timesteps must lie in [0, {len(acp) - 1}], got min {t.min().item()} max {t.max().item()}"
        )
    log_sigma = 0.5 * (torch.log1p(-acp) - torch.log(acp))  # (n,), +inf where alpha_bar = 0
    lo, hi = t.floor().long(), t.ceil().long()
    w = t - lo
    a, b = log_sigma[lo], log_sigma[hi]
    log_s = a + w * (b - a)  # nan where w == 0 and a = b = inf; not used there
    # integer t: the table value itself (bit-exact), fractional t: 1 / (1 + sigma^2)
    return torch.where(w > 0, torch.sigmoid(-2 * log_s), acp[lo])


def make_timesteps(
    steps: int,
    spacing: str = "leading",
    *,
    t_max: float = 999,
    t_min: float = 0,
    offset: int = 1,
) -> Tensor:
    """Descending sampling grid of `steps` training timesteps (float64); see Lin et al. (2024), Table 2.

    - "leading" (VGen / diffusers DDIM with steps_offset): `t_min + offset + k * ((t_max - t_min + 1) // steps)`,
      k = steps-1 ... 0; for 50 steps: 981, 961, ..., 21, 1 (spec §1.3 item 8). VGen's own
      `1 + arange(0, 1000, 1000 // steps)` is identical when 1000 % steps == 0 (it yields one extra step otherwise).
    - "trailing" (ModelScope `GaussianDiffusion_SDEdit.sample`): `t_max - k * (t_max - t_min + 1) / steps`,
      k = 0 ... steps-1; fractional in general (599, 579.6, ..., 18.4 for t_max=599, 31 steps). For t_max = 999 and
      1000 % steps == 0 it equals diffusers' "trailing" (999, 979, ..., 19). Built from k rather than a float `arange`,
      which in ModelScope returns steps + 1 values for some step counts (e.g. 7).
    - "linspace": `linspace(t_max, t_min, steps)` (ModelScope; diffusers DDIM rounds it).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "leading":
        stride = int(t_max - t_min + 1) // steps
        if stride < 1:
            raise ValueError(f"{steps} leading steps do not fit in [{t_min}, {t_max}]")
        ts = (t_min + offset + k * stride).flip(0)
    elif spacing == "trailing":
        ts = t_max - k * ((t_max - t_min + 1) / steps)
    elif spacing == "linspace":
        ts = torch.linspace(t_max, t_min, steps, dtype=torch.float64)
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    return ts.clamp(t_min, t_max)


def refiner_timesteps(
    steps: int = 30,
    *,
    t_max: float = 599,
    t_min: float = 0,
    discard_penultimate: bool = True,
) -> Tensor:
    """The refiner's grid as ModelScope builds it (spec §1.4 item 6). Returns `steps` descending timesteps (float64).

    ModelScope asks for `steps + 1` trailing timesteps when it discards the penultimate sigma (its default for
    dpmpp_2m_sde) and then drops the last grid point, so the final step jumps straight to sigma = 0: for 30 steps the
    model is evaluated at 599.0, 579.6, ..., 37.7 (18.4 is dropped). Use `discard_penultimate=False` for Heun
    (50 steps: 599, 587, ..., 11). Every sampler here ends with a step to the clean sample after the last timestep.
    """
    if discard_penultimate:
        return make_timesteps(steps + 1, "trailing", t_max=t_max, t_min=t_min)[:-1]
    return make_timesteps(steps, "trailing", t_max=t_max, t_min=t_min)
