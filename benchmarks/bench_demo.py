"""Where `make demo`'s time goes: the UNets' share of the whole demo, and of each part outside them.

Run: `.venv/bin/python benchmarks/bench_demo.py [--rounds 5] [--threads 2] [-o FILE]`

Runs `i2vgen.demo.run` in-process (into a temporary folder) `--rounds` times after one warm-up, with wall-clock timers
around the UNets' forwards (base and refiner), the VAE's encode and decode, the text and image encoders, and the
video writer, and loading the models; the rest (the sampler's arithmetic, pre- and post-processing, the settings'
checks) is "other". `outside_unet_share` is the share of the pipelines' own time (the total less loading) spent
outside the UNets. Prints the median of each part and its share of the demo's median total. The command's own start-up
(Python, importing torch) comes on top; `make demo` prints its total.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

PARTS = ("unet", "vae", "encoders", "write", "load")


@contextlib.contextmanager
def timers(acc: dict[str, float]) -> Iterator[None]:
    """Wrap the parts' entry points; nested calls are counted once (the outermost)."""
    from i2vgen import demo
    from i2vgen.app import run
    from i2vgen.models.encoders import ImageEncoder, TextEncoder
    from i2vgen.models.refiner import I2VGenRefinerUNet
    from i2vgen.models.unet import I2VGenUNet
    from i2vgen.models.vae import VideoVAE

    depth = [0]
    targets = [(I2VGenUNet, "forward", "unet"), (I2VGenRefinerUNet, "forward", "unet"), (VideoVAE, "encode", "vae"),
               (VideoVAE, "decode", "vae"), (TextEncoder, "encode", "encoders"), (ImageEncoder, "encode", "encoders"),
               (demo, "write_video", "write"), (run, "load_generation_pipeline", "load"),
               (run, "load_refine_pipeline", "load")]
    saved = []

    def wrap(fn: Callable, part: str) -> Callable:
        def timed(*a, **k):  # noqa: ANN002, ANN003, ANN202
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[part] += time.perf_counter() - t0
                depth[0] -= 1
        return timed

    for owner, name, part in targets:
        fn = getattr(owner, name)
        saved.append((owner, name, fn))
        setattr(owner, name, wrap(fn, part))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from i2vgen import demo

    runs: list[dict[str, float]] = []
    for r in range(args.rounds + 1):
        acc: dict[str, float] = defaultdict(float)
        with tempfile.TemporaryDirectory() as tmp, timers(acc), contextlib.redirect_stderr(None):
            t0 = time.perf_counter()
            demo.run(Path(tmp))
            acc["total"] = time.perf_counter() - t0
        acc["other"] = acc["total"] - sum(acc[k] for k in PARTS)
        if r:  # the first round warms up the allocator and the caches
            runs.append(dict(acc))
            print(json.dumps({k: round(v, 3) for k, v in acc.items()}), file=sys.stderr, flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in (*PARTS, "other", "total")}
    out = {"rounds": args.rounds, "threads": args.threads, "torch": torch.__version__,
           "seconds": {k: round(v, 3) for k, v in med.items()},
           "share": {k: round(v / med["total"], 3) for k, v in med.items() if k != "total"},
           "outside_unet_share": round(1 - med["unet"] / (med["total"] - med["load"]), 3)}
    print(json.dumps(out))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
