"""Key maps between the original UNet layouts (VGen, ModelScope) and diffusers' (spec §2.4, §5.3).

The real configs are built on the meta device (keys and shapes, no memory); tiny random models check values.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import I2VGenXLUNet, UNet3DConditionModel

from i2vgen.errors import CheckpointError
from i2vgen.models.convert import (
    I2VGEN_XL_DIFFUSERS_CONFIG,
    MS_VID2VID_XL_DIFFUSERS_CONFIG,
    detect_unet_format,
    diffusers_to_vgen,
    diffusers_unet3d_to_modelscope,
    modelscope_to_diffusers_unet3d,
    vgen_to_diffusers,
)

TINY = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 16,
    "attention_head_dim": 8,
    "norm_num_groups": 4,
    "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
}


def shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def n_params(sd: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for v in sd.values())


def random_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values everywhere, so a swapped pair of same-shape tensors would show."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def i2vgen_meta() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return I2VGenXLUNet(**I2VGEN_XL_DIFFUSERS_CONFIG).state_dict()


@pytest.fixture(scope="module")
def refiner_meta() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return UNet3DConditionModel(**MS_VID2VID_XL_DIFFUSERS_CONFIG).state_dict()


def test_i2vgen_real_config_is_a_bijection(i2vgen_meta):
    vgen = diffusers_to_vgen(i2vgen_meta)
    assert len(i2vgen_meta) == 1511 and len(vgen) == 1509
    assert n_params(i2vgen_meta) == n_params(vgen) == 1_420_469_224
    assert shapes(vgen_to_diffusers(vgen)) == shapes(i2vgen_meta)


def test_refiner_real_config_is_a_bijection(refiner_meta):
    modelscope = diffusers_unet3d_to_modelscope(refiner_meta)
    assert len(refiner_meta) == len(modelscope) == 1480
    assert n_params(refiner_meta) == n_params(modelscope) == 1_411_233_860
    assert shapes(modelscope_to_diffusers_unet3d(modelscope)) == shapes(refiner_meta)


def test_vgen_names_and_shapes(i2vgen_meta):
    """Names from VGen's `UNetSD_I2VGen` (spec §2.2, §5.1), including its Conv1d temporal projections."""
    vgen = shapes(diffusers_to_vgen(i2vgen_meta))
    expected = {
        "input_blocks.0.0.weight": (320, 8, 3, 3),
        "input_blocks.0.1.proj_in.weight": (512, 320, 1),
        "input_blocks.0.1.proj_out.weight": (320, 512, 1),
        "input_blocks.1.0.in_layers.2.weight": (320, 320, 3, 3),
        "input_blocks.1.0.temopral_conv.conv1.0.weight": (320,),
        "input_blocks.1.0.temopral_conv.conv4.3.weight": (320, 320, 3, 1, 1),
        "input_blocks.1.1.proj_in.weight": (320, 320),  # spatial: Linear
        "input_blocks.1.2.proj_in.weight": (320, 320, 1),  # temporal: Conv1d
        "input_blocks.3.op.weight": (320, 320, 3, 3),
        "input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "input_blocks.11.0.emb_layers.1.weight": (1280, 1280),
        "middle_block.0.temopral_conv.conv2.3.weight": (1280, 1280, 3, 1, 1),
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 1024),
        "middle_block.2.proj_out.weight": (1280, 1280, 1),
        "middle_block.3.out_layers.3.weight": (1280, 1280, 3, 3),
        "output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),  # up-sampler of a level without attention
        "output_blocks.5.3.conv.weight": (1280, 1280, 3, 3),  # ... and of a level with attention
        "output_blocks.11.2.proj_in.weight": (320, 320, 1),
        "local_temporal_encoder.layers.0.0.fn.to_qkv.weight": (24, 4),
        "local_temporal_encoder.layers.0.1.net.0.0.weight": (16, 4),
        "local_image_concat.4.weight": (4, 16, 3, 3),
        "local_image_embedding.5.weight": (1024, 64, 3, 3),
        "context_embedding.2.weight": (4096, 1280),
        "fps_embedding.0.weight": (1280, 320),
        "time_embed.2.weight": (1280, 1280),
        "out.0.weight": (320,),
        "out.2.weight": (4, 320, 3, 3),
    }
    assert {k: vgen.get(k) for k in expected} == expected
    assert not any(k.startswith(("output_blocks.12.", "input_blocks.12.", "middle_block.4.")) for k in vgen)


