"""Memory estimates made before any weights load, the planner that picks the cheapest settings that fit, and the
refusal when nothing does.

The estimate of one run's peak: the weights on the device (all components, or the largest with model CPU offload),
plus the UNet's activations during one guided step, plus the VAE decode of one chunk of frames, plus the decoded
video. A sum, not the larger of the UNet step and the decode: on the CPU the allocator keeps much of what the UNet
step freed, and whole runs measure close to the sum (`benchmarks/memory_estimate.py`). The UNet's activations scale
as (CFG batch) x frames x latent pixels x base channels x bytes per element; `UNET_ACT_COEF` is that factor,
measured on CPU. The decode of n frames at once takes VAE_CALL_COEF + VAE_FRAME_COEF x n times pixels x the
decoder's top-level channels x 4 bytes (in strips, `models/vae_tiling.py`: n x (VAE_TILED_COEF x pixels +
VAE_STRIP_COEF x the pixels of one strip) x channels x 4), plus a fixed part proportional to the VAE's weights
(`VAE_WEIGHT_COEF`). Sizes come from the folder's config.json files and safetensors headers (parameter counts, no
tensor is read); a Hub id that is not downloaded yet uses the released models' figures.

`plan` tries the settings that save memory, cheapest first, until the estimate fits: the VAE's frames per call and
strips (they cost a few per cent of the decode, itself a few per cent of a run), then sequential CFG (two UNet
forwards per step instead of one batched), then model CPU offload (weights crossing the bus at every stage; never on
the CPU, where it frees nothing). What the user asked for (`--sequential-cfg`, `--offload`) is kept.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2vgen.errors import I2VGenError
from i2vgen.model_paths import local_model_path

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Measured on CPU, fp32 (benchmarks/memory_estimate.py): 92-99 for the UNet (bench-mid, three sizes); the VAE's
# figures are least-squares fits to the real-config decoder at four sizes from 256x256 to 1280x720 (within 15 %).
# Not yet measured on a GPU, where kernels and allocators differ: there an estimate over the free memory is a
# warning, not a refusal (`strict`).
UNET_ACT_COEF = 100.0  # peak UNet activation bytes / (B F h w c0 bytes_per_element)
VAE_CALL_COEF = 3.9  # peak decoder bytes of a call / (H W c0_vae 4), whatever its frames ...
VAE_FRAME_COEF = 4.0  # ... plus this per frame of the call
VAE_TILED_COEF = 2.6  # in strips: per frame of the call, / (H W c0_vae 4) ...
VAE_STRIP_COEF = 15.0  # ... plus this / (one strip's pixels c0_vae 4)
VAE_WEIGHT_COEF = 0.25  # the decode's fixed part / the VAE's float32 weight bytes
DECODE_CHUNK = 2  # frames decoded at once (the pipelines' default decode_chunk_size)
VAE_TILE = 8  # latent rows per strip when the planner tiles the VAE (64 pixel rows of the SD VAE)
# the planner's VAE settings, cheapest first: (frames per VAE call, strip rows or None for whole frames)
VAE_CHOICES: tuple[tuple[int, int | None], ...] = ((DECODE_CHUNK, None), (1, None), (1, VAE_TILE))
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
    unet_levels: int = 4  # the UNet's resolution levels (len(block_out_channels))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one run: the weights on the device, the UNet's activations, the decode's and the decoded video's."""

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


@dataclass(frozen=True)
class Plan:
    """The planner's settings for a run (applied by `i2vgen.app.run`), with their estimate and the budget."""

    sequential_cfg: bool
    offload: bool
    decode_chunk: int  # frames per VAE call
    vae_tile: int | None  # latent rows per VAE strip; None: whole frames
    need: MemoryEstimate
    budget: int | None  # bytes; None: unknown
    where: str  # how the budget is named ("free on cuda:0", "allowed (--max-memory)")

    def settings(self) -> str:
        vae = f"VAE {self.decode_chunk} frame{'s' if self.decode_chunk > 1 else ''} at a time"
        vae += f" in strips of {self.vae_tile} latent rows" if self.vae_tile else ""
        return (f"{'sequential' if self.sequential_cfg else 'batched'} CFG, {vae}, "
                f"{'model CPU offload' if self.offload else 'no offload'}")

    def describe(self) -> str:
        """One line: `memory plan: batched CFG, VAE 2 frames at a time, no offload: about ... of 20.3 GB free ...`."""
        budget = f" of {gb(self.budget)} {self.where}" if self.budget is not None else ""
        return f"memory plan: {self.settings()}: {self.need.describe()}{budget}"

    def as_dict(self) -> dict[str, Any]:
        """What the output's metadata records."""
        return {"sequential_cfg": self.sequential_cfg, "offload": self.offload, "decode_chunk": self.decode_chunk,
                "vae_tile": self.vae_tile, "estimate_bytes": self.need.total, "budget_bytes": self.budget}


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
    unet_blocks = unet_cfg.get("block_out_channels") or [REAL_BASE["unet_c0"]] * 4
    vae_blocks = vae_cfg.get("block_out_channels") or [REAL_BASE["vae_c0"]] * 4
    return ModelGeometry(params, int(unet_blocks[0]), int(vae_blocks[0]), 2 ** (len(vae_blocks) - 1),
                         len(unet_blocks))


