"""Training checkpoints written atomically for exact resume, and a new UNet's initialisation from Stable Diffusion.

A checkpoint is a folder `checkpoints/step-XXXXXXXX/`, written under a temporary name and renamed when complete
(`i2vgen.io.atomic_dir`), so a run killed at any moment leaves only complete checkpoints:

    config.yaml          the run's TrainConfig
    unet/                trained weights, an i2vgen UNet folder (`load_unet` reads it)   [full fine-tuning]
    unet_ema/            EMA weights, same format                                       [full fine-tuning, EMA]
    lora/, lora_ema/     adapters alone (`i2vgen.models.lora`)                           [LoRA]
    optimizer.pt         AdamW state keyed by parameter name
    trainer_state.pt     step, LR scheduler, grad scaler, data position, counters and the RNG states of every rank
                         (torch, CUDA, numpy, python `random`, the trainer's generator)

Stable Diffusion initialisation (`init_from_stable_diffusion`): our UNet's spatial layers carry the names of diffusers'
`UNet2DConditionModel`, so a diffusers SD 2.1 UNet copies in by name; the original LDM checkpoint
(`v2-1_512-ema-pruned.ckpt`, `model.diffusion_model.*` keys) is renamed first (`ldm_unet_key_map`). The new layers
start as identities (`zero_init_new_layers`), so the video UNet computes the image UNet frame by frame.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from i2vgen.errors import CheckpointError, InputError
from i2vgen.io.atomic import atomic_dir
from i2vgen.models.configs import UNetConfig
from i2vgen.models.loading import load_unet
from i2vgen.models.unet import I2VGenUNet, UNet3D

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# The spatial (Stable Diffusion initialised) parameters, in our diffusers-style names: conv_in (all 8 input channels
# of the base UNet), the ResBlocks, spatial transformers and resamplers of every level and of the middle block, and
# the output head. Not the timestep embedding, the temporal layers (`transformer_in`, `temp_convs`,
# `temp_attentions`) or the image/fps conditioning. This is VGen's
# `stable_diffusion_image_key_temporal_attention_x1.json` (spec §2.4, §4.1): 863,871,684 parameters of the real
# base UNet.
_SPATIAL = re.compile(
    r"^(conv_in|conv_norm_out|conv_out)\."
    r"|^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.(resnets|attentions|downsamplers|upsamplers)\."
)


def is_spatial_parameter(name: str) -> bool:
    """Whether a UNet parameter (diffusers-style name) is one of the spatial, SD-initialised ones."""
    return _SPATIAL.match(name) is not None


# ---- training checkpoints ------------------------------------------------------------------------------------------
def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted writes are ignored)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """`path` itself if it is a checkpoint folder, else the latest checkpoint of the run folder `path`."""
    path = Path(path)
    if (path / "trainer_state.pt").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint to resume from in {path} (expected {CHECKPOINTS}/step-*/ or a "
                              f"checkpoint folder holding trainer_state.pt)")
    return found[-1]


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the `keep_last` newest checkpoints, and leftovers of interrupted writes."""
    root = Path(output_dir) / CHECKPOINTS
    if keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".step-"):  # atomic_dir's temporary / replaced folders
                shutil.rmtree(p, ignore_errors=True)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """This process's random states, in a form `torch.load(weights_only=True)` reads back."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_tuples(state["python"]))
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def write_unet_folder(folder: Path, class_name: str, config: UNetConfig, state_dict: dict[str, Tensor]) -> None:
    """An i2vgen UNet folder (config.json + model.safetensors), the format `load_unet` reads, from a state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config.to_dict()}, indent=2))
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})


