"""Loading UNets from diffusers folders, VGen / ModelScope .pth files and our own format, strictly."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from i2vgen.errors import CheckpointError
from i2vgen.models import convert
from i2vgen.models.configs import UNET_PRESETS, UNetConfig
from i2vgen.models.loading import load_unet, save_unet
from i2vgen.models.refiner import I2VGenRefinerUNet
from i2vgen.models.unet import I2VGenUNet

CFG = UNetConfig(block_out_channels=(16, 32, 32), attention_levels=(True, True, False), layers_per_block=2,
                 norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8)


@pytest.fixture(scope="module")
def model():
    return randomize_(I2VGenUNet(CFG), 5).eval()


def _inputs(b=1, f=3, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    return dict(sample=torch.randn(b, 4, f, h, w, generator=g), timestep=torch.tensor([400] * b),
                encoder_hidden_states=torch.randn(b, 77, 16, generator=g), image_embeds=torch.randn(b, 16, generator=g),
                first_frame_latent=torch.randn(b, 4, h, w, generator=g), fps=8)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k].to(sa[k].dtype)), k


@pytest.mark.parametrize("fmt", ["i2vgen", "diffusers"])
def test_folder_round_trip(model, tmp_path, fmt):
    save_unet(model, tmp_path / "u", format=fmt)
    loaded = load_unet(tmp_path / "u")
    _same(model, loaded)
    assert loaded.config == model.config


def test_vgen_pth_loads_and_gives_the_same_output(model, tmp_path):
    """A VGen-layout state dict made from the diffusers one through the key map loads and gives the same output."""
    vgen = convert.diffusers_to_vgen(model.state_dict())
    assert "input_blocks.0.0.weight" in vgen and "local_temporal_encoder.layers.0.0.fn.to_qkv.weight" in vgen
    torch.save({"state_dict": vgen, "step": 854500}, tmp_path / "i2vgen_xl.pth")
    loaded = load_unet(tmp_path / "i2vgen_xl.pth", config=CFG)
    with torch.no_grad():
        assert torch.equal(model(**_inputs()), loaded(**_inputs()))


def test_config_inferred_from_a_bare_checkpoint(model, tmp_path):
    torch.save({"state_dict": convert.diffusers_to_vgen(model.state_dict()), "step": 1}, tmp_path / "v.pth")
    cfg = load_unet(tmp_path / "v.pth").config
    assert (cfg.block_out_channels, cfg.attention_levels, cfg.layers_per_block, cfg.cross_attention_dim,
            cfg.attention_head_dim) == (CFG.block_out_channels, CFG.attention_levels, 2, 16, 8)


def test_fp16_variant_and_dtype(model, tmp_path):
    save_unet(model, tmp_path / "u", format="diffusers", dtype=torch.float16)
    assert (tmp_path / "u" / "diffusion_pytorch_model.fp16.safetensors").exists()
    with pytest.raises(CheckpointError, match="variant"):
        load_unet(tmp_path / "u")
    half = load_unet(tmp_path / "u", variant="fp16")
    assert half.conv_in.weight.dtype == torch.float16
    bf = load_unet(tmp_path / "u", torch.bfloat16, variant="fp16")
    assert bf.conv_in.weight.dtype == torch.bfloat16


def test_whole_model_folder_and_concat_scale_override(model, tmp_path):
    save_unet(model, tmp_path / "m" / "unet", format="diffusers")
    assert load_unet(tmp_path / "m").config.concat_scale == model.config.concat_scale
    assert load_unet(tmp_path / "m", concat_scale=1.0).config.concat_scale == 1.0


def test_refiner_modelscope_pth_round_trip(tmp_path):
    cfg = UNET_PRESETS["tiny-refiner"]
    ref = randomize_(I2VGenRefinerUNet(cfg), 2).eval()
    save_unet(ref, tmp_path / "ms.pth", format="vgen")
    sd = torch.load(tmp_path / "ms.pth", weights_only=True)["state_dict"]
    assert convert.detect_unet_format(sd) == "modelscope"
    loaded = load_unet(tmp_path / "ms.pth", config=cfg)
    assert isinstance(loaded, I2VGenRefinerUNet)
    _same(ref, loaded)


# ---- bad checkpoints: one clear error each ------------------------------------------------------------------------
def test_truncated_files(model, tmp_path):
    save_unet(model, tmp_path / "u", format="i2vgen")
    w = tmp_path / "u" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_unet(tmp_path / "u")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "a.pth")
    (tmp_path / "b.pth").write_bytes((tmp_path / "a.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_unet(tmp_path / "b.pth", config=CFG)


def test_wrong_shapes_and_missing_keys_are_named(model, tmp_path):
    sd = dict(model.state_dict())
    sd["conv_in.weight"] = torch.zeros(3, 3)
    del sd["conv_out.bias"]
    sd["bogus.weight"] = torch.zeros(1)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "config.json").write_text(json.dumps({"_class_name": "I2VGenUNet", **CFG.to_dict()}))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "u" / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_unet(tmp_path / "u")
    msg = str(e.value)
    assert "1 missing: conv_out.bias" in msg and "1 unexpected: bogus.weight" in msg
    assert "conv_in.weight (3, 3)" in msg and "\n" not in msg


def test_pickle_that_is_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="state dict"):
        load_unet(tmp_path / "list.pth")
    torch.save(OrderedDict(), tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="state dict"):
        load_unet(tmp_path / "empty.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_arbitrary_pickles_are_not_executed(tmp_path, capsys):
    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"state_dict": _Evil()}))
    with pytest.raises(CheckpointError):
        load_unet(tmp_path / "evil.pth")
    assert "code ran" not in capsys.readouterr().out


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_unet(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such file"):
        load_unet(tmp_path / "nothing-here")
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_unet(tmp_path / "e.safetensors")
