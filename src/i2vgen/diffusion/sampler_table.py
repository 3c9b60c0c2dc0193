"""The samplers by name, with the settings each stage uses them with: one row per sampler, torch-free.

A command line's `choices` and `--help` read this module without importing torch; `registry` pairs each row with its
function in `samplers`, and the pipelines read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from i2vgen.errors import InputError

Stage = Literal["base", "refine"]
Spacing = Literal["leading", "trailing", "linspace"]  # `schedule.make_timesteps`
STAGES: tuple[Stage, ...] = ("base", "refine")


@dataclass(frozen=True, kw_only=True)
class SamplerInfo:
    """A sampler's name, its function and how the pipelines use it."""

    name: str
    function: str  # its function in `i2vgen.diffusion.samplers`
    default_steps: dict[Stage, int]  # the stages that may use it -> its default number of steps there
    # The base stage's default timestep grid (the refiner's is always ModelScope's trailing grid from t_start).
    spacing: Spacing = "trailing"
    takes_eta: bool = False  # has DDIM's `eta` and `set_alpha_to_one`, which the base pipeline passes on
    stochastic: bool = False  # draws noise from the generator at its default settings (DDIM only with eta > 0)
    discard_penultimate: bool = False  # the refiner's grid drops its penultimate point (ModelScope's DPM-Solver++)
    summary: str = ""  # one line for --help

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages that may use it."""
        return tuple(self.default_steps)


# DDIM follows the reference's leading grid (981 ... 1); the others start at t = 999 (trailing), where the
# zero-terminal-SNR schedule is pure noise.
TABLE: dict[str, SamplerInfo] = {s.name: s for s in (
    SamplerInfo(name="ddim", function="sample_ddim", default_steps={"base": 50}, spacing="leading", takes_eta=True,
                summary="DDIM, the reference (50 steps, 981 ... 1); eta > 0 adds noise"),
    SamplerInfo(name="dpmpp-2m", function="sample_dpmpp_2m", default_steps={"base": 25, "refine": 30},
                summary="DPM-Solver++(2M), deterministic"),
    SamplerInfo(name="dpmpp-2m-sde", function="sample_dpmpp_2m_sde", default_steps={"base": 25, "refine": 30},
                stochastic=True, discard_penultimate=True,
                summary="DPM-Solver++(2M) SDE, the refiner's reference (30 steps)"),
    SamplerInfo(name="heun", function="sample_heun", default_steps={"refine": 50},
                summary="Heun, two denoiser calls a step, the refiner's slower reference option (50 steps)"),
    SamplerInfo(name="unipc", function="sample_unipc", default_steps={"base": 25},
                summary="UniPC (bh2, order 2): DPM-Solver++(2M) and a corrector, one denoiser call a step"),
)}
DEFAULT_SAMPLERS: dict[Stage, str] = {"base": "ddim", "refine": "dpmpp-2m-sde"}  # the reference's


def sampler_names(stage: Stage | None = None) -> tuple[str, ...]:
    """Names of the samplers `stage` may use (of all samplers when None), in table order."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return tuple(name for name, info in TABLE.items() if stage is None or stage in info.default_steps)


def sampler_info(name: str, stage: Stage) -> SamplerInfo:
    """The row of `name`, or a one-line `InputError` listing the choices when `stage` cannot use it."""
    choices = sampler_names(stage)
    if name not in choices:
        raise InputError(f"unknown sampler {name!r} for the {stage} stage; choose from {', '.join(choices)}")
    return TABLE[name]


def default_steps(name: str, stage: Stage) -> int:
    """The default number of steps of sampler `name` in `stage`."""
    return sampler_info(name, stage).default_steps[stage]
