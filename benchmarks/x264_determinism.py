"""Does the mp4 writer give the same stream for the same frames? libx264 with and without its AVX-512 code.

Run: `.venv/bin/python benchmarks/x264_determinism.py [--processes 6] [--encodes 12] [--size 32] [--video PATH]
      [-o FILE]`

The frames: a served job's video from the embedded tiny model (4 frames, 3 DPM-Solver++ 2M steps, seed 7, the
sample picture; what `tests/test_serve.py` compares), resized to `--size`. Each of `--processes` fresh Python
processes encodes them `--encodes` times with `i2vgen.io.write_video`, once with libx264's default instruction sets
("auto": `_x264_cpu_options` patched out) and once as shipped (on an AVX-512 CPU: up to AVX2), and hashes the H.264
packets; the row counts the processes whose encodes disagree and the distinct streams over all of them, and the
median time of an encode (`--size 720 --processes 2 --encodes 4`: what limiting the instruction sets costs at full
size). `--video` takes the first 16 frames of a real clip at its own size (odd sizes cropped to even) instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import hashlib, sys, tempfile, time
from pathlib import Path
import av, numpy as np
from i2vgen.io import video
frames, mode, n = np.load(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if mode == "auto":  # libx264's own choice of instruction sets: the writer as it was before the fix
    video._x264_cpu_options = lambda cpuinfo=None: {}
out, seconds = [], []
for k in range(n):
    t = time.perf_counter()
    path = video.write_video(frames, Path(tempfile.mkdtemp()) / "x.mp4", fps=8)
    seconds.append(time.perf_counter() - t)
    with av.open(str(path)) as c:
        out.append(hashlib.md5(b"".join(bytes(p) for p in c.demux(video=0))).hexdigest())
print(" ".join(out), "|", " ".join(map(str, seconds)))
"""


def served_frames(size: int) -> np.ndarray:
    """(4, size, size, 3) uint8: the tiny model's video of the sample picture as a served QUICK job makes it."""
    from PIL import Image

    from i2vgen.app.run import generate, load_generation_pipeline, prepare
    from i2vgen.app.settings import GenerationSettings
    from i2vgen.io import to_uint8_frames

    sample = Path(__file__).resolve().parents[1] / "src" / "i2vgen" / "assets" / "samples" / "red-circle.png"
    s = prepare(GenerationSettings(prompt="a red circle moves right", model="tiny-shapes", num_frames=4, steps=3,
                                   sampler="dpmpp-2m", seed=7))
    video = to_uint8_frames(generate(load_generation_pipeline(s), s, str(sample)).frames)
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in video])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--encodes", type=int, default=12)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--video", default=None, help="a video file whose first 16 frames to encode instead")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    from i2vgen.io.video import _x264_cpu_options

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npy"
        if args.video:
            from i2vgen.io import read_video

            frames = read_video(args.video, max_frames=16)[0]
            frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        else:
            frames = served_frames(args.size)
        np.save(path, frames)
        rows = []
        for mode in ("auto", "i2vgen"):
            outs = [subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(args.encodes)], check=True,
                                   capture_output=True, text=True).stdout.split("|") for _ in range(args.processes)]
            streams = [o[0].split() for o in outs]
            seconds = [float(x) for o in outs for x in o[1].split()]
            row = {"x264": "auto" if mode == "auto" else _x264_cpu_options() or "auto (no AVX-512 here)",
                   "size": args.size if not args.video else list(frames.shape[1:3]), "video": args.video,
                   "processes": args.processes, "encodes_each": args.encodes,
                   "processes_disagreeing": sum(len(set(s)) > 1 for s in streams),
                   "distinct_streams": len({h for s in streams for h in s}),
                   "median_encode_s": float(np.median(seconds)), "frames_sha1": hashlib.sha1(np.load(path).tobytes()).hexdigest()[:12]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
