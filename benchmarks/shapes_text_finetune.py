"""Fine-tune the shipped tiny-shapes base UNet, its CLIP text encoder frozen or trained with it, and probe text use.

Run: `.venv/bin/python benchmarks/shapes_text_finetune.py {frozen,trainable} [--budget 1500] [--every 250]
[--hi-t 2] [--lr 3e-4] [--threads 1] [--device cpu]`

The question: the shipped UNet has learned that the shape moves but hedges over the four directions
(`i2vgen eval-shapes --variants text-use`); does unfreezing the text encoder let it learn to read the direction
word? Both modes start from the shipped weights and train on `ShapesDataset` (batch 2, 16 frames, 32 px) with the
trainer's loss pieces (`i2vgen.train.trainer`: VAE posterior samples, condition dropout with the negative prompt as
"no text", v-prediction with offset noise); t = 1000 (1 - u^hi_t). Every `--every` steps (and at step 0) the EMA
weights (decay 0.99) are probed with `i2vgen.shapes_eval.text_use` on the first 24 one-shape held-out clips at
t = 999 and 800; one JSON line per probe on stdout. Stops after `--budget` seconds.

docs/tiny-shapes.md quotes two 1,500 s runs (1 thread each, side by side on the 2-core machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch

from i2vgen.diffusion import v_loss
from i2vgen.pipelines.base import DEFAULT_NEGATIVE_PROMPT, I2VGenPipeline
from i2vgen.shapes import ShapesDataset, make_clip, split_seeds
from i2vgen.shapes_eval import text_use
from i2vgen.train import trainer
from i2vgen.train.config import LossConfig
from i2vgen.train.data import SampleDataset, make_dataloader


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("frozen", "trainable"))
    p.add_argument("--budget", type=float, default=1500.0, help="seconds of training")
    p.add_argument("--every", type=int, default=250, help="steps between probes")
    p.add_argument("--hi-t", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    pipe = I2VGenPipeline.from_pretrained("tiny-shapes", device=dev)
    unet, text_encoder = pipe.unet.train(), pipe.text_encoder
    groups = [{"params": list(unet.parameters()), "lr": args.lr}]
    text_encoder.requires_grad_(args.mode == "trainable")
    if args.mode == "trainable":
        groups.append({"params": list(text_encoder.parameters()), "lr": args.lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    params = [q for g in groups for q in g["params"]]
    frozen = trainer.Frozen(pipe.vae.requires_grad_(False), text_encoder, pipe.image_encoder.requires_grad_(False))
    batches = iter(make_dataloader(SampleDataset(ShapesDataset("train", 200_000, size=32, num_frames=16)), 2,
                                   seed=123))
    gen = torch.Generator().manual_seed(1)
    loss_cfg = LossConfig(t_skew=args.hi_t)
    probe_clips = [c for c in (make_clip(s, size=32) for s in split_seeds("heldout", 60)) if len(c.shapes) == 1][:24]
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    pairs = [(e, q) for m_ema, m in ((ema_unet, unet), (ema_text, text_encoder))
             for e, q in zip(m_ema.parameters(), m.parameters())]
    t0 = time.perf_counter()

    def probe(step: int) -> None:
        base = I2VGenPipeline(ema_unet, pipe.vae, ema_text, pipe.image_encoder, device=dev)
        rows = [text_use(base, clip, seed=i, timesteps=(999, 800)) for i, clip in enumerate(probe_clips)]
        entry = {"mode": args.mode, "step": step, "seconds": round(time.perf_counter() - t0)}
        entry.update({k: round(float(np.mean([r[k] for r in rows])), 6) for k in rows[0]})
        print(json.dumps(entry), flush=True)

    probe(0)
    step, losses = 0, []
    while time.perf_counter() - t0 < args.budget:
        batch = next(batches)
        with torch.no_grad():
            z0, image = trainer.encode_clips(frozen, batch, gen, dev, None)  # (2, 4, F, h, w), (2, D)
        text = text_encoder.encode(batch["captions"])  # (2, 77, D), with gradients when trainable
        null_text = text_encoder.encode([DEFAULT_NEGATIVE_PROMPT])  # (1, 77, D)
        text, image = trainer.drop_conditions(text, image, null_text, loss_cfg, gen)
        t = trainer.sample_timesteps(2, loss_cfg, gen)  # (2,)
        fps = batch["fps"].to(dev)

        def net(x_t, t_, text=text, image=image, first=z0[:, :, 0], fps=fps):  # this step's conditions
            return unet(x_t, t_, encoder_hidden_states=text, image_embeds=image, first_frame_latent=first, fps=fps)

        loss, _ = v_loss(net, z0, pipe.alphas_cumprod, generator=gen, offset_noise=0.1, t=t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, q in pairs:
                e.lerp_(q, 0.01)
        step += 1
        losses.append(loss.item())
        if step % args.every == 0:
            print(json.dumps({"step": step, "loss": round(float(np.mean(losses[-args.every:])), 4)}), flush=True)
            probe(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
