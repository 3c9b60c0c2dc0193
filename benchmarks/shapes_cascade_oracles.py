"""Why the tiny refiner cannot beat bicubic in PSNR on the cascade's outputs: what PSNR rewards there, and what not.

Run: `.venv/bin/python benchmarks/shapes_cascade_oracles.py [--base tiny-shapes] [--start 100] [--n 24] [-o FILE]`

The base stage animates held-out clips `--start` to `--start + n - 1` as `shapes_refiner_settings.py` does (outside
eval-shapes' 100 by default); the same clips' true 32 px frames through the base VAE (eval-shapes' refine-gt input)
are the control. For both inputs, each transform of the bicubic up-scaling to 64 px is scored against the true 64 px
clip, as a PSNR gain over the bicubic up-scaling itself (dB, mean and standard error over clips):
- `blur`: a Gaussian blur of sigma 0.5-2 px. A restoration should lose by it; if it gains, PSNR rewards hedging.
- `colour oracle`: per frame and channel, the affine map of values that fits the truth best (least squares): the
  most any colour correction could give.
- `shift oracle`: per frame, the whole-pixel translation (within +-6 px) that fits the truth best: what putting
  the shapes where they belong could give (an upper bound; the shapes of a two-shape clip share one shift).
The oracles see the truth, so they bound what a refiner could win from colour and from position; the blur rows
say in which direction PSNR pushes a refiner on each input. `positions` adds how far the base stage's shapes are from
the true ones: the colour tracker of `i2vgen.eval` on the base output and on the true 32 px clip, the centroid
distance by frame (32 px frames) for shapes tracked in every frame of both, and each shape's travel along its
prompted direction as a share of the true travel; `colours` how far the shapes' colours are from the true ones by frame
(section 13). docs/tiny-shapes.md, section 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from shapes_refiner_settings import cascade_inputs

from i2vgen import eval as ev
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes import DIRECTIONS
from i2vgen.shapes_eval import vae_round_trip
from i2vgen.train.trainer import gaussian_blur

BLURS = (0.5, 1.0, 1.5, 2.0)
MAX_SHIFT = 6


def blur(video: np.ndarray, sigma: float) -> np.ndarray:
    """(F, H, W, 3) float -> the same, each frame blurred (sigma in pixels)."""
    x = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32)).permute(0, 3, 1, 2)  # (F, 3, H, W)
    return gaussian_blur(x, sigma).permute(0, 2, 3, 1).numpy()


def colour_oracle(video: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per frame and channel, a * video + b with (a, b) fitted to `truth` by least squares; clipped to [0, 1]."""
    out = np.empty_like(video)
    for f in range(len(video)):
        for c in range(3):
            x = video[f, ..., c].ravel()
            a = np.stack([x, np.ones_like(x)], axis=1)
            coef, *_ = np.linalg.lstsq(a, truth[f, ..., c].ravel(), rcond=None)
            out[f, ..., c] = (a @ coef).reshape(video.shape[1:3])
    return out.clip(0, 1)


