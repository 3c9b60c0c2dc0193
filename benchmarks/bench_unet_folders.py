"""Do two base UNets of the same architecture (e.g. a retrained model against the one it replaces) take the same time?

Run: `.venv/bin/python benchmarks/bench_unet_folders.py OLD/unet NEW/unet [--batch 8] [--rounds 8] [--threads 2]`

Loads each folder's base UNet (`load_unet`), then runs its forward on the same random inputs (batch `--batch`, the
tiny-shapes base stage's 8 frames of 16x16x4 latents, width-32 text and image embeddings, fps 8) at t = 999, 500 and
50, `--rounds` times, alternating the folders within each round so that the machine's drift hits both alike; prints
each folder's median seconds per forward as JSON. Weights alone can change the time of the same network (subnormal
numbers); docs/tiny-shapes.md, section 17 uses it to tell that from this machine's noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from i2vgen.models.loading import load_unet


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="UNet folders (a model folder's unet/)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    unets = {f: load_unet(f).eval() for f in args.folders}
    g = torch.Generator().manual_seed(0)
    b = args.batch
    x = torch.randn(b, 4, 8, 16, 16, generator=g)  # (B, C, F, H, W)
    cond = {"encoder_hidden_states": torch.randn(b, 77, 32, generator=g),  # (B, L, D)
            "image_embeds": torch.randn(b, 32, generator=g),  # (B, D)
            "first_frame_latent": torch.randn(b, 4, 16, 16, generator=g), "fps": 8}  # (B, C, H, W)
    times: dict[str, list[float]] = {f: [] for f in unets}
    with torch.inference_mode():
        for unet in unets.values():
            unet(x, 500, **cond)  # warm-up
        for _ in range(args.rounds):
            for f, unet in unets.items():
                for t in (999, 500, 50):
                    t0 = time.perf_counter()
                    unet(x, t, **cond)
                    times[f].append(time.perf_counter() - t0)
    print(json.dumps({"threads": args.threads, "batch": b, "calls": 3 * args.rounds,
                      "median_s": {f: round(statistics.median(v), 4) for f, v in times.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
