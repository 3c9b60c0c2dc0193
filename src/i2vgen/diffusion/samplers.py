"""Samplers as pure functions over a denoiser callable (style guide §3 item 2).

Every sampler has the signature

    sample_xxx(denoise, x, alphas_cumprod, timesteps, *, ..., generator=None, callback=None) -> Tensor

- `denoise(x_t, t) -> x0`, with t a float32 tensor (B,) in training-timestep units (see `denoiser.vpred_denoiser`);
- `x` is the starting latent x_t at `timesteps[0]` in variance-preserving form (batch first, any shape; video latents
  are (B, C, F, H, W));
- `timesteps` is a descending 1-D grid of (possibly fractional) training timesteps, e.g. `schedule.make_timesteps`;
  the denoiser is evaluated at each of them, and the last step goes to the clean sample (alpha_bar = 1) — except DDIM,
  which by default stops at alpha_bar[0] like VGen;
- `callback(i, t, x0)` is called after every denoiser evaluation of the grid with the current x0 prediction.

Samplers are indexed by alpha_bar, not by sigma: the zero-terminal-SNR schedules have alpha_bar = 0 (sigma = inf) at
t = 999. Each update is written so that its alpha_bar -> 0 limit is taken exactly (log-SNR lambda = -inf, h = inf,
exp(-h) = 0) instead of clamping alpha_bar (diffusers sets alpha_bar[999] = 2**-24). From alpha_bar = 0 every
first-order update reduces to x_next = sqrt(a_next) x0 + sqrt(1 - a_next) x (deterministic) or to
sqrt(a_next) x0 + sqrt(1 - a_next) z with fresh noise z (SDE), and the following multistep correction has weight 0.
Schedule coefficients are computed in float64 on the CPU and applied as Python floats, so `x` may live on any device
and in any dtype.

None of these functions disables autograd: call them under `torch.no_grad()` for inference.

To reproduce ModelScope's refiner bit for bit (spec §1.4 item 9): its k-diffusion solvers start from
`noise * sigma_0` but are handed the already-noised latent, so the network first sees sqrt(1 - a_0) * x_t instead of
x_t; pass `x = (1 - a_0) ** 0.5 * x_t` to get the same trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from i2vgen.diffusion.denoiser import Denoiser
from i2vgen.diffusion.schedule import alpha_bar_at

__all__ = ["Callback", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_heun", "sample_unipc"]

Callback = Callable[[int, float, Tensor], None]  # (step index, timestep, x0 prediction)


def _grid(alphas_cumprod: Tensor, timesteps: Tensor) -> tuple[list[float], list[float]]:
    """Timesteps and their alpha_bar as Python floats (float64 precision)."""
    ts = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu().reshape(-1)
    if len(ts) == 0:
        raise ValueError("timesteps is empty")
    if (ts[1:] >= ts[:-1]).any():
        raise ValueError(f"timesteps must be strictly decreasing, got {ts.tolist()}")
    ab = alpha_bar_at(alphas_cumprod.detach().cpu(), ts)
    return ts.tolist(), ab.tolist()


def _t_vec(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)  # (B,)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) noise drawn in float32 on the generator's device (as diffusers' `randn_tensor`), then moved to x."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x)


def _log_snr_half(a: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(a / (1 - a)) (Lu et al. 2022), with the limits at a = 0 and a = 1."""
    if a <= 0.0:
        return -math.inf
    if a >= 1.0:
        return math.inf
    return 0.5 * (math.log(a) - math.log1p(-a))