def shift_oracle(video: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per frame, the translation by whole pixels (|dx|, |dy| <= MAX_SHIFT, edges replicated) closest to `truth`."""
    h, w = video.shape[1:3]
    pad = np.pad(video, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)), mode="edge")
    out = np.empty_like(video)
    for f in range(len(video)):
        best = None
        for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
            for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                cand = pad[f, MAX_SHIFT - dy:MAX_SHIFT - dy + h, MAX_SHIFT - dx:MAX_SHIFT - dx + w]
                err = float(np.mean((cand - truth[f]) ** 2))
                if best is None or err < best[0]:
                    best = (err, cand)
        out[f] = best[1]
    return out


def transforms(up: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """The transformed up-scalings, by row name."""
    out = {f"blur {s:g} px": blur(up, s) for s in BLURS}
    out["colour oracle"] = colour_oracle(up, truth)
    out["shift oracle"] = shift_oracle(up, truth)
    return out


def positions(clips: list[tuple]) -> dict:
    """Centroid error by frame (pixels of the 32 px frame) and travel ratios of the base stage's shapes."""
    errors, ratios = [], []
    for lo, _, video in clips:
        for shape in lo.shapes:
            (cb, nb), (ct, nt) = (ev.track_colours(v, [shape.colour])[shape.colour] for v in (video, lo.frames))
            if ((nb >= 2) & (nt >= 2)).sum() < len(nb):  # lost in some frame (e.g. hidden by the other shape)
                continue
            errors.append(np.linalg.norm(cb - ct, axis=1))  # (F,)
            d = np.array(DIRECTIONS[shape.direction], dtype=np.float64)
            ratios.append(float(np.dot(ev.displacement(cb, nb), d) / np.dot(ev.displacement(ct, nt), d)))
    return {"shapes_tracked": len(errors), "shapes": sum(len(lo.shapes) for lo, _, _ in clips),
            "centroid_error_px_by_frame": np.mean(errors, axis=0).round(3).tolist(),
            "travel_ratio_median": float(np.median(ratios)),
            "travel_ratio_quartiles": np.percentile(ratios, [25, 75]).round(3).tolist()}


def core_colour(video: np.ndarray, centroids: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(F, 3) mean colour (0-255) of the pixels within half the radius of each frame's centroid (x, y)."""
    ys, xs = np.mgrid[: video.shape[1], : video.shape[2]]
    out = []
    for frame, (cx, cy), r in zip(video.astype(np.float64), centroids, radii):
        near = (xs - cx) ** 2 + (ys - cy) ** 2 <= max(0.5 * r, 1.0) ** 2
        out.append(frame[near].mean(axis=0))
    return np.array(out)


def colours(clips: list[tuple], inputs: dict[str, list[np.ndarray]]) -> dict:
    """How far each input's shape colour is from the true one, by frame: the mean colour of the shape's core (half
    its true radius around where the colour tracker finds it in that input) against the true clip's core, mean
    absolute difference over RGB in levels (0-255); shapes the tracker finds in every frame of both."""
    out = {}
    for kind, videos in inputs.items():
        errors = []
        for (lo, _, _), video in zip(clips, videos):
            video = video if video.dtype == np.uint8 else np.round(video * 255).astype(np.uint8)
            for k, shape in enumerate(lo.shapes):
                (cb, nb), (ct, nt) = (ev.track_colours(v, [shape.colour])[shape.colour] for v in (video, lo.frames))
                if ((nb >= 2) & (nt >= 2)).sum() < len(nb):
                    continue
                truth = core_colour(lo.frames, ct, lo.radii[k])
                errors.append(np.abs(core_colour(video, cb, lo.radii[k]) - truth).mean(axis=1))  # (F,)
        out[kind] = {"shapes_tracked": len(errors),
                     "core_colour_error_by_frame": np.mean(errors, axis=0).round(2).tolist()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="tiny-shapes")
    p.add_argument("--start", type=int, default=100)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    base = I2VGenPipeline.from_pretrained(args.base)
    clips = cascade_inputs(base, args.n, args.start)
    inputs = {"cascade": [video for _, _, video in clips],
              "degraded-true": [vae_round_trip(base.vae, lo.frames) for lo, _, _ in clips]}
    rows = []
    for kind, videos in inputs.items():
        gains: dict[str, list[float]] = {}
        bicubic = []
        for (_, hi, _), video in zip(clips, videos):
            truth = hi.frames.astype(np.float32) / 255  # (F, 64, 64, 3)
            up = ev.resize_like_refiner(video, truth.shape[1:3]).astype(np.float32)
            base_psnr = ev.psnr(up, truth)
            bicubic.append(base_psnr)
            for name, x in transforms(up, truth).items():
                gains.setdefault(name, []).append(ev.psnr(x, truth) - base_psnr)
        for name, g in gains.items():
            row = {"input": kind, "transform": name, "psnr_gain_db": float(np.mean(g)),
                   "psnr_gain_se": float(np.std(g, ddof=1) / np.sqrt(len(g))), "clips_gaining": int(np.sum(np.array(g) > 0)),
                   "psnr_bicubic": float(np.mean(bicubic))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    where = positions(clips)
    where["colours"] = colours(clips, inputs)
    print(json.dumps(where), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"n": args.n, "start": args.start, "base": args.base, "rows": rows,
                                                 "positions": where}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
