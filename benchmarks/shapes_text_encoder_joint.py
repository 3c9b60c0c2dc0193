"""Does training the text encoder with the UNet make the tiny base UNet bind each direction word to its shape?

Run: `.venv/bin/python benchmarks/shapes_text_encoder_joint.py [--steps 300] [--arms frozen,joint] [-o FILE]`

A controlled experiment for docs/tiny-shapes.md, section 8. The arms start from the same weights (the `tiny-shapes`
recipe's last curriculum stage, `runs/tiny-shapes-2/curriculum-6`, which reads the first shape's word but not the
second's) and train the same steps on the recipe's last curriculum data (all 16 direction combinations of 128
two-shape train scenes, t in [970, 1000), posterior means, batch 4, AdamW at the stage's learning rate, same seeds),
differing in one thing: `frozen` keeps the text encoder fixed (the recipe), `joint` trains it too (its learning rate
`--text-lr-scale` times the UNet's), `oracle` keeps it fixed but encodes each clause of a caption alone
(`ClauseEncoder`: binding solved in the text) to tell a text encoder that does not bind from a UNet that cannot.
Every `--probe-every` steps: the binding probe of benchmarks/shapes_curriculum.py
(24 held-out two-shape clips at t = 999: per shape, whether its own direction word beats its other three with the
other shape's word kept true; chance 25 %) and, at the end, the one-shape probe (24 held-out one-shape clips, t = 999,
chance 25 %). Writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2vgen import shapes
from i2vgen.diffusion.losses import v_loss
from i2vgen.diffusion.schedule import base_alphas_cumprod
from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.models.loading import load_unet, save_unet
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.shapes_eval import text_use
from i2vgen.train.data import make_dataloader
from i2vgen.train.recipe import recipe, stage_config, stage_dataset
from i2vgen.train.trainer import encode_clips, load_frozen, sample_timesteps


class ClauseEncoder(torch.nn.Module):
    """The oracle arm's text context: each clause of a two-shape caption ('... moves left' and '... moves up')
    encoded alone by the frozen encoder and the token states laid end to end (clause 1's BOS and words, then clause
    2's words and its end and padding states, cut to the context length), so every direction word's state has seen
    only its own shape's words: binding solved in the text, by construction. One-clause captions are encoded as
    they are. Not an I2VGen-XL design: it asks whether the UNet binds when the text does."""

    def __init__(self, text: TextEncoder) -> None:
        super().__init__()
        self.text, self.model = text, text.model

    def encode(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for prompt in prompts:
            clauses = prompt.split(" and ")
            if len(clauses) == 1:
                out.append(self.text.encode([prompt]))
                continue
            first, second = self.text.encode(clauses[:1]), self.text.encode([" and ".join(clauses[1:])])  # (1, L, D)
            n1 = len(self.text.tokenizer(clauses[0]).input_ids) - 1  # BOS and words, not its end token
            out.append(torch.cat([first[:, :n1], second[:, 1:]], dim=1)[:, :first.shape[1]])
        return torch.cat(out)  # (B, L, D)


def probe(base: I2VGenPipeline, one: list, two: list, with_one: bool) -> dict[str, float]:
    base.unet.eval()
    base.text_encoder.eval()
    binding = [text_use(base, c, seed=k, timesteps=(999,), max_shapes=2, repeats=1) for k, c in enumerate(two)]
    per_shape = np.array([r["text_use_ok_per_shape_999"] for r in binding])  # (24, 2)
    row = {"two_first_999": float(per_shape[:, 0].mean()), "two_second_999": float(per_shape[:, 1].mean()),
           "two_acc_999": float(np.mean([r["text_use_ok_999"] for r in binding]))}
    if with_one:
        rows = [text_use(base, c, seed=k, timesteps=(999,), repeats=1) for k, c in enumerate(one)]
        row["acc_999"] = float(np.mean([r["text_use_ok_999"] for r in rows]))
        row["gap_999"] = float(np.mean([r["text_gap_999"] for r in rows]))
    return row


def run_arm(arm: str, args: argparse.Namespace, one: list, two: list) -> list[dict]:
    rcfg = recipe("tiny-shapes-text")
    stage = f"curriculum-{len(rcfg.curriculum) - 1}"
    components = local_model_path("tiny-shapes")
    cfg = stage_config(rcfg, stage, components, Path("/tmp/unused"))
    device = torch.device("cpu")
    frozen = load_frozen(cfg, device)
    text = TextEncoder.from_model_folder(components)  # a private copy: the joint arm trains it
    if arm == "oracle":
        text = ClauseEncoder(text)
    unet = load_unet(args.init).float()
    base = I2VGenPipeline.from_pretrained(components)
    base.unet, base.text_encoder = unet, text
    schedule = base_alphas_cumprod()
    params = [{"params": list(unet.parameters()), "lr": cfg.optim.lr}]
    if arm == "joint":
        text.model.requires_grad_(True)
        params.append({"params": list(text.model.parameters()), "lr": cfg.optim.lr * args.text_lr_scale})
    opt = torch.optim.AdamW(params, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = make_dataloader(stage_dataset(rcfg, stage), cfg.batch_size, shuffle=True, seed=cfg.data.seed,
                             drop_last=True)
    rows = [{"arm": arm, "step": 0, **probe(base, one, two, with_one=False)}]
    print(json.dumps(rows[-1]), flush=True)
    step, t0, losses = 0, time.perf_counter(), []
    while step < args.steps:
        for batch in loader:
            unet.train()
            text.model.train(arm == "joint")
            with torch.no_grad():
                z0, image = encode_clips(frozen, batch, None, device, None)  # (B, 4, F, h, w), (B, D)
            ctx = text.encode(batch["captions"]) if arm == "joint" else text.encode(batch["captions"]).detach()
            t = sample_timesteps(z0.shape[0], cfg.loss, gen)  # (B,)

            def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return unet(x_t, t, encoder_hidden_states=ctx, image_embeds=image,  # noqa: B023
                            first_frame_latent=z0[:, :, 0], fps=batch["fps"])  # noqa: B023

            loss, _ = v_loss(net, z0, schedule, generator=gen, offset_noise=cfg.loss.offset_noise, t=t)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], cfg.optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if step % args.probe_every == 0 or step == args.steps:
                row = {"arm": arm, "step": step, "loss": float(np.mean(losses[-50:])),
                       "seconds": round(time.perf_counter() - t0),
                       **probe(base, one, two, with_one=step == args.steps)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if step == args.steps:
                break
    if args.save:
        out = Path(args.save) / arm
        save_unet(unet, out / "unet")
        text.model.save_pretrained(out / "text_encoder")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="runs/tiny-shapes-2/curriculum-6/checkpoints/step-00000400/unet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--probe-every", type=int, default=100)
    p.add_argument("--text-lr-scale", type=float, default=1.0)
    p.add_argument("--arms", default="frozen,joint")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", default=None, help="folder for each arm's final UNet and text encoder")
    p.add_argument("-o", "--output", default="docs/results/recipe-3/text-encoder-joint.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = recipe("tiny-shapes-text").num_frames
    held = [shapes.make_clip(s, num_frames=frames) for s in shapes.split_seeds("heldout", 80)]
    one, two = [c for c in held if len(c.shapes) == 1][:24], [c for c in held if len(c.shapes) == 2][:24]
    rows = []
    for arm in args.arms.split(","):
        rows += run_arm(arm, args, one, two)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
