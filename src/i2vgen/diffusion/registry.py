"""The sampler registry: each row of `sampler_table` with its function from `samplers`. The pipelines read it.

A new sampler is one function in `samplers` and one row in `sampler_table.TABLE`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from i2vgen.diffusion import samplers
from i2vgen.diffusion.sampler_table import TABLE, SamplerInfo, Stage, sampler_info, sampler_names

__all__ = ["SAMPLERS", "Sampler", "SamplerSpec", "get_sampler", "sampler_names"]

# sample_xxx(denoise, x, alphas_cumprod, timesteps, *, generator=None, callback=None, ...) -> x0 (see `samplers`)
Sampler = Callable[..., Tensor]


@dataclass(frozen=True, kw_only=True)
class SamplerSpec(SamplerInfo):
    """A row of `sampler_table` and its function."""

    fn: Sampler


# getattr at import: a row naming a missing function fails as soon as any pipeline is imported
SAMPLERS: dict[str, SamplerSpec] = {
    name: SamplerSpec(fn=getattr(samplers, info.function),
                      **{f.name: getattr(info, f.name) for f in dataclasses.fields(info)})
    for name, info in TABLE.items()
}


def get_sampler(name: str, stage: Stage) -> SamplerSpec:
    """The sampler `name` for `stage`, or a one-line `InputError` listing the choices."""
    sampler_info(name, stage)  # refuses a name `stage` cannot use
    return SAMPLERS[name]
