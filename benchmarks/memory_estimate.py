"""Calibrate and check the application layer's memory estimate (`i2vgen.app.memory`) against measured peaks, CPU.

Run: `.venv/bin/python benchmarks/memory_estimate.py [--threads 2]`

Each measurement runs in its own subprocess (a fresh allocator), as the growth of the peak RSS (VmHWM) over the RSS
after the model is built: a guided UNet step (batch 2) of the `bench-mid` UNet (base channels 64) at three sizes,
and the decode of 2 frames with the real SD VAE configuration (random weights) at three sizes. Prints, per size,
the measured MB, the estimate's MB and the implied coefficient (measured / (B F h w c0 bytes) for the UNet,
measured / (frames H W c0 4) for the VAE), the figures `UNET_ACT_COEF` / `VAE_ACT_COEF` are set from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import peak_growth_mb, reset_peak

UNET_SIZES = [(8, 32, 32), (16, 32, 48), (8, 64, 64)]  # frames, latent h, w
VAE_SIZES = [(256, 256), (512, 288), (640, 352)]  # width, height; 2 frames
REAL_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}


def unet_child(frames: int, h: int, w: int) -> dict:
    from i2vgen.models.configs import UNET_PRESETS
    from i2vgen.models.unet import I2VGenUNet, UNetCondition

    cfg = UNET_PRESETS["bench-mid"]
    unet = I2VGenUNet(cfg).eval()
    b = 2
    x = torch.randn(b, 4, frames, h, w)
    cond = UNetCondition(torch.randn(b, 145, cfg.cross_attention_dim), torch.randn(b, 4, frames, h, w))
    with torch.no_grad():
        since = reset_peak()
        unet(x, torch.tensor([500] * b), condition=cond, fps=torch.tensor([16] * b))
        mb = peak_growth_mb(since)
    return {"kind": "unet", "frames": frames, "h": h, "w": w, "c0": cfg.block_out_channels[0], "batch": b,
            "measured_mb": mb}


def vae_child(width: int, height: int) -> dict:
    from diffusers import AutoencoderKL

    from i2vgen.models.vae import VideoVAE

    vae = VideoVAE(AutoencoderKL(**REAL_VAE).eval())
    z = torch.randn(1, 4, 2, height // 8, width // 8)
    with torch.no_grad():
        since = reset_peak()
        vae.decode(z, chunk_size=2)
        mb = peak_growth_mb(since)
    return {"kind": "vae", "width": width, "height": height, "frames": 2, "c0": 128, "measured_mb": mb}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        kind, *dims = args.child
        row = unet_child(*map(int, dims)) if kind == "unet" else vae_child(*map(int, dims))
        print(json.dumps(row))
        return 0
    from i2vgen.app.memory import UNET_ACT_COEF, VAE_ACT_COEF

    jobs = [("unet", *s) for s in UNET_SIZES] + [("vae", *s) for s in VAE_SIZES]
    for job in jobs:
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", *map(str, job)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if row["kind"] == "unet":
            unit = row["batch"] * row["frames"] * row["h"] * row["w"] * row["c0"] * 4
            est = UNET_ACT_COEF * unit
        else:
            unit = row["frames"] * row["width"] * row["height"] * row["c0"] * 4
            est = VAE_ACT_COEF * unit
        row.update(coef=round(row["measured_mb"] * 2**20 / unit, 2), estimate_mb=round(est / 2**20, 1),
                   ratio=round(est / (row["measured_mb"] * 2**20), 2))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
