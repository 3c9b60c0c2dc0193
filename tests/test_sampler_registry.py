import math
import subprocess
import sys

import pytest
import torch

from i2vgen.diffusion import (
    base_alphas_cumprod,
    make_timesteps,
    refiner_alphas_cumprod,
    refiner_timesteps,
    samplers,
)
from i2vgen.diffusion.registry import SAMPLERS, get_sampler
from i2vgen.diffusion.sampler_table import STAGES, TABLE, default_steps, sampler_names
from i2vgen.errors import InputError

SHAPE = (2, 4, 3, 8, 8)  # (B, C, F, H, W)


def test_every_sampler_function_has_one_row():
    functions = {name for name in samplers.__all__ if name.startswith("sample_")}
    assert sorted(s.function for s in SAMPLERS.values()) == sorted(functions)
    for name, spec in SAMPLERS.items():
        assert spec.name == name and spec.fn is getattr(samplers, spec.function)
        assert spec.stages and set(spec.stages) <= set(STAGES)
        assert all(isinstance(n, int) and n >= 1 for n in spec.default_steps.values())


@pytest.mark.parametrize(("stage", "name"), [(st, n) for st in STAGES for n in sampler_names(st)])
def test_every_row_runs_in_its_stages(stage, name):
    """Through the registry, as the pipelines call it: an ideal denoiser gives x0 back on the stage's grid."""
    spec = get_sampler(name, stage)
    if stage == "base":
        acp, grid = base_alphas_cumprod(), make_timesteps(6, spec.spacing)
    else:
        acp, grid = refiner_alphas_cumprod(), refiner_timesteps(6, discard_penultimate=spec.discard_penultimate)
    gen = torch.Generator().manual_seed(0)
    x0, z = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    a = acp[int(grid[0])].item()
    kw = {"set_alpha_to_one": True} if spec.takes_eta else {}  # DDIM's default stops at alpha_bar[0] (VGen)
    seen = []
    out = spec.fn(lambda x, t: x0, math.sqrt(a) * x0 + math.sqrt(1 - a) * z, acp, grid, generator=gen,
                  callback=lambda i, t, x0_: seen.append(i), **kw)
    assert (out - x0).abs().max() < 1e-5
    assert seen == list(range(len(grid)))


def test_unknown_names_are_refused_with_the_choices():
    for name, stage in [("euler", "base"), ("heun", "base"), ("ddim", "refine"), (None, "refine")]:
        with pytest.raises(InputError) as err:
            get_sampler(name, stage)
        msg = str(err.value)
        assert "\n" not in msg and f"unknown sampler {name!r}" in msg
        assert msg.endswith("choose from " + ", ".join(sampler_names(stage)))
    with pytest.raises(ValueError, match="stage"):
        sampler_names("upscale")


def test_table_answers_without_torch():
    """`i2vgen --help` reads the names: the table must not import torch."""
    code = (
        "import sys; from i2vgen.diffusion.sampler_table import default_steps, sampler_names;"
        "assert 'unipc' in sampler_names('base') and default_steps('heun', 'refine') == 50;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_defaults():
    assert sampler_names() == tuple(TABLE)
    # the reference's: DDIM 50 leading steps in the base stage, the refiner's 30 (SDE) and 50 (Heun) trailing steps
    assert (default_steps("ddim", "base"), get_sampler("ddim", "base").spacing) == (50, "leading")
    assert default_steps("dpmpp-2m-sde", "refine") == 30 and default_steps("heun", "refine") == 50
    assert [n for n, s in TABLE.items() if s.discard_penultimate] == ["dpmpp-2m-sde"]
