"""A video of DDIM-50 quality sooner: samplers, step counts, guidance for the first part of the schedule only
(`cfg_until`) and step caching (`cache_interval`), on a trained model, against diffusers' defaults (DDIM 50, fp32).

Run: `.venv/bin/python benchmarks/fast_sampling.py [--model tiny-shapes] [--n 48] [--rounds 5] [--threads 2]
[-o docs/results/fast-sampling.json] [--plot docs/fast-sampling.svg]`; `--replot JSON --plot SVG` redraws the
quality-vs-time plot from a results file without running anything.

Quality: `--n` held-out one-shape clips of the shapes task (`shapes.split_seeds("heldout")`, never trained on), each
animated from its first frame with its caption by every configuration with the same seed; the model folder's
suggested size, frames, guidance and grid spacing. Per configuration: direction accuracy (the centroid tracker of
`i2vgen eval`), first-frame PSNR against the input picture, and PSNR of the frames against the DDIM-50 video of the same
clip and seed. A configuration "matches DDIM 50" when its paired differences from DDIM 50 in direction accuracy and
first-frame PSNR are within two standard errors of zero, or better (the held-out metrics' noise; `matches`).

Speed: seconds per video on clip 0 (encoders, sampling, decode; no file written), median of `--rounds` rounds that
alternate over the configurations, with diffusers' `I2VGenXLPipeline` (DDIM 50, fp32, its defaults but the model's
guidance) on the same folder in every round; `speedup` = diffusers' median / the configuration's median.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from i2vgen import eval as ev
from i2vgen import shapes
from i2vgen.app.settings import FAST, GenerationSettings
from i2vgen.model_paths import local_model_path
from i2vgen.pipelines.base import I2VGenPipeline

REFERENCE = "ddim-50"
# name -> pipeline keyword arguments (sampler, steps, cfg_until, cache_interval, cache_depth)
CONFIGS: dict[str, dict] = {
    REFERENCE: {"sampler": "ddim", "steps": 50},
    "ddim-25": {"sampler": "ddim", "steps": 25},
    "dpmpp-2m-25": {"sampler": "dpmpp-2m", "steps": 25},
    "dpmpp-2m-15": {"sampler": "dpmpp-2m", "steps": 15},
    "dpmpp-2m-12": {"sampler": "dpmpp-2m", "steps": 12},
    "dpmpp-2m-10": {"sampler": "dpmpp-2m", "steps": 10},
    "dpmpp-2m-8": {"sampler": "dpmpp-2m", "steps": 8},
    "unipc-10": {"sampler": "unipc", "steps": 10},
    "dpmpp-2m-12 cfg-until 0.5": {"sampler": "dpmpp-2m", "steps": 12, "cfg_until": 0.5},
    "dpmpp-2m-12 cache 2": {"sampler": "dpmpp-2m", "steps": 12, "cache_interval": 2},
    "dpmpp-2m-12 cfg-until 0.5 cache 2": {"sampler": "dpmpp-2m", "steps": 12, "cfg_until": 0.5,
                                          "cache_interval": 2},
    "dpmpp-2m-15 cfg-until 0.5 cache 2": {"sampler": "dpmpp-2m", "steps": 15, "cfg_until": 0.5,
                                          "cache_interval": 2},
    "dpmpp-2m-15 cfg-until 0.5 cache 3": {"sampler": "dpmpp-2m", "steps": 15, "cfg_until": 0.5,
                                          "cache_interval": 3},
    "dpmpp-2m-10 cfg-until 0.5": {"sampler": "dpmpp-2m", "steps": 10, "cfg_until": 0.5},
    "ddim-50 cache 2": {"sampler": "ddim", "steps": 50, "cache_interval": 2},
    "ddim-50 cache 3 depth 2": {"sampler": "ddim", "steps": 50, "cache_interval": 3, "cache_depth": 2},
    "fast (the --fast preset)": dict(FAST),
}


def run(pipe: I2VGenPipeline, s: GenerationSettings, clip: shapes.ShapesClip, seed: int, cfg: dict) -> np.ndarray:
    kw = {"steps": 50, "cfg_until": 1.0, "cache_interval": 1, "cache_depth": 1, **cfg}
    return pipe(clip.first_frame, clip.caption, num_frames=s.num_frames, height=s.height, width=s.width,
                target_fps=s.fps, guidance_scale=s.guidance, timestep_spacing=s.timestep_spacing,
                sampler=kw["sampler"], num_inference_steps=kw["steps"], cfg_until=kw["cfg_until"],
                cache_interval=kw["cache_interval"], cache_depth=kw["cache_depth"],
                generator=torch.Generator().manual_seed(seed), output_type="np")[0]  # (F, H, W, 3)


def diffusers_pipeline(folder: Path):  # noqa: ANN201
    import diffusers
    import transformers

    size = json.loads((folder / "image_encoder" / "config.json").read_text())["image_size"]
    # the folder has no feature_extractor/ (our pipeline needs none): CLIP's preprocessing at the encoder's size
    fx = transformers.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.I2VGenXLPipeline.from_pretrained(folder, feature_extractor=fx)
    # transformers >= 5's CLIPTextModel has no .text_model, which the deprecated pipeline reads (spec 6)
    object.__setattr__(ref.text_encoder, "text_model", ref.text_encoder)
    ref.set_progress_bar_config(disable=True)
    return ref


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b and its standard error."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--n", type=int, default=48, help="held-out clips for the quality columns")
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", nargs="*", default=None, help="a subset of the configurations (names)")
    p.add_argument("--no-diffusers", action="store_true")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--plot", default=None, metavar="SVG", help="write the quality-vs-time plot")
    p.add_argument("--replot", default=None, metavar="JSON", help="only redraw --plot from this results file")
    args = p.parse_args()
    if args.replot:
        if not args.plot:
            p.error("--replot needs --plot")
        Path(args.plot).write_text(svg_plot(json.loads(Path(args.replot).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    configs = {k: v for k, v in CONFIGS.items() if args.configs is None or k in args.configs or k == REFERENCE}
    folder = local_model_path(args.model)
    s = GenerationSettings.from_model_folder(str(folder), prompt="x", seed=0)
    pipe = I2VGenPipeline.from_pretrained(folder)
    seeds = shapes.split_seeds("heldout", args.n)
    clips = [shapes.make_clip(sd, size=s.width, num_frames=s.num_frames, num_shapes=1) for sd in seeds]

    # ---- quality ----
    rows: dict[str, dict] = {}
    ref_videos: list[np.ndarray] = []
    for name, cfg in configs.items():
        ok, psnr, to_ref = [], [], []
        for i, clip in enumerate(clips):
            video = run(pipe, s, clip, i, cfg)
            agree = ev.prompt_agreement(video, clip.caption)
            ok.append(float(bool(agree)))
            psnr.append(ev.first_frame_fidelity(video, clip.first_frame)["psnr"])
            if name == REFERENCE:
                ref_videos.append(video)
            else:
                to_ref.append(ev.psnr(video, ref_videos[i]))
        rows[name] = {"config": cfg, "direction_accuracy": float(np.mean(ok)), "first_frame_psnr": float(np.mean(psnr)),
                      "psnr_to_ddim50": float(np.mean(to_ref)) if to_ref else None, "_ok": ok, "_psnr": psnr}
        print(json.dumps({k: v for k, v in rows[name].items() if not k.startswith("_")} | {"name": name}),
              file=sys.stderr, flush=True)
    ref = rows[REFERENCE]
    for name, row in rows.items():
        da, da_se = paired(row["_ok"], ref["_ok"])
        dp, dp_se = paired(row["_psnr"], ref["_psnr"])
        row.update(accuracy_diff=round(da, 3), accuracy_diff_se=round(da_se, 3), psnr_diff=round(dp, 2),
                   psnr_diff_se=round(dp_se, 2), matches=bool(da >= -2 * da_se and dp >= -2 * dp_se))

    # ---- speed ----
    times: dict[str, list[float]] = {name: [] for name in configs}
    ref_pipe = None if args.no_diffusers else diffusers_pipeline(folder)
    if ref_pipe is not None:
        times["diffusers ddim-50 fp32"] = []
    from PIL import Image

    clip = clips[0]
    run(pipe, s, clip, 0, {"sampler": "ddim", "steps": 2})  # warm-up
    for _ in range(args.rounds):
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            run(pipe, s, clip, 0, cfg)
            times[name].append(time.perf_counter() - t0)
        if ref_pipe is not None:
            image = Image.fromarray(clip.first_frame)
            t0 = time.perf_counter()
            ref_pipe(image=image, prompt=clip.caption, num_frames=s.num_frames, height=s.height, width=s.width,
                     num_inference_steps=50, guidance_scale=s.guidance, target_fps=s.fps,
                     generator=torch.Generator().manual_seed(0), output_type="np")
            times["diffusers ddim-50 fp32"].append(time.perf_counter() - t0)
    base = statistics.median(times.get("diffusers ddim-50 fp32") or times[REFERENCE])
    table = []
    for name, ts in times.items():
        row = {k: v for k, v in rows.get(name, {}).items() if not k.startswith("_")}
        med = statistics.median(ts)
        row.update(name=name, seconds=round(med, 3), seconds_runs=[round(t, 3) for t in ts],
                   speedup=round(base / med, 2))
        table.append(row)
        print(json.dumps(row), flush=True)
    out = {"model": str(args.model), "n": len(clips), "rounds": args.rounds, "threads": args.threads,
           "size": [s.width, s.height], "frames": s.num_frames, "guidance": s.guidance,
           "spacing": s.timestep_spacing, "torch": torch.__version__, "rows": table}
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        Path(args.plot).write_text(svg_plot(out))
    return 0


def svg_plot(result: dict, width: int = 1000, height: int = 440) -> str:
    """Quality against time as an SVG (no plotting library needed): x the median seconds per video (log scale), y the
    PSNR of the frames to the DDIM-50 video; each configuration a numbered point, named in the legend on the right
    with its direction accuracy; DDIM 50 itself and diffusers' default are vertical lines at their times."""
    rows = result["rows"]
    points = sorted((r for r in rows if r.get("psnr_to_ddim50") is not None), key=lambda r: r["seconds"])
    lines = sorted((r for r in rows if r.get("psnr_to_ddim50") is None), key=lambda r: r["seconds"])
    left, plot_right, top, bottom = 60, 560, 50, 50
    lo, hi = math.log10(min(r["seconds"] for r in rows) / 1.2), math.log10(max(r["seconds"] for r in rows) * 1.2)
    y_lo = 5 * int(min(r["psnr_to_ddim50"] for r in points) // 5)
    y_hi = 5 * int(max(r["psnr_to_ddim50"] for r in points) // 5 + 1)

    def x(v: float) -> float:
        return left + (plot_right - left) * (math.log10(v) - lo) / (hi - lo)

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * (v - y_lo) / (y_hi - y_lo)

    title = (f'{result["model"]}: quality against time, {result["n"]} held-out clips, {result["threads"]} thread(s), '
             f'median of {result["rounds"]} runs')
    mid_x, mid_y, base_y = (left + plot_right) / 2, (top + height - bottom) / 2, height - bottom
    y_label = "PSNR to the DDIM-50 video (dB)"
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif"'
    out = [f'{svg} font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
           f'<line x1="{left}" y1="{base_y}" x2="{plot_right}" y2="{base_y}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base_y}" stroke="black"/>',
           f'<text x="{mid_x}" y="{height - 12}" text-anchor="middle">seconds per video (median, log scale)</text>',
           f'<text x="14" y="{mid_y}" text-anchor="middle" transform="rotate(-90 14 {mid_y})">{y_label}</text>']
    for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500):
        if lo <= math.log10(v) <= hi:
            out.append(f'<text x="{x(v):.1f}" y="{base_y + 14}" text-anchor="middle">{v:g}</text>'
                       f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{base_y}" stroke="#eee"/>')
    for v in range(y_lo, y_hi + 1, 5):
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>'
                   f'<line x1="{left}" y1="{y(v):.1f}" x2="{plot_right}" y2="{y(v):.1f}" stroke="#ddd"/>')
    for i, r in enumerate(lines):
        out.append(f'<line x1="{x(r["seconds"]):.1f}" y1="{top}" x2="{x(r["seconds"]):.1f}" y2="{base_y}" '
                   f'stroke="#888" stroke-dasharray="4 3"/><text x="{x(r["seconds"]) - 4:.1f}" y="{top - 14 + 12 * i}" '
                   f'text-anchor="end" fill="#555">{r["name"]} ({r["seconds"]:.1f} s)</text>')
    for i, r in enumerate(points, 1):
        colour = "#c00" if r["name"].startswith("fast") else "#06c"
        acc = r.get("direction_accuracy")
        cx, cy = x(r["seconds"]), y(r["psnr_to_ddim50"])
        legend = f'{i}. {r["name"]}: {r["seconds"]:.2f} s, {r["psnr_to_ddim50"]:.1f} dB' + (
            f", {acc:.0%} directions" if acc is not None else "")
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}"/>'
                   f'<text x="{cx + 5:.1f}" y="{cy - 4:.1f}" fill="{colour}" font-size="9">{i}</text>'
                   f'<text x="{plot_right + 20}" y="{top + 16 * (i - 1) + 4}" fill="{colour}">{legend}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
