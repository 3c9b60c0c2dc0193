"""Is it the shapes' positions that cost the tiny refiner its gain over bicubic on the cascade's outputs?

Run: `.venv/bin/python benchmarks/shapes_refiner_misplaced.py [--start 100] [--n 40] [--errors 0,1.4,2.1]
      [--colour-drifts W,...] [--refiner FOLDER] [-o FILE]`

On true 32 px clips degraded by the base VAE the refiner gains about +1 dB over bicubic up-scaling; on the base
stage's own outputs about 0, and 1,500 more base-stage steps (a third less position error) did not change that
(docs/tiny-shapes.md, section 11). This asks whether position error alone takes the gain away: each held-out clip
is rendered again at 32 px with every shape's travel changed by d pixels (d drawn per shape from a normal
distribution of standard deviation `--errors` px; the error grows linearly from 0 at frame 0, as the base stage's
does), degraded by the base VAE, refined (the folders' settings: strength 0.15, guidance 1.0, DPM-Solver++ 2M, 30
steps) and scored, with its bicubic up-scaling, against the unmoved true 64 px clip. Error 0 is `refine-gt`. A
standard deviation of 1.4 px gives a mean error of 1.1 px at the last frame (the longer-trained base's), 2.1 px
gives 1.7 px (the shipped base's; `shapes_cascade_oracles.py`). Same clips, seeds and draws in every row.
`--colour-drifts W,...` asks the same of colour: each shape's colour blended toward another named colour by a weight
growing from 0 at the first frame to W at the last (section 13).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from shapes_refiner_settings import report

from i2vgen import eval as ev
from i2vgen.model_paths import local_model_path
from i2vgen.models.vae import VideoVAE
from i2vgen.pipelines.refine import I2VGenRefinePipeline
from i2vgen.shapes import COLOURS, make_clip, split_seeds, with_colour_drift, with_travel_changes
from i2vgen.shapes_eval import vae_round_trip


def misplaced(seed: int, error_px: float, size: int = 32, num_frames: int = 8) -> np.ndarray:
    """(F, size, size, 3) uint8: held-out clip `seed` with each shape's travel changed by N(0, error_px) pixels."""
    clip = make_clip(seed, size=size, num_frames=num_frames)
    rng = random.Random(seed)  # the same draws for every error level, scaled
    return with_travel_changes(clip, [error_px * rng.gauss(0.0, 1.0) / size for _ in clip.shapes]).frames


def drifted(seed: int, weight: float, size: int = 32, num_frames: int = 8) -> np.ndarray:
    """(F, size, size, 3) uint8: held-out clip `seed` with each shape's colour blended toward another named colour
    (drawn per seed), by a weight growing from 0 at the first frame to `weight` at the last."""
    clip = make_clip(seed, size=size, num_frames=num_frames)
    rng = random.Random(seed)
    others = [rng.choice(sorted(set(COLOURS) - {sh.colour})) for sh in clip.shapes]
    return with_colour_drift(clip, others, weight).frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny-shapes", help="its VAE degrades the inputs")
    p.add_argument("--refiner", default="tiny-shapes-refiner")
    p.add_argument("--start", type=int, default=100)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--errors", default="0,1.4,2.1", help="standard deviations of the travel error, pixels at 32 px")
    p.add_argument("--colour-drifts", default="",
                   help="instead of travel errors: colour drift weights at the last frame (section 13)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    base_vae = VideoVAE.from_model_folder(local_model_path(args.base))
    refiner = I2VGenRefinePipeline.from_pretrained(args.refiner)
    seeds = list(split_seeds("heldout", args.start + args.n)[args.start:])
    rows = []
    levels = [("colour_drift", float(w)) for w in args.colour_drifts.split(",")] if args.colour_drifts else \
        [("travel_error_sd_px", float(e)) for e in args.errors.split(",")]
    for name, level in levels:
        gains = []
        for i, seed in enumerate(seeds, args.start):
            lo, hi = make_clip(seed, size=32, num_frames=8), make_clip(seed, size=64, num_frames=8)
            x = vae_round_trip(base_vae, (drifted if name == "colour_drift" else misplaced)(seed, level))
            out = refiner(x, lo.caption, width=64, height=64, strength=0.15, num_inference_steps=30,
                          guidance_scale=1.0, sampler="dpmpp-2m", generator=torch.Generator().manual_seed(i),
                          output_type="np")[0]
            gains.append(ev.refinement_gain(x, out, hi.frames))
        rows.append(report({name: level}, gains))
    if args.output:
        Path(args.output).write_text(json.dumps({"n": args.n, "start": args.start, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
