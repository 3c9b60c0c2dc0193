"""Memory estimates made before any weights load, and the refusal when a run cannot fit.

The estimate of one run's peak: the weights on the device (all components, or the largest with model CPU offload),
plus the UNet's activations during one guided step, plus the VAE decode of one chunk of frames, plus the decoded
video itself. The UNet's activations scale as (CFG batch) x frames x latent pixels x base channels x bytes per
element; `UNET_ACT_COEF` is that factor, measured on CPU (`benchmarks/memory_estimate.py`, docs/benchmarks.md), and
likewise `VAE_ACT_COEF` for the decoder's top level (per frame, x channels x pixels). Sizes come from the folder's
config.json files and safetensors headers (parameter counts, no tensor is read); a Hub id that is not downloaded yet
uses the released models' figures.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2vgen.errors import I2VGenError
from i2vgen.model_paths import local_model_path

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Measured on CPU, fp32 (benchmarks/memory_estimate.py): 92-99 for the UNet (bench-mid, three sizes), 6.6-8.4 for
# the real-config VAE decoder (three sizes). Not yet measured on a GPU, where attention kernels differ: there an
# estimate over the free memory is a warning, not a refusal (`strict`).
UNET_ACT_COEF = 100.0  # peak UNet activation bytes / (B F h w c0 bytes_per_element)
VAE_ACT_COEF = 8.5  # peak decoder bytes / (frames_per_chunk H W c0_vae 4)
DECODE_CHUNK = 2  # frames decoded at once (the pipelines' default decode_chunk_size)
OUTPUT_COPIES = 3  # decoded float frames, their numpy copy and the uint8 video
# The released base model (diffusers layout) when it is not on disk yet: parameters per component, base channels.
REAL_BASE = {"params": {"unet": 1_420_469_224, "text_encoder": 352_984_064, "image_encoder": 632_076_800,
                        "vae": 83_653_863}, "unet_c0": 320, "vae_c0": 128, "downscale": 8}


class MemoryError_(I2VGenError):
    """A run that would not fit in the memory available; raised before any work."""


@dataclass(frozen=True)
class ModelGeometry:
    params: dict[str, int]  # component -> parameter count
    unet_c0: int
    vae_c0: int
    downscale: int


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    unet: int
    decode: int
    video: int

    @property
    def total(self) -> int:
        return self.weights + self.unet + self.decode + self.video

    def describe(self) -> str:
        return (f"about {gb(self.total)} (weights {gb(self.weights)}, UNet step {gb(self.unet)}, decode "
                f"{gb(self.decode + self.video)})")


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def safetensors_params(path: Path) -> int:
    """Parameter count from a .safetensors header (the first 8 bytes give its JSON length; no tensor is read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError("header too large")
        header = json.loads(f.read(n))
    total = 0
    for k, v in header.items():
        if k != "__metadata__":
            count = 1
            for d in v["shape"]:
                count *= d
            total += count
    return total


def _component_params(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = [p for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt")] if folder.is_dir() else []
        return sum(p.stat().st_size for p in other) // 4 if other else None
    # a folder holding several variants (model.safetensors + model.fp16.safetensors) counts one of them
    main = [p for p in files if p.name.count(".") == 1] or files[:1]
    try:
        return sum(safetensors_params(p) for p in main)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return sum(p.stat().st_size for p in main) // 4


def _config(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def model_geometry(model: str | os.PathLike, components: tuple[str, ...]) -> ModelGeometry:
    """Parameter counts and base channel counts of a local model folder, read without loading; the released base
    model's figures for anything that cannot be read this way (a Hub id not yet downloaded)."""
    root = local_model_path(model)
    params: dict[str, int] = {}
    for c in components:
        n = _component_params(root / c) if (root / c).is_dir() else None
        params[c] = REAL_BASE["params"].get(c, REAL_BASE["params"]["unet"]) if n is None else n
    unet_cfg, vae_cfg = _config(root / "unet" / "config.json"), _config(root / "vae" / "config.json")
    unet_c0 = (unet_cfg.get("block_out_channels") or [REAL_BASE["unet_c0"]])[0]
    vae_blocks = vae_cfg.get("block_out_channels") or [REAL_BASE["vae_c0"]] * 4
    return ModelGeometry(params, int(unet_c0), int(vae_blocks[0]), 2 ** (len(vae_blocks) - 1))


def estimate(geometry: ModelGeometry, *, frames: int, width: int, height: int, dtype: str, offload: bool,
             sequential_cfg: bool, cfg: bool = True, decode_frames: int = DECODE_CHUNK) -> MemoryEstimate:
    """Peak bytes of one stage's run (see the module doc for the model)."""
    per = BYTES[dtype]
    sizes = [n * per for n in geometry.params.values()]
    weights = max(sizes) if offload else sum(sizes)
    f = geometry.downscale
    batch = 2 if cfg and not sequential_cfg else 1
    unet = int(UNET_ACT_COEF * batch * frames * (height // f) * (width // f) * geometry.unet_c0 * per)
    decode = int(VAE_ACT_COEF * min(decode_frames, frames) * height * width * geometry.vae_c0 * 4)
    video = OUTPUT_COPIES * frames * height * width * 3 * 4
    return MemoryEstimate(weights, unet, decode, video)


def available_memory(device: str) -> int | None:
    """Bytes free for this run on `device`: the GPU's free memory, or the host's available RAM; None if unknown."""
    import torch

    d = torch.device(device)
    if d.type == "cuda":
        free, _ = torch.cuda.mem_get_info(d)
        return int(free)
    if d.type == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            return _meminfo_available()
    return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(need: MemoryEstimate, budget: int | None, *, where: str, hints: list[str],
               strict: bool = True) -> None:
    """Refuse, before any work, a run whose estimate exceeds `budget` bytes, naming what would fit (with `strict`
    False: log a warning instead, for devices the coefficients were not measured on)."""
    if budget is None or need.total <= budget:
        return
    tips = "; ".join(hints) if hints else "use a smaller size or fewer frames"
    message = f"this run needs {need.describe()}, {gb(budget)} {where}: {tips}"
    if strict:
        raise MemoryError_(message)
    logging.getLogger("i2vgen").warning("%s (an estimate not yet calibrated on this device; going ahead)", message)
