"""Does guiding each clause apart make the tiny base bind two shapes? Composable guidance on two-shape clips.

Run: `.venv/bin/python benchmarks/shapes_clause_guidance.py [--start 100] [--n 100]
      [--variants full:2,clauses:2,clauses:1,both:1] [-o FILE]`

The base stage animates the two-shape clips among held-out clips `--start` ... `--start + n - 1` (outside
eval-shapes' 100 by default) with DPM-Solver++ 2M, 25 trailing steps (eval-shapes' dpmpp-25), the first frame
encoded as its posterior mean, seed = the clip's index. Each variant `KIND:W` guides v as u + W * sum_i (c_i - u),
u the unconditional branch (the reference's negative prompt, no CLIP image) and c_i conditional branches:
- `full`: one branch with the whole caption: classifier-free guidance as the pipeline does it (checked against
  `I2VGenPipeline` on the first clip);
- `clauses`: one branch per shape's clause ("a pink circle moves right", "a red triangle moves down"): composable
  diffusion (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion Models");
- `both`: the whole caption and each clause.
The tracker (`i2vgen.eval.prompt_agreement_per_item`) reads each shape's direction, as eval-shapes does.
docs/tiny-shapes.md, section 10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2vgen import eval as ev
from i2vgen.diffusion import make_timesteps, vpred_denoiser
from i2vgen.diffusion.registry import get_sampler
from i2vgen.models.unet import UNetCondition
from i2vgen.pipelines.base import DEFAULT_NEGATIVE_PROMPT, I2VGenPipeline
from i2vgen.pipelines.common import frames_to_output
from i2vgen.shapes import ShapesClip, caption, make_clip, split_seeds

STEPS, SAMPLER, SPACING = 25, "dpmpp-2m", "trailing"


@torch.no_grad()
def animate(pipe: I2VGenPipeline, clip: ShapesClip, index: int, kind: str, weight: float) -> np.ndarray:
    """(F, 32, 32, 3) in [0, 1]: the clip's first frame animated with the variant's guidance."""
    gen = torch.Generator().manual_seed(index)
    num_frames, size = len(clip.frames), clip.frames.shape[1]
    image, first = pipe.encode_image(clip.first_frame, size, size, generator=gen, sample_posterior=False)
    f = pipe.vae.downscale
    noise = torch.randn((1, pipe.unet.config.in_channels, num_frames, size // f, size // f), generator=gen)

    def condition(text: str, img: torch.Tensor) -> UNetCondition:
        return pipe.unet.prepare_condition(pipe.encode_prompt(text, DEFAULT_NEGATIVE_PROMPT)[0], img, first,
                                           num_frames)

    texts = ([clip.caption] if kind in ("full", "both") else []) + \
        ([caption([s]) for s in clip.shapes] if kind in ("clauses", "both") else [])
    neg = pipe.encode_prompt("", DEFAULT_NEGATIVE_PROMPT)[1]
    branches = [pipe.unet.prepare_condition(neg, torch.zeros_like(image), first, num_frames)] + \
        [condition(t, image) for t in texts]
    context = torch.cat([b.context for b in branches])  # (1 + n, S, D)
    concat = torch.cat([b.concat for b in branches])  # (1 + n, C, F, h, w)
    fps = torch.tensor([8])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = pipe.unet(x.expand(len(branches), -1, -1, -1, -1), t, condition=UNetCondition(context, concat),
                      fps=fps).float()  # (1 + n, 4, F, h, w)
        return v[:1] + weight * (v[1:] - v[:1]).sum(dim=0, keepdim=True)

    x = get_sampler(SAMPLER, "base").fn(vpred_denoiser(guided, pipe.alphas_cumprod), noise, pipe.alphas_cumprod,
                                        make_timesteps(STEPS, SPACING), generator=gen, callback=None)
    return frames_to_output(pipe.vae.decode(x), "np")[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--start", type=int, default=100)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--variants", default="full:2,clauses:2,clauses:1,both:1")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    pipe = I2VGenPipeline.from_pretrained(args.model)
    variants = [(v.split(":")[0], float(v.split(":")[1])) for v in args.variants.split(",")]
    per_shape: dict[str, list[list[bool]]] = {f"{k}:{w:g}": [] for k, w in variants}
    checked, t0 = False, time.perf_counter()
    for i, seed in enumerate(split_seeds("heldout", args.start + args.n)[args.start:], args.start):
        clip = make_clip(seed, size=32, num_frames=8)
        if len(clip.shapes) != 2:
            continue
        if not checked:  # the `full` variant is the pipeline's own guidance
            ours = animate(pipe, clip, i, "full", 2.0)
            theirs = pipe(clip.first_frame, clip.caption, num_frames=8, height=32, width=32, target_fps=8,
                          num_inference_steps=STEPS, guidance_scale=2.0, sampler=SAMPLER, timestep_spacing=SPACING,
                          sample_posterior=False, generator=torch.Generator().manual_seed(i), output_type="np")[0]
            assert np.abs(ours - theirs).max() < 1e-4, np.abs(ours - theirs).max()
            checked = True
        for kind, weight in variants:
            per_shape[f"{kind}:{weight:g}"].append(ev.prompt_agreement_per_item(animate(pipe, clip, i, kind, weight),
                                                                                clip.caption))
    rows = [{"variant": name, "clips": len(r), "first_shape": float(np.mean([x[0] for x in r])),
             "second_shape": float(np.mean([x[1] for x in r])), "per_shape": float(np.mean([y for x in r for y in x])),
             "both": float(np.mean([all(x) for x in r]))} for name, r in per_shape.items()]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"start": args.start, "n": args.n, "model": args.model,
                                                 "steps": STEPS, "sampler": SAMPLER, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
