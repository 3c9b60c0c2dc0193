"""The base-stage UNet: parity with diffusers' I2VGenXLUNet, the real preset's size, conditions and errors."""

from __future__ import annotations

import pytest
import torch
from helpers import diffusers_kwargs, image_latents_with_positions, randomize_

from i2vgen.errors import InputError
from i2vgen.models.configs import UNET_PRESETS, UNetConfig
from i2vgen.models.unet import I2VGenUNet

diffusers = pytest.importorskip("diffusers")

CFG_A = UNetConfig(block_out_channels=(16, 32), attention_levels=(True, False), layers_per_block=1,
                   norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8, concat_scale=1.0)
CFG_B = UNetConfig(block_out_channels=(16, 32, 32), attention_levels=(True, True, False), layers_per_block=2,
                   norm_num_groups=4, cross_attention_dim=24, attention_head_dim=8, concat_scale=1.0)


def _inputs(cfg: UNetConfig, b: int, f: int, h: int, w: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(b, 4, f, h, w, generator=g),
        timestep=torch.tensor([981, 21, 500][:b]),
        encoder_hidden_states=torch.randn(b, 77, cfg.cross_attention_dim, generator=g),
        image_embeds=torch.randn(b, cfg.cross_attention_dim, generator=g),
        first_frame_latent=torch.randn(b, 4, h, w, generator=g),
        fps=torch.tensor([16, 8, 4][:b]),
    )


def _pair(cfg: UNetConfig, seed: int = 1) -> tuple[torch.nn.Module, I2VGenUNet]:
    ref = randomize_(diffusers.I2VGenXLUNet(**diffusers_kwargs(cfg)), seed).eval()
    ours = I2VGenUNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _ref_forward(ref: torch.nn.Module, x: dict) -> torch.Tensor:
    f = x["sample"].shape[2]
    return ref(x["sample"], x["timestep"], fps=x["fps"],
               image_latents=image_latents_with_positions(x["first_frame_latent"], f),
               image_embeddings=x["image_embeds"], encoder_hidden_states=x["encoder_hidden_states"]).sample


@pytest.mark.parametrize(
    "cfg,b,f,h,w",
    [(CFG_A, 2, 8, 8, 8), (CFG_A, 1, 1, 8, 8), (CFG_B, 2, 8, 6, 10), (CFG_B, 2, 1, 12, 4), (CFG_B, 1, 5, 7, 5)],
    ids=["A-f8-square", "A-f1", "B-f8-nonsquare", "B-f1-portrait", "B-odd-size"],
)
@torch.no_grad()
def test_parity_with_diffusers(cfg, b, f, h, w):
    ref, ours = _pair(cfg)
    x = _inputs(cfg, b, f, h, w)
    expected = _ref_forward(ref, x)
    got = ours(**x)
    assert got.shape == (b, 4, f, h, w)
    assert expected.abs().mean() > 0.1  # a real signal, not a zero output
    assert (got - expected).abs().max().item() <= 1e-5


@torch.no_grad()
def test_prepared_condition_is_reused_exactly():
    _, ours = _pair(CFG_B)
    x = _inputs(CFG_B, 2, 4, 8, 8)
    cond = ours.prepare_condition(x["encoder_hidden_states"], x["image_embeds"], x["first_frame_latent"], 4)
    assert cond.context.shape == (2, 77 + 64 + 4, CFG_B.cross_attention_dim)
    direct = ours(**x)
    reused = ours(x["sample"], x["timestep"], condition=cond, fps=x["fps"])
    assert torch.equal(direct, reused)


