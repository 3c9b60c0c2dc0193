"""The I2VGen-XL cascade: the base stage at a lower resolution (640x352), then the refiner at 1280x720.

The stage boundary is a plain tensor, the base stage's frames (1, 3, F, H, W) in [0, 1] on the CPU, so each stage is
also usable alone (`I2VGenPipeline`, `I2VGenRefinePipeline`) and a saved base video refines the same way. With
`offload="stage"` (default) only one stage's components are on the device at a time; `offload="model"` goes further
and moves one component at a time (each pipeline's `enable_model_cpu_offload`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Literal

import torch
from torch import nn

from i2vgen import reference
from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS
from i2vgen.io.image import ImageSource
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.pipelines.common import OutputType, Placement
from i2vgen.pipelines.refine import I2VGenRefinePipeline

Stage = I2VGenPipeline | I2VGenRefinePipeline


def generate_two_stage(base: I2VGenPipeline, refiner: I2VGenRefinePipeline, image: ImageSource, prompt: str, *,
                       generator: torch.Generator | None = None, base_kwargs: dict[str, Any] | None = None,
                       refine_kwargs: dict[str, Any] | None = None, placement: Placement | None = None,
                       output_type: OutputType = "np") -> Any:
    """Base stage, then refinement of its frames. With `placement` (offload) each stage's components move to its
    device for the stage and back to the CPU after it. `generator` draws the base stage's numbers, then the refiner's.
    """
    with _on_device(base, placement):
        video = base(image, prompt, generator=generator, output_type="pt", **(base_kwargs or {}))
    video = video.cpu()  # (1, 3, F, H, W) in [0, 1]: the stage boundary
    with _on_device(refiner, placement):
        return refiner(video, prompt, generator=generator, output_type=output_type, **(refine_kwargs or {}))


@contextlib.contextmanager
def _on_device(stage: Stage, placement: Placement | None):  # noqa: ANN202
    if placement is None:
        yield
        return
    with placement.use(nn.ModuleList(stage._modules())):
        yield


class I2VGenCascadePipeline:
    """Image + text -> a 1280x720 video: `I2VGenPipeline` at a lower resolution, then `I2VGenRefinePipeline`.

    With `offload="stage"` the components rest on the CPU between stages; to run one stage alone afterwards, call
    its `.to(device)` first.
    """

    def __init__(self, base: I2VGenPipeline, refiner: I2VGenRefinePipeline, *, device: torch.device | str = "cpu",
                 offload: Literal["stage", "model"] = "stage") -> None:
        self.base, self.refiner = base, refiner
        if offload == "model":
            base.enable_model_cpu_offload(device)
            refiner.enable_model_cpu_offload(device)
            self.placement = None
        elif offload == "stage":  # components rest on the CPU; each stage's pipeline runs them on `device`
            for stage in (base, refiner):
                stage.to("cpu")
                stage.placement = Placement(device)
            self.placement = Placement(device, offload=True)
        else:
            raise ValueError(f"offload must be 'stage' or 'model', got {offload!r}")

    @classmethod
    def from_pretrained(cls, base: str | os.PathLike, refiner: str | os.PathLike, *,
                        refiner_unet: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                        variant: str | None = None, device: torch.device | str = "cpu",
                        offload: Literal["stage", "model"] = "stage") -> I2VGenCascadePipeline:
        """Load both stages on the CPU (see each pipeline's `from_pretrained`)."""
        b = I2VGenPipeline.from_pretrained(base, dtype=dtype, variant=variant)
        r = I2VGenRefinePipeline.from_pretrained(refiner, unet=refiner_unet, dtype=dtype, variant=variant)
        return cls(b, r, device=device, offload=offload)

    def __call__(self, image: ImageSource, prompt: str, *, num_frames: int = 16, width: int = 640, height: int = 352,
                 refine_width: int = 1280, refine_height: int = 720, strength: float = reference.STRENGTH,
                 generator: torch.Generator | None = None, base_kwargs: dict[str, Any] | None = None,
                 refine_kwargs: dict[str, Any] | None = None, output_type: OutputType = "np") -> Any:
        """`num_frames` frames at `width` x `height` from the base stage, refined to `refine_width` x
        `refine_height` from t = round(strength * 1000) - 1. Other arguments of each stage go in its kwargs."""
        base_kw = {"num_frames": num_frames, "width": width, "height": height, **(base_kwargs or {})}
        refine_kw = {"width": refine_width, "height": refine_height, "strength": strength, **(refine_kwargs or {})}
        # the refiner's settings are checked before the base stage spends its time
        self.refiner.check_size(refine_kw["width"], refine_kw["height"])
        self.refiner.timesteps(refine_kw["strength"], refine_kw.get("sampler", DEFAULT_SAMPLERS["refine"]),
                               refine_kw.get("num_inference_steps"))
        return generate_two_stage(self.base, self.refiner, image, prompt, generator=generator, base_kwargs=base_kw,
                                  refine_kwargs=refine_kw, placement=self.placement, output_type=output_type)
