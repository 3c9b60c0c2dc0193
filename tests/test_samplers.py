import math

import pytest
import torch

from i2vgen.diffusion import (
    base_alphas_cumprod,
    make_timesteps,
    refiner_alphas_cumprod,
    refiner_timesteps,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_heun,
    sample_unipc,
    vpred_denoiser,
)

SHAPE = (2, 4, 3, 8, 8)  # (B, C, F, H, W)
DIFFUSERS_CFG = {
    "beta_schedule": "squaredcos_cap_v2",
    "rescale_betas_zero_snr": True,
    "prediction_type": "v_prediction",
}


def fake_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed smooth v(x, t), standing in for the UNet."""
    tt = (t.float() / 1000).reshape(-1, *[1] * (x.ndim - 1))
    return 0.8 * torch.tanh(x) * torch.cos(3 * tt) + 0.3 * torch.sin(5 * tt) - 0.2 * x * tt


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- analytic denoisers -------------------------------------------------------------------------------------------


def gaussian_denoiser(mu: float, s: float, acp: torch.Tensor):
    """E[x0 | x_t] for x0 ~ N(mu, s^2) elementwise."""
    from i2vgen.diffusion import alpha_bar_at

    def denoise(x, t):
        a = alpha_bar_at(acp, t.double()).to(x).reshape(-1, *[1] * (x.ndim - 1))
        return mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x - a.sqrt() * mu)

    return denoise


DETERMINISTIC = {
    "ddim": lambda *a, **k: sample_ddim(*a, set_alpha_to_one=True, **k),
    "dpmpp_2m": sample_dpmpp_2m,
    "heun": sample_heun,
    "unipc": sample_unipc,
}


@pytest.mark.parametrize("name", [*DETERMINISTIC, "dpmpp_2m_sde", "ddim_eta1"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])  # trailing starts at t = 999, alpha_bar = 0
def test_ideal_denoiser_returns_x0(name, spacing):
    acp = base_alphas_cumprod()
    x0, z = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    ts = make_timesteps(10, spacing)
    a_t = acp[int(ts[0])].item()
    x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * z
    g = torch.Generator().manual_seed(3)
    if name == "dpmpp_2m_sde":
        out = sample_dpmpp_2m_sde(lambda x, t: x0, x_t, acp, ts, generator=g)
    elif name == "ddim_eta1":
        out = sample_ddim(lambda x, t: x0, x_t, acp, ts, eta=1.0, set_alpha_to_one=True, generator=g)
    else:
        out = DETERMINISTIC[name](lambda x, t: x0, x_t, acp, ts)
    assert torch.isfinite(out).all()
    assert (out - x0).abs().max() < 1e-5


def test_ddim_default_stops_at_alpha_bar_0():
    """VGen quirk: the last step goes to alpha_bar[0] = 0.99996, keeping sqrt(1 - 0.99996) of the initial noise."""
    acp = base_alphas_cumprod()
    x0, z = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    a_t = acp[981].item()
    out = sample_ddim(lambda x, t: x0, math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * z, acp, make_timesteps(50))
    a0 = acp[0].item()
    assert (out - (math.sqrt(a0) * x0 + math.sqrt(1 - a0) * z)).abs().max() < 1e-5


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_gaussian_data_ode_converges(name):
    """For Gaussian data the probability-flow ODE maps z to mu + s z exactly; the error must shrink with the steps."""
    mu, s = 0.3, 0.5
    acp = base_alphas_cumprod()
    z = randn(*SHAPE, seed=4)
    errors = []
    for steps in (10, 40):
        ts = make_timesteps(steps, "trailing")  # from t = 999, alpha_bar = 0: x_T = z
        out = DETERMINISTIC[name](gaussian_denoiser(mu, s, acp), z, acp, ts)
        errors.append((out - (mu + s * z)).abs().max().item())
    # DDIM is first order (the error halves with twice the steps); DPM-Solver++(2M), Heun and UniPC are second order
    limit = {"ddim": 0.1, "dpmpp_2m": 5e-3, "heun": 1e-2, "unipc": 2e-3}[name]
    assert errors[1] < errors[0] / 3 and errors[1] < limit, (
        errors
    )


def test_sde_gaussian_data_distribution():
    mu, s = 0.3, 0.5
    acp = base_alphas_cumprod()
    z = randn(8, 4, 4, 16, 16, seed=5)  # 32768 iid scalars: standard error of the mean 0.0028
    # the SDE's discretisation bias on the std is ~3 % at 25 steps, 0.6 % at 100
    out = sample_dpmpp_2m_sde(
        gaussian_denoiser(mu, s, acp),
        z,
        acp,
        make_timesteps(100, "trailing"),
        generator=torch.Generator().manual_seed(6),
    )
    assert abs(out.mean().item() - mu) < 0.015
    assert abs(out.std().item() - s) < 0.015
    assert (out - (mu + s * z)).abs().mean() > 0.1  # it is stochastic: not the ODE solution


def test_callback_and_call_counts():
    acp = base_alphas_cumprod()
    ts = refiner_timesteps(50, discard_penultimate=False)
    calls, seen = [], []

    def denoise(x, t):
        calls.append(t)
        assert t.shape == (SHAPE[0],) and t.dtype == torch.float32
        return torch.zeros_like(x)

    sample_heun(denoise, randn(*SHAPE), acp, ts, callback=lambda i, t, x0: seen.append((i, t)))
    assert (
        len(calls) == 2 * 50 - 1
    )  # Heun: 2 evaluations per step, Euler on the last one (ModelScope: 99 NFE)
    assert seen == list(enumerate(ts.tolist()))
    calls.clear()
    sample_dpmpp_2m_sde(denoise, randn(*SHAPE), acp, refiner_timesteps(30), generator=torch.Generator())
    assert len(calls) == 30


# ---- parity with diffusers ------------------------------------------------------------------------------------------


def run_diffusers(sched, x, generator=None, **step_kwargs):
    for t in sched.timesteps:
        x = sched.step(
            fake_net(x, t.expand(x.shape[0])), t, x, generator=generator, **step_kwargs
        ).prev_sample
    return x


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(spacing, set_alpha_to_one, eta):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        **DIFFUSERS_CFG,
        clip_sample=False,
        set_alpha_to_one=set_alpha_to_one,
        timestep_spacing=spacing,
        steps_offset=1 if spacing == "leading" else 0,
    )
    sched.set_timesteps(50)
    x = randn(*SHAPE)
    ref = run_diffusers(sched, x, torch.Generator().manual_seed(1), eta=eta)
    acp = sched.alphas_cumprod  # diffusers' float32 table (alpha_bar[999] = 0 exactly here)
    ours = sample_ddim(
        vpred_denoiser(fake_net, acp),
        x,
        acp,
        sched.timesteps,
        eta=eta,
        set_alpha_to_one=set_alpha_to_one,
        generator=torch.Generator().manual_seed(1),
    )
    assert (ours - ref).abs().max() < 1e-5
    # our float64 schedule and grid: differences come from diffusers' float32 schedule only
    ours64 = sample_ddim(
        vpred_denoiser(fake_net, base_alphas_cumprod()),
        x,
        base_alphas_cumprod(),
        make_timesteps(50, spacing),
        eta=eta,
        set_alpha_to_one=set_alpha_to_one,
        generator=torch.Generator().manual_seed(1),
    )
    assert (ours64 - ref).abs().max() < 1e-4


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # numpy 2 `__array__` notice from diffusers' set_timesteps
@pytest.mark.parametrize("algorithm", ["dpmsolver++", "sde-dpmsolver++"])
@pytest.mark.parametrize("grid", ["vgen", "trailing"])
def test_dpmpp_2m_matches_diffusers(algorithm, grid):
    """Same generator for both: diffusers draws one float32 N(0, 1) of x's shape per step, as we do."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        **DIFFUSERS_CFG, algorithm_type=algorithm, solver_order=2, timestep_spacing="trailing"
    )
    if grid == "vgen":
        sched.set_timesteps(timesteps=make_timesteps(50).long().tolist())  # 981, ..., 1
    else:
        sched.set_timesteps(25)  # 999, 959, ..., 39
    x = randn(*SHAPE)
    ref = run_diffusers(sched, x, torch.Generator().manual_seed(1))
    # diffusers clamps alpha_bar[999] to 2**-24; feed that table so the comparison isolates the solver
    acp = sched.alphas_cumprod
    sampler = sample_dpmpp_2m if algorithm == "dpmsolver++" else sample_dpmpp_2m_sde
    ours = sampler(
        vpred_denoiser(fake_net, acp), x, acp, sched.timesteps, generator=torch.Generator().manual_seed(1)
    )
    assert (ours - ref).abs().max() < 1e-5
    # with the exact alpha_bar[999] = 0 (no clamp) the result stays finite and close
    exact = sampler(
        vpred_denoiser(fake_net, base_alphas_cumprod()),
        x,
        base_alphas_cumprod(),
        sched.timesteps,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.isfinite(exact).all() and (exact - ref).abs().max() < 1e-2


def random_conv_net(seed: int = 0):
    """v(x, t) from a fixed random 3x3x3 convolution over (B, 4, F, H, W), modulated in t: a denoiser with no
    structure a sampler could exploit."""
    g = torch.Generator().manual_seed(seed)
    weight, bias = 0.15 * torch.randn(4, 4, 3, 3, 3, generator=g), 0.1 * torch.randn(4, generator=g)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.float() / 1000).reshape(-1, 1, 1, 1, 1)
        v = torch.nn.functional.conv3d(x, weight.to(x), bias.to(x), padding=1)
        return v * torch.cos(3 * tt) + 0.3 * torch.sin(5 * tt) - 0.2 * x * tt

    return net


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 `__array__` notice from diffusers
@pytest.mark.parametrize(("spacing", "steps"), [("trailing", 25), ("leading", 25), ("trailing", 4)])
def test_unipc_matches_diffusers(spacing, steps):
    """diffusers' defaults (bh2, predict_x0, lower_order_final, final_sigmas_type="zero") at solver_order=2; trailing
    starts at t = 999, where diffusers clamps alpha_bar to 2**-24: feed its table so the comparison isolates the
    solver (max difference 2.6e-6 in float32)."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(
        **DIFFUSERS_CFG, solver_order=2, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0
    )
    sched.set_timesteps(steps)
    net, x = random_conv_net(), randn(*SHAPE)
    ref = x
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(net(ref, t.expand(x.shape[0])), t, ref).prev_sample
        acp = sched.alphas_cumprod
        ours = sample_unipc(vpred_denoiser(net, acp), x, acp, sched.timesteps)
        # with the exact alpha_bar[999] = 0 the result stays finite and close (the clamp moves the first steps)
        exact = sample_unipc(vpred_denoiser(net, base_alphas_cumprod()), x, base_alphas_cumprod(), sched.timesteps)
    assert (ours - ref).abs().max() < 1e-5
    if steps == 25:
        assert torch.isfinite(exact).all() and (exact - ref).abs().max() < 1e-2


# ---- parity with ModelScope's refiner solvers (re-derived in k-diffusion's VE form) ----------------------------------


def modelscope_refiner(net, noise, grid, solver, generator=None):
    """ModelScope `GaussianDiffusion_SDEdit.sample` + `solvers_sdedit.py`, s_churn = 0, eta = 1, midpoint, with the
    Brownian-tree noise replaced by per-step N(0, 1) draws from `generator`. The network gets the rounded t, and x0 uses
    alpha/sigma at that rounded t."""
    sig_vp = (1 - refiner_alphas_cumprod()).sqrt()
    alphas = (1 - sig_vp**2).sqrt()
    log_s = torch.log(sig_vp / alphas)
    t = grid.double()
    w = t - t.floor()
    sigmas = ((1 - w) * log_s[t.floor().long()] + w * log_s[t.ceil().long()]).exp().tolist() + [0.0]

    def model(x, i):  # x is already multiplied by c_in
        tr = torch.full((x.shape[0],), float(round(grid[i].item())))
        a, s = alphas[int(tr[0])].item(), sig_vp[int(tr[0])].item()
        return a * x - s * net(x, tr)

    c_in = [1 / math.sqrt(s**2 + 1) for s in sigmas]
    x = noise * sigmas[0]
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x * c_in[i], i)
        if solver == "heun":
            d = (x - denoised) / sigmas[i]
            dt = sigmas[i + 1] - sigmas[i]
            if sigmas[i + 1] == 0:
                x = x + d * dt
            else:
                x2 = x + d * dt
                d2 = (x2 - model(x2 * c_in[i + 1], i + 1)) / sigmas[i + 1]
                x = x + (d + d2) / 2 * dt
            continue
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sigmas[i]) - math.log(sigmas[i + 1])
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h) * x - math.expm1(-2 * h) * denoised
            if old is not None:
                x = x - 0.5 * math.expm1(-2 * h) * (h / h_last) * (denoised - old)
            z = torch.randn(x.shape, generator=generator, dtype=torch.float32)
            x = x + z * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h))
        old, h_last = denoised, h
    return x


@pytest.mark.parametrize("solver", ["dpmpp_2m_sde", "heun"])
def test_refiner_solvers_match_modelscope(solver):
    acp = refiner_alphas_cumprod()
    x0, eps = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    a = acp[599].item()
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps  # ModelScope `diffuse` at t = 599
    grid = (
        refiner_timesteps(30)
        if solver == "dpmpp_2m_sde"
        else refiner_timesteps(50, discard_penultimate=False)
    )
    ref = modelscope_refiner(fake_net, x_t, grid, solver, torch.Generator().manual_seed(1))
    denoise = vpred_denoiser(fake_net, acp, round_t=True)
    x_in = math.sqrt(1 - a) * x_t  # ModelScope's start quirk (spec §1.4 item 9)
    if solver == "heun":
        ours = sample_heun(denoise, x_in, acp, grid)
    else:
        ours = sample_dpmpp_2m_sde(denoise, x_in, acp, grid, generator=torch.Generator().manual_seed(1))
    assert (ours - ref).abs().max() < 1e-5


def test_samplers_keep_dtype_and_reject_bad_grids():
    acp = base_alphas_cumprod()
    x = randn(*SHAPE).half()
    out = sample_dpmpp_2m(lambda x, t: torch.zeros_like(x), x, acp, make_timesteps(5))
    assert out.dtype == torch.float16
    with pytest.raises(ValueError):
        sample_ddim(lambda x, t: x, x, acp, torch.tensor([1.0, 981.0]))