@torch.no_grad()
def test_concat_scale_two_doubles_the_concat_branch():
    _, ours = _pair(CFG_A)
    x = _inputs(CFG_A, 1, 4, 8, 8)
    c1 = ours.prepare_condition(x["encoder_hidden_states"], x["image_embeds"], x["first_frame_latent"], 4)
    ours2 = I2VGenUNet(CFG_A.replace(concat_scale=2.0)).eval()
    ours2.load_state_dict(ours.state_dict())
    c2 = ours2.prepare_condition(x["encoder_hidden_states"], x["image_embeds"], x["first_frame_latent"], 4)
    torch.testing.assert_close(c2.concat, 2 * c1.concat)
    assert not torch.allclose(ours(**x), ours2(**x))


@torch.no_grad()
def test_scalar_timestep_and_int_fps_broadcast():
    _, ours = _pair(CFG_A)
    x = _inputs(CFG_A, 2, 2, 8, 8)
    x["timestep"], x["fps"] = torch.tensor([300, 300]), torch.tensor([8, 8])
    a = ours(**x)
    x["timestep"], x["fps"] = 300, 8
    torch.testing.assert_close(ours(**x), a)


def test_gradient_checkpointing_gives_same_gradients():
    _, ours = _pair(CFG_A)
    x = _inputs(CFG_A, 1, 3, 8, 8)
    ours.train()
    grads = []
    for ckpt in (False, True):
        ours.zero_grad()
        ours.gradient_checkpointing = ckpt
        torch.manual_seed(0)  # dropout draws
        ours(**x).square().mean().backward()
        grads.append(ours.conv_in.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@torch.no_grad()
def test_bf16_runs_close_to_fp32():
    _, ours = _pair(CFG_A)
    x = _inputs(CFG_A, 1, 2, 8, 8)
    ref = ours(**x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ours(**x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: x.update(sample=x["sample"][:, :3]), "sample has shape"),
        (lambda x: x.update(sample=x["sample"][0]), "sample has shape"),
        (lambda x: x.update(first_frame_latent=x["first_frame_latent"][:1]), "encoder_hidden_states|first_frame"),
        (lambda x: x.update(first_frame_latent=x["first_frame_latent"][..., :4]), "does not fit"),
        (lambda x: x.update(encoder_hidden_states=x["encoder_hidden_states"][..., :5]), "encoder_hidden_states"),
        (lambda x: x.update(image_embeds=x["image_embeds"][None]), "image_embeds"),
        (lambda x: x.update(timestep=torch.zeros(3)), "scalar"),
    ],
)
def test_bad_shapes_give_clear_errors(change, match):
    ours = I2VGenUNet(CFG_A).eval()
    x = _inputs(CFG_A, 2, 2, 8, 8)
    change(x)
    with pytest.raises(InputError, match=match):
        ours(**x)


def test_real_preset_size_and_keys_match_diffusers():
    """Spec 2.4/2.5: 1,420,469,224 parameters; keys and shapes one-to-one with diffusers' real config."""
    cfg = UNET_PRESETS["i2vgen-xl"]
    with torch.device("meta"):
        ours = I2VGenUNet(cfg)
        ref = diffusers.I2VGenXLUNet(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
            layers_per_block=2, norm_num_groups=32, cross_attention_dim=1024, num_attention_heads=64)
    assert sum(p.numel() for p in ours.parameters()) == 1_420_469_224
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert len(a) == 1511


def test_group_norm_stays_accurate_on_channels_last_inputs():
    """PyTorch's channels-last CPU GroupNorm loses ~1e-4 to cancellation on inputs with a large mean; ours subtracts
    the group means first (models/blocks.py)."""
    from i2vgen.models.blocks import GroupNorm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 8, 32, 32, generator=g) * 2 + 5
    norm = GroupNorm(32, 64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=g))
        norm.bias.copy_(torch.randn(64, generator=g))
        ref = torch.nn.functional.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), norm.eps)
        out = norm(x.contiguous(memory_format=torch.channels_last_3d))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert (out.double() - ref).abs().max() < 3e-5
    torch.testing.assert_close(norm(x), out, atol=3e-5, rtol=0)  # contiguous inputs take the native kernel
