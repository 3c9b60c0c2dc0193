"""Does a base UNet put each frame where it belongs in time? A probe of the x0 prediction at the top of the schedule.

Run: `.venv/bin/python benchmarks/shapes_frame_order.py UNET_DIR --size 32 --frames 16 [--clips 1] [-o FILE.json]`

For the first `--clips` one-shape training scenes of `shapes_text_generalisation.py` in all four directions, with the
true caption, the UNet's x0 prediction at t = 999 (the mean over 4 noise draws, posterior-mean latents of the shipped
tiny-shapes VAE and encoders) is compared frame by frame with the true clip's latents: the squared error per frame,
and for each predicted frame the true frame it is closest to. A model that knows where each frame sits in time maps
frame k to k; one that hedges over time keeps the middle frames near the start (or the end) and jumps. docs/tiny-shapes.md
(section 5) quotes it for the 32 px / 16-frame and 32 px / 8-frame UNets after 400 steps on one scene.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_text_generalisation import four_directions, one_shape_clips  # noqa: E402

from i2vgen.model_paths import local_model_path  # noqa: E402
from i2vgen.models.loading import load_unet  # noqa: E402
from i2vgen.pipelines.base import I2VGenPipeline  # noqa: E402


def frame_order(base: I2VGenPipeline, clip, draws: int = 4) -> dict:  # noqa: ANN001 - shapes.ShapesClip
    f, size = clip.frames.shape[0], clip.frames.shape[1]
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1)  # (1, 3, F, H, W)
    with torch.no_grad():
        z0 = base.vae.encode(video, sample=False)  # (1, 4, F, h, w)
        text = base.text_encoder.encode([clip.caption])
        image, first = base.encode_image(clip.first_frame, size, size, generator=None, sample_posterior=False)
        cond = base.unet.prepare_condition(text, image, first, f)
        a = float(base.alphas_cumprod[999])
        preds = []
        for r in range(draws):
            eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(r))
            x_t = a ** 0.5 * z0 + (1 - a) ** 0.5 * eps
            v = base.unet(x_t, torch.tensor([999]), condition=cond, fps=torch.tensor([8]))
            preds.append(a ** 0.5 * x_t - (1 - a) ** 0.5 * v)
        x0 = torch.stack(preds).mean(0)[0]  # (4, F, h, w)
    true = z0[0]
    err = ((x0 - true) ** 2).mean(dim=(0, 2, 3))  # (F,)
    nearest = [int(((x0[:, k:k + 1] - true) ** 2).mean(dim=(0, 2, 3)).argmin()) for k in range(f)]
    return {"caption": clip.caption, "err": [round(float(e), 4) for e in err], "nearest_true_frame": nearest,
            "in_order": float(np.mean([n == k for k, n in enumerate(nearest)]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("unet")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--clips", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = I2VGenPipeline.from_pretrained(local_model_path("tiny-shapes"))
    base.unet = load_unet(args.unet).eval()
    rows = [frame_order(base, c) for scene in one_shape_clips("train", args.clips, args.size, args.frames)
            for c in four_directions(scene)]
    out = {"unet": args.unet, "size": args.size, "frames": args.frames, "rows": rows,
           "in_order": float(np.mean([r["in_order"] for r in rows]))}
    for r in rows:
        print(json.dumps(r))
    print(json.dumps({"in_order": out["in_order"]}))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
