import math
import subprocess
import sys

import pytest
import torch

from i2vgen.diffusion.schedule import (
    alpha_bar_at,
    base_alphas_cumprod,
    make_timesteps,
    refiner_alphas_cumprod,
    refiner_timesteps,
)


def test_base_schedule_spec_values():
    a = base_alphas_cumprod()
    assert a.dtype == torch.float64 and a.shape == (1000,)
    assert a[0].item() == pytest.approx(0.99996, abs=5e-6)
    assert a[500].item() == pytest.approx(0.49226, abs=5e-6)
    assert a[981].item() == pytest.approx(7.84e-4, abs=5e-7)
    assert a[999].item() == 0.0
    assert (a[1:] < a[:-1]).all()


def test_base_schedule_matches_diffusers():
    from diffusers import DDIMScheduler
    from diffusers.schedulers.scheduling_ddim import betas_for_alpha_bar, rescale_zero_terminal_snr

    a = base_alphas_cumprod()
    # diffusers' own functions, evaluated in float64: same math
    betas = rescale_zero_terminal_snr(betas_for_alpha_bar(1000).double())
    assert (torch.cumprod(1 - betas, 0) - a).abs().max() < 1e-7
    # the scheduler's table is computed in float32, whose cumprod drifts by up to ~8e-7
    sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True)
    assert (sched.alphas_cumprod.double() - a).abs().max() < 1e-6


def _modelscope_refiner_sigmas() -> torch.Tensor:
    """ModelScope `noise_schedule('logsnr_cosine_interp', 1000, zero_terminal_snr=True, 2, 4)`, re-derived (float32)."""
    n, lo, hi = 1000, -15, 15
    t = torch.linspace(1, 0, n)
    t_min, t_max = math.atan(math.exp(-0.5 * lo)), math.atan(math.exp(-0.5 * hi))
    base = -2 * torch.log(torch.tan(t_min + t * (t_max - t_min)))
    logsnr = t * (base + 2 * math.log(1 / 2)) + (1 - t) * (base + 2 * math.log(1 / 4))
    sigmas = torch.sqrt(torch.sigmoid(-logsnr))
    scale = (1.0 - sigmas.min()) / (sigmas.max() - sigmas.min())
    return sigmas.min() + scale * (sigmas - sigmas.min())


def test_refiner_schedule():
    a = refiner_alphas_cumprod()
    assert a.dtype == torch.float64 and a.shape == (1000,)
    assert a[999].item() == 0.0 and (a[1:] < a[:-1]).all()
    assert (1 - a[599]).sqrt().item() == pytest.approx(0.9724, abs=5e-5)  # spec §1.4 item 5
    assert a[599].sqrt().item() == pytest.approx(0.2335, abs=5e-5)
    sigmas = _modelscope_refiner_sigmas()
    assert ((1 - a).sqrt() - sigmas.double()).abs().max() < 1e-6


def test_leading_grid_is_vgen():
    ts = make_timesteps(50)
    assert ts.tolist() == list(range(981, 0, -20))
    vgen = (1 + torch.arange(0, 1000, 1000 // 50)).flip(0)
    assert torch.equal(ts.long(), vgen)


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_grids_match_diffusers_ddim(steps):
    from diffusers import DDIMScheduler

    for spacing in ("leading", "trailing", "linspace"):
        sched = DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
        sched.set_timesteps(steps)
        ours = make_timesteps(steps, spacing)
        ours = ours.round() if spacing == "linspace" else ours  # diffusers rounds linspace
        assert ours.tolist() == sched.timesteps.tolist(), spacing


def test_refiner_grid():
    trailing31 = make_timesteps(31, "trailing", t_max=599)
    ms = torch.arange(599, -1, -(600 / 31))  # ModelScope's expression (float32)
    assert len(trailing31) == 31 and (trailing31 - ms.double()).abs().max() < 1e-4
    assert [round(v, 1) for v in trailing31[[0, 1, -2, -1]].tolist()] == [599.0, 579.6, 37.7, 18.4]
    dpm = refiner_timesteps(30)  # penultimate sigma (t = 18.4) discarded
    assert torch.equal(dpm, trailing31[:-1])
    heun = refiner_timesteps(50, discard_penultimate=False)
    assert heun.tolist() == list(range(599, 0, -12))


def test_alpha_bar_at():
    a = base_alphas_cumprod()
    ints = torch.arange(1000, dtype=torch.float64)
    assert torch.equal(alpha_bar_at(a, ints), a)  # exact at integers, including alpha_bar = 0 at 999
    # fractional t: log(sigma) linear in t, as ModelScope `_t_to_sigma`
    t = torch.tensor([0.25, 500.5, 579.6451612903226, 997.9])
    log_s = 0.5 * torch.log((1 - a) / a)
    w = t.double() - t.floor().double()
    expect = (1 - w) * log_s[t.floor().long()] + w * log_s[t.ceil().long()]
    assert torch.allclose(alpha_bar_at(a, t), 1 / (1 + torch.exp(2 * expect)), rtol=1e-12, atol=0)
    assert alpha_bar_at(a, 998.5).item() == 0.0  # sigma = inf past 998
    with pytest.raises(ValueError):
        alpha_bar_at(a, 999.5)


def test_diffusion_imports_no_models():
    code = (
        "import sys, i2vgen.diffusion, i2vgen.diffusion.samplers;"
        "bad = [m for m in sys.modules if m.startswith('i2vgen.models')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
