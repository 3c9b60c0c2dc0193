"""Forward speed, peak memory and model-FLOP utilisation of our UNet vs diffusers' I2VGenXLUNet, same weights, CPU.

Run: `.venv/bin/python benchmarks/bench_unet.py [--sizes small mid] [--runs 7] [--threads 2]`.
Both models are timed alternately in the same process (median of `--runs`), so machine noise hits both alike.
MFU = FLOPs (torch.utils.flop_counter) / time / the fp32 matmul rate measured here in the same run.
Peak memory = growth of the peak RSS (VmHWM) during the first forward of a freshly built model, each implementation in
its own subprocess, so the allocator's cache from earlier runs cannot hide it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import diffusers_kwargs, image_latents_with_positions, randomize_  # noqa: E402
from rss import peak_growth_mb, reset_peak  # noqa: E402

from i2vgen.models.configs import UNET_PRESETS  # noqa: E402
from i2vgen.models.unet import I2VGenUNet  # noqa: E402

SIZES = {  # preset, batch, frames, latent H, W
    "small": ("bench-small", 1, 8, 16, 16),
    "mid": ("bench-mid", 2, 16, 32, 32),
}


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def peak_mem_mb(fn) -> float:  # noqa: ANN001
    start = reset_peak()
    fn()
    return peak_growth_mb(start)


def build(size: str, seed: int = 0):  # noqa: ANN201
    """Both models with the same random weights, and the inputs, for a size."""
    import diffusers

    preset, b, f, h, w = SIZES[size]
    cfg = UNET_PRESETS[preset].replace(concat_scale=1.0)
    ref = randomize_(diffusers.I2VGenXLUNet(**diffusers_kwargs(cfg)), seed).eval()
    ours = I2VGenUNet(cfg).eval()
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, f, h, w, generator=g)
    t = torch.full((b,), 500)
    ehs = torch.randn(b, 77, cfg.cross_attention_dim, generator=g)
    img = torch.randn(b, cfg.cross_attention_dim, generator=g)
    lat = torch.randn(b, 4, h, w, generator=g)
    fps = torch.full((b,), 16)
    il = image_latents_with_positions(lat, f)

    def run_ref() -> torch.Tensor:
        return ref(x, t, fps=fps, image_latents=il, image_embeddings=img, encoder_hidden_states=ehs).sample

    def run_ours() -> torch.Tensor:
        return ours(x, t, encoder_hidden_states=ehs, image_embeds=img, first_frame_latent=lat, fps=fps)

    return cfg, ours, ref, run_ours, run_ref


def memory_child(impl: str, size: str) -> None:
    _, _, _, run_ours, run_ref = build(size)
    with torch.no_grad():
        print(f"{peak_mem_mb(run_ours if impl == 'ours' else run_ref):.1f}")


def peak_in_subprocess(impl: str, size: str, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--memory-child", impl, size],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help="print where our forward spends its time, per aten op")
    ap.add_argument("--fp64", action="store_true", help="also compare both fp32 outputs with diffusers in float64")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(ours) (slow to compile)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.profile or args.fp64 or args.compile:
        extras(args)
        return

    rate32, rate16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    print(f"threads {args.threads}; matmul rate fp32 {rate32 / 1e9:.1f} GFLOP/s, bf16 {rate16 / 1e9:.1f} GFLOP/s")
    for size in args.sizes:
        preset, b, f, h, w = SIZES[size]
        cfg, ours, ref, run_ours, run_ref = build(size)
        with torch.no_grad():
            out_ref, out_ours = run_ref(), run_ours()  # warm-up
            err = (out_ref - out_ours).abs().max().item()
            with FlopCounterMode(display=False) as fc:
                run_ref()
            flops_ref = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                run_ours()
            flops_ours = fc.get_total_flops()
            tr, to, tb = [], [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                run_ref()
                tr.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                run_ours()
                to.append(time.perf_counter() - t0)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    t0 = time.perf_counter()
                    run_ours()
                    tb.append(time.perf_counter() - t0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out_bf16 = run_ours().float()
        mem_ref = peak_in_subprocess("ref", size, args.threads)
        mem_ours = peak_in_subprocess("ours", size, args.threads)
        mr, mo, mb = statistics.median(tr), statistics.median(to), statistics.median(tb)
        scale = out_ours.abs().max().item()
        bf_err = (out_bf16 - out_ours).abs().max().item()
        bf_rel = ((out_bf16 - out_ours).norm() / out_ours.norm()).item()
        print(f"\n== {size}: preset {preset}, batch {b}, {f} frames, latent {h}x{w}, "
              f"{sum(p.numel() for p in ours.parameters()) / 1e6:.2f} M params, {args.runs} runs")
        print(f"  max |ours - diffusers| = {err:.2e} (output max |x| {scale:.2f})")
        print(f"  diffusers : median {mr * 1e3:8.1f} ms  peak +{mem_ref:7.1f} MB  "
              f"{flops_ref / 1e9:7.2f} GFLOP  MFU {flops_ref / mr / rate32:5.1%}")
        print(f"  ours fp32 : median {mo * 1e3:8.1f} ms  peak +{mem_ours:7.1f} MB  "
              f"{flops_ours / 1e9:7.2f} GFLOP  MFU {flops_ours / mo / rate32:5.1%}")
        print(f"  ratio ours/diffusers: time {mo / mr:.3f}, peak memory {mem_ours / max(mem_ref, 1e-9):.3f}")
        print(f"  ours bf16 autocast: median {mb * 1e3:8.1f} ms  speed-up vs ours fp32 {mo / mb:.2f}x  "
              f"error vs fp32: max {bf_err:.2e}, relative L2 {bf_rel:.2e}")


def extras(args: argparse.Namespace) -> None:
    for size in args.sizes:
        cfg, ours, ref, run_ours, run_ref = build(size)
        print(f"== {size}")
        with torch.no_grad():
            out_ours, out_ref = run_ours(), run_ref()
            if args.profile:
                with torch.profiler.profile() as prof:
                    run_ours()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
            if args.fp64:
                ref.double()
                _, b, f, h, w = SIZES[size]
                g = torch.Generator().manual_seed(0)  # the same draws as build()
                x = torch.randn(b, 4, f, h, w, generator=g).double()
                ehs = torch.randn(b, 77, cfg.cross_attention_dim, generator=g).double()
                img = torch.randn(b, cfg.cross_attention_dim, generator=g).double()
                lat = torch.randn(b, 4, h, w, generator=g).double()
                r64 = ref(x, torch.full((b,), 500), fps=torch.full((b,), 16),
                          image_latents=image_latents_with_positions(lat, f), image_embeddings=img,
                          encoder_hidden_states=ehs).sample
                for name, out in (("diffusers", out_ref), ("ours", out_ours)):
                    e = out.double() - r64
                    print(f"  {name} fp32 vs diffusers float64: max abs {e.abs().max():.2e}, "
                          f"relative L2 {e.norm() / r64.norm():.2e}")
            if args.compile:
                ts_eager = []
                for _ in range(args.runs):
                    t1 = time.perf_counter()
                    run_ours()
                    ts_eager.append(time.perf_counter() - t1)
                t0 = time.perf_counter()
                ours.forward = torch.compile(ours.forward)  # run_ours now goes through the compiled forward
                err = (run_ours() - out_ours).abs().max().item()
                print(f"  torch.compile: {time.perf_counter() - t0:.1f} s to compile; max |compiled - eager| {err:.2e}")
                ts = []
                for _ in range(args.runs):
                    t1 = time.perf_counter()
                    run_ours()
                    ts.append(time.perf_counter() - t1)
                print(f"  eager median {statistics.median(ts_eager) * 1e3:.1f} ms, compiled median "
                      f"{statistics.median(ts) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
