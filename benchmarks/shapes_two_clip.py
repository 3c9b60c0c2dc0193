"""The two-clip experiment: can the base UNet learn to tell two clips apart by their caption alone, and under which
timestep sampling?

Run: `.venv/bin/python benchmarks/shapes_two_clip.py NAME [--steps 400] [--set loss.t_top_share=1] ...
[-o docs/results/two-clip/]`

One first frame (a red circle in the middle), two clips that differ only in the direction ("a red circle moves left"
/ "... right"; `i2vgen.shapes.direction_pair`), a new tiny-shapes base UNet with the shipped folder's frozen VAE and
CLIP encoders, AdamW 1e-3, batch 2, no condition dropout (`i2vgen.train.text_probe.two_clip_check`). Every
`--every` steps the trainer's text-use probe measures the v-loss with the true and with the swapped caption at
t = 999, 950, 900, 800, 500 (same noise). Writes NAME.json with the rows and the settings.

docs/tiny-shapes.md quotes: uniform t (the reference), t uniform in [900, 1000), t uniform in [990, 1000), and the
recipe's mixture.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from i2vgen.model_paths import local_model_path
from i2vgen.train.config import preset
from i2vgen.train.text_probe import two_clip_check


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="further TrainConfig fields")
    p.add_argument("-o", "--output", default="runs/two-clip")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = preset("tiny").replace(**{
        "output_dir": str(out / "runs" / args.name), "max_steps": args.steps, "seed": 0,
        "model.components": str(local_model_path("tiny-shapes")), "model.unet_preset": "tiny-shapes",
        "optim.lr": 1e-3, "optim.warmup_steps": 10, "optim.min_lr_ratio": 1.0, "ema.enabled": False,
        "log.every": 50, "log.tensorboard": False, "checkpoint.every": 0, "checkpoint.save_final": False,
        "log.text_probe_every": args.every, "log.text_probe_t": (999, 950, 900, 800, 500), **extra})
    t0 = time.perf_counter()
    rows = two_clip_check(cfg, size=args.size, num_frames=args.frames)
    result = {"name": args.name, "settings": {"steps": args.steps, "size": args.size, "frames": args.frames,
                                              **extra}, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"step {int(r['step'])} t {int(r['t'])}: loss {r['loss']:.4f} gap {r['gap']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
