"""Fewer UNet FLOPs per video: step caching (`StepCache`), guidance for the first part of the schedule only
(`cfg_until`), and the `--fast` preset's plumbing. Quality and speed are measured in benchmarks/fast_sampling.py."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_

from i2vgen.diffusion import classifier_free_guidance, guidance_min_t, make_timesteps
from i2vgen.errors import InputError
from i2vgen.models.configs import UNetConfig
from i2vgen.models.unet import I2VGenUNet, StepCache

CFG = UNetConfig(block_out_channels=(16, 32, 32), attention_levels=(True, True, False), layers_per_block=2,
                 norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8, concat_scale=1.0)


@pytest.fixture(scope="module")
def unet():
    return randomize_(I2VGenUNet(CFG), 3).eval()


def _inputs(seed: int, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(b, 4, 3, 8, 8, generator=g), timestep=torch.tensor([700.0] * b),
                encoder_hidden_states=torch.randn(b, 77, 16, generator=g), image_embeds=torch.randn(b, 16, generator=g),
                first_frame_latent=torch.randn(b, 4, 8, 8, generator=g), fps=8)


def _cond(unet, x):
    return unet.prepare_condition(x["encoder_hidden_states"], x["image_embeds"], x["first_frame_latent"], 3)


@pytest.mark.parametrize("depth", [1, 2, 3])
@torch.no_grad()
def test_cached_call_on_the_same_input_equals_the_plain_unet(unet, depth):
    """The cached call reuses the deep features of the previous call; on the same input they are the same features,
    so any mistake in which skips a cached call computes or routes shows as a difference."""
    x = _inputs(0)
    cond = _cond(unet, x)
    plain = unet(x["sample"], x["timestep"], condition=cond, fps=8)
    cache = StepCache(interval=3, depth=depth)
    outs = [unet(x["sample"], x["timestep"], condition=cond, fps=8, cache=cache) for _ in range(4)]
    assert plain.abs().mean() > 0.1
    for out in outs:
        assert (out - plain).abs().max() <= 1e-5


@torch.no_grad()
def test_cached_calls_skip_the_deep_levels_and_refresh_every_interval(unet):
    x, y = _inputs(0), _inputs(1)
    cond = _cond(unet, x)
    calls = []
    hook = unet.mid_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = StepCache(interval=2, depth=1)
        out = [unet(s["sample"], 500.0, condition=cond, fps=8, cache=cache) for s in (x, y, y, x, x)]
    finally:
        hook.remove()
    assert len(calls) == 3  # calls 0, 2, 4 run the whole UNet
    fresh_y = unet(y["sample"], 500.0, condition=cond, fps=8)
    assert (out[2] - fresh_y).abs().max() <= 1e-5  # a refresh computes everything anew
    assert (out[1] - fresh_y).abs().max() > 1e-3  # call 1 used x's deep features for y: an approximation
    fresh_x = unet(x["sample"], 500.0, condition=cond, fps=8)
    assert (out[3] - fresh_x).abs().max() > 1e-3  # call 3: y's deep features for x
    assert (out[4] - fresh_x).abs().max() <= 1e-5


@torch.no_grad()
def test_each_guidance_branch_keeps_its_own_features(unet):
    """Sequential guidance calls the UNet with two contexts per step: each must get its own cached features."""
    x = _inputs(0, b=1)
    cond_a = _cond(unet, x)
    x2 = dict(x, encoder_hidden_states=torch.randn(1, 77, 16))
    cond_b = _cond(unet, x2)
    cache = StepCache(interval=2)
    for _ in range(2):  # call 2 of each branch is a cached one
        a = unet(x["sample"], 300.0, condition=cond_a, fps=8, cache=cache)
        b = unet(x["sample"], 300.0, condition=cond_b, fps=8, cache=cache)
    assert (a - unet(x["sample"], 300.0, condition=cond_a, fps=8)).abs().max() <= 1e-5
    assert (b - unet(x["sample"], 300.0, condition=cond_b, fps=8)).abs().max() <= 1e-5


def test_step_cache_rejects_bad_settings(unet):
    for kw in ({"interval": 0}, {"interval": 1.5}, {"depth": 0}, {"interval": True}):
        with pytest.raises(InputError):
            StepCache(**kw)
    x = _inputs(0)
    with pytest.raises(InputError, match="levels"):
        unet(**x, cache=StepCache(2, depth=4))


def test_guidance_min_t_guides_the_first_share_of_steps():
    ts = make_timesteps(10, "trailing")
    assert guidance_min_t(ts, 1.0) is None
    assert guidance_min_t(ts, 0.5) == float(ts[4])  # steps 0-4 guided
    assert guidance_min_t(ts, 0.01) == float(ts[0])  # at least one guided step
    assert guidance_min_t(ts, 0.55) == float(ts[5])
    with pytest.raises(ValueError):
        guidance_min_t(ts, 0.0)


def test_cfg_until_runs_the_conditional_branch_alone_below_min_t():
    seen = []

    def net(x, t, c):
        seen.append(x.shape[0])
        return x * c

    cond, uncond = {"c": torch.full((1, 1), 2.0)}, {"c": torch.full((1, 1), 1.0)}
    guided = classifier_free_guidance(net, cond, uncond, 3.0, min_t=500.0)
    x = torch.ones(1, 1)
    assert guided(x, torch.tensor([600.0])).item() == 1 + 3 * (2 - 1)  # guided: one batched pass of 2
    assert guided(x, torch.tensor([400.0])).item() == 2  # conditional only, batch 1
    assert seen == [2, 1]


# ---- the command line ------------------------------------------------------------------------------------------------
def test_cli_speed_flags_are_checked_before_a_model_loads(tmp_path, capsys):
    from PIL import Image

    from i2vgen.cli import main

    picture = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "red").save(picture)
    base = ["generate", "--image", str(picture), "--prompt", "a red circle moves left", "--model", "tiny-shapes",
            "-q", "-o"]
    for flags, word in ((["--cfg-until", "0"], "cfg until"), (["--cfg-until", "1.5"], "cfg until"),
                        (["--cache-interval", "0"], "cache interval"),
                        (["--cache-interval", "2", "--cache-depth", "9"], "cache depth")):
        out = tmp_path / "x.mp4"
        assert main([*base, str(out), *flags]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("i2vgen: error:") and word in err[-1], err
        assert not out.exists()


def test_fast_preset_fills_what_was_not_given():
    import argparse

    from i2vgen.app.settings import FAST
    from i2vgen.cli.generate import add_generate, settings_from_args

    parser = argparse.ArgumentParser()
    add_generate(parser.add_subparsers())
    args = parser.parse_args(["generate", "--image", "x.png", "-o", "y.mp4", "--fast", "--steps", "20"])
    s = settings_from_args(args, "a prompt", 0)
    assert (s.sampler, s.steps, s.cfg_until, s.cache_interval) == (FAST["sampler"], 20, FAST["cfg_until"],
                                                                   FAST["cache_interval"])
    plain = settings_from_args(parser.parse_args(["generate", "--image", "x.png", "-o", "y.mp4"]), "a prompt", 0)
    assert (plain.sampler, plain.steps, plain.cfg_until, plain.cache_interval) == ("ddim", None, 1.0, 1)
    assert "cfg_until" in s.resolved().metadata() and "cfg_until" not in plain.resolved().metadata()


def test_quality_time_plot_draws_every_row(tmp_path):
    """benchmarks/fast_sampling.py --replot: a numbered point per configuration measured against DDIM 50, named in the
    legend, a dashed line per reference (DDIM 50 itself, diffusers), and valid SVG."""
    import json
    import subprocess
    import sys
    import xml.etree.ElementTree as ET
    from pathlib import Path

    rows = [{"name": "ddim-50", "seconds": 10.0, "psnr_to_ddim50": None, "direction_accuracy": 1.0},
            {"name": "diffusers ddim-50 fp32", "seconds": 12.5},
            *({"name": f"config {i}", "seconds": 1.5 + 0.01 * i, "psnr_to_ddim50": 41.0 + 0.1 * i,
               "direction_accuracy": 0.9} for i in range(3)),
            {"name": "fast (the --fast preset)", "seconds": 1.4, "psnr_to_ddim50": 40.5, "direction_accuracy": 1.0}]
    src, svg = tmp_path / "r.json", tmp_path / "p.svg"
    src.write_text(json.dumps({"model": "m", "n": 4, "threads": 1, "rounds": 5, "rows": rows}))
    script = Path(__file__).parents[1] / "benchmarks" / "fast_sampling.py"
    subprocess.run([sys.executable, str(script), "--replot", str(src), "--plot", str(svg)], check=True)
    root = ET.fromstring(svg.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == 4
    assert len([e for e in root.findall(f"{ns}line") if e.get("stroke-dasharray")]) == 2
    texts = [e.text for e in root.findall(f"{ns}text")]
    legend = [t for t in texts if ". " in t and " dB" in t]  # "N. name: seconds, dB, accuracy", fastest first
    assert [t.split(". ", 1)[1].split(":")[0] for t in legend] == [
        "fast (the --fast preset)", "config 0", "config 1", "config 2"]
    assert "1. fast (the --fast preset): 1.40 s, 40.5 dB, 100% directions" in legend
    numbers = [e.text for e in root.findall(f"{ns}text") if e.get("font-size") == "9"]  # beside the points
    assert sorted(numbers) == ["1", "2", "3", "4"]
