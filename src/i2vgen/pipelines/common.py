"""What both stages' pipelines share: resolving a model path or Hub id, device placement with optional model CPU
offload, and turning decoded frames into the requested output type."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from i2vgen.errors import CheckpointError, InputError
from i2vgen.model_paths import model_defaults

OutputType = Literal["np", "pt", "pil", "latent"]
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


def check_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device, or a one-line `InputError` when it is malformed or not present in this
    installation (a CUDA device on a CPU build, an index past the last GPU, MPS off Apple silicon)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            raise InputError(f"device {device!r} is not available: torch {torch.__version__} is {build}; use cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} is not available: {torch.cuda.device_count()} GPU(s) visible")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} is not available on this machine; use cpu")
    elif d.type not in ("cpu", "cuda", "mps", "xpu"):
        raise InputError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return d


@dataclasses.dataclass(frozen=True)
class ModelConventions:
    """How a model was trained where that differs from the reference, so that sampling matches it. The reference's
    values by default; a model folder states others in `_i2vgen_defaults` (`from_folder`): models trained by
    `i2vgen train-recipe tiny-shapes` learn from VAE posterior means (their tiny VAEs' posterior noise is as large
    as the latents' spread) with textbook SDEdit. The pipelines' call arguments override these."""

    sample_posterior: bool = True  # encode the conditioning frame / the refiner's input as a posterior sample
    modelscope_start: bool = True  # refiner: ModelScope's extra start scale (refine.py's module docstring)

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> ModelConventions:
        found = model_defaults(root)
        values = {f.name: found[f.name] for f in dataclasses.fields(cls) if f.name in found}
        for name, value in values.items():
            if not isinstance(value, bool):  # "false" as a string would read as true
                raise CheckpointError(f"{root}: model_index.json's _i2vgen_defaults.{name} must be true or false, "
                                      f"got {value!r}")
        return cls(**values)


class Placement:
    """Where components run. Without offload every component lives on `device`. With model CPU offload they live on
    the CPU and each moves to `device` only while it runs, so the peak is the largest component, not the sum."""

    def __init__(self, device: torch.device | str = "cpu", offload: bool = False) -> None:
        self.device = check_device(device)
        self.offload = offload

    @contextlib.contextmanager
    def use(self, module: nn.Module) -> Iterator[nn.Module]:
        if self.offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if self.offload:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


class StagePipeline:
    """Device placement shared by the stage pipelines: all components on one device (`to`), or each moved there
    only while it runs (`enable_model_cpu_offload`). Subclasses list their components in `_modules`."""

    placement: Placement

    def _modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def to(self, device: torch.device | str):  # noqa: ANN201 - returns self
        self.placement = Placement(device, offload=False)  # an absent device fails here, before anything moves
        for m in self._modules():
            m.to(self.placement.device)
        return self

    def enable_model_cpu_offload(self, device: torch.device | str = "cuda"):  # noqa: ANN201 - returns self
        """Keep components on the CPU and move each to `device` only while it runs."""
        for m in self._modules():
            m.to("cpu")
        self.placement = Placement(device, offload=True)
        return self


def check_generation_args(*, num_frames: int, num_inference_steps: int, guidance_scale: float, sampler: str,
                          samplers: tuple[str, ...], output_type: str, decode_chunk_size: int) -> None:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise InputError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise InputError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}")
    if sampler not in samplers:
        raise InputError(f"unknown sampler {sampler!r}; choose from {', '.join(samplers)}")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"unknown output_type {output_type!r}; choose from {', '.join(OUTPUT_TYPES)}")
    if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
        raise InputError(f"decode_chunk_size must be an integer >= 1, got {decode_chunk_size!r}")


def check_generator(generator: object) -> None:
    """A `torch.Generator` or None (a seed is not a generator: `torch.Generator().manual_seed(seed)`)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                         f"(for a seed use torch.Generator().manual_seed(seed))")


def frames_to_output(frames: Tensor, output_type: OutputType) -> Any:
    """(B, 3, F, H, W) frames in [-1, 1] -> "pt": (B, 3, F, H, W) in [0, 1]; "np": (B, F, H, W, 3) float32 in
    [0, 1]; "pil": a list (per video) of lists of PIL images."""
    video = (frames.float() / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return video
    arr = video.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, 3)
    if output_type == "np":
        return arr
    u8 = (arr * 255).round().astype(np.uint8)
    return [[Image.fromarray(f) for f in v] for v in u8]
