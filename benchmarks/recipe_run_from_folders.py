"""Rebuild a `train-recipe tiny-shapes` run folder from the shipped model folders, so that stages added to the recipe
since they were trained run through the recipe itself.

Run: `.venv/bin/python benchmarks/recipe_run_from_folders.py [--base tiny-shapes] [--refiner tiny-shapes-refiner]
      [-o runs/tiny-shapes-5]`, then `.venv/bin/i2vgen train-recipe tiny-shapes -o runs/tiny-shapes-5`.

The recipe skips a stage whose final checkpoint folder exists and hands the next stage that checkpoint's EMA weights.
This writes what the finished stages left behind, taken from the folders `export` wrote (their parts are copies of
the run's and their UNets the EMA weights in float32, so nothing is lost: exporting the rebuilt run gives the folders
back byte for byte): `components/` (the refiner VAE, tokenizer and encoders), `components-base/` (the base VAE), the
final checkpoints of the base stage and of the folders' last refiner stage (refine, or refine-2 where their recipe
had it) holding those UNets, and marker folders for the stages before them (finished; nothing reads them). The folders' recorded stage times become the run's `timings.json`. It
refuses folders whose recorded recipe differs from today's in anything but the stages this rebuild leaves to the
recipe (`NEW_STAGES`). docs/tiny-shapes.md, section 12.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from i2vgen.io.atomic import atomic_dir
from i2vgen.model_paths import resolve_model_path
from i2vgen.models.loading import load_unet, save_unet
from i2vgen.train.checkpoint import checkpoint_dir
from i2vgen.train.recipe import recipe, recipe_differences

NEW_STAGES = ("refine_more",)  # RecipeConfig fields newer than the folders


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny-shapes")
    p.add_argument("--refiner", default="tiny-shapes-refiner")
    p.add_argument("-o", "--output", type=Path, default=Path("runs/tiny-shapes-5"))
    args = p.parse_args()
    base, refiner = resolve_model_path(args.base), resolve_model_path(args.refiner)
    notes = json.loads((base / "model_index.json").read_text())["_i2vgen_recipe"]
    cfg = recipe("tiny-shapes")
    changed = recipe_differences(notes["recipe"], cfg, ignore=NEW_STAGES)
    if changed:
        print(f"error: {base} was trained by another recipe (differs in {', '.join(changed)})", file=sys.stderr)
        return 1
    out = args.output
    if out.exists():
        print(f"error: {out} exists; choose a new folder", file=sys.stderr)
        return 1
    seconds = {k: v for k, v in notes["seconds"].items() if k != "export"}
    with atomic_dir(out) as tmp:
        for part, source in (("tokenizer", refiner), ("text_encoder", refiner), ("image_encoder", base),
                             ("vae", refiner)):
            shutil.copytree(source / part, tmp / "components" / part)
        for part in ("tokenizer", "text_encoder", "image_encoder", "vae"):
            shutil.copytree(base / part, tmp / "components-base" / part)
        for i, st in enumerate(cfg.curriculum):
            marker = checkpoint_dir(tmp / f"curriculum-{i}", st.steps)
            marker.mkdir(parents=True)
            (marker / "README").write_text(f"rebuilt from {base}: finished, its weights not kept\n")
        save_unet(load_unet(base / "unet"), checkpoint_dir(tmp / "base", cfg.base.steps) / "unet_ema")
        # the refiner UNet is the last refiner stage the folders' recipe had
        last = cfg.refine_more if notes["recipe"].get("refine_more") else None
        if last is not None:
            marker = checkpoint_dir(tmp / "refine", cfg.refine.steps)
            marker.mkdir(parents=True)
            (marker / "README").write_text(f"rebuilt from {refiner}: finished, its weights not kept\n")
        shutil.copytree(refiner / "unet", checkpoint_dir(tmp / ("refine-2" if last else "refine"),
                                                         (last or cfg.refine).steps) / "unet_ema")
        (tmp / "timings.json").write_text(json.dumps(seconds, indent=2))
    print(f"wrote {out}: stages {', '.join(seconds)} finished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
