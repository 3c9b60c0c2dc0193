"""The curriculum probe of `shapes_curriculum.py` on any base UNets: does a later stage keep what the curriculum taught?

Run: `.venv/bin/python benchmarks/shapes_probe_unets.py --components RUN/components-base -o probes.json UNET...`
(each UNET a folder as `load_unet` reads it: a checkpoint's unet/ or unet_ema/, or a model folder's unet/).

The same 24 one-shape and 24 two-shape held-out clips and the same rows as `shapes_curriculum.py` (text use at
t = 999 and 950; per-shape binding at t = 999: does each shape's own direction word beat its other three, chance
25 %), read through `--components`' text encoder. docs/tiny-shapes.md, section 16 probes the tiny-shapes-axis run's
last curriculum stage against its base stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from shapes_curriculum import probe, probe_clips, probe_pipeline

from i2vgen.models.loading import load_unet
from i2vgen.train.recipe import recipe


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("unets", nargs="+", help="UNet folders")
    p.add_argument("--components", required=True, help="the folder whose text_encoder/ and tokenizer/ the UNets read")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    one, two = probe_clips(recipe("tiny-shapes").num_frames)
    rows, base = [], probe_pipeline(args.components)
    for unet in args.unets:
        t0 = time.perf_counter()
        base.unet = load_unet(unet).eval()
        rows.append({"unet": unet, **probe(base, one, two), "seconds": round(time.perf_counter() - t0)})
        print(json.dumps(rows[-1]), flush=True)
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
