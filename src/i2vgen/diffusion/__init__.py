"""Diffusion layer: schedules, v-prediction denoiser, samplers, guidance and losses.

Imports nothing from `i2vgen.models` (style guide §3 item 1).
"""

from i2vgen.diffusion.denoiser import Denoiser, Net, append_dims, v_target, v_to_eps, v_to_x0, vpred_denoiser
from i2vgen.diffusion.guidance import classifier_free_guidance, rescale_guidance
from i2vgen.diffusion.losses import offset_noise_like, q_sample, v_loss
from i2vgen.diffusion.samplers import Callback, sample_ddim, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_heun
from i2vgen.diffusion.schedule import (
    alpha_bar_at,
    base_alphas_cumprod,
    cosine_alphas_cumprod,
    logsnr_cosine_interp_alphas_cumprod,
    make_timesteps,
    refiner_alphas_cumprod,
    refiner_timesteps,
    rescale_zero_terminal_snr,
)

__all__ = [
    "Callback",
    "Denoiser",
    "Net",
    "alpha_bar_at",
    "append_dims",
    "base_alphas_cumprod",
    "classifier_free_guidance",
    "cosine_alphas_cumprod",
    "logsnr_cosine_interp_alphas_cumprod",
    "make_timesteps",
    "offset_noise_like",
    "q_sample",
    "refiner_alphas_cumprod",
    "refiner_timesteps",
    "rescale_guidance",
    "rescale_zero_terminal_snr",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_heun",
    "v_loss",
    "v_target",
    "v_to_eps",
    "v_to_x0",
    "vpred_denoiser",
]
