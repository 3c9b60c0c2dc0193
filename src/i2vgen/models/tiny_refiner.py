"""Tiny refiner (MS-Vid2Vid-XL layout) model folders for tests, the demo and benchmarks.

A refiner folder holds `unet/` (an i2vgen folder, so the (2,1)-pad / row-crop resampling flag is kept), `vae/`,
`text_encoder/` and `tokenizer/`; there is no image encoder. `random_refiner_components` builds the components at
PyTorch's default initialisation (no download); `write_refiner_folder` writes them atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers import AutoencoderKL

from i2vgen.io.atomic import atomic_dir
from i2vgen.models.configs import UNET_PRESETS, UNetConfig
from i2vgen.models.encoders import tiny_text_config
from i2vgen.models.loading import save_unet
from i2vgen.models.refiner import I2VGenRefinerUNet
from i2vgen.models.tiny import write_text_and_vae
from i2vgen.models.vae import tiny_vae_config

TINY_REFINER = UNET_PRESETS["tiny-refiner"]


@dataclass
class RefinerComponents:
    unet: I2VGenRefinerUNet
    vae: AutoencoderKL
    text_encoder: transformers.CLIPTextModel


def random_refiner_components(seed: int = 0, unet_config: UNetConfig = TINY_REFINER,
                              vae_config: dict[str, Any] | None = None,
                              text_config: transformers.CLIPTextConfig | None = None) -> RefinerComponents:
    """Refiner components at a fixed random initialisation: by default the `tiny-refiner` UNet, the 2-level tiny VAE
    (downscale 2) and a 2-layer CLIP text model as wide as the UNet's context."""
    d = unet_config.cross_attention_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RefinerComponents(
            unet=I2VGenRefinerUNet(unet_config),
            vae=AutoencoderKL(**(vae_config or tiny_vae_config())),
            text_encoder=transformers.CLIPTextModel(text_config or tiny_text_config(hidden_size=d, projection_dim=d)),
        )


def write_refiner_folder(c: RefinerComponents, dst: str | os.PathLike, *, note: str = "") -> Path:
    """Write a refiner model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/) atomically."""
    dst = Path(dst)
    with atomic_dir(dst) as tmp:
        tmp = Path(tmp)
        index = {
            "_class_name": "I2VGenRefinePipeline", "_i2vgen_note": note,
            "unet": ["i2vgen", "I2VGenRefinerUNet"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        save_unet(c.unet, tmp / "unet", format="i2vgen")
        write_text_and_vae(tmp, c.vae, c.text_encoder)
    return dst
