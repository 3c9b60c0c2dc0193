"""The refiner's gain over bicubic in an `i2vgen eval-shapes` result, split by the kind of clip.

Run: `.venv/bin/python benchmarks/shapes_eval_split.py [docs/results/recipe-5/eval.json]`

Prints, for the `full` variant (the cascade) and `refine-gt` (base-VAE-degraded true clips), the mean PSNR gain (dB,
± standard error over clips) and SSIM gain on one-shape clips, on two-shape clips whose base output moves both
shapes the prompted way, and on those where it moves at least one another way. docs/tiny-shapes.md, section 13.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def summary(rows: list[dict]) -> dict:
    gains = [r["psnr_gain_db"] for r in rows]
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    return {"n": len(gains), "psnr_gain_db": round(statistics.mean(gains), 3), "psnr_gain_se": round(se, 3),
            "ssim_gain": round(statistics.mean(r["ssim_gain"] for r in rows), 4)}


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/recipe-5/eval.json")
    variants = json.loads(path.read_text())["variants"]
    full = {r["seed"]: r for r in variants["full"]["rows"]}
    groups = {
        "one shape": lambda r: r["num_shapes"] == 1,
        "two shapes, both moved the prompted way": lambda r: r["num_shapes"] == 2 and all(r["direction_ok_per_shape"]),
        "two shapes, one or both moved another way":
            lambda r: r["num_shapes"] == 2 and not all(r["direction_ok_per_shape"]),
    }
    for variant in ("full", "refine-gt"):
        rows = variants[variant]["rows"]
        for name, keep in groups.items():
            chosen = [r for r in rows if keep(full[r["seed"]])]
            if chosen:
                print(json.dumps({"variant": variant, "clips": name, **summary(chosen)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
