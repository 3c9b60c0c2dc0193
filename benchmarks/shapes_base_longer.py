"""Does more base-stage training put the tiny base stage's shapes nearer their true places?

Run: `.venv/bin/python benchmarks/shapes_base_longer.py [--base tiny-shapes] [--steps 1500] [--every 500]
      [--lr 5e-4] [--threads 1] [-o runs/base-longer]`

docs/tiny-shapes.md, section 10, traced the refiner's PSNR deficit on the cascade's outputs to the base stage: its
shapes stray from the true centroids by 0.28 px at frame 0 to 1.86 px at frame 7, without a bias in speed. The
recipe's base stage sees 3,600 clips (1,800 steps of batch 2) of a 200,000-clip train split, so the scatter may be
under-training. This continues the recipe's base stage from the folder `--base` (all of its UNet, EMA on as in the
stage, a fresh cosine schedule from `--lr`, the data order of seed `recipe seed + 1` so that it is not a replay)
and writes a model folder after every `--every` steps (`<out>/step-NNNNN/`: the folder `--base` with the EMA UNet
in place), for `shapes_cascade_oracles.py --base` (centroid error by frame) and `shapes_refiner_settings.py --base
... --compare` (the refiner's gain on the cascade's outputs) to score against the shipped folder on the same
held-out clips. Prints the seconds per step. Results: docs/tiny-shapes.md, section 11 (1,500 steps: the last frame's
centroid error 1.69 -> 1.13 px, the refiner's gain over bicubic on the cascade unchanged).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from i2vgen.io.atomic import atomic_dir
from i2vgen.model_paths import resolve_model_path
from i2vgen.models.loading import load_unet, save_unet
from i2vgen.train import checkpoint as ckpt_io
from i2vgen.train.recipe import recipe, stage_config, stage_dataset
from i2vgen.train.trainer import train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny-shapes", help="the base model folder to continue (or a bundled name)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/base-longer"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = resolve_model_path(args.base)
    cfg = recipe("tiny-shapes")
    run = args.output / "train"
    tcfg = stage_config(cfg, "base", base, run).replace(**{
        "model.unet": str(base / "unet"), "max_steps": args.steps, "optim.lr": args.lr, "optim.warmup_steps": 50,
        "data.seed": cfg.seed + 1, "checkpoint.every": args.every, "checkpoint.keep_last": 0})
    resume = run if ckpt_io.list_checkpoints(run) else None
    t0 = time.perf_counter()
    result = train(tcfg, resume=resume, dataset=stage_dataset(cfg, "base"))
    seconds = time.perf_counter() - t0
    if result.step:
        print(f"{result.step} steps in {seconds:.0f} s ({seconds / max(result.step, 1):.2f} s/step at "
              f"{args.threads} thread(s)), last loss {result.losses[-1]:.4f}", file=sys.stderr)
    for ckpt in ckpt_io.list_checkpoints(run):
        dst = args.output / ckpt.name
        if dst.exists():
            continue
        with atomic_dir(dst) as tmp:
            shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("unet"), dirs_exist_ok=True)
            save_unet(load_unet(ckpt / "unet_ema"), tmp / "unet", format="diffusers")
        print(f"wrote {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
