"""The refinement-stage UNet: parity with diffusers' UNet3DConditionModel, the real preset's size, resampling."""

from __future__ import annotations

import pytest
import torch
from helpers import diffusers_kwargs, randomize_

from i2vgen.errors import InputError
from i2vgen.models.configs import UNET_PRESETS
from i2vgen.models.refiner import I2VGenRefinerUNet

diffusers = pytest.importorskip("diffusers")

TINY = UNET_PRESETS["tiny-refiner"]
TINY3 = TINY.replace(block_out_channels=(16, 32, 32), attention_levels=(True, True, False), layers_per_block=2,
                     cross_attention_dim=24)


def _pair(cfg, seed=3):
    ref = randomize_(diffusers.UNet3DConditionModel(**diffusers_kwargs(cfg)), seed).eval()
    ours = I2VGenRefinerUNet(cfg.replace(refiner_resampling=False)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("cfg,shape", [(TINY, (2, 4, 8, 8, 8)), (TINY3, (1, 4, 3, 8, 12))], ids=["tiny", "3-levels"])
@torch.no_grad()
def test_parity_with_diffusers_unet3d_standard_padding(cfg, shape):
    ref, ours = _pair(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    ehs = torch.randn(shape[0], 77, cfg.cross_attention_dim, generator=g)
    t = torch.tensor([599, 18][: shape[0]])
    expected = ref(x, t, encoder_hidden_states=ehs).sample
    got = ours(x, t, encoder_hidden_states=ehs)
    assert expected.abs().mean() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5


def test_real_refiner_preset_has_the_checkpoint_size():
    with torch.device("meta"):
        ours = I2VGenRefinerUNet(UNET_PRESETS["ms-vid2vid-xl"])
    assert sum(p.numel() for p in ours.parameters()) == 1_411_233_860


@torch.no_grad()
def test_refiner_resampling_passes_720p_latent_heights():
    """Spec 2.6: with (2,1)-padded down-sampling and row-cropping up-sampling, 90 rows go 90->46->24->13 and back."""
    cfg = UNET_PRESETS["tiny-refiner"].replace(block_out_channels=(8, 8, 8, 8), attention_levels=(False,) * 4,
                                                norm_num_groups=4)
    net = randomize_(I2VGenRefinerUNet(cfg)).eval()
    sizes = []
    hook = [lvl.downsamplers[0].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-2]))
            for lvl in net.down_blocks if hasattr(lvl, "downsamplers")]
    out = net(torch.randn(1, 4, 2, 90, 16), 599, encoder_hidden_states=torch.randn(1, 77, cfg.cross_attention_dim))
    for h in hook:
        h.remove()
    assert sizes == [46, 24, 13]
    assert out.shape == (1, 4, 2, 90, 16)
    # standard padding would not restore 90 rows through x2 up-sampling alone
    with pytest.raises(InputError, match="height"):
        net(torch.randn(1, 4, 2, 91, 16), 599, encoder_hidden_states=torch.randn(1, 77, cfg.cross_attention_dim))
    with pytest.raises(InputError, match="width"):
        net(torch.randn(1, 4, 2, 90, 12), 599, encoder_hidden_states=torch.randn(1, 77, cfg.cross_attention_dim))
