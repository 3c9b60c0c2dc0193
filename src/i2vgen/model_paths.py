"""Where models are: built-in names, local folders and Hugging Face Hub ids, and the settings a folder suggests.

Torch-free (the command line reads folder suggestions before deciding to load anything); the pipelines, the
trainer and the application layer all resolve model paths here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from i2vgen.errors import CheckpointError

ASSETS = Path(__file__).resolve().parent / "assets"
# Models shipped inside the package, loadable by name (`--model tiny-shapes`).
BUILTIN_MODELS = {"tiny-shapes": ASSETS / "tiny-shapes", "tiny-shapes-refiner": ASSETS / "tiny-shapes-refiner"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path_or_id: str | os.PathLike, *, components: list[str] | None = None,
                       variant: str | None = None) -> Path:
    """A local folder, a built-in model name, or a Hugging Face Hub id (downloaded with progress bars)."""
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise CheckpointError(f"a model is a folder, a built-in name or a Hub id (a string), got {path_or_id!r}")
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
    if not is_hub_id(s):
        raise CheckpointError(f"model not found: {s} (not a folder, a built-in model or a Hub id owner/name)")
    from huggingface_hub import snapshot_download  # deferred: only needed for downloads

    try:
        allow, ignore = hub_patterns(components or [], variant)
        return Path(snapshot_download(s, allow_patterns=allow or None, ignore_patterns=ignore))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth, disk: all end the same way
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot download {s} from the Hugging Face Hub: {msg}") from None


def is_hub_id(s: str) -> bool:
    """`owner/name` that is not an existing local path."""
    return bool(_HUB_ID.match(s)) and not Path(s).expanduser().exists()


def local_model_path(path_or_id: str | os.PathLike) -> Path:
    """A built-in model name's folder, else the path as given (no check, no download)."""
    s = os.fspath(path_or_id)
    return BUILTIN_MODELS.get(s, Path(s).expanduser())


# Folder suggestions (`_i2vgen_defaults` in model_index.json) -> the settings they fill. Base folders say
# `refine_strength`, `refine_guidance_scale` and `refine_sampler` for the refiner they name; refiner folders say
# `strength`, `guidance_scale` and `sampler` for themselves.
_SUGGESTION_KEYS = {"num_frames": "num_frames", "width": "width", "height": "height", "target_fps": "fps",
                    "guidance_scale": "guidance", "refine_width": "refine_width", "refine_height": "refine_height",
                    "refine_strength": "strength", "refine_guidance_scale": "refine_guidance",
                    "refine_sampler": "refine_sampler", "refiner": "refiner_model",
                    "timestep_spacing": "timestep_spacing", "strength": "strength", "sampler": "sampler"}


def model_defaults(path_or_id: str | os.PathLike) -> dict[str, Any]:
    """Generation settings a local model folder suggests, as written: `_i2vgen_defaults` in its model_index.json
    (the tiny models write width, height, num_frames, target_fps, guidance_scale, refine_width, refine_height,
    refine_strength or strength, refine_guidance_scale or guidance_scale, refine_sampler or sampler, refiner,
    timestep_spacing). {} for Hub ids, folders without them and unreadable files (loading reports those)."""
    try:
        index = json.loads((local_model_path(path_or_id) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return {}
    defaults = index.get("_i2vgen_defaults") if isinstance(index, dict) else None
    return dict(defaults) if isinstance(defaults, dict) else {}


def suggested_settings(path_or_id: str | os.PathLike) -> dict[str, Any]:
    """`model_defaults` under the application layer's setting names (num_frames, width, height, fps, guidance,
    strength, refine_guidance, refine_sampler, refine_width, refine_height, refiner_model, timestep_spacing; refiner
    folders: sampler); unknown keys are dropped."""
    return {_SUGGESTION_KEYS[k]: v for k, v in model_defaults(path_or_id).items() if k in _SUGGESTION_KEYS}


def check_model_folder(root: Path, components: list[str]) -> None:
    missing = [c for c in components if not (root / c).is_dir()]
    if missing:
        raise CheckpointError(f"model folder {root} lacks component folder(s): {', '.join(missing)}")


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
