"""What the cascade costs: (base at 640x352 + refine to 1280x720) vs (base directly at 1280x704), CPU, random weights.

Run: `.venv/bin/python benchmarks/bench_cascade.py [--frames 8] [--base-steps 2] [--refine-steps 2] [--threads 2]`.

Both stages use the same mid-size configs: UNet preset `bench-mid` (the refiner's with text-only context and the
(2,1)-pad / row-crop resampling), a real-shaped VAE with 4 levels (downscale 8, block_out_channels 32/64/64/64, one
layer per block) and small CLIP encoders with the real 1024-wide context. Each scenario runs in its own subprocess, so
one's allocations cannot hide the other's peak. Per phase (one stage from prompt to decoded frames): wall seconds,
seconds per sampler step (between step callbacks: one batched CFG forward of the UNet, plus the sampler's update), and
peak memory = growth of the process's peak RSS over its RSS before the phase (VmHWM, reset through
/proc/self/clear_refs, as benchmarks/bench_unet.py). The last column extrapolates each phase to the reference's step
counts (DDIM 50 for the base stage, DPM-Solver++ 2M SDE 30 for the refiner): time + (N - steps) * seconds per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rss import peak_growth_mb, reset_peak

REFERENCE_STEPS = {"base": 50, "refine": 30}


def measure(fn) -> dict[str, Any]:  # noqa: ANN001
    """Run fn(callback) once -> seconds, seconds per step (median between callbacks), peak RSS growth (MB)."""
    rss0 = reset_peak()
    stamps: list[float] = []
    t0 = time.perf_counter()
    fn(lambda i, t, x0: stamps.append(time.perf_counter()))
    seconds = time.perf_counter() - t0
    per_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) if len(stamps) > 1 else float("nan")
    return {"seconds": seconds, "per_step": per_step, "steps": len(stamps), "peak_mb": peak_growth_mb(rss0)}


def build(tmp: Path) -> tuple[Any, Any]:
    """The two pipelines with random weights (PyTorch's default initialisation)."""
    import transformers
    from diffusers import AutoencoderKL

    from i2vgen.models.configs import UNET_PRESETS
    from i2vgen.models.encoders import ImageEncoder, TextEncoder, tiny_text_config, tiny_vision_config
    from i2vgen.models.encoders import write_tiny_clip_tokenizer
    from i2vgen.models.refiner import I2VGenRefinerUNet
    from i2vgen.models.unet import I2VGenUNet
    from i2vgen.models.vae import VideoVAE, tiny_vae_config
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    torch.manual_seed(0)
    cfg = UNET_PRESETS["bench-mid"]
    d = cfg.cross_attention_dim
    vae_cfg = tiny_vae_config(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(tmp / "tok"), model_max_length=77)

    def text() -> TextEncoder:
        return TextEncoder(transformers.CLIPTextModel(tiny_text_config(hidden_size=d, intermediate_size=256,
                                                                       projection_dim=d)), tokenizer)

    base = I2VGenPipeline(I2VGenUNet(cfg), VideoVAE(AutoencoderKL(**vae_cfg)), text(), ImageEncoder(
        transformers.CLIPVisionModelWithProjection(tiny_vision_config(hidden_size=64, intermediate_size=128,
                                                                      projection_dim=d))))
    refiner_cfg = cfg.replace(image_conditioning=False, refiner_resampling=True, concat_scale=1.0)
    refiner = I2VGenRefinePipeline(I2VGenRefinerUNet(refiner_cfg), VideoVAE(AutoencoderKL(**vae_cfg)), text())
    return base, refiner


def run_scenario(name: str, frames: int, base_steps: int, refine_steps: int) -> list[dict[str, Any]]:
    from i2vgen.demo import sample_image

    image = sample_image(512)
    with tempfile.TemporaryDirectory() as tmp:
        base, refiner = build(Path(tmp))
    common = {"num_frames": frames, "num_inference_steps": base_steps, "negative_prompt": "blurry",
              "generator": torch.Generator().manual_seed(0)}
    rows = []
    with torch.no_grad():
        if name == "direct":
            m = measure(lambda cb: base(image, "a red circle", width=1280, height=704, callback=cb, **common))
            rows.append({"scenario": "direct", "phase": "base 1280x704", "stage": "base", **m})
        else:
            out: list[torch.Tensor] = []
            m = measure(lambda cb: out.append(base(image, "a red circle", width=640, height=352, callback=cb,
                                                   output_type="pt", **common)))
            rows.append({"scenario": "cascade", "phase": "base 640x352", "stage": "base", **m})
            video = out[0].cpu()  # (1, 3, F, 352, 640): the stage boundary
            m = measure(lambda cb: refiner(video, "a red circle", width=1280, height=720, callback=cb,
                                           num_inference_steps=refine_steps, negative_prompt="blurry",
                                           generator=torch.Generator().manual_seed(0)))
            rows.append({"scenario": "cascade", "phase": "refine -> 1280x720", "stage": "refine", **m})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--base-steps", type=int, default=2)
    ap.add_argument("--refine-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the scenarios this many times; keep the fastest")
    ap.add_argument("--scenario", choices=("direct", "cascade"), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, args.frames, args.base_steps, args.refine_steps)))
        return
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for scenario in ("cascade", "direct"):
            cmd = [sys.executable, __file__, "--scenario", scenario, *sys.argv[1:]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            for r in json.loads(out):
                runs.setdefault((r["scenario"], r["phase"]), []).append(r)
    # the fastest run of each phase (machine noise only ever adds time), and its largest peak
    rows = [{**min(rs, key=lambda r: r["seconds"]), "per_step": min(r["per_step"] for r in rs),
             "peak_mb": max(r["peak_mb"] for r in rs)} for rs in runs.values()]
    print(f"CPU, {args.threads} threads, {args.frames} frames, steps: base {args.base_steps}, refine "
          f"{args.refine_steps}, best of {args.repeats}; UNet bench-mid, VAE 32/64/64/64 (downscale 8); "
          f"random weights")
    print(f"{'scenario':8} {'phase':20} {'seconds':>8} {'s/step':>7} {'peak MB':>8} {'s at 50/30 steps':>17}")
    totals: dict[str, list[float]] = {}
    for r in rows:
        full = r["seconds"] + (REFERENCE_STEPS[r["stage"]] - r["steps"]) * r["per_step"]
        print(f"{r['scenario']:8} {r['phase']:20} {r['seconds']:8.1f} {r['per_step']:7.2f} {r['peak_mb']:8.0f} "
              f"{full:17.0f}")
        t = totals.setdefault(r["scenario"], [0.0, 0.0, 0.0])
        t[0], t[1], t[2] = t[0] + r["seconds"], max(t[1], r["peak_mb"]), t[2] + full
    for name, (secs, peak, full) in totals.items():
        print(f"{name:8} {'total':20} {secs:8.1f} {'':7} {peak:8.0f} {full:17.0f}")


if __name__ == "__main__":
    main()
