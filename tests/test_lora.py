"""LoRA: adapters change the output, are saved alone, reload identically (peft layers) or merged, on both UNets; LoRA
training saves only adapters and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import randomize_
from test_train import read_metrics, tiny_config

from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.configs import unet_preset
from i2vgen.models.refiner import I2VGenRefinerUNet
from i2vgen.models.unet import I2VGenUNet
from i2vgen.train.config import LoRAConfig
from i2vgen.models.lora import add_lora, apply_lora, load_lora, parse_lora_spec, save_lora
from i2vgen.train.trainer import train


def _unet(kind: str):  # noqa: ANN202
    torch.manual_seed(0)
    net = I2VGenUNet(unet_preset("tiny")) if kind == "base" else I2VGenRefinerUNet(unet_preset("tiny-refiner"))
    return randomize_(net, 0).eval()


def _run(net, kind: str) -> torch.Tensor:  # noqa: ANN001
    g = torch.Generator().manual_seed(5)
    x, text = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 77, 16, generator=g)
    with torch.no_grad():
        if kind == "base":
            return net(x, 300, encoder_hidden_states=text, image_embeds=torch.randn(1, 16, generator=g),
                       first_frame_latent=torch.randn(1, 4, 8, 8, generator=g), fps=8)
        return net(x, 300, encoder_hidden_states=text)


@pytest.mark.parametrize("kind", ["base", "refine"])
def test_saved_adapter_changes_outputs_and_reloads_identically(tmp_path, kind):
    base_out = _run(_unet(kind), kind)
    trained = _unet(kind)
    params = add_lora(trained, LoRAConfig(rank=4, alpha=8))
    assert all(p.requires_grad for p in params) and not any(
        p.requires_grad for n, p in trained.named_parameters() if ".lora_" not in n)
    torch.testing.assert_close(_run(trained, kind), base_out, atol=2e-5, rtol=1e-5)  # B = 0: no change yet
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.3)  # stands in for training
    lora_out = _run(trained, kind)
    assert (lora_out - base_out).abs().max() > 1e-2

    save_lora(trained, tmp_path / "lora")
    files = sorted(p.name for p in (tmp_path / "lora").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    meta, sd = load_lora(tmp_path / "lora")
    assert meta["r"] == 4 and meta["i2vgen_unet"]["_class_name"] == type(trained).__name__
    assert set(sd) and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in sd)  # adapters alone
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for p in params)

    # peft layers on a fresh copy of the base model: bit-identical to the trained model
    assert torch.equal(_run(apply_lora(_unet(kind), tmp_path / "lora", merge=False), kind), lora_out)
    # merged into the weights: the same up to rounding (outputs reach 5 in magnitude with these random weights);
    # scale 0 is the base model, scale 0.5 lies between
    torch.testing.assert_close(_run(apply_lora(_unet(kind), tmp_path / "lora"), kind), lora_out,
                               atol=2e-4, rtol=1e-3)
    assert torch.equal(_run(apply_lora(_unet(kind), tmp_path / "lora", 0.0), kind), base_out)
    w0 = _unet(kind).state_dict()
    w1 = apply_lora(_unet(kind), tmp_path / "lora", 1.0).state_dict()
    w_half = apply_lora(_unet(kind), tmp_path / "lora", 0.5).state_dict()
    changed = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert changed and all(k.rsplit(".", 1)[0].endswith(("to_q", "to_k", "to_v", "to_out.0")) for k in changed)
    for k in changed:
        torch.testing.assert_close(w_half[k] - w0[k], 0.5 * (w1[k] - w0[k]), atol=1e-6, rtol=1e-5)
    half = _run(apply_lora(_unet(kind), tmp_path / "lora", 0.5), kind)
    torch.testing.assert_close(_run(apply_lora(_unet(kind), tmp_path / "lora", 0.5, merge=False), kind), half,
                               atol=2e-4, rtol=1e-3)


def test_adapter_errors_and_spec_parsing(tmp_path):
    net = _unet("base")
    add_lora(net, LoRAConfig(rank=2, alpha=2))
    save_lora(net, tmp_path / "lora")
    with pytest.raises(CheckpointError, match="trained on a I2VGenUNet"):
        apply_lora(_unet("refine"), tmp_path / "lora")
    with pytest.raises(CheckpointError, match="no LoRA adapter"):
        apply_lora(_unet("base"), tmp_path / "nothing")
    with pytest.raises(InputError, match="GEGLU"):
        LoRAConfig(targets=("ff.net.0.proj",))
    assert parse_lora_spec("adapters/style") == ("adapters/style", 1.0)
    assert parse_lora_spec("adapters/style:0.7") == ("adapters/style", 0.7)
    assert parse_lora_spec("C:/x/style") == ("C:/x/style", 1.0)


def test_lora_training_saves_adapters_alone_and_resumes_exactly(tmp_path_factory, tmp_path):
    changes = {"lora.enabled": True, "lora.rank": 4, "lora.alpha": 4.0, "max_steps": 4, "checkpoint.every": 2,
               "checkpoint.keep_last": 0}
    cfg = tiny_config(tmp_path_factory, tmp_path / "a", **changes)
    result = train(cfg)
    ckpt = tmp_path / "a" / "checkpoints" / "step-00000004"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.yaml", "lora", "lora_ema", "optimizer.pt",
                                                       "trainer_state.pt"]
    assert json.loads((ckpt / "lora" / "adapter_config.json").read_text())["r"] == 4
    # The adapter applied to the untouched starting UNet reproduces the trained network.
    from i2vgen.train import trainer as tr

    frozen = tr.load_frozen(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    fresh = tr.build_training_unet(cfg.replace(**{"lora.enabled": False}), frozen, None).eval()
    torch.testing.assert_close(_run(apply_lora(fresh, ckpt / "lora"), "base"),
                               _run(result.unet.eval(), "base"), atol=1e-5, rtol=1e-4)
    # Resume from step 2: the same losses for steps 3 and 4.
    assert train(cfg.replace(output_dir=str(tmp_path / "b")),
                 resume=tmp_path / "a" / "checkpoints" / "step-00000002").losses == result.losses[2:]
    assert [r["loss"] for r in read_metrics(tmp_path / "a")][2:] == [r["loss"] for r in read_metrics(tmp_path / "b")]
