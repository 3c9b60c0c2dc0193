"""Is reading the word at the top of the schedule enough to steer the whole sampler? A two-expert test.

Run: `.venv/bin/python benchmarks/shapes_expert_switch.py HIGH_UNET [--switch 970] [--n 100] [--frames 8] [--alone]
[-o FILE]`

The curriculum UNets of `shapes_text_generalisation.py` are trained on t in [970, 1000) only, so they cannot sample a
video alone. Here they denoise the steps with t >= `--switch` and the shipped tiny-shapes UNet (trained on the whole
schedule, which reads the motion from x_t once it is decidable: 90 % at t = 975, 99 % at 950) takes the rest, as
eDiff-I's expert denoisers do. Both see the same picture, prompt and guidance, each through its own conditioning
layers. On `--n` held-out one-shape clips (32 px, `--frames` frames), DPM-Solver++ 2M 25 steps on the trailing grid,
guidance 2.0 (the shipped folder's): direction accuracy (the centroid tracker of `i2vgen eval`) and first-frame PSNR,
for the switch and, as the control, the shipped UNet alone with the same seeds. With `--alone`, HIGH (a UNet trained
on the whole schedule after the curriculum) samples alone. docs/tiny-shapes.md (section 5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from i2vgen import eval as ev
from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.loading import load_unet
from i2vgen.models.unet import I2VGenUNet, UNetCondition
from i2vgen.pipelines.base import I2VGenPipeline


class ExpertSwitch(nn.Module):
    """Two base UNets behind one: `high` for timesteps >= `switch`, `low` below. The condition carries both
    UNets' conditions side by side (context on the feature axis, concat on the channel axis), so the pipeline's
    guidance batching along the batch axis works unchanged."""

    def __init__(self, high: I2VGenUNet, low: I2VGenUNet, switch: int) -> None:
        super().__init__()
        self.high, self.low, self.switch = high, low, switch
        self.config = low.config

    @property
    def dtype(self) -> torch.dtype:
        return self.low.dtype

    def prepare_condition(self, text: Tensor, image: Tensor, first: Tensor, num_frames: int) -> UNetCondition:
        h = self.high.prepare_condition(text, image, first, num_frames)
        lo = self.low.prepare_condition(text, image, first, num_frames)
        self._split = (h.context.shape[-1], h.concat.shape[1])
        return UNetCondition(torch.cat([h.context, lo.context], -1), torch.cat([h.concat, lo.concat], 1))

    def forward(self, x: Tensor, t: Tensor, *, condition: UNetCondition, fps: Tensor) -> Tensor:
        d, c = self._split
        if float(t.flatten()[0]) >= self.switch:
            return self.high(x, t, condition=UNetCondition(condition.context[..., :d], condition.concat[:, :c]),
                             fps=fps)
        return self.low(x, t, condition=UNetCondition(condition.context[..., d:], condition.concat[:, c:]), fps=fps)


def evaluate(pipe: I2VGenPipeline, clips: list, guidance: float) -> dict:  # noqa: ANN001
    rows = []
    for i, clip in enumerate(clips):
        video = pipe(clip.first_frame, clip.caption, num_frames=len(clip.frames), height=clip.frames.shape[1],
                     width=clip.frames.shape[2], target_fps=8, num_inference_steps=25, guidance_scale=guidance,
                     sampler="dpmpp-2m", timestep_spacing="trailing", generator=torch.Generator().manual_seed(i),
                     output_type="np")[0]
        rows.append({"ok": ev.prompt_agreement(video, clip.caption),
                     "psnr": ev.first_frame_fidelity(video, clip.first_frame)["psnr"]})
    ok = [r["ok"] for r in rows if r["ok"] is not None]
    return {"direction_accuracy": float(np.mean(ok)), "checked": len(ok),
            "first_frame_psnr": float(np.mean([r["psnr"] for r in rows]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("high")
    p.add_argument("--switch", type=int, default=970)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--alone", action="store_true", help="HIGH was trained on the whole schedule: sample with it alone "
                                                        "(no switch), against the shipped UNet")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = I2VGenPipeline.from_pretrained(local_model_path("tiny-shapes"))
    shipped = pipe.unet
    seeds = shapes.split_seeds("heldout", 4 * args.n)
    clips = [c for c in (shapes.make_clip(s, size=32, num_frames=args.frames, num_shapes=1) for s in seeds)][:args.n]
    out = {"high": args.high, "switch": args.switch, "n": len(clips), "frames": args.frames,
           "guidance": args.guidance, "sampler": "dpmpp-2m 25 trailing"}
    t0 = time.perf_counter()
    high = load_unet(args.high).eval()
    pipe.unet = high if args.alone else ExpertSwitch(high, shipped, args.switch)
    out["alone" if args.alone else "switch_result"] = evaluate(pipe, clips, args.guidance)
    pipe.unet = shipped
    out["shipped_alone"] = evaluate(pipe, clips, args.guidance)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
