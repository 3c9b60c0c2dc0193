"""Peak memory and error of the VAE decode with temporal chunks and spatial tiles (`VideoVAE.decode`), CPU.

Run: `.venv/bin/python benchmarks/vae_tiling.py --threads 1 --blended --tiny` (16 frames at 1280x720; 2.5 hours on one
thread of a loaded machine).

The real SD VAE configuration (block_out_channels 128/256/512/512, two layers per block) with random weights
(PyTorch's default initialisation, seed 0) decodes N(0, 1) latents. Each configuration runs in its own subprocess (a
fresh allocator), and its peak is the growth of the peak RSS (VmHWM) over the RSS after the VAE and the latents are
built (benchmarks/rss.py). The whole-batch decode (every frame in one VAE call, untiled) of 16 frames at 1280x720
needs more memory than this machine has, so it is measured with `--baseline-frames` 1 and 2 and extrapolated
linearly to 16 frames: peak(1) + 15 (peak(2) - peak(1)) (the table shows the measured rows). Errors are the max abs
difference from the untiled per-frame decode of the same latents (chunk 1, the reference), over all frames.

`--blended` adds, for comparison, diffusers' `enable_tiling` (overlapping 512-pixel tiles, a quarter shared, blended;
each tile's group norms see only that tile) on the first frame, and `--tiny` both kinds of tiling on the trained
tiny-shapes VAE (src/i2vgen/assets/tiny-shapes/vae) with shapes frames at 256x256.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import peak_growth_mb, reset_peak

REAL_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
TILE = 8  # latent rows per strip (64 pixel rows at full resolution)


def child(frames: int, width: int, height: int, chunk: int, tile: int, blended: bool, out: str) -> dict:
    """One decode of `frames` frames: seconds, peak RSS growth (MB); the frames are saved to `out`."""
    from diffusers import AutoencoderKL

    from i2vgen.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE(AutoencoderKL(**REAL_VAE))
    g = torch.Generator().manual_seed(1)  # frame by frame, so a shorter run decodes the first frames of a longer one
    z = torch.stack([torch.randn(1, 4, height // 8, width // 8, generator=g) for _ in range(frames)], dim=2)
    with torch.no_grad():
        since = reset_peak()
        t0 = time.perf_counter()
        if blended:  # diffusers' own tiling, the SD settings: 512-pixel tiles, 64 latent, a quarter shared
            vae.vae.enable_tiling()
            vae.vae.tile_sample_min_size, vae.vae.tile_latent_min_size = 512, 64
            video = vae.decode(z, chunk_size=chunk)
        else:
            video = vae.decode(z, chunk_size=chunk, tile=tile or None)
        seconds = time.perf_counter() - t0
        mb = peak_growth_mb(since)
    torch.save(video.contiguous(), out)
    return {"frames": frames, "chunk": chunk, "tile": tile or None, "blended": blended, "seconds": round(seconds, 1),
            "peak_mb": round(mb)}


def tiny_rows() -> list[dict]:
    """The trained tiny-shapes VAE at 256x256 (latent 128x128): our strips and diffusers' blended tiles against the
    untiled float32 pass, and the untiled float32 pass and the strips against a float64 pass."""
    import copy

    import numpy as np

    from i2vgen.models.vae import VideoVAE
    from i2vgen.shapes import make_clip

    vae = VideoVAE.from_pretrained(Path(__file__).resolve().parents[1] / "src/i2vgen/assets/tiny-shapes/vae")
    clip = make_clip(3, size=256, num_frames=4, num_shapes=2)
    x = torch.from_numpy(np.ascontiguousarray(clip.frames)).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
    rows = []
    with torch.no_grad():
        z = vae.encode(x, sample=False)  # (1, 4, 4, 128, 128)
        ref, ref_z = vae.decode(z), z
        vae64 = copy.deepcopy(vae).double()
        exact, exact_z = vae64.decode(z.double()), vae64.encode(x.double(), sample=False)
        rows.append({"vae": "tiny-shapes", "kind": "untiled float32 vs float64",
                     "decode_err": (ref.double() - exact).abs().max().item(),
                     "encode_err": (ref_z.double() - exact_z).abs().max().item()})
        rows.append({"vae": "tiny-shapes", "kind": "strips of 8 latent rows, float32 vs float64",
                     "decode_err": (vae.decode(z, tile=8).double() - exact).abs().max().item(),
                     "encode_err": (vae.encode(x, sample=False, tile=8).double() - exact_z).abs().max().item()})
        for tile in (8, 32):
            err = (vae.decode(z, tile=tile) - ref).abs().max().item()
            err_z = (vae.encode(x, sample=False, tile=tile) - ref_z).abs().max().item()
            rows.append({"vae": "tiny-shapes", "kind": f"strips of {tile} latent rows", "decode_err": err,
                         "encode_err": err_z})
        vae.vae.enable_tiling()
        vae.vae.tile_sample_min_size, vae.vae.tile_latent_min_size = 128, 64  # 64-latent tiles, a quarter shared
        err = (vae.decode(z) - ref).abs().max().item()
        err_z = (vae.encode(x, sample=False) - ref_z).abs().max().item()
        rows.append({"vae": "tiny-shapes", "kind": "diffusers enable_tiling, 64-latent tiles, blended",
                     "decode_err": err, "encode_err": err_z})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--baseline-frames", type=int, nargs="+", default=[1, 2])
    p.add_argument("--configs", nargs="+", default=["2:0", "1:0", "1:8"],
                   help="CHUNK:TILE decodes of all frames (TILE 0: untiled); 1:0 is the reference")
    p.add_argument("--blended", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--tiny-only", action="store_true", help="only the tiny-shapes rows (seconds)")
    p.add_argument("--child", nargs=7, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        f, w, h, chunk, tile, blended, out = args.child
        print(json.dumps(child(int(f), int(w), int(h), int(chunk), int(tile), blended == "1", out)))
        return 0
    if args.tiny or args.tiny_only:
        for row in tiny_rows():
            print(json.dumps(row), flush=True)
        if args.tiny_only:
            return 0
    baseline = set(range(len(args.baseline_frames)))
    jobs = [(n, n, 0, False) for n in args.baseline_frames]  # whole batch: chunk = frames, untiled
    jobs += [(args.frames, *map(int, c.split(":")), False) for c in args.configs]
    if args.blended:
        jobs.append((1, 1, 0, True))
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for k, (frames, chunk, tile, blended) in enumerate(jobs):
            out = str(Path(tmp) / f"{k}.pt")
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", str(frames), str(args.width),
                   str(args.height), str(chunk), str(tile), "1" if blended else "0", out]
            row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            row["out"] = out
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "out"}), flush=True)
        ref = next(r for r in rows if r["frames"] == args.frames and r["chunk"] == 1 and not r["tile"])
        reference = torch.load(ref["out"])
        measured = sorted((rows[k] for k in baseline), key=lambda r: r["frames"])
        a, b = measured[0], measured[-1]  # the smallest and the largest whole batch
        slope = (b["peak_mb"] - a["peak_mb"]) / (b["frames"] - a["frames"]) if b["frames"] != a["frames"] \
            else a["peak_mb"] / a["frames"]
        whole16 = b["peak_mb"] + slope * (args.frames - b["frames"])
        print(f"\nreal VAE config, random weights, {args.width}x{args.height}, CPU {args.threads} thread(s); whole-batch "
              f"{args.frames}-frame decode extrapolated from {a['frames']} and {b['frames']} frames: {whole16:.0f} MB "
              f"({slope:.0f} MB per frame)")
        print(f"{'frames':>6} {'chunk':>5} {'tiling':>22} {'seconds':>8} {'peak MB':>8} {'/ whole':>8} {'max err':>9}")
        for r in rows:
            video = torch.load(r["out"])
            err = (video - reference[:, :, :video.shape[2]]).abs().max().item()
            tiling = "diffusers blended" if r["blended"] else f"strips of {r['tile']}" if r["tile"] else "none"
            ratio = r["peak_mb"] / whole16
            print(f"{r['frames']:>6} {r['chunk']:>5} {tiling:>22} {r['seconds']:>8.1f} {r['peak_mb']:>8} "
                  f"{ratio:>8.3f} {err:>9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
