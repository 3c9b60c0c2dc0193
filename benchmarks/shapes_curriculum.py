"""The `tiny-shapes` recipe's curriculum stages at its own size (32 px), probed after each stage.

Run: `.venv/bin/python benchmarks/shapes_curriculum.py [--stages 4] [--threads 2] [-o runs/curriculum]`

Trains the recipe's curriculum stages (`i2vgen.train.recipe.recipe("tiny-shapes-text").curriculum`: the four
directions of 1, 8, 32, 128 one-shape scenes, t in [970, 1000), posterior means, each stage from the previous one's
weights) through the recipe's own `train_stage`, on the shipped folder's frozen VAE and CLIP encoders (the recipe's
components), and after each stage runs the text-use probe (`i2vgen.shapes_eval.text_use`) on the first 24 held-out
one-shape clips at t = 999 and 950: the share whose true caption has the lowest loss of the four directions (chance
25 %) and the mean gap; and on the first 24 held-out two-shape clips at t = 999: the share whose true caption is the
lowest of all 16 direction combinations (chance 6 %) and, per shape, whether its own word beats its other three with
the other shape's word kept true (`two_first`, `two_second`: binding). Writes probes.json into `-o`. Stages already
trained in `-o` are not trained again, nor probed again when probes.json has their row (copy a run's
curriculum-<i> folders there to go on from them). docs/tiny-shapes.md
(sections 4 and 7) quotes it. `--recipe tiny-shapes-bound --components RUN/components-base -o RUN` probes the
curriculum of a finished `train-recipe` run whose base stage reads another text encoder (section 14); only finished
stages, or it trains the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.models.loading import load_unet
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes_eval import text_use
from i2vgen.train.recipe import recipe, stage_weights, train_stage


def probe_clips(num_frames: int) -> tuple[list, list]:
    """The probes' clips: the first 24 one-shape and the first 24 two-shape clips of the held-out split."""
    held = [shapes.make_clip(s, num_frames=num_frames) for s in shapes.split_seeds("heldout", 80)]
    return [c for c in held if len(c.shapes) == 1][:24], [c for c in held if len(c.shapes) == 2][:24]


def probe_pipeline(components: str | Path) -> I2VGenPipeline:
    """The shipped base pipeline reading `components`' text encoder; the probe reads whatever UNet is set as `.unet`
    (set one per UNet probed: nothing else in the pipeline depends on it)."""
    base = I2VGenPipeline.from_pretrained(local_model_path("tiny-shapes"))
    base.text_encoder = TextEncoder.from_model_folder(components)
    return base


def probe(base: I2VGenPipeline, one: list, two: list) -> dict[str, float]:
    """Text use on the one-shape clips at t = 999 and 950, binding on the two-shape clips at t = 999 (the module's
    docstring)."""
    probes = [text_use(base, c, seed=k, timesteps=(999, 950)) for k, c in enumerate(one)]
    binding = [text_use(base, c, seed=k, timesteps=(999,), max_shapes=2, repeats=1) for k, c in enumerate(two)]
    row = {}
    for t in (999, 950):
        row[f"acc_{t}"] = float(np.mean([r[f"text_use_ok_{t}"] for r in probes]))
        row[f"gap_{t}"] = float(np.mean([r[f"text_gap_{t}"] for r in probes]))
    per_shape = np.array([r["text_use_ok_per_shape_999"] for r in binding])  # (24, 2)
    row["two_acc_999"] = float(np.mean([r["text_use_ok_999"] for r in binding]))
    row["two_first_999"], row["two_second_999"] = (float(v) for v in per_shape.mean(0))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, default=None, help="run only the first N curriculum stages")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default="runs/curriculum")
    p.add_argument("--recipe", default="tiny-shapes-text")
    p.add_argument("--components", default=None,
                   help="the frozen parts the stages train on and whose text encoder the probe reads (default: the "
                        "shipped folder's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = recipe(args.recipe)
    components = Path(args.components) if args.components else local_model_path("tiny-shapes")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    one, two = probe_clips(cfg.num_frames)
    done = {r["stage"]: r for r in json.loads((out / "probes.json").read_text())} \
        if (out / "probes.json").exists() else {}
    init, rows, t0 = None, [], time.perf_counter()
    base = probe_pipeline(components)
    for i in range(len(cfg.curriculum) if args.stages is None else args.stages):
        name = f"curriculum-{i}"
        ckpt = train_stage(cfg, name, components, out / name, lambda m: print(m, flush=True), init, False)
        init = stage_weights(ckpt)
        if name in done:  # probed by an earlier run
            rows.append(done[name])
            continue
        base.unet = load_unet(init).eval()
        row = {"stage": name, "scenes": cfg.curriculum[i].scenes, "scene_shapes": cfg.curriculum[i].scene_shapes,
               **probe(base, one, two), "seconds": round(time.perf_counter() - t0)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "probes.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
