"""The recipe's base stage once more from a finished run's last curriculum stage, with other settings: does it keep
the binding the curriculum taught?

Run: `.venv/bin/python benchmarks/shapes_base_arm.py --run runs/tiny-shapes-axis --lr 2e-4 -o runs/base-arm-lr2e-4`

Trains the base stage of `--recipe` (`train_stage`, its data, schedule and EMA) from `--run`'s last curriculum stage's
weights on `--run`'s components-base, with `--lr` (and `--steps`, if given) changed, into `-o`; then runs
`shapes_curriculum.probe` (24 + 24 held-out clips; per-shape binding at t = 999) on its EMA and trained weights and
writes probes.json there. docs/tiny-shapes.md, section 16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from shapes_curriculum import probe, probe_clips, probe_pipeline

from i2vgen.models.loading import load_unet
from i2vgen.train.recipe import recipe, stage_weights, train_stage


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a train-recipe run folder with its curriculum trained")
    p.add_argument("--recipe", default="tiny-shapes-axis")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = recipe(args.recipe)
    cfg.base = dataclasses.replace(cfg.base, lr=args.lr, steps=args.steps or cfg.base.steps)
    last = f"curriculum-{len(cfg.curriculum) - 1}"
    components = args.run / "components-base"
    init = stage_weights(train_stage(cfg, last, components, args.run / last, print))
    ckpt = train_stage(cfg, "base", components, args.output, print, init, False)
    one, two = probe_clips(cfg.num_frames)
    rows, base = [], probe_pipeline(components)
    for weights in ("unet_ema", "unet"):
        base.unet = load_unet(ckpt / weights).eval()
        rows.append({"weights": weights, "lr": args.lr, "steps": cfg.base.steps, **probe(base, one, two)})
        print(json.dumps(rows[-1]), flush=True)
    (args.output / "probes.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