def sample_ddim(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    set_alpha_to_one: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12), generalised with eta.

    The step from timesteps[i] goes to alpha_bar(timesteps[i + 1]); the last step goes to alpha_bar[0] = 0.99996 as in
    VGen, whose previous-alpha index is `(t - stride).clamp(0)` (spec §1.3 item 8), or to 1 with
    `set_alpha_to_one=True` (diffusers' `DDIMScheduler` default).
    """
    ts, ab = _grid(alphas_cumprod, timesteps)
    final = 1.0 if set_alpha_to_one else float(alphas_cumprod[0])
    ab_next = ab[1:] + [final]
    for i, (t, a, a_prev) in enumerate(zip(ts, ab, ab_next)):
        x0 = denoise(x, _t_vec(t, x))
        if callback is not None:
            callback(i, t, x0)
        if a >= 1.0:
            raise ValueError(f"alpha_bar is 1 at t={t}: there is no noise to remove")
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)  # finite at a = 0, where eps = x
        # sigma_t of eq. 16; a_prev >= a on a decreasing grid
        var = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev) if eta > 0 else 0.0
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - var, 0.0)) * eps
        if eta > 0:
            x = x + math.sqrt(var) * _randn_like(x, generator)
    return x


def _dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    eta: float,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> Tensor:
    """Shared loop of DPM-Solver++(2M) (eta = 0) and its SDE variant (eta > 0), data prediction, midpoint form."""
    ts, ab = _grid(alphas_cumprod, timesteps)
    ab_next = ab[1:] + [1.0]
    old_x0, h_last = None, math.inf
    for i, (t, a, a_next) in enumerate(zip(ts, ab, ab_next)):
        x0 = denoise(x, _t_vec(t, x))
        if callback is not None:
            callback(i, t, x0)
        if a_next >= 1.0:  # final step to sigma = 0: first order, x = x0 exactly
            x = x0
            break
        h = _log_snr_half(a_next) - _log_snr_half(a)  # > 0; inf when a = 0
        eta_h = eta * h if eta > 0 else 0.0  # avoid 0 * inf
        sigma, sigma_next, alpha_next = math.sqrt(1 - a), math.sqrt(1 - a_next), math.sqrt(a_next)
        # second-order correction weight 1 / (2 r), r = h_last / h; 0 on the first step and after a = 0
        d = x0 if old_x0 is None else x0 + (h / (2 * h_last)) * (x0 - old_x0)
        x = (sigma_next / sigma * math.exp(-eta_h)) * x - alpha_next * math.expm1(-h - eta_h) * d
        if eta > 0:
            x = x + sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * _randn_like(x, generator)
        old_x0, h_last = x0, h
    return x


def sample_dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2), deterministic, data-prediction form.

    Same updates as diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)` with
    `final_sigmas_type="zero"`: first order on the first and last step, x = x0 after the last timestep.
    `generator` is unused (uniform signature).
    """
    return _dpmpp_2m(denoise, x, alphas_cumprod, timesteps, 0.0, None, callback)


def sample_dpmpp_2m_sde(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, §5; k-diffusion `sample_dpmpp_2m_sde`, midpoint), data prediction.

    eta = 1 is diffusers' `algorithm_type="sde-dpmsolver++"` and ModelScope's refiner solver. One N(0, 1) draw of x's
    shape per step except the last, from `generator` (float32, like diffusers, so the same generator gives diffusers'
    noise). ModelScope draws from a torchsde Brownian tree instead: same distribution, different numbers. For
    ModelScope's refiner grid (penultimate sigma discarded) pass `schedule.refiner_timesteps(30)`.
    """
    if eta <= 0:
        raise ValueError(f"eta must be > 0 for the SDE sampler (use sample_dpmpp_2m for eta = 0), got {eta}")
    return _dpmpp_2m(denoise, x, alphas_cumprod, timesteps, eta, generator, callback)


def sample_heun(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun's 2nd-order ODE solver (Karras et al. 2022, Algorithm 1 = Algorithm 2 with S_churn = 0), as ModelScope's
    refiner `sample_heun` with its default arguments (its non-"fast" mode: 50 trailing steps from t = 599, 99 NFE).

    Runs in k-diffusion's variance-exploding variable x / sqrt(a) with sigma = sqrt((1 - a) / a) and feeds the denoiser
    the VP input x_ve * sqrt(a). The last step (to sigma = 0) and a first step from a = 0 (sigma = inf,
    x_next = x0 + sigma_next x, as ModelScope) are Euler steps. `generator` is unused (no churn).
    """
    ts, ab = _grid(alphas_cumprod, timesteps)
    sig = [math.sqrt((1 - a) / a) if a > 0 else math.inf for a in ab] + [0.0]  # VE sigmas, (N + 1)
    x_ve = x / math.sqrt(ab[0]) if ab[0] > 0 else x
    for i, t in enumerate(ts):
        s, s_next = sig[i], sig[i + 1]
        x0 = denoise(x_ve * math.sqrt(ab[i]) if s < math.inf else x_ve, _t_vec(t, x))
        if callback is not None:
            callback(i, t, x0)
        if s == math.inf:  # x_ve holds the VP noise here
            x_ve = x0 + s_next * x_ve
            continue
        d = (x_ve - x0) / s
        dt = s_next - s
        if s_next == 0:
            x_ve = x_ve + d * dt
        else:
            x_2 = x_ve + d * dt
            d_2 = (x_2 - denoise(x_2 * math.sqrt(ab[i + 1]), _t_vec(ts[i + 1], x))) / s_next
            x_ve = x_ve + (d + d_2) / 2 * dt
    return x_ve


def sample_unipc(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """UniPC (Zhao et al. 2023, arXiv 2302.04867), order 2, B(h) = e^h - 1 ("bh2"), data-prediction form.

    Same updates as diffusers' `UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True)` with
    its defaults `lower_order_final=True`, `final_sigmas_type="zero"`. The predictor UniP-2 is DPM-Solver++(2M)
    (first order on the first and last step). The corrector UniC redoes each step once the next x0 prediction is
    known (made at the uncorrected point, so no extra denoiser call): with weight 1/2 after the first step
    (diffusers' simplified UniC-1), UniC-2 after the others. x = x0 after the last timestep. `generator` is unused.
    """
    ts, ab = _grid(alphas_cumprod, timesteps)
    lam = [_log_snr_half(a) for a in ab]  # -inf where alpha_bar = 0
    alpha, sigma = [math.sqrt(a) for a in ab], [math.sqrt(1 - a) for a in ab]
    x_last, x0_last, x0_last2 = x, x, x  # the last step's start, the x0 predictions one and two points back
    for i, t in enumerate(ts):
        x0 = denoise(x, _t_vec(t, x))
        if callback is not None:
            callback(i, t, x0)
        if i == len(ts) - 1:  # final step to sigma = 0: first order, x = x0 exactly (a corrector would not change it)
            x = x0
            break
        if i > 0:  # UniC: the step from point i - 1 again, with the x0 prediction at point i as a node
            h = lam[i] - lam[i - 1]  # > 0; inf when alpha_bar[i - 1] = 0
            b_h = math.expm1(-h)  # B(h) = h phi_1(h) in data-prediction form; -1 when h = inf
            if i == 1:  # UniC-1 (diffusers fixes its weight at 1/2)
                rho, w = 0.5, 0.0
            else:  # UniC-2: solve [[1, 1], [r, 1]] (rho_0, rho) = (b_1, b_2) with r = -h_last / h
                h_last = lam[i - 1] - lam[i - 2]  # inf when alpha_bar[i - 2] = 0, and then rho_0 = 0
                g_1 = b_h / -h - 1  # the phi-function terms of b_k (diffusers' `h_phi_k`, k = 1, 2)
                g_2 = g_1 / -h - 0.5
                b_1, b_2 = g_1 / b_h, 2 * g_2 / b_h
                rho_0 = (b_1 - b_2) / (1 + h_last / h)
                rho, w = b_1 - rho_0, rho_0 * h / h_last  # w: weight of x0[i - 1] - x0[i - 2]
            d = x0_last + rho * (x0 - x0_last) + w * (x0_last - x0_last2)
            x = (sigma[i] / sigma[i - 1]) * x_last - alpha[i] * b_h * d
        # UniP-2 = DPM-Solver++(2M) to point i + 1; its multistep weight h / (2 h_last) is 0 after alpha_bar = 0
        h = lam[i + 1] - lam[i]
        d = x0 if i == 0 else x0 + (h / (2 * (lam[i] - lam[i - 1]))) * (x0 - x0_last)
        x_last, x0_last, x0_last2 = x, x0, x0_last
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
    return x
