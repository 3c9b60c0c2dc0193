import math

import pytest
import torch

from i2vgen.diffusion import (
    base_alphas_cumprod,
    offset_noise_like,
    q_sample,
    refiner_alphas_cumprod,
    v_loss,
    v_target,
    v_to_eps,
    v_to_x0,
)

SHAPE = (3, 4, 5, 6, 6)  # (B, C, F, H, W)


def randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("a", [0.0, 7.84e-4, 0.5, 0.99996])
def test_v_conversions_round_trip(a):
    x0, eps = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    v = v_target(x0, eps, a)
    assert torch.allclose(v_to_x0(x_t, v, a), x0, atol=1e-5)
    assert torch.allclose(v_to_eps(x_t, v, a), eps, atol=1e-5)
    per_sample = torch.full((SHAPE[0],), a, dtype=torch.float64)  # (B,) coefficients broadcast the same way
    assert torch.allclose(v_to_x0(x_t, v, per_sample), x0, atol=1e-5)


def oracle(x0):
    """Knows the clean data: v = (sqrt(a) x_t - x0) / sqrt(1 - a), without seeing the noise."""
    acp = base_alphas_cumprod()

    def net(x_t, t):
        a = acp[t.long()].float().reshape(-1, 1, 1, 1, 1)
        return (a.sqrt() * x_t - x0) / (1 - a).sqrt()

    return net


def test_loss_zero_for_oracle():
    x0 = randn(*SHAPE, seed=1)
    loss, info = v_loss(oracle(x0), x0, base_alphas_cumprod(), generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8
    assert set(info) == {"t", "noise", "x_t", "target", "loss_per_sample"}


def test_loss_value_and_given_t():
    x0 = randn(*SHAPE, seed=1)
    t = torch.tensor([0, 500, 999])
    loss, info = v_loss(
        lambda x, t: torch.zeros_like(x),
        x0,
        base_alphas_cumprod(),
        t=t,
        offset_noise=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(info["t"], t)
    assert info["x_t"][2].equal(info["noise"][2])  # alpha_bar[999] = 0: pure noise
    # plain MSE: mean over all non-batch dims, then over the batch
    assert torch.allclose(loss, info["target"].pow(2).flatten(1).mean(1).mean(), rtol=1e-6)
    assert torch.allclose(info["target"][0], v_target(x0[0], info["noise"][0], base_alphas_cumprod()[0]))


def test_t_and_noise_reproducible():
    x0, acp = randn(*SHAPE, seed=1), base_alphas_cumprod()
    net = lambda x, t: torch.zeros_like(x)
    runs = [v_loss(net, x0, acp, generator=torch.Generator().manual_seed(s))[1] for s in (7, 7, 8)]
    assert torch.equal(runs[0]["t"], runs[1]["t"]) and torch.equal(runs[0]["noise"], runs[1]["noise"])
    assert not torch.equal(runs[0]["noise"], runs[2]["noise"])
    assert runs[0]["t"].dtype == torch.int64 and 0 <= runs[0]["t"].min() and runs[0]["t"].max() <= 999
    # documented draw order: t, then eps, then the (B, C, F, 1, 1) offsets
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, 1000, (SHAPE[0],), generator=g)
    eps = torch.randn(SHAPE, generator=g) + 0.1 * torch.randn(SHAPE[:3] + (1, 1), generator=g)
    assert torch.equal(t, runs[0]["t"]) and torch.equal(eps, runs[0]["noise"])


def test_offset_noise_is_per_frame_and_channel():
    x = torch.zeros(2, 3, 4, 64, 64)
    eps = offset_noise_like(x, 10.0, torch.Generator().manual_seed(0))
    frame_means = eps.mean(dim=(-1, -2))  # (B, C, F): dominated by the shared offset
    assert frame_means.abs().mean() > 3.0
    assert (eps - eps.mean(dim=(-1, -2), keepdim=True)).std().item() == pytest.approx(1.0, abs=0.02)


def test_q_sample():
    x0, noise = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    acp = refiner_alphas_cumprod()
    x_t = q_sample(x0, torch.full((SHAPE[0],), 599), acp, noise)  # the refiner's SDEdit start
    assert torch.allclose(x_t, 0.23347 * x0 + 0.97236 * noise, atol=1e-4)
    assert torch.equal(q_sample(x0, torch.full((SHAPE[0],), 999), base_alphas_cumprod(), noise), noise)
