import pytest
import torch

from i2vgen.diffusion import classifier_free_guidance, guidance, rescale_guidance

B, SHAPE = 2, (2, 4, 3, 8, 8)


def g(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class CountingNet:
    """net(x, t, y, image, fps) -> v: depends on every input, per sample; counts calls and batch sizes."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, t, *, y, image, fps, flag):
        assert isinstance(fps, int) and flag is None
        self.batches.append(x.shape[0])
        bias = (y.mean(dim=(1, 2)) + image.sum(dim=1) + t / 1000).reshape(-1, 1, 1, 1, 1)
        return torch.tanh(x) * (1 + bias) + 0.1 * fps * bias


COND = {"y": g(B, 7, 16, seed=1), "image": g(B, 16, seed=2), "fps": 16, "flag": None}
UNCOND = {"y": g(B, 7, 16, seed=3), "image": torch.zeros(B, 16), "fps": 16, "flag": None}
X, T = g(*SHAPE, seed=4), torch.tensor([981.0, 500.0])


@pytest.mark.parametrize("rescale", [0.0, 0.2, 1.0])
def test_batched_equals_sequential(rescale):
    net_b, net_s = CountingNet(), CountingNet()
    out_b = classifier_free_guidance(net_b, COND, UNCOND, 9.0, rescale=rescale, batched=True)(X, T)
    out_s = classifier_free_guidance(net_s, COND, UNCOND, 9.0, rescale=rescale, batched=False)(X, T)
    assert out_b.shape == X.shape
    assert (out_b - out_s).abs().max() < 1e-6
    assert net_b.batches == [2 * B] and net_s.batches == [B, B]


def test_guidance_and_rescale_formula():
    net = CountingNet()
    c, u = net(X, T, **COND), net(X, T, **UNCOND)
    mix = u + 7.5 * (c - u)
    assert torch.allclose(classifier_free_guidance(net, COND, UNCOND, 7.5)(X, T), mix, atol=1e-6)
    # ModelScope: out *= r * std(cond_out) / std(out) + (1 - r), std per sample over all non-batch dims
    expect = torch.stack([mix[i] * (0.2 * c[i].std() / mix[i].std() + 0.8) for i in range(B)])
    assert torch.allclose(rescale_guidance(mix, c, 0.2), expect, atol=1e-6)
    assert torch.allclose(
        classifier_free_guidance(net, COND, UNCOND, 7.5, rescale=0.2)(X, T), expect, atol=1e-6
    )


@pytest.mark.parametrize("batched", [True, False])
def test_scale_one_skips_uncond(batched):
    net = CountingNet()
    out = classifier_free_guidance(net, COND, UNCOND, 1.0, rescale=0.2, batched=batched)(X, T)
    assert net.batches == [B]
    assert torch.equal(out, CountingNet()(X, T, **COND))


def test_kwargs_concatenated_once(monkeypatch):
    calls = []
    real = guidance._concat_kwargs
    monkeypatch.setattr(guidance, "_concat_kwargs", lambda u, c: calls.append(1) or real(u, c))
    guided = classifier_free_guidance(CountingNet(), COND, UNCOND, 9.0)
    for _ in range(3):
        guided(X, T)
    assert calls == [1]


def test_bad_kwargs_raise():
    with pytest.raises(ValueError, match="same keys"):
        classifier_free_guidance(CountingNet(), COND, {k: v for k, v in UNCOND.items() if k != "image"}, 9.0)
    with pytest.raises(ValueError, match="fps"):
        classifier_free_guidance(CountingNet(), COND, {**UNCOND, "fps": 8}, 9.0)
    with pytest.raises(ValueError, match="rescale"):
        classifier_free_guidance(CountingNet(), COND, UNCOND, 9.0, rescale=1.5)
