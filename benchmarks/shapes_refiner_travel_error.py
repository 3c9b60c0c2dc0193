"""Does a refiner trained on misplaced shapes or drifting colours beat bicubic on the cascade's outputs?

Run: `.venv/bin/python benchmarks/shapes_refiner_travel_error.py --error 2.1 --prob 1.0 -o runs/travel-a
      [--from runs/tiny-shapes-5] [--threads 1]`, then score `-o`'s refiner folder with
      `benchmarks/shapes_refiner_settings.py --compare runs/travel-a/tiny-shapes-refiner --start 100 --n 36 ...`.

The refiner gains +1.35 dB over bicubic on true clips degraded by the base VAE but nothing on the base stage's own
outputs, whose shapes are off by 1.7 px at the last frame: true clips misplaced that much lose the gain too
(`shapes_refiner_misplaced.py`, docs/tiny-shapes.md sections 11 and 12). Trained only on true positions, the
refiner sharpens an edge where it sees one; under position error the best estimate of the true clip is less sharp
where the position is uncertain. This trains the recipe's refine-2 stage again from the refine stage's weights,
with each training clip's degraded source rendered with every shape's travel changed by N(0, --error) pixels at 32
px and/or its colour drifting up to --colour of the way to another by the last frame (with probability --prob;
the recipe's `StageRecipe.travel_error`, `colour_drift` and `source_prob`), through the recipe itself: `-o` is a
copy of the finished run `--from` (hard links) without its refine-2 stage, and `run_recipe` trains refine-2 there
and exports both folders into it. docs/tiny-shapes.md, section 13.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from i2vgen.train.recipe import recipe, run_recipe


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="src", type=Path, default=Path("runs/tiny-shapes-5"),
                   help="a finished tiny-shapes-text run folder (its stages before refine-2 are reused)")
    p.add_argument("--error", type=float, default=0.0, help="travel error's standard deviation, pixels at 32 px")
    p.add_argument("--colour", type=float, default=0.0, help="colour drift: the largest weight at the last frame")
    p.add_argument("--prob", type=float, default=1.0, help="share of clips whose source is changed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args()
    if args.output.exists():
        print(f"error: {args.output} exists; choose a new folder", file=sys.stderr)
        return 1
    if not (args.src / "refine" / "checkpoints").is_dir():
        print(f"error: {args.src} holds no finished refine stage", file=sys.stderr)
        return 1
    cfg = recipe("tiny-shapes-text")  # the recipe of runs/tiny-shapes-5 (its stages before refine-2 are reused)
    cfg.output_dir, cfg.threads = str(args.output), args.threads
    cfg.refine_more = dataclasses.replace(cfg.refine_more, travel_error=args.error, colour_drift=args.colour,
                                          source_prob=args.prob)
    skip = {"refine-2", "tiny-shapes", "tiny-shapes-refiner", "recipe.json", "timings.json"}
    shutil.copytree(args.src, args.output, copy_function=os.link,
                    ignore=lambda d, names: [n for n in names if Path(d) == args.src and n in skip])
    timings = json.loads((args.src / "timings.json").read_text())
    timings.pop("refine-2", None)
    timings.pop("export", None)
    (args.output / "timings.json").write_text(json.dumps(timings, indent=2))
    run_recipe(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