def test_i2vgen_round_trip_is_bit_identical():
    torch.manual_seed(0)
    sd = random_state_dict(I2VGenXLUNet(**TINY))
    vgen = diffusers_to_vgen(sd)
    assert len(vgen) == len(sd) - 2
    back = vgen_to_diffusers(vgen)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    # Values land where VGen expects them, not only somewhere that round-trips.
    q_k_v = [sd[f"image_latents_temporal_encoder.attn1.to_{c}.weight"] for c in "qkv"]
    assert torch.equal(vgen["local_temporal_encoder.layers.0.0.fn.to_qkv.weight"], torch.cat(q_k_v))
    assert torch.equal(vgen["input_blocks.0.1.proj_in.weight"][:, :, 0], sd["transformer_in.proj_in.weight"])
    assert torch.equal(vgen["input_blocks.2.op.weight"], sd["down_blocks.0.downsamplers.0.conv.weight"])
    assert torch.equal(vgen["output_blocks.1.1.conv.weight"], sd["up_blocks.0.upsamplers.0.conv.weight"])
    assert torch.equal(vgen["output_blocks.3.1.norm.weight"], sd["up_blocks.1.attentions.1.norm.weight"])
    assert torch.equal(vgen["middle_block.3.in_layers.2.weight"], sd["mid_block.resnets.1.conv1.weight"])
    assert torch.equal(vgen["out.2.weight"], sd["conv_out.weight"])


def test_refiner_round_trip_is_bit_identical():
    torch.manual_seed(0)
    sd = random_state_dict(UNet3DConditionModel(**TINY))
    modelscope = diffusers_unet3d_to_modelscope(sd)
    back = modelscope_to_diffusers_unet3d(modelscope)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert torch.equal(
        modelscope["input_blocks.1.2.proj_out.weight"][:, :, 0],
        sd["down_blocks.0.temp_attentions.0.proj_out.weight"],
    )
    assert torch.equal(
        modelscope["middle_block.0.temopral_conv.conv1.2.bias"], sd["mid_block.temp_convs.0.conv1.2.bias"]
    )


def test_detect_unet_format(i2vgen_meta, refiner_meta):
    assert detect_unet_format(i2vgen_meta) == "diffusers"
    assert detect_unet_format(refiner_meta) == "diffusers"
    assert detect_unet_format(diffusers_to_vgen(i2vgen_meta)) == "vgen"
    assert detect_unet_format(diffusers_unet3d_to_modelscope(refiner_meta)) == "modelscope"
    with pytest.raises(CheckpointError, match="known layout"):
        detect_unet_format({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})


def test_unknown_keys_raise_with_a_readable_message(i2vgen_meta, refiner_meta):
    vgen = diffusers_to_vgen(i2vgen_meta)
    garbage = {f"garbage.{i}.weight": torch.zeros(1) for i in range(7)}
    with pytest.raises(CheckpointError) as info:
        vgen_to_diffusers({**vgen, **garbage})
    message = str(info.value)
    assert "\n" not in message and "garbage.0.weight" in message and "(7 keys)" in message
    assert "garbage.6.weight" not in message  # long lists are cut short
    # Keys that look right but name no real child are refused too.
    for bad in (
        "input_blocks.1.0.in_layers.1.weight",
        "input_blocks.1.0.temopral_conv.conv5.0.weight",
        "output_blocks.0.7.conv.weight",
        "middle_block.4.norm.weight",
    ):
        with pytest.raises(CheckpointError, match=bad.replace(".", r"\.")):
            vgen_to_diffusers({**vgen, bad: torch.zeros(1)})
    # The base UNet's image branches are not part of the refiner layout.
    with pytest.raises(CheckpointError, match="local_image_concat"):
        modelscope_to_diffusers_unet3d(
            {**diffusers_unet3d_to_modelscope(refiner_meta), "local_image_concat.0.bias": torch.zeros(4)}
        )
    # A partial q/k/v split cannot be fused back.
    partial = {
        k: v
        for k, v in i2vgen_meta.items()
        if not k.endswith("attn1.to_v.weight") or "image_latents" not in k
    }
    with pytest.raises(CheckpointError, match=r"to_q\.weight"):
        diffusers_to_vgen(partial)
    with pytest.raises(CheckpointError, match="garbage"):
        diffusers_unet3d_to_modelscope({**refiner_meta, "down_blocks.0.garbage.0.weight": torch.zeros(1)})
