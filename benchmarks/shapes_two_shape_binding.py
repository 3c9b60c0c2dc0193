"""Why two-shape clips fail: does the model bind each direction word to its shape, or move everything the first way?

Run: `.venv/bin/python benchmarks/shapes_two_shape_binding.py [--model tiny-shapes] [--n 16] [-o FILE]`

On the first `--n` held-out two-shape clips (32 px, the folder's frames), DPM-Solver++ 2M 25 steps on the folder's
grid and guidance, seed = clip index (as `i2vgen eval-shapes`' dpmpp-25 row): the direction the centroid tracker of
`i2vgen eval` reads for each shape's colour, and for the second-named shape whether it moved its own way, the first
shape's way (where the two differ), another way, or not at all. docs/tiny-shapes.md, section 6.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

from i2vgen import eval as ev
from i2vgen.app.settings import GenerationSettings
from i2vgen.model_paths import local_model_path
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes import make_clip, split_seeds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = local_model_path(args.model)
    s = GenerationSettings.from_model_folder(str(folder), prompt="x", seed=0)
    pipe = I2VGenPipeline.from_pretrained(folder)
    clips = [c for c in (make_clip(sd, size=s.width, num_frames=s.num_frames) for sd in split_seeds("heldout", 400))
             if len(c.shapes) == 2][:args.n]
    counts: collections.Counter = collections.Counter()
    rows = []
    for i, clip in enumerate(clips):
        a, b = clip.shapes
        video = pipe(clip.first_frame, clip.caption, num_frames=s.num_frames, height=s.height, width=s.width,
                     target_fps=s.fps, num_inference_steps=25, guidance_scale=s.guidance, sampler="dpmpp-2m",
                     timestep_spacing=s.timestep_spacing, generator=torch.Generator().manual_seed(i))[0]
        got = ev.motion_directions(video, [a.colour, b.colour])
        second = got[b.colour]
        kind = ("own direction" if second == b.direction else "first shape's direction"
                if second == a.direction else "no motion" if second is None else "another direction")
        counts[kind] += 1
        counts["first shape right"] += got[a.colour] == a.direction
        rows.append({"caption": clip.caption, "moved": got, "second_shape": kind})
    out = {"model": str(args.model), "n": len(clips), "counts": dict(counts), "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
