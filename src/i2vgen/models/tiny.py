"""Tiny I2VGen-XL model folders, in the real model's diffusers layout, for the demo, tests and the tiny recipe.

`write_model_folder` writes the components given to it; `random_components` builds tiny ones at a fixed random
initialisation (no download, a few hundred kB).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from diffusers import AutoencoderKL

from i2vgen.io.atomic import atomic_dir
from i2vgen.models.configs import UNetConfig
from i2vgen.models.encoders import quiet_transformers, tiny_text_config, tiny_vision_config, write_tiny_clip_tokenizer
from i2vgen.models.loading import save_unet
from i2vgen.models.unet import I2VGenUNet
from i2vgen.models.vae import tiny_vae_config

TINY_UNET = UNetConfig(block_out_channels=(32, 64), attention_levels=(True, False), layers_per_block=1,
                       norm_num_groups=8, cross_attention_dim=32, attention_head_dim=16)
# diffusers' DDIMScheduler config of the real model (spec 5.2): documents the schedule our own code implements.
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
    "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "leading",
    "steps_offset": 1, "set_alpha_to_one": True, "clip_sample": False,
}


@dataclass
class Components:
    unet: I2VGenUNet
    vae: AutoencoderKL
    text_encoder: transformers.CLIPTextModel
    image_encoder: transformers.CLIPVisionModelWithProjection


def random_components(seed: int = 0, unet_config: UNetConfig = TINY_UNET) -> Components:
    """Tiny components at a fixed random initialisation (PyTorch's default init, so the UNet starts near zero)."""
    d = unet_config.cross_attention_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Components(
            unet=I2VGenUNet(unet_config),
            vae=AutoencoderKL(**tiny_vae_config()),
            text_encoder=transformers.CLIPTextModel(tiny_text_config(hidden_size=d, projection_dim=d)),
            image_encoder=transformers.CLIPVisionModelWithProjection(
                tiny_vision_config(hidden_size=d, projection_dim=d)),
        )


def write_text_and_vae(folder: Path, vae: AutoencoderKL, text_encoder: transformers.CLIPTextModel) -> None:
    """The parts both stages' folders share: `vae/`, `text_encoder/` and a tiny `tokenizer/`."""
    with quiet_transformers():
        vae.save_pretrained(folder / "vae")
        text_encoder.save_pretrained(folder / "text_encoder")
        tok = transformers.CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(folder / "_tok"),
                                                         model_max_length=77)
        tok.save_pretrained(folder / "tokenizer")
    shutil.rmtree(folder / "_tok")


def write_model_folder(c: Components, dst: str | os.PathLike, *, note: str = "") -> Path:
    """Write a diffusers-layout model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    image_encoder/, scheduler/), atomically."""
    dst = Path(dst)
    with atomic_dir(dst) as tmp, quiet_transformers():
        tmp = Path(tmp)
        index = {
            "_class_name": "I2VGenXLPipeline", "_i2vgen_note": note,
            "unet": ["diffusers", "I2VGenXLUNet"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "scheduler": ["diffusers", "DDIMScheduler"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        save_unet(c.unet, tmp / "unet", format="diffusers")
        write_text_and_vae(tmp, c.vae, c.text_encoder)
        c.image_encoder.save_pretrained(tmp / "image_encoder")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    return dst
