"""From memorising to reading: how many distinct first frames does the base UNet need before it reads the direction
word on clips it has not seen?

Run: `.venv/bin/python benchmarks/shapes_text_generalisation.py N [--steps 600] [--size 16] [--frames 8]
[--set KEY=VALUE] [-o docs/results/generalisation/]`

The two-clip experiment (`shapes_two_clip.py`) shows that a new UNet learns to tell two clips with one first frame
apart by the direction word within ~150 steps when t is drawn from the top of the schedule. Here the training set is
N one-shape first frames (train split), each rendered with all four directions (4N clips, captions differing only in
the direction word), t uniform in [970, 1000) (`loss.t_top_share` 1), batch 4, a new tiny-shapes UNet with the shipped
folder's frozen VAE and CLIP encoders, at `--size` pixels and `--frames` frames. After training, the text-use probe
(`i2vgen.shapes_eval.text_use`) runs on the training clips' first frames (seen) and on 24 held-out one-shape clips
(unseen), at t = 999 / 950: the share whose true caption has the lowest loss among the four directions (chance
25 %) and the mean gap. N = 1 is the two-clip experiment with four directions; growing N moves from memorising
(seen >> unseen) towards reading the word (seen = unseen).

The curriculum of docs/tiny-shapes.md (section 4), each step from the previous one's weights (`--init`):

    P="--set model.sample_posterior=false -o runs/generalisation"; R=runs/generalisation/runs
    python benchmarks/shapes_text_generalisation.py 1 --steps 200 $P --name cur-n1
    python benchmarks/shapes_text_generalisation.py 8 --steps 400 $P --init $R/cur-n1/unet --name cur-n8
    ... 32 and 128 (400 steps each), 1024 (600 steps), the same way; the control: 128 --steps 1400 $P
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.loading import save_unet
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes_eval import text_use
from i2vgen.train.config import preset
from i2vgen.train.data import SampleDataset
from i2vgen.train.trainer import train

DIRECTIONS = ("left", "right", "up", "down")


def one_shape_clips(split: str, n: int, size: int, frames: int, centre: bool = False) -> list[shapes.ShapesClip]:
    """The first n one-shape clips of `split`; with `centre`, every shape starts in the middle of the frame."""
    found = [shapes.make_clip(s, size=size, num_frames=frames, num_shapes=1)
             for s in shapes.split_seeds(split, n)]
    if centre:
        found = [shapes.with_direction(c, c.shapes[0].direction, start=(0.5, 0.5)) for c in found]
    return found


def four_directions(clip: shapes.ShapesClip, start: tuple[float, float] | None = None) -> list[shapes.ShapesClip]:
    return [shapes.with_direction(clip, d, start) for d in DIRECTIONS]


def probe(base: I2VGenPipeline, clips: list[shapes.ShapesClip]) -> dict[str, float]:
    rows = [text_use(base, c, seed=i, timesteps=(999, 950)) for i, c in enumerate(clips)]
    return {f"{k}_{t}": float(np.mean([r[f"text_{'use_ok' if k == 'acc' else 'gap'}_{t}"] for r in rows]))
            for k in ("acc", "gap") for t in (999, 950)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, help="distinct training first frames (4 clips each)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--centre", action="store_true", help="every shape (training and probe) starts in the middle")
    p.add_argument("--init", default=None, help="start from this UNet folder (e.g. an earlier run's unet/: a "
                                                "curriculum over N)")
    p.add_argument("--name", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-o", "--output", default="runs/generalisation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"n{args.n}" + ("-centre" if args.centre else "")
    train_clips = one_shape_clips("train", args.n, args.size, args.frames, args.centre)
    data = SampleDataset([shapes.to_sample(v) for c in train_clips for v in four_directions(c)])
    components = local_model_path("tiny-shapes")
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = preset("tiny").replace(**{
        "output_dir": str(out / "runs" / name), "max_steps": args.steps, "batch_size": 4, "seed": 0,
        "model.components": str(components), "model.unet_preset": "tiny-shapes", "data.width": args.size,
        "data.height": args.size, "data.num_frames": args.frames, "optim.lr": 1e-3, "optim.warmup_steps": 20,
        "optim.min_lr_ratio": 1.0, "ema.enabled": False, "log.every": 100, "log.tensorboard": False,
        "log.text_probe_every": 0, "checkpoint.every": 0, "checkpoint.save_final": False,
        "loss.t_top_share": 1.0, "loss.t_top_min": 970, "loss.drop_all": 0.0, "loss.drop_text": 0.0,
        "loss.drop_image": 0.0, **({"model.unet": args.init} if args.init else {}), **extra})
    t0 = time.perf_counter()
    result = train(cfg, dataset=data)
    base = I2VGenPipeline.from_pretrained(components)
    base.unet = result.unet.eval()
    save_unet(result.unet, out / "runs" / name / "unet")
    heldout = one_shape_clips("heldout", 24, args.size, args.frames, args.centre)
    row = {"n": args.n, "centre": args.centre, "init": args.init, "clips": len(data), "steps": args.steps,
           "size": args.size, "frames": args.frames, **extra,
           "loss_last_50": float(np.mean(result.losses[-50:])), "seen": probe(base, train_clips[:24]),
           "unseen": probe(base, heldout), "seconds": round(time.perf_counter() - t0, 1)}
    (out / f"{name}.json").write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
