"""Does the tiny-shapes base UNet learn to read the direction word, and with what training? A training probe.

Run: `.venv/bin/python benchmarks/shapes_text_learning.py NAME [--budget 470] [--batch 4] [--frames 8] [--hi-t 2]
[--lr 1e-3] [--travel 0.3] [--p-two 0] [--device cuda] [-o results/]`

Trains the recipe's base stage (`i2vgen.train.recipe`, preset "tiny-shapes", the shipped model's frozen VAE and CLIP
encoders) from scratch in chunks of `--chunk` steps until `--budget` seconds have passed, and after each chunk runs
`i2vgen.shapes_eval.text_use` on the EMA weights over the first 24 one-shape held-out clips: the share of clips whose
true caption gives the lowest v-loss among the four direction words (chance 25 %), and the mean loss gap. Writes
NAME.json (one row per chunk) into `-o`. The cosine schedule is set for `--total` steps, so chunks of one run follow
one schedule.

Knobs (all default to the shipped recipe): `--batch`, `--lr`; `--frames`: clip length at training time (the clips are
rendered with that many frames over the same motion); `--hi-t K`: the trainer's `loss.t_skew`, t = 1000 (1 - u^K)
for u ~ U(0, 1), skews training towards high noise, where only the text tells the motion (K = 1: uniform, the
recipe); `--travel`: distance a shape moves over a clip (fraction of the frame; the task's is 0.2) for training and
probing; `--p-two`: share of two-shape training clips (task: 0.5); `--recipe`: whose base stage settings;
`--init shipped`: fine-tune the shipped UNet; `--sd-init FOLDER`: a new UNet's spatial layers from FOLDER (the
t2i stage of `i2vgen train-recipe tiny-shapes-t2i`); `--context N`: a tokenizer padding to N tokens; `--set
KEY=VALUE`: any TrainConfig field (e.g. loss.t_top_share=0.5).

docs/tiny-shapes.md quotes these runs (9 configurations on an H100; the fine-tunes, the scratch control and the
t2i-initialised runs of issue 11 on this machine's CPU, 1 thread each, with the commands there).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes_eval import text_use
from i2vgen.train import trainer
from i2vgen.train.data import SampleDataset
from i2vgen.train.recipe import recipe, stage_config


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--budget", type=float, default=470.0, help="seconds of training (checked between chunks)")
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--total", type=int, default=6000, help="steps of the cosine schedule")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--hi-t", type=float, default=1.0)
    p.add_argument("--travel", type=float, default=None)
    p.add_argument("--p-two", type=float, default=0.5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recipe", default="tiny-shapes", help="whose base stage (tiny-shapes-t2i: half the samples at "
                                                          "t >= 950, gamma 0.5)")
    p.add_argument("--init", choices=("new", "shipped"), default="new",
                   help="a new UNet (the recipe) or the shipped tiny-shapes UNet (a fine-tune)")
    p.add_argument("--sd-init", default=None, help="a new UNet's spatial layers from this UNet folder (model.sd_init), "
                                                    "e.g. the recipe's t2i stage")
    p.add_argument("--context", type=int, default=None, help="text context length (the tokenizer's model_max_length)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any further TrainConfig field, e.g. loss.t_top_share=0.5 (YAML values)")
    p.add_argument("--probe-t", default="999,800,600", help="timesteps of the text-use probe")
    p.add_argument("-o", "--output", default="runs/text-learning")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.travel is not None:
        shapes._TRAVEL = args.travel  # the task's travel, for training and probe clips alike
    components = local_model_path("tiny-shapes")
    out_dir, run_dir = Path(args.output), Path(args.output) / "runs" / args.name
    if args.context is not None:  # a copy of the shipped folder whose tokenizer pads to a shorter context
        folder = Path(args.output) / "components" / f"context-{args.context}"
        if not folder.is_dir():
            shutil.copytree(components, folder)
            conf = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
            conf["model_max_length"] = args.context
            (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(conf, indent=2))
        components = folder
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.init == "shipped":
        extra["model.unet"] = str(local_model_path("tiny-shapes") / "unet")
    if args.sd_init:
        extra["model.sd_init"] = args.sd_init
    probe_t = tuple(int(t) for t in args.probe_t.split(","))
    cfg = recipe(args.recipe)
    cfg.num_frames, cfg.base.batch, cfg.base.lr = args.frames, args.batch, args.lr
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = SampleDataset(shapes.ShapesDataset("train", cfg.train_clips, size=cfg.base_size,
                                                 num_frames=args.frames, p_two_shapes=args.p_two))
    probe_clips = [c for c in (shapes.make_clip(s, size=cfg.base_size) for s in shapes.split_seeds("heldout", 60))
                   if len(c.shapes) == 1][:24]
    log = {"name": args.name, "args": vars(args), "probes": []}
    t0, step = time.perf_counter(), 0
    while step < args.total and time.perf_counter() - t0 < args.budget:
        step = min(args.total, step + args.chunk)
        tcfg = stage_config(cfg, "base", components, run_dir).replace(**{
            "device": args.device, "max_steps": step, "optim.decay_steps": args.total, "log.every": 100,
            "checkpoint.every": 0, "checkpoint.keep_last": 1, "log.tensorboard": False, "loss.t_skew": args.hi_t,
            **extra})
        result = trainer.train(tcfg, resume=run_dir if run_dir.exists() else None, dataset=dataset)
        base = I2VGenPipeline.from_pretrained(components, device=args.device)
        base.unet = result.ema.eval()
        rows = [text_use(base, clip, seed=i, timesteps=probe_t) for i, clip in enumerate(probe_clips)]
        entry = {"step": step, "seconds": round(time.perf_counter() - t0), "clips_seen": step * args.batch,
                 "loss": float(np.mean(result.losses[-50:])),
                 "x0_err": {k[len("x0_err_"):]: float(np.mean([r[k] for r in rows])) for k in rows[0]
                            if k.startswith("x0_err_")}}
        for t in probe_t:
            entry[f"acc_{t}"] = float(np.mean([r[f"text_use_ok_{t}"] for r in rows]))
            entry[f"gap_{t}"] = float(np.mean([r[f"text_gap_{t}"] for r in rows]))
        log["probes"].append(entry)
        print(json.dumps(entry), flush=True)
        (out_dir / f"{args.name}.json").write_text(json.dumps(log, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