def save_checkpoint(dst: Path, *, config_yaml: str, unet_class: str, unet_config: UNetConfig,
                    model_state: dict[str, Tensor] | None, ema_state: dict[str, Tensor] | None,
                    lora_writer: Callable[[Path], None] | None, optimizer_state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically (main process only; the states are already gathered).

    `lora_writer(folder)`, when given, writes `lora/` (and `lora_ema/`) instead of full weights.
    """
    with atomic_dir(dst) as tmp:
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        if lora_writer is not None:
            lora_writer(tmp)
        else:
            write_unet_folder(tmp / "unet", unet_class, unet_config, model_state)
            if ema_state is not None:
                write_unet_folder(tmp / "unet_ema", unet_class, unet_config, ema_state)
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(trainer_state, tmp / "trainer_state.pt")
    return dst


def load_trainer_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (trainer_state, optimizer_state) of a checkpoint folder."""
    try:
        state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
        optim = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - missing, truncated or foreign files all end the same way
        raise CheckpointError(f"cannot read the training state in {ckpt}: {' '.join(str(e).split())[:200]}") from None
    return state, optim


def read_weights(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None


# ---- initialisation from Stable Diffusion 2.1 ----------------------------------------------------------------------
_LDM_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_LDM_PREFIX = "model.diffusion_model."


def ldm_unet_key_map(config: UNetConfig) -> dict[str, str]:
    """Module prefixes of the original (LDM / CompVis) SD UNet -> diffusers `UNet2DConditionModel`, for the
    architecture `config` describes (2D part). ResBlock children are renamed separately (`_LDM_RESNET`)."""
    n, layers = len(config.block_out_channels), config.layers_per_block
    m = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
         "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
         "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
         "middle_block.2": "mid_block.resnets.1"}
    idx = 0
    for i in range(n):
        for j in range(layers):
            idx += 1
            m[f"input_blocks.{idx}.0"] = f"down_blocks.{i}.resnets.{j}"
            if config.attention_levels[i]:
                m[f"input_blocks.{idx}.1"] = f"down_blocks.{i}.attentions.{j}"
        if i < n - 1:
            idx += 1
            m[f"input_blocks.{idx}.0.op"] = f"down_blocks.{i}.downsamplers.0.conv"
    idx = 0
    for i, attn in enumerate(reversed(config.attention_levels)):
        for j in range(layers + 1):
            m[f"output_blocks.{idx}.0"] = f"up_blocks.{i}.resnets.{j}"
            if attn:
                m[f"output_blocks.{idx}.1"] = f"up_blocks.{i}.attentions.{j}"
            if j == layers and i < n - 1:
                m[f"output_blocks.{idx}.{2 if attn else 1}.conv"] = f"up_blocks.{i}.upsamplers.0.conv"
            idx += 1
    return m


def ldm_to_diffusers_2d(sd: dict[str, Tensor], config: UNetConfig) -> dict[str, Tensor]:
    """Rename an LDM SD UNet state dict (with or without the `model.diffusion_model.` prefix; other keys of a full
    checkpoint, e.g. the VAE's, are dropped) to diffusers `UNet2DConditionModel` keys."""
    table = ldm_unet_key_map(config)
    prefixes = sorted(table, key=len, reverse=True)
    has_prefix = any(k.startswith(_LDM_PREFIX) for k in sd)
    out, unknown = {}, []
    for key, value in sd.items():
        if has_prefix:
            if not key.startswith(_LDM_PREFIX):
                continue
            key = key[len(_LDM_PREFIX):]
        src = next((p for p in prefixes if key.startswith(p + ".")), None)
        if src is None:
            unknown.append(key)
            continue
        rest = key[len(src) + 1:]
        dst = table[src]
        if ".resnets." in dst:
            for old, new in _LDM_RESNET.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
        out[f"{dst}.{rest}"] = value
    if unknown:
        more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise CheckpointError(f"the SD checkpoint has keys this UNet architecture does not: "
                              f"{', '.join(unknown[:3])}{more}")
    return out


def read_sd_unet(path: str | os.PathLike, config: UNetConfig) -> dict[str, Tensor]:
    """A Stable Diffusion UNet as a diffusers-keyed 2D state dict, from a diffusers `UNet2DConditionModel` folder
    (or a model folder holding `unet/`) or an original LDM `.ckpt` / `.safetensors` file; or the spatial layers and
    timestep embedding of a base UNet folder of this package (an image model trained with one-frame clips)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Stable Diffusion UNet not found: {path} (a diffusers unet/ folder or the original "
                              f".ckpt / .safetensors)")
    if path.is_dir():
        if (path / "unet").is_dir() and not (path / "config.json").exists():
            path = path / "unet"
        cfg_file = path / "config.json"
        name = json.loads(cfg_file.read_text()).get("_class_name") if cfg_file.is_file() else None
        if name in ("I2VGenUNet", "I2VGenXLUNet"):  # a base UNet trained as an image model (the tiny recipe's t2i)
            own = load_unet(path).state_dict()
            return {k: v for k, v in own.items() if is_spatial_parameter(k) or k.startswith("time_embedding.")}
        if name != "UNet2DConditionModel":
            raise CheckpointError(f"{path} is not a diffusers UNet2DConditionModel folder (config says {name!r})")
        files = [path / f for f in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
        files += sorted(path.glob("diffusion_pytorch_model*.safetensors"))
        weights = next((f for f in files if f.is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path} holds no diffusion_pytorch_model weights")
        return _read_any(weights)
    return ldm_to_diffusers_2d(_read_any(path), config)


def _read_any(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path}: {' '.join(str(e).split())[:200]} (a Lightning .ckpt with "
                              f"pickled objects: convert it to .safetensors first)") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return {k: v for k, v in sd.items() if isinstance(v, Tensor)}


@torch.no_grad()
def init_from_stable_diffusion(unet: UNet3D, path: str | os.PathLike) -> dict[str, int]:
    """Copy a Stable Diffusion UNet's weights into the spatial layers and timestep embedding of `unet`, then make the
    new layers identities (`zero_init_new_layers`). SD's 4-channel conv_in fills channels 0-3 of the base UNet's
    8-channel conv_in; 1x1-conv projections (SD 1.x) are squeezed to Linear. Returns counts of tensors copied and
    left new."""
    sd = read_sd_unet(path, unet.config)
    own = unet.state_dict()
    expected = {k for k in own if is_spatial_parameter(k) or k.startswith("time_embedding.")}
    missing = sorted(expected - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        raise CheckpointError(f"{path} does not fit this UNet's spatial layers: {len(missing)} missing "
                              f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    for k, v in sd.items():
        target = own[k]
        if v.ndim == 4 and target.ndim == 2 and v.shape[2:] == (1, 1):  # SD 1.x conv proj_in / proj_out
            v = v[:, :, 0, 0]
        if k == "conv_in.weight" and v.shape[1] < target.shape[1]:
            target.zero_()
            target[:, : v.shape[1]].copy_(v)
            continue
        if v.shape != target.shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, this UNet {tuple(target.shape)}")
        target.copy_(v)
    zero_init_new_layers(unet)
    return {"copied": len(sd), "new": len(own) - len(sd)}


@torch.no_grad()
def zero_init_new_layers(unet: UNet3D) -> None:
    """Make the layers the image model lacks start as identities or as no-ops: the last conv of every temporal
    conv block and the output projection of every temporal transformer (residual branches -> identity), the
    base UNet's extra conv_in channels (the image-concat branch), the fps embedding's last layer (adds 0 to the
    timestep embedding) and the last layers of the image-token encoders (their context tokens start at 0)."""
    from i2vgen.models.blocks import TemporalConv, TemporalTransformer

    def zero(m: nn.Module) -> None:
        for p in m.parameters(recurse=False):
            p.zero_()

    for m in unet.modules():
        if isinstance(m, TemporalConv):
            zero(m.conv4[-1])
        elif isinstance(m, TemporalTransformer):
            zero(m.proj_out)
    if isinstance(unet, I2VGenUNet):
        unet.conv_in.weight[:, unet.config.in_channels:].zero_()
        zero(unet.fps_embedding[-1])
        zero(unet.context_embedding[-1])
        zero(unet.image_latents_context_embedding[-1])


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and the one given now (reported on resume: a
    changed max_steps is expected, a changed data or loss setting means the run no longer continues exactly)."""
    diffs = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += check_resume_config(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}")
    return diffs


def ensure_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder {path}: {e.strerror or e}") from None