def estimate(geometry: ModelGeometry, *, frames: int, width: int, height: int, dtype: str, offload: bool,
             sequential_cfg: bool, cfg: bool = True, decode_frames: int = DECODE_CHUNK,
             tile: int | None = None) -> MemoryEstimate:
    """Peak bytes of one stage's run (see the module doc for the model). `offload`: one component on the device at a
    time (pass False for the CPU, where offload frees nothing); `decode_frames` / `tile`: the VAE's frames per call
    and strip rows."""
    per = BYTES[dtype]
    sizes = [n * per for n in geometry.params.values()]
    weights = max(sizes) if offload else sum(sizes)
    f = geometry.downscale
    batch = 2 if cfg and not sequential_cfg else 1
    unet = int(UNET_ACT_COEF * batch * frames * (height // f) * (width // f) * geometry.unet_c0 * per)
    decode = int(vae_decode_bytes(geometry, min(decode_frames, frames), width, height, tile))
    video = OUTPUT_COPIES * frames * height * width * 3 * 4
    return MemoryEstimate(weights, unet, decode, video)


def vae_decode_bytes(geometry: ModelGeometry, frames: int, width: int, height: int, tile: int | None) -> float:
    """Peak bytes of decoding `frames` frames in one VAE call, whole or in strips of `tile` latent rows."""
    per_pixel = geometry.vae_c0 * 4
    fixed = VAE_WEIGHT_COEF * geometry.params.get("vae", 0) * 4
    if tile is None:
        return fixed + (VAE_CALL_COEF + VAE_FRAME_COEF * frames) * width * height * per_pixel
    strip = width * min(height, tile * geometry.downscale)
    return fixed + frames * (VAE_TILED_COEF * width * height + VAE_STRIP_COEF * strip) * per_pixel


Need = Callable[..., MemoryEstimate]  # need(sequential_cfg=, offload=, decode_frames=, tile=) -> the estimate


def plan(need: Need, budget: int | None, *, where: str, strict: bool = True, sequential_cfg: bool = False,
         offload: bool = False, can_offload: bool = True, hints: Callable[[], list[str]] | None = None) -> Plan:
    """The cheapest settings whose estimate `need(...)` fits `budget` bytes (module doc for the order); the user's
    `sequential_cfg` / `offload` are kept, offload is tried only when `can_offload`. When nothing fits: raise
    `MemoryError_` naming `hints()`, or with `strict` False (a device the coefficients were not measured on) log a
    warning and return the leanest plan."""
    tried = []
    for off in (True,) if offload else (False, True) if can_offload else (False,):
        for seq in (True,) if sequential_cfg else (False, True):
            for frames, tile in VAE_CHOICES:
                e = need(sequential_cfg=seq, offload=off, decode_frames=frames, tile=tile)
                p = Plan(seq, off, frames, tile, e, budget, where)
                if budget is None or e.total <= budget:
                    return p
                tried.append(p)
    leanest = min(tried, key=lambda p: p.need.total)
    tips = "; ".join(hints() if hints is not None else []) or "use a smaller size or fewer frames"
    message = (f"this run needs {leanest.need.describe()} even with {leanest.settings()}, {gb(budget)} {where}: "
               f"{tips}")
    if strict:
        raise MemoryError_(message)
    logging.getLogger("i2vgen").warning("%s (an estimate not yet calibrated on this device; going ahead)", message)
    return leanest


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
