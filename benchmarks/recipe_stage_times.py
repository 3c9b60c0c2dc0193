"""How long `i2vgen train-recipe tiny-shapes` takes on an unloaded machine: re-run chosen stages of a finished run alone.

Run: `.venv/bin/python benchmarks/recipe_stage_times.py [--run runs/tiny-shapes-4] [--recipe tiny-shapes-text]
      [--stages components,base_components,curriculum-5,curriculum-6] [-o FILE]`

A run's `timings.json` records each stage as it ran, sometimes beside other jobs on the 2 cores. Each named stage is
trained again from the run's own inputs (the VAEs from nothing; a curriculum stage or `base` from the previous
stage's weights; `refine` from nothing) into a temporary folder at the recipe's threads, nothing else running, and
its weights are compared with the run's (the recipe is deterministic on one machine, so the difference should be 0).
The row gives the seconds alone against the recorded ones; the total replaces the recorded times of the re-run
stages. docs/tiny-shapes.md, section 10.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from i2vgen.train.recipe import RecipeConfig, recipe, stage_weights, train_stage, train_vae


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(glob.glob(str(folder / "*.safetensors"))[0])


def final_checkpoint(stage_dir: Path) -> Path:
    return max((stage_dir / "checkpoints").iterdir())  # step-NNNNNNNN: the last step


def rerun(cfg: RecipeConfig, run: Path, stage: str, tmp: Path) -> tuple[float, float]:
    """(seconds, max |weight - the run's weight|) of `stage` trained again alone."""
    t0 = time.perf_counter()
    if stage in ("components", "base_components"):
        vae = train_vae(cfg, cfg.vae if stage == "components" else cfg.base_vae, lambda m: None)
        seconds = time.perf_counter() - t0
        mine = vae.state_dict()
        ref = weights(run / ("components" if stage == "components" else "components-base") / "vae")
    else:
        names = [f"curriculum-{i}" for i in range(len(cfg.curriculum))] + ["base"]
        components = run / ("components" if stage == "refine" else "components-base")
        init = None
        if stage != "refine" and names.index(stage) > 0:
            init = stage_weights(final_checkpoint(run / names[names.index(stage) - 1]))
        final = train_stage(cfg, stage, components, tmp / stage, lambda m: None, init, init is None,
                            base_components=run / "components-base")
        seconds = time.perf_counter() - t0
        mine, ref = weights(stage_weights(final)), weights(stage_weights(final_checkpoint(run / stage)))
    return seconds, max((mine[k].float() - ref[k].float()).abs().max().item() for k in ref)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/tiny-shapes-4")
    p.add_argument("--recipe", default="tiny-shapes-text", help="the run's recipe (that of runs/tiny-shapes-4)")
    p.add_argument("--stages", default="components,base_components,curriculum-5,curriculum-6")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    run = Path(args.run)
    cfg = recipe(args.recipe)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    recorded = json.loads((run / "timings.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            seconds, diff = rerun(cfg, run, stage, Path(tmp))
            rows.append({"stage": stage, "seconds_alone": round(seconds, 1), "seconds_recorded":
                         round(recorded[stage], 1), "max_weight_diff_vs_run": diff, "threads": cfg.threads})
            print(json.dumps(rows[-1]), flush=True)
    alone = {r["stage"]: r["seconds_alone"] for r in rows}
    total = sum(alone.get(k, v) for k, v in recorded.items())
    summary = {"recorded_total_s": round(sum(recorded.values()), 1), "total_with_stages_alone_s": round(total, 1),
               "total_with_stages_alone_min": round(total / 60, 1)}
    print(json.dumps(summary), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"run": str(run), "rows": rows, **summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
