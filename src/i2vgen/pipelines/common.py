"""What both stages' pipelines share: resolving a model path or Hub id, device placement with optional model CPU
offload, and turning decoded frames into the requested output type."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from i2vgen.errors import CheckpointError, InputError

OutputType = Literal["np", "pt", "pil", "latent"]
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Models shipped inside the package, loadable by name (`--model tiny-shapes`).
BUILTIN_MODELS = {"tiny-shapes": ASSETS / "tiny-shapes", "tiny-shapes-refiner": ASSETS / "tiny-shapes-refiner"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path_or_id: str | os.PathLike, *, components: list[str] | None = None,
                       variant: str | None = None) -> Path:
    """A local folder, a built-in model name, or a Hugging Face Hub id (downloaded with progress bars)."""
    s = os.fspath(path_or_id)
    if s in BUILTIN_MODELS:
        p = BUILTIN_MODELS[s]
        if not p.is_dir():
            raise CheckpointError(f"the built-in model {s!r} is not included in this installation ({p})")
        return p
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; expected a model folder (model_index.json, unet/, vae/, ...)")
        return p
    if not _HUB_ID.match(s):
        raise CheckpointError(f"model not found: {s} (not a folder, a built-in model or a Hub id owner/name)")
    from huggingface_hub import snapshot_download  # deferred: only needed for downloads

    try:
        allow, ignore = hub_patterns(components or [], variant)
        return Path(snapshot_download(s, allow_patterns=allow or None, ignore_patterns=ignore))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth, disk: all end the same way
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot download {s} from the Hugging Face Hub: {msg}") from None


# The reference's base guidance and refiner strength (t = 599): the pipelines' defaults, and the fallbacks where a
# model folder suggests none (`model_defaults`: guidance_scale, refine_strength / strength).
REFERENCE_GUIDANCE = 9.0
REFERENCE_STRENGTH = 0.6


def local_model_path(path_or_id: str | os.PathLike) -> Path:
    """A built-in model name's folder, else the path as given (no check, no download)."""
    s = os.fspath(path_or_id)
    return BUILTIN_MODELS.get(s, Path(s).expanduser())


def model_defaults(path_or_id: str | os.PathLike) -> dict[str, Any]:
    """Generation settings a local model folder suggests: `_i2vgen_defaults` in its model_index.json (the tiny
    models write width, height, num_frames, target_fps, refine_width, refine_height and refiner). {} for Hub ids,
    folders without them and unreadable files (loading reports those)."""
    try:
        index = json.loads((local_model_path(path_or_id) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    defaults = index.get("_i2vgen_defaults") if isinstance(index, dict) else None
    return dict(defaults) if isinstance(defaults, dict) else {}


def hub_patterns(components: list[str], variant: str | None) -> tuple[list[str], list[str]]:
    """(allow, ignore) patterns for the files a pipeline needs from a diffusers model repo: its components' configs,
    tokenizer files and weights of the chosen variant, not the repo's `models/` folder of original .pth files."""
    allow = ["model_index.json"] + [f"{c}/*" for c in components]
    ignore = ["*.bin", "*.ckpt", "*.pth", "*.msgpack", "*.onnx*"]
    if variant is None:
        ignore.append("*.fp16.safetensors")
    else:  # only the variant's weights
        ignore += ["*/model.safetensors", "*/diffusion_pytorch_model.safetensors"]
    return allow, ignore


def check_model_folder(root: Path, components: list[str]) -> None:
    missing = [c for c in components if not (root / c).is_dir()]
    if missing:
        raise CheckpointError(f"model folder {root} lacks component folder(s): {', '.join(missing)}")


class Placement:
    """Where components run. Without offload every component lives on `device`. With model CPU offload they live on
    the CPU and each moves to `device` only while it runs, so the peak is the largest component, not the sum."""

    def __init__(self, device: torch.device | str = "cpu", offload: bool = False) -> None:
        self.device = torch.device(device)
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
        self.placement = Placement(device, offload=False)
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
    if not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise InputError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
    if sampler not in samplers:
        raise InputError(f"unknown sampler {sampler!r}; choose from {', '.join(samplers)}")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"unknown output_type {output_type!r}; choose from {', '.join(OUTPUT_TYPES)}")
    if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
        raise InputError(f"decode_chunk_size must be an integer >= 1, got {decode_chunk_size!r}")


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
