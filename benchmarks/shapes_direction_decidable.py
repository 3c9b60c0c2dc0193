"""At which noise level does x_t alone tell the direction of motion? A read-out probe for the tiny-shapes task.

Run: `.venv/bin/python benchmarks/shapes_direction_decidable.py [-n 100] [--model tiny-shapes] [-o out.json]`

For each held-out one-shape clip the four clips that differ only in the direction are rendered and encoded with the
model folder's VAE (posterior means, scaled: the latents the base UNet is trained on). For each t, x_t = sqrt(a) z +
sqrt(1 - a) eps is drawn from the true clip and read out with the best classifier there is: the candidate d whose
sqrt(a) z_d is nearest to x_t (the likelihood-ratio test for Gaussian noise, knowing the four candidates: an upper
bound on what any denoiser can read from x_t). Where this read-out is at chance, only the text can tell the
direction; where it is near 100 %, the denoiser can take the direction from x_t and never needs the word.

Also reported: the same read-out on the last frame alone (one frame, no temporal pooling), and the share of the
training timesteps that falls where the read-out is below 90 % under uniform t (how often uniform training asks for
the word at all). JSON out: {"t": [...], "accuracy": [...], "accuracy_last_frame": [...], ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2vgen.diffusion.schedule import base_alphas_cumprod
from i2vgen.model_paths import local_model_path
from i2vgen.models.vae import VideoVAE
from i2vgen.shapes import make_clip, split_seeds, with_direction

DIRECTIONS = ("left", "right", "up", "down")
TIMESTEPS = (999, 995, 990, 985, 980, 975, 970, 960, 950, 940, 920, 900, 850, 800, 700, 600, 400)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=100, help="one-shape held-out clips")
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--draws", type=int, default=8, help="noise draws per clip and t")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    vae = VideoVAE.from_model_folder(local_model_path(args.model))
    alphas = base_alphas_cumprod()
    clips = [c for c in (make_clip(s) for s in split_seeds("heldout", 4 * args.n)) if len(c.shapes) == 1][:args.n]
    correct = np.zeros((len(TIMESTEPS), 2))
    total = 0
    gen = torch.Generator().manual_seed(0)
    for clip in clips:
        shape = clip.shapes[0]
        videos = [with_direction(clip, d).frames for d in DIRECTIONS]
        frames = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1)  # (4,3,F,H,W)
        with torch.no_grad():
            z = vae.encode(frames, sample=False).double()  # (4, 4, F, h, w)
        j = DIRECTIONS.index(shape.direction)
        for i, t in enumerate(TIMESTEPS):
            a = float(alphas[t])
            eps = torch.randn((args.draws, *z.shape[1:]), generator=gen, dtype=torch.float64)
            x_t = a ** 0.5 * z[j] + (1 - a) ** 0.5 * eps  # (draws, 4, F, h, w)
            dist = (x_t[:, None] - a ** 0.5 * z[None]).pow(2)  # (draws, 4 candidates, 4, F, h, w)
            # ties (all four candidates at t = 999, where sqrt(a) = 0) broken at random: chance, not "left"
            dist = dist + 1e-12 * torch.rand(dist.shape[:2], generator=gen, dtype=torch.float64)[..., None, None,
                                                                                                None, None]
            whole = dist.flatten(2).sum(-1).argmin(1)
            last = dist[:, :, :, -1].flatten(2).sum(-1).argmin(1)
            correct[i] += [(whole == j).sum().item(), (last == j).sum().item()]
        total += args.draws
    acc = correct / total
    share = float(np.mean([acc[int(np.argmin(np.abs(np.array(TIMESTEPS) - t))), 0] < 0.9 for t in range(1000)]))
    out = {"model": args.model, "clips": len(clips), "draws": args.draws, "t": list(TIMESTEPS),
           "alpha_bar": [float(alphas[t]) for t in TIMESTEPS],
           "accuracy": [round(float(x), 4) for x in acc[:, 0]],
           "accuracy_last_frame": [round(float(x), 4) for x in acc[:, 1]],
           "uniform_share_below_90pct": round(share, 4), "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
