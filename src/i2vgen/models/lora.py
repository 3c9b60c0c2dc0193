"""LoRA (Hu et al. 2021) on either UNet's attention projections, through peft; adapters saved and loaded alone.

Training: `add_lora(unet, LoRAConfig(...))` injects peft LoRA layers in place (parameter names stay ours, e.g.
`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.default.weight`), freezes everything else and
returns the trainable parameters. `save_lora(unet, folder)` writes only the adapters:

    adapter_model.safetensors   peft's key layout (`...to_q.lora_A.weight`, `...to_q.lora_B.weight`)
    adapter_config.json         peft's LoraConfig plus `i2vgen_unet` (the UNet class and config it was trained on)

Inference: `apply_lora(unet, path, scale)` adds `scale * (alpha / r) * B @ A` to each adapted weight (merged: no peft
at run time, no extra cost per step), or with `merge=False` injects peft layers and sets their scale (reversible).
`parse_lora_spec("path:0.8")` reads the `--lora PATH[:scale]` command-line form.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from i2vgen.errors import CheckpointError, InputError
from i2vgen.io.atomic import atomic_dir
from i2vgen.models.unet import UNet3D

if TYPE_CHECKING:
    from i2vgen.train.config import LoRAConfig

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
ADAPTER = "default"
# Attention blocks of the UNet trunk: spatial transformers, temporal transformers and the input temporal transformer
# (not the image-latent temporal encoder of the conditioning branch).
_SCOPE = r"(.*\.(attentions|temp_attentions)\.\d+|transformer_in)\.transformer_blocks\.\d+\.attn[12]"


def target_pattern(targets: tuple[str, ...] | list[str]) -> str:
    """peft `target_modules` regex: the named projections inside the UNet trunk's attention layers."""
    names = "|".join(re.escape(t) for t in targets)
    return rf"^{_SCOPE}\.({names})$"


def add_lora(unet: UNet3D, cfg: LoRAConfig) -> list[nn.Parameter]:
    """Inject LoRA adapters (B zero-initialised, so the output is unchanged at first) and freeze the rest.
    Returns the adapter parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=target_pattern(cfg.targets), init_lora_weights=True)
    unet.requires_grad_(False)
    inject_adapter_in_model(peft_cfg, unet, adapter_name=ADAPTER)
    params = [p for n, p in unet.named_parameters() if ".lora_" in n]
    if not params:
        raise InputError(f"lora.targets {cfg.targets} match no layer of the UNet")
    for p in params:
        p.requires_grad_(True)
    unet.peft_config = {ADAPTER: peft_cfg}  # what save_lora records
    return params


def lora_state_dict(unet: nn.Module) -> dict[str, Tensor]:
    """The adapter weights in peft's layout (adapter name removed)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name=ADAPTER)


def save_lora(unet: UNet3D, folder: str | os.PathLike, state_dict: dict[str, Tensor] | None = None) -> Path:
    """Write the adapters alone (safetensors + JSON) atomically. `state_dict` overrides the module's adapter
    weights (e.g. gathered or EMA ones)."""
    peft_cfg = getattr(unet, "peft_config", {}).get(ADAPTER)
    if peft_cfg is None:
        raise InputError("this UNet has no LoRA adapters to save (call add_lora first)")
    sd = lora_state_dict(unet) if state_dict is None else state_dict
    sd = {_strip_adapter(k): v.detach().contiguous().cpu() for k, v in sd.items()}
    meta = _jsonable(peft_cfg.to_dict())
    meta["i2vgen_unet"] = {"_class_name": type(unet).__name__, **unet.config.to_dict()}
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
    return folder


def load_lora(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """-> (adapter config, adapter weights) of a folder written by `save_lora` (or by peft)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS
    if not weights.is_file() or not (folder / CONFIG).is_file():
        raise CheckpointError(f"no LoRA adapter at {path} (expected {WEIGHTS} and {CONFIG})")
    try:
        meta = json.loads((folder / CONFIG).read_text())
        sd = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - truncated or foreign files
        raise CheckpointError(f"cannot read the LoRA adapter at {path}: {' '.join(str(e).split())[:200]}") from None
    for key in ("r", "lora_alpha"):
        if key not in meta:
            raise CheckpointError(f"{folder / CONFIG} lacks {key!r}: not a LoRA adapter config")
    return meta, sd


@torch.no_grad()
def apply_lora(unet: UNet3D, path: str | os.PathLike, scale: float = 1.0, *, merge: bool = True) -> UNet3D:
    """Apply a saved adapter to `unet` at `scale` (0: no effect, 1: as trained).

    merge=True adds scale * alpha / r * B @ A into each adapted Linear weight (in the weight's dtype). merge=False
    injects peft layers instead (outputs then equal the training-time model's exactly at scale 1).
    """
    meta, sd = load_lora(path)
    trained = meta.get("i2vgen_unet", {}).get("_class_name")
    if trained is not None and trained != type(unet).__name__:
        raise CheckpointError(f"the LoRA at {path} was trained on a {trained}, not a {type(unet).__name__}")
    r, alpha = int(meta["r"]), float(meta["lora_alpha"])
    pairs = _pairs(sd, path)
    modules = dict(unet.named_modules())
    missing = [name for name in pairs if not isinstance(modules.get(name), nn.Linear)]
    if missing:
        raise CheckpointError(f"the LoRA at {path} adapts layers this UNet lacks: {', '.join(missing[:3])}")
    if merge:
        for name, (a, b) in pairs.items():
            w = modules[name].weight
            delta = (b.to(torch.float32) @ a.to(torch.float32)) * (scale * alpha / r)  # (out, in)
            if delta.shape != w.shape:
                raise CheckpointError(f"LoRA {name}: delta {tuple(delta.shape)} vs weight {tuple(w.shape)}")
            w.add_(delta.to(w.device, w.dtype))
        return unet
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(pairs), init_lora_weights=True)
    inject_adapter_in_model(cfg, unet, adapter_name=ADAPTER)
    set_peft_model_state_dict(unet, sd, adapter_name=ADAPTER)
    for m in unet.modules():
        if isinstance(m, LoraLayer):
            m.set_scale(ADAPTER, scale)
    unet.peft_config = {ADAPTER: cfg}
    return unet


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """`PATH` or `PATH:SCALE` (the `--lora` option) -> (path, scale); a colon followed by a non-number belongs to
    the path."""
    path, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def _pairs(sd: dict[str, Tensor], path: str | os.PathLike) -> dict[str, tuple[Tensor, Tensor]]:
    """{module name: (A (r, in), B (out, r))} from peft keys `<module>.lora_A.weight` / `.lora_B.weight`."""
    out: dict[str, dict[str, Tensor]] = {}
    for k, v in sd.items():
        m = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", k)
        if m is None:
            raise CheckpointError(f"unexpected key {k!r} in the LoRA at {path}")
        out.setdefault(m.group(1), {})[m.group(2)] = v
    bad = [name for name, ab in out.items() if set(ab) != {"A", "B"}]
    if bad:
        raise CheckpointError(f"the LoRA at {path} lacks an A or B matrix for {bad[0]}")
    return {name: (ab["A"], ab["B"]) for name, ab in out.items()}


def _strip_adapter(key: str) -> str:
    return key.replace(f".{ADAPTER}.", ".")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x.value) if hasattr(x, "value") else str(x)
