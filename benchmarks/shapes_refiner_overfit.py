"""Can the tiny refiner UNet learn a restoration at all? The refiner's two-clip overfit, and the same loop on all clips.

Run: `.venv/bin/python benchmarks/shapes_refiner_overfit.py NAME [--clips 2] [--steps 600] [--every 200]
      [--heldout 4] [--eval-trained 4] [--strength 0.1] [--refine-steps N] [--run runs/tiny-shapes-3]
      [--set KEY=VALUE ...] [-o docs/results/refiner-overfit/]`

The recipe's refine stage (`i2vgen.train.recipe.stage_config(..., "refine")`: its loss, degradation through the base
VAE, t < 300, degraded source from t = 100) trained on the first `--clips` clips of the train split only (200000: the
recipe's data), from a new UNet, no EMA, constant learning rate; every `--every` steps the weights refine the
base-VAE-degraded 32 px copies (as eval-shapes' refine-gt does) of up to `--eval-trained` of the trained clips and of
`--heldout` held-out clips at `--strength`, guidance 1.0, DPM-Solver++ 2M (`--refine-steps`: its grid; default 30),
and `i2vgen.eval.refinement_gain` compares the 64 px result and the bicubic up-scaling with the true clip. The rows
also carry the refiner VAE's round trip of the bilinear up-scaled input (strength 0: no UNet) and of the true 64 px
clip (the ceiling). If the trained clips' gain stays at the strength-0 row, the UNet or the objective cannot restore;
if it climbs to the ceiling, the shipped refiner is short of data or steps, not broken. `--set` changes the stage
(e.g. `loss.t_top_share=1.0 loss.t_top_min=100 loss.degraded_prob=1.0`: every sample a restoration in [100, 300)).
docs/tiny-shapes.md, section 9.
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

from i2vgen import eval as ev
from i2vgen.models.vae import VideoVAE
from i2vgen.pipelines.refine import I2VGenRefinePipeline
from i2vgen.shapes import ShapesDataset, make_clip, split_seeds
from i2vgen.shapes_eval import vae_round_trip
from i2vgen.train.data import SampleDataset
from i2vgen.train.recipe import recipe, stage_config
from i2vgen.train.trainer import train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--heldout", type=int, default=4)
    p.add_argument("--eval-trained", type=int, default=4, help="at most this many of the trained clips are evaluated")
    p.add_argument("--refine-steps", type=int, default=None, help="the sampler's grid (default: the pipeline's)")
    p.add_argument("--strength", type=float, default=0.1)
    p.add_argument("--run", default="runs/tiny-shapes-3", help="a train-recipe run folder (its components)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="further TrainConfig fields")
    p.add_argument("-o", "--output", default="docs/results/refiner-overfit")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run, out = Path(args.run), Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rcfg = recipe("tiny-shapes")
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    work = Path("runs/refiner-overfit") / args.name
    tcfg = stage_config(rcfg, "refine", run / "components", work, run / "components-base").replace(**{
        "max_steps": args.steps, "ema.enabled": False, "optim.min_lr_ratio": 1.0, "optim.warmup_steps": 10,
        "checkpoint.every": args.every, "checkpoint.keep_last": 0, "log.text_probe_every": 0,
        "log.tensorboard": False, **extra})
    size = rcfg.refine_size
    dataset = SampleDataset(ShapesDataset("train", args.clips, size=size, num_frames=rcfg.num_frames))
    t0 = time.perf_counter()
    result = train(tcfg, dataset=dataset)
    seconds = time.perf_counter() - t0

    base_vae = VideoVAE.from_model_folder(run / "components-base")
    sets = {"heldout": list(split_seeds("heldout", args.heldout))}
    if args.eval_trained > 0:
        sets["trained"] = list(split_seeds("train", min(args.clips, args.eval_trained)))
    clips = {k: [(make_clip(s, size=rcfg.base_size, num_frames=rcfg.num_frames),
                  make_clip(s, size=size, num_frames=rcfg.num_frames)) for s in seeds] for k, seeds in sets.items()}
    inputs = {k: [vae_round_trip(base_vae, lo.frames) for lo, _ in cs] for k, cs in clips.items()}
    rows = []
    pipe = None
    for step in range(args.every, args.steps + 1, args.every):
        pipe = I2VGenRefinePipeline.from_pretrained(run / "tiny-shapes-refiner",
                                                    unet=work / "checkpoints" / f"step-{step:08d}" / "unet")
        for kind, cs in clips.items():
            gains = [ev.refinement_gain(x, pipe(x, lo.caption, width=size, height=size, strength=args.strength,
                                                guidance_scale=1.0, sampler="dpmpp-2m",
                                                num_inference_steps=args.refine_steps,
                                                generator=torch.Generator().manual_seed(i), output_type="np")[0],
                                        hi.frames) for i, ((lo, hi), x) in enumerate(zip(cs, inputs[kind]))]
            rows.append(summary({"step": step, "clips": kind, "strength": args.strength,
                                 "refine_steps": args.refine_steps}, gains))
    for kind, cs in clips.items():  # the references: no UNet, and the refiner VAE's own ceiling
        ups = [np.round(ev.resize_like_refiner(x, (size, size)) * 255).astype(np.uint8) for x in inputs[kind]]
        rows.append(summary({"step": None, "clips": kind, "strength": 0.0},
                            [ev.refinement_gain(x, vae_round_trip(pipe.vae, up), hi.frames)
                             for (_, hi), x, up in zip(cs, inputs[kind], ups)]))
        rows.append(summary({"step": None, "clips": kind, "reference": "refiner VAE round trip of the true clip"},
                            [ev.refinement_gain(x, vae_round_trip(pipe.vae, hi.frames), hi.frames)
                             for (_, hi), x in zip(cs, inputs[kind])]))
    record = {"name": args.name, "clips": args.clips, "steps": args.steps, "settings": extra,
              "train_seconds": round(seconds, 1), "last_loss": result.losses[-1] if result.losses else None,
              "rows": rows}
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


def summary(row: dict, gains: list[dict]) -> dict:
    row.update({k: round(float(np.mean([g[k] for g in gains])), 4)
                for k in ("psnr_gain_db", "ssim_gain", "psnr_refined", "psnr_bicubic")})
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())
