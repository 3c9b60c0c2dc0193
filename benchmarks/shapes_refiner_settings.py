"""The tiny refiner's settings on the cascade's own outputs: guidance, strength, and sampling as trained or not.

Run: `.venv/bin/python benchmarks/shapes_refiner_settings.py [--base tiny-shapes] [--refiner tiny-shapes-refiner]
      [--old-refiner FOLDER] [--n 12] [--start 0] [-o FILE]`

The base stage animates `--n` held-out clips from `--start` (DPM-Solver++ 2M, 25 trailing steps, guidance 2.0, seed =
clip index); each refiner setting refines the same base outputs to 64x64 (the refine pipeline's default sampler,
DPM-Solver++ 2M SDE, 30 steps) and `i2vgen.eval.refinement_gain` compares it and the bicubic up-scaling of the base
output with the true 64x64 clip. `--old-refiner` adds a refiner folder sampled its own way (e.g. the previous
shipped one). docs/tiny-shapes.md, section 7. `--compare REFINER...` instead runs each refiner folder (or trained UNet
folder, in `--refiner`'s model) at guidance 1.0 with `--samplers` (both DPM-Solver++ 2M ones), `--refine-steps` and
`--strengths` (0: its VAE's round trip of the input alone), on the base outputs and on the true 32 px clips degraded
by the base VAE (sections 8 and 9). `--start 100` takes clips outside eval-shapes' 100, for choosing settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from i2vgen import eval as ev
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.pipelines.refine import I2VGenRefinePipeline
from i2vgen.shapes import make_clip, split_seeds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny-shapes")
    p.add_argument("--refiner", default="tiny-shapes-refiner")
    p.add_argument("--old-refiner", default=None)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--start", type=int, default=0,
                   help="the first held-out clip (eval-shapes' -n 100 uses 0-99; 100 and above are outside it)")
    p.add_argument("--sweep", action="store_true", help="strength x steps on base-VAE-degraded true clips")
    p.add_argument("--compare", nargs="+", default=None, metavar="REFINER",
                   help="refiner folders x --strengths x sampler, guidance 1.0, on the cascade's outputs and on "
                        "base-VAE-degraded true clips")
    p.add_argument("--strengths", default="0,0.1,0.2,0.3",
                   help="--compare's strengths (0: the refiner VAE's round trip of the up-scaled input alone)")
    p.add_argument("--samplers", default="dpmpp-2m-sde,dpmpp-2m", help="--compare's samplers")
    p.add_argument("--refine-steps", default="30", help="--compare's sampling grids, e.g. 20,30,50")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.sweep:
        return sweep(args)
    base = I2VGenPipeline.from_pretrained(args.base)
    clips = cascade_inputs(base, args.n, args.start)
    if args.compare:
        return compare(args, base, clips)
    refiner = I2VGenRefinePipeline.from_pretrained(args.refiner)
    settings = {"guidance 7.5 (the reference's), strength 0.3": (refiner, {}),
                "guidance 1.0, strength 0.3": (refiner, {"guidance_scale": 1.0}),
                "guidance 1.0, strength 0.2": (refiner, {"guidance_scale": 1.0, "strength": 0.2}),
                "guidance 1.0, strength 0.1": (refiner, {"guidance_scale": 1.0, "strength": 0.1})}
    if args.old_refiner:
        old = I2VGenRefinePipeline.from_pretrained(args.old_refiner)
        settings["old refiner, its folder's way, guidance 7.5, strength 0.3"] = (old, {})
        settings["old refiner, posterior mean and textbook start, guidance 1.0, strength 0.3"] = (
            old, {"guidance_scale": 1.0, "sample_posterior": False, "modelscope_start": False})
    rows = []
    for name, (pipe, kw) in settings.items():
        gains = [ev.refinement_gain(video, pipe(video, lo.caption, width=64, height=64, **{"strength": 0.3, **kw},
                                                generator=torch.Generator().manual_seed(i), output_type="np")[0],
                                    hi.frames) for i, (lo, hi, video) in enumerate(clips)]
        rows.append(report({"setting": name, "conventions": str(pipe.conventions)}, gains))
    if args.output:
        Path(args.output).write_text(json.dumps({"n": args.n, "base": args.base, "rows": rows}, indent=1) + "\n")
    return 0


def cascade_inputs(base: I2VGenPipeline, n: int, start: int = 0) -> list[tuple]:
    """(32 px clip, 64 px clip, the base stage's video of it) for held-out clips `start` to `start + n - 1` (generator
    seed: the clip's index in the split)."""
    clips = []
    for i, seed in enumerate(split_seeds("heldout", start + n)[start:], start):
        lo, hi = make_clip(seed, size=32, num_frames=8), make_clip(seed, size=64, num_frames=8)
        video = base(lo.first_frame, lo.caption, num_frames=8, height=32, width=32, target_fps=8,
                     num_inference_steps=25, guidance_scale=2.0, sampler="dpmpp-2m", timestep_spacing="trailing",
                     generator=torch.Generator().manual_seed(i), output_type="np")[0]
        clips.append((lo, hi, video))
    return clips


def compare(args: argparse.Namespace, base: I2VGenPipeline, clips: list[tuple]) -> int:
    from i2vgen.shapes_eval import vae_round_trip

    strengths = [float(s) for s in args.strengths.split(",")]
    refine_steps = [int(s) for s in args.refine_steps.split(",")]
    inputs = {"cascade": [video for _, _, video in clips],
              "degraded-true": [vae_round_trip(base.vae, lo.frames) for lo, _, _ in clips]}
    rows = []
    for folder in args.compare:
        refiner = load_refiner(folder, args.refiner)
        for kind, videos in inputs.items():
            if 0 in strengths:  # the refiner VAE's round trip of the bicubic-up-scaled input (the pipeline's is bilinear)
                ups = [np.round(ev.resize_like_refiner(x, (64, 64)) * 255).astype(np.uint8) for x in videos]
                gains = [ev.refinement_gain(x, vae_round_trip(refiner.vae, up), hi.frames)
                         for (_, hi, _), x, up in zip(clips, videos, ups)]
                rows.append(report({"refiner": folder, "input": kind, "sampler": None, "strength": 0.0}, gains))
            for sampler, steps, strength in itertools.product(args.samplers.split(","), refine_steps,
                                                              (s for s in strengths if s > 0)):
                gains = [ev.refinement_gain(x, refiner(x, lo.caption, width=64, height=64, strength=strength,
                                                       num_inference_steps=steps, guidance_scale=1.0,
                                                       sampler=sampler, generator=torch.Generator().manual_seed(i),
                                                       output_type="np")[0], hi.frames)
                         for i, ((lo, hi, _), x) in enumerate(zip(clips, videos), args.start)]
                rows.append(report({"refiner": folder, "input": kind, "sampler": sampler, "steps": steps,
                                    "strength": strength}, gains))
    if args.output:
        Path(args.output).write_text(json.dumps({"n": args.n, "start": args.start, "base": args.base,
                                                 "guidance": 1.0, "rows": rows}, indent=1) + "\n")
    return 0


def load_refiner(path: str, folder: str) -> I2VGenRefinePipeline:
    """A refiner model folder or name, or a trained UNet folder (a checkpoint's unet/ or unet_ema/) in `folder`'s
    model."""
    if not Path(path).is_dir() or (Path(path) / "model_index.json").is_file():
        return I2VGenRefinePipeline.from_pretrained(path)
    return I2VGenRefinePipeline.from_pretrained(folder, unet=path)


def report(row: dict, gains: list[dict]) -> dict:
    """`row` with the mean PSNR / SSIM gains and bicubic PSNR over the clips' `refinement_gain`s, printed."""
    row.update({k: float(np.mean([g[k] for g in gains])) for k in ("psnr_gain_db", "ssim_gain", "psnr_bicubic")})
    row["psnr_gain_se"] = float(np.std([g["psnr_gain_db"] for g in gains], ddof=1) / np.sqrt(len(gains))) \
        if len(gains) > 1 else None
    print(json.dumps(row), flush=True)
    return row


def sweep(args: argparse.Namespace) -> int:
    from i2vgen.model_paths import local_model_path
    from i2vgen.models.vae import VideoVAE
    from i2vgen.shapes_eval import vae_round_trip

    refiner = I2VGenRefinePipeline.from_pretrained(args.refiner)
    base_vae = VideoVAE.from_model_folder(local_model_path(args.base))
    clips = [(make_clip(s, size=32, num_frames=8), make_clip(s, size=64, num_frames=8))
             for s in split_seeds("heldout", args.start + args.n)[args.start:]]
    inputs = [vae_round_trip(base_vae, lo.frames) for lo, _ in clips]  # (F, 32, 32, 3) each
    rows = []
    for strength in (0.3, 0.45, 0.6):
        for steps in (1, 4):
            gains = [ev.refinement_gain(x, refiner(x, lo.caption, width=64, height=64, strength=strength,
                                                   num_inference_steps=steps, guidance_scale=1.0,
                                                   generator=torch.Generator().manual_seed(i), output_type="np")[0],
                                        hi.frames) for i, ((lo, hi), x) in enumerate(zip(clips, inputs), args.start)]
            rows.append(report({"strength": strength, "steps": steps}, gains))
    if args.output:
        Path(args.output).write_text(json.dumps({"n": args.n, "start": args.start, "input": "base VAE round trip",
                                                 "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
