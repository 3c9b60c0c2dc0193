"""Calibrate and check the application layer's memory estimate and planner (`i2vgen.app.memory`) against measured
peaks, CPU.

Run: `.venv/bin/python benchmarks/memory_estimate.py [--threads 2] [--parts unet vae tiled pipeline] [--repeats 3]`

Each measurement runs in its own subprocess (a fresh allocator), as the growth of the peak RSS (VmHWM) over the RSS
after the model is built (benchmarks/rss.py):
- `unet`: a guided UNet step (batch 2) of the `bench-mid` UNet (base channels 64) at three sizes;
- `vae` / `tiled`: the decode of 1 and 2 frames in one call (1 frame in strips of 8 latent rows) with the real SD
  VAE configuration (random weights) at four sizes up to 1280x720.
Per run: the measured MB, the estimate's MB and their ratio; for the UNet the implied coefficient (measured /
(B F h w c0 bytes)), the figure `UNET_ACT_COEF` is set from, and for the VAE a least-squares fit of the decode model
(`app.memory.vae_decode_bytes`: fixed part + (per call + per frame x frames) x H W c0 4 bytes; in strips, frames x
(a x H W + b x one strip's pixels) x c0 4 bytes) over the runs, the figures `VAE_WEIGHT_COEF`, `VAE_CALL_COEF`,
`VAE_FRAME_COEF`, `VAE_TILED_COEF` and `VAE_STRIP_COEF` are set from.
- `pipeline`: whole runs of the application layer (`prepare` -> `load_generation_pipeline` -> `generate`, 2 DDIM
  steps with CFG 9) of a model folder with the `bench-mid` UNet, the real-config VAE and small CLIP encoders of the
  real 1024-wide context, all random, at three sizes, each with a `--max-memory` that makes the planner choose a
  different plan. The peak is the growth of VmHWM during `generate` over the RSS before the weights load (so the
  weights count, as in the estimate; the loading's own transient copies do not), against the plan's estimate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import peak_growth_mb, reset_peak

UNET_SIZES = [(8, 32, 32), (16, 32, 48), (8, 64, 64)]  # frames, latent h, w
VAE_SIZES = [(256, 256), (512, 288), (640, 352), (1280, 720)]  # width, height
# whole runs: frames, width, height, the plan the budget is set for (sequential CFG, frames per VAE call, strip rows)
PIPELINE_RUNS = [(8, 256, 256, (False, 2, None)), (8, 384, 384, (True, 1, None)), (4, 512, 512, (True, 1, 8))]
REAL_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}


def unet_child(frames: int, h: int, w: int) -> dict:
    from i2vgen.models.configs import UNET_PRESETS
    from i2vgen.models.unet import I2VGenUNet, UNetCondition

    cfg = UNET_PRESETS["bench-mid"]
    unet = I2VGenUNet(cfg).eval()
    b = 2
    x = torch.randn(b, 4, frames, h, w)
    cond = UNetCondition(torch.randn(b, 145, cfg.cross_attention_dim), torch.randn(b, 4, frames, h, w))
    with torch.no_grad():
        since = reset_peak()
        unet(x, torch.tensor([500] * b), condition=cond, fps=torch.tensor([16] * b))
        mb = peak_growth_mb(since)
    return {"kind": "unet", "frames": frames, "h": h, "w": w, "c0": cfg.block_out_channels[0], "batch": b,
            "measured_mb": mb}


def vae_child(tiled: bool, frames: int, width: int, height: int) -> dict:
    """The decode of `frames` frames in one call (tiled: in strips of `VAE_TILE` latent rows, as the planner tiles)."""
    from diffusers import AutoencoderKL

    from i2vgen.app.memory import VAE_TILE
    from i2vgen.models.vae import VideoVAE

    vae = VideoVAE(AutoencoderKL(**REAL_VAE).eval())
    z = torch.randn(1, 4, frames, height // 8, width // 8)
    with torch.no_grad():
        since = reset_peak()
        vae.decode(z, chunk_size=frames, tile=VAE_TILE if tiled else None)
        mb = peak_growth_mb(since)
    return {"kind": "tiled" if tiled else "vae", "width": width, "height": height, "frames": frames, "c0": 128,
            "params": sum(p.numel() for p in vae.parameters()), "measured_mb": mb}


def write_model(folder: Path) -> Path:
    """A model folder: `bench-mid` UNet, the real-config VAE, small CLIP encoders with the 1024-wide context."""
    import transformers
    from diffusers import AutoencoderKL

    from i2vgen.models.configs import UNET_PRESETS
    from i2vgen.models.encoders import tiny_text_config, tiny_vision_config
    from i2vgen.models.tiny import Components, write_model_folder
    from i2vgen.models.unet import I2VGenUNet

    cfg = UNET_PRESETS["bench-mid"]
    d = cfg.cross_attention_dim
    torch.manual_seed(0)
    c = Components(I2VGenUNet(cfg), AutoencoderKL(**REAL_VAE),
                   transformers.CLIPTextModel(tiny_text_config(hidden_size=d, intermediate_size=256, projection_dim=d)),
                   transformers.CLIPVisionModelWithProjection(
                       tiny_vision_config(hidden_size=64, intermediate_size=128, projection_dim=d)))
    return write_model_folder(c, folder)


def pipeline_settings(folder: str, frames: int, width: int, height: int, budget: int | None):
    from i2vgen.app.settings import DeviceSettings, GenerationSettings

    return GenerationSettings(prompt="a red circle moves left", model=folder, num_frames=frames, width=width,
                              height=height, steps=2, guidance=9.0, seed=0,
                              runtime=DeviceSettings(max_memory=budget, dtype="fp32"))  # the calibrated dtype


def pipeline_child(folder: str, frames: int, width: int, height: int, budget: int) -> dict:
    from rss import rss_kb

    from i2vgen.app.run import generate, load_generation_pipeline, prepare
    from i2vgen.demo import sample_image

    image = sample_image(512)
    s = prepare(pipeline_settings(folder, frames, width, height, budget or None), image=image)
    before = rss_kb()  # the weights are not loaded yet
    pipe = load_generation_pipeline(s)
    reset_peak()  # drop the loading's transient copies from the peak
    denoised = {}

    def on_step(stage: str, step: int, total: int, x0: object) -> None:
        if step == total:  # the end of the UNet phase: its peak, and what stays resident after it
            denoised.update(peak=rss_kb("VmHWM"), rss=rss_kb())

    with torch.no_grad():
        generate(pipe, s, image, on_step=on_step)
    mb = (rss_kb("VmHWM") - before) / 1024
    p = s.runtime.plan
    e = p.need
    return {"kind": "pipeline", "frames": frames, "width": width, "height": height, "plan": p.settings(),
            "measured_mb": round(mb), "unet_phase_mb": round((denoised["peak"] - before) / 1024),
            "after_unet_rss_mb": round((denoised["rss"] - before) / 1024), "estimate_mb": round(e.total / 2**20),
            "estimate_parts_mb": [round(x / 2**20) for x in (e.weights, e.unet, e.decode, e.video)],
            "ratio": round(e.total / 2**20 / mb, 2)}


def pipeline_budget(folder: str, frames: int, width: int, height: int, target: tuple) -> int:
    """The estimate of the `target` plan (sequential CFG, frames per VAE call, strip rows): as a --max-memory, the
    planner picks that plan unless a cheaper one fits too."""
    from i2vgen.app.memory import estimate, model_geometry
    from i2vgen.app.run import BASE_COMPONENTS

    seq, chunk, tile = target
    geo = model_geometry(folder, BASE_COMPONENTS)
    return estimate(geo, frames=frames, width=width, height=height, dtype="fp32", offload=False, sequential_cfg=seq,
                    decode_frames=chunk, tile=tile).total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", nargs="+", default=["unet", "vae", "tiled", "pipeline"],
                   choices=["unet", "vae", "tiled", "pipeline"])
    p.add_argument("--repeats", type=int, default=1, help="run each measurement this many times; the median counts")
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        kind, *dims = args.child
        if kind == "pipeline":
            row = pipeline_child(dims[0], *map(int, dims[1:]))
        else:
            row = unet_child(*map(int, dims)) if kind == "unet" else vae_child(kind == "tiled", *map(int, dims))
        print(json.dumps(row))
        return 0
    from i2vgen.app.memory import UNET_ACT_COEF, VAE_TILE, ModelGeometry, vae_decode_bytes

    jobs = [("unet", *s) for s in UNET_SIZES] * ("unet" in args.parts)
    jobs += [("vae", n, *s) for s in VAE_SIZES for n in (1, 2)] * ("vae" in args.parts)
    jobs += [("tiled", 1, *s) for s in VAE_SIZES] * ("tiled" in args.parts)
    vae_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "pipeline" in args.parts:
            folder = str(write_model(Path(tmp) / "model"))
            jobs += [("pipeline", folder, f, w, h, pipeline_budget(folder, f, w, h, target))
                     for f, w, h, target in PIPELINE_RUNS]
        for job in jobs:
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child",
                                      *map(str, job)], check=False, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{job[0]} child failed:\n{out.stderr[-3000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda r: r["measured_mb"])
            row = runs[len(runs) // 2]  # the median run
            if len(runs) > 1:
                row["measured_runs_mb"] = [round(r["measured_mb"]) for r in runs]
            if row["kind"] == "unet":
                unit = row["batch"] * row["frames"] * row["h"] * row["w"] * row["c0"] * 4
                est = UNET_ACT_COEF * unit
                row.update(coef=round(row["measured_mb"] * 2**20 / unit, 2))
            elif row["kind"] in ("vae", "tiled"):
                geo = ModelGeometry({"vae": row["params"]}, 0, row["c0"], 8)
                tile = VAE_TILE if row["kind"] == "tiled" else None
                est = vae_decode_bytes(geo, row["frames"], row["width"], row["height"], tile)
                vae_rows.append(row)
            if row["kind"] == "pipeline":
                row["ratio"] = round(row["estimate_mb"] / row["measured_mb"], 2)
            else:
                row.update(estimate_mb=round(est / 2**20, 1), ratio=round(est / (row["measured_mb"] * 2**20), 2))
            print(json.dumps(row), flush=True)
    if vae_rows:
        print(json.dumps(fit_vae(vae_rows)))
    return 0


def fit_vae(rows: list[dict]) -> dict:
    """Least squares: measured bytes = w * weight bytes + (call + frame * n) * unit, untiled; tiled * n * unit in
    strips (its fixed part taken from the untiled fit)."""
    untiled = [r for r in rows if r["kind"] == "vae"]
    a = torch.tensor([[r["params"] * 4, (u := r["width"] * r["height"] * r["c0"] * 4), r["frames"] * u]
                      for r in untiled], dtype=torch.float64)
    b = torch.tensor([r["measured_mb"] * 2**20 for r in untiled], dtype=torch.float64)
    # the weight bytes are the same in every run: their column is the fixed part
    w, call, frame = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].tolist()
    fit = {"fit": "vae", "VAE_WEIGHT_COEF": round(w, 3), "VAE_CALL_COEF": round(call, 2),
           "VAE_FRAME_COEF": round(frame, 2)}
    tiled = [r for r in rows if r["kind"] == "tiled"]
    if tiled:  # per frame: the frame's pixels and one strip's (VAE_TILE latent rows), over the same fixed part
        from i2vgen.app.memory import VAE_TILE

        a = torch.tensor([[r["frames"] * r["width"] * r["height"] * r["c0"] * 4,
                           r["frames"] * r["width"] * min(r["height"], VAE_TILE * 8) * r["c0"] * 4] for r in tiled],
                         dtype=torch.float64)
        b = torch.tensor([r["measured_mb"] * 2**20 - w * r["params"] * 4 for r in tiled], dtype=torch.float64)
        frame_part, strip_part = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].tolist()
        fit.update(VAE_TILED_COEF=round(frame_part, 2), VAE_STRIP_COEF=round(strip_part, 1))
    return fit


if __name__ == "__main__":
    sys.exit(main())
