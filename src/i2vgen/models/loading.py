"""Loading and saving the 3D UNets in three formats, strictly.

- **diffusers**: a `unet/` folder with `config.json` and `diffusion_pytorch_model[.fp16].safetensors` (or `.bin`),
  as in the Hub repo `ali-vilab/i2vgen-xl`, or a whole pipeline folder holding `unet/`.
- **vgen**: the original checkpoint (`i2vgen_xl_00854500.pth`: `{'state_dict', 'step'}`, VGen key names), and the
  ModelScope refiner checkpoint (`non_ema_0035000.pth`, ModelScope text-to-video key names).
- **i2vgen** (ours): a folder with `config.json` (`_class_name: I2VGenUNet | I2VGenRefinerUNet` + the dataclass fields)
  and `model.safetensors`, keys as diffusers.

Our modules are named like diffusers', so diffusers and i2vgen weights load as they are; the VGen / ModelScope key maps
live in `i2vgen.models.convert`. Pickles are only read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from i2vgen.errors import CheckpointError
from i2vgen.io.atomic import atomic_dir, atomic_path
from i2vgen.models import convert
from i2vgen.models.configs import UNET_PRESETS, UNetConfig
from i2vgen.models.refiner import I2VGenRefinerUNet
from i2vgen.models.unet import I2VGenUNet

UNet = I2VGenUNet | I2VGenRefinerUNet
Format = Literal["i2vgen", "diffusers", "vgen"]

OURS_WEIGHTS = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
_CLASSES = {"I2VGenUNet": I2VGenUNet, "I2VGenRefinerUNet": I2VGenRefinerUNet}


def build_unet(config: UNetConfig, device: torch.device | str | None = None) -> UNet:
    cls = I2VGenUNet if config.image_conditioning else I2VGenRefinerUNet
    with torch.device(device or "cpu"):
        return cls(config)


def load_unet(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    config: UNetConfig | None = None,
    variant: str | None = None,
    concat_scale: float | None = None,
    refiner_resampling: bool | None = None,
    device: torch.device | str = "cpu",
) -> UNet:
    """Load a base or refiner UNet from any of the three formats (see the module docstring).

    Args:
        path: a model folder, a `unet/` folder, an i2vgen folder, or a `.pth`/`.pt`/`.ckpt`/`.safetensors` file.
        dtype: cast the weights to this dtype (default: as stored).
        config: the architecture, when it cannot be read from the path (bare VGen/ModelScope checkpoints are
            otherwise inferred from tensor shapes, with the real model's `norm_num_groups` 32).
        variant: diffusers weight variant, e.g. "fp16" for `diffusion_pytorch_model.fp16.safetensors`.
        concat_scale: override the image-concat factor (2.0 reproduces the released VGen checkpoint, which is what
            the diffusers Hub weights are converted from; diffusers' own port uses 1.0).
        refiner_resampling: override the refiner's (2,1)-pad / row-crop resampling (default: on for ModelScope
            checkpoints and i2vgen folders that say so, off for diffusers `UNet3DConditionModel` folders).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file or folder: {path}")
    sd, cfg = _read(path, variant)
    cfg = config or cfg or _infer_config(sd)
    overrides = {}
    if concat_scale is not None:
        overrides["concat_scale"] = float(concat_scale)
    if refiner_resampling is not None:
        overrides["refiner_resampling"] = bool(refiner_resampling)
    cfg = cfg.replace(**overrides)
    model = build_unet(cfg, device="meta")
    _load_strict(model, sd, path)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


def save_unet(model: UNet, dst: str | os.PathLike, format: Format = "i2vgen", dtype: torch.dtype | None = None,
              step: int = 0) -> Path:
    """Write `model` atomically as an i2vgen folder, a diffusers `unet/` folder, or a VGen/ModelScope `.pth`."""
    dst = Path(dst)
    sd = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    cfg: UNetConfig = model.config
    if format == "vgen":
        if cfg.image_conditioning:
            sd = convert.diffusers_to_vgen(sd)
        else:
            sd = convert.diffusers_unet3d_to_modelscope(sd)
        with atomic_path(dst) as tmp:
            torch.save({"state_dict": sd, "step": step}, tmp)
        return dst
    with atomic_dir(dst) as tmp:
        tmp = Path(tmp)
        if format == "i2vgen":
            meta = {"_class_name": type(model).__name__, **cfg.to_dict()}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            save_file(sd, str(tmp / OURS_WEIGHTS), metadata={"format": "pt"})
        elif format == "diffusers":
            (tmp / "config.json").write_text(json.dumps(cfg.to_diffusers_config(), indent=2))
            suffix = ".fp16" if dtype == torch.float16 else ""
            save_file(sd, str(tmp / f"{DIFFUSERS_WEIGHTS}{suffix}.safetensors"), metadata={"format": "pt"})
        else:
            raise ValueError(f"unknown format {format!r}; choose i2vgen, diffusers or vgen")
    return dst


# ---- reading ------------------------------------------------------------------------------------------------------
def _read(path: Path, variant: str | None) -> tuple[dict[str, Tensor], UNetConfig | None]:
    """-> (diffusers-keyed state dict, config if the path states one)."""
    if path.is_dir():
        if (path / "unet").is_dir() and not (path / "config.json").exists():
            path = path / "unet"
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise CheckpointError(f"{path} holds no config.json: not a diffusers or i2vgen UNet folder")
        meta = read_json_object(cfg_file)
        name = meta.get("_class_name")
        if name in _CLASSES:
            cfg = UNetConfig.from_dict(meta)
            return _read_weights_file(path / OURS_WEIGHTS), cfg
        cfg = UNetConfig.from_diffusers_config(meta)
        return _read_weights_file(_diffusers_weights(path, variant)), cfg
    sd = _read_weights_file(path)
    return _to_diffusers_keys(sd, path), None


def read_json_object(path: Path) -> dict[str, Any]:
    """A config file's JSON object; anything else is a one-line CheckpointError."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return d


def _diffusers_weights(folder: Path, variant: str | None) -> Path:
    suffix = f".{variant}" if variant else ""
    for ext in (".safetensors", ".bin"):
        p = folder / f"{DIFFUSERS_WEIGHTS}{suffix}{ext}"
        if p.exists():
            return p
    found = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    hint = f" (found: {', '.join(found)}; pass variant=...)" if found else ""
    raise CheckpointError(f"{folder} has no {DIFFUSERS_WEIGHTS}{suffix}.safetensors{hint}")


def _read_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:  # noqa: BLE001 - safetensors, zipfile and unpickler errors vary
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {path} (truncated, corrupt or not a checkpoint): {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _to_diffusers_keys(sd: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    fmt = convert.detect_unet_format(sd)
    if fmt == "vgen":
        return convert.vgen_to_diffusers(sd)
    if fmt == "modelscope":
        return convert.modelscope_to_diffusers_unet3d(sd)
    return sd


def _infer_config(sd: dict[str, Tensor]) -> UNetConfig:
    """Architecture from tensor shapes (diffusers keys). norm_num_groups cannot be read from shapes: 32 assumed
    (or the largest power of two below it that divides every width); pass `config=` for other models."""
    try:
        image = "image_latents_proj_in.0.weight" in sd
        n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("down_blocks."))
        chs = tuple(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(n))
        layers = len({k.split(".")[3] for k in sd if k.startswith("down_blocks.0.resnets.")})
        attn = tuple(f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in range(n))
        ctx = sd["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1]
        head_dim = sd["transformer_in.proj_in.weight"].shape[0] // 8
        in_ch = sd["conv_in.weight"].shape[1] // (2 if image else 1)
        kw = dict(in_channels=in_ch, out_channels=sd["conv_out.weight"].shape[0], block_out_channels=chs,
                  attention_levels=attn, layers_per_block=layers, cross_attention_dim=ctx, attention_head_dim=head_dim,
                  image_conditioning=image)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the UNet architecture from the checkpoint (missing {e}); "
                              f"pass config=") from None
    if image:
        kw["num_image_tokens"] = sd["context_embedding.2.weight"].shape[0] // ctx
        base = UNET_PRESETS["i2vgen-xl"]
    else:
        base = UNET_PRESETS["ms-vid2vid-xl"]
    # Not recorded in the weights: the real models' 32, or the largest group count that divides every width.
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in chs))
    return base.replace(norm_num_groups=groups, **kw)


def _load_strict(model: nn.Module, sd: dict[str, Tensor], path: Path) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shaped = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in want.items()
              if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", shaped)):
            if items:
                more = f", ... (+{len(items) - 4})" if len(items) > 4 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{more}")
        raise CheckpointError(f"{path} does not match the model: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True, assign=True)
