"""v-prediction parameterisation (Salimans & Ho 2022, "Progressive Distillation", §4 and App. D).

With x_t = sqrt(a) x0 + sqrt(1 - a) eps and a = alpha_bar_t, the network predicts v = sqrt(a) eps - sqrt(1 - a) x0.
All conversions below stay finite at a = 0 (t = 999 of a zero-terminal-SNR schedule), where x0 = -v and eps = x_t.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from i2vgen.diffusion.schedule import alpha_bar_at

__all__ = ["Denoiser", "Net", "append_dims", "v_target", "v_to_eps", "v_to_x0", "vpred_denoiser"]

Net = Callable[
    [Tensor, Tensor], Tensor
]  # net(x_t, t) -> v; t is a float tensor (B,) in training-timestep units
Denoiser = Callable[[Tensor, Tensor], Tensor]  # denoise(x_t, t) -> x0


def append_dims(a: Tensor | float, x: Tensor) -> Tensor:
    """Per-sample coefficients (B,) or a scalar -> shape (B, 1, ..., 1) (or ()) in x's dtype and device."""
    a = torch.as_tensor(a, device=x.device, dtype=x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def _sqrt_pair(alpha_bar: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(a), sqrt(1 - a)) computed in float64, broadcast against x."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return append_dims(a.sqrt(), x), append_dims((1 - a).sqrt(), x)


def v_to_x0(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x0 = sqrt(a) x_t - sqrt(1 - a) v. alpha_bar: scalar or (B,)."""
    sa, s1a = _sqrt_pair(alpha_bar, x_t)
    return sa * x_t - s1a * v


def v_to_eps(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """eps = sqrt(1 - a) x_t + sqrt(a) v. alpha_bar: scalar or (B,)."""
    sa, s1a = _sqrt_pair(alpha_bar, x_t)
    return s1a * x_t + sa * v


def v_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """Training target v = sqrt(a) eps - sqrt(1 - a) x0. alpha_bar: scalar or (B,)."""
    sa, s1a = _sqrt_pair(alpha_bar, x0)
    return sa * eps - s1a * x0


def vpred_denoiser(net: Net, alphas_cumprod: Tensor, *, round_t: bool = False) -> Denoiser:
    """Wrap a v-predicting network `net(x_t, t) -> v` into `denoise(x_t, t) -> x0` (k-diffusion's `VDenoiser`, in VP form).

    t is a float tensor (B,). alpha_bar at fractional t is interpolated in log-sigma (`alpha_bar_at`). With
    `round_t=True` t is rounded to the nearest integer, both for the network and for the v -> x0 conversion, which is what
    ModelScope's refiner does (`GaussianDiffusion_SDEdit.sample.model_fn`), while its solver keeps using the
    interpolated alpha_bar for the input scaling.
    """
    acp = alphas_cumprod.detach().to("cpu", torch.float64)  # schedule math stays on the CPU in float64

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        if round_t:
            t = t.round()
        a = alpha_bar_at(acp, t.detach().to("cpu", torch.float64))  # (B,)
        return v_to_x0(x_t, net(x_t, t), a)

    return denoise
