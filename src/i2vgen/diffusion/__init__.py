"""Diffusion layer: schedules, v-prediction denoiser, samplers, the sampler registry, guidance and losses.

Imports nothing from `i2vgen.models` (style guide §3 item 1). Names are imported lazily on first use, so that the
torch-free modules here (`sampler_table`) can be imported without torch: `from i2vgen.diffusion import X` works as
usual.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "i2vgen.diffusion.denoiser": ("Denoiser", "Net", "append_dims", "v_target", "v_to_eps", "v_to_x0",
                                  "vpred_denoiser"),
    "i2vgen.diffusion.guidance": ("classifier_free_guidance", "guidance_min_t", "rescale_guidance"),
    "i2vgen.diffusion.losses": ("offset_noise_like", "q_sample", "v_loss"),
    "i2vgen.diffusion.registry": ("SAMPLERS", "SamplerSpec", "get_sampler"),
    "i2vgen.diffusion.sampler_table": ("sampler_names",),
    "i2vgen.diffusion.samplers": ("Callback", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_heun",
                                  "sample_unipc"),
    "i2vgen.diffusion.schedule": ("alpha_bar_at", "base_alphas_cumprod", "cosine_alphas_cumprod",
                                  "logsnr_cosine_interp_alphas_cumprod", "make_timesteps", "refiner_alphas_cumprod",
                                  "refiner_timesteps", "rescale_zero_terminal_snr"),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_LAZY)  # noqa: PLE0605 - built from _EXPORTS, the one list of the names


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'i2vgen.diffusion' has no attribute {name!r}")
