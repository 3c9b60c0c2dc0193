"""Does a text encoder that binds let the tiny base UNet move the second shape the way its word says?

Run: `.venv/bin/python benchmarks/shapes_text_encoder_bound.py bind -o runs/bound-text` (the text encoder, a minute),
then `... train --arm frozen|bound|attend [--text runs/bound-text] -o F.json --save DIR` (one arm; run two side by
side at one thread each).

A controlled experiment for docs/tiny-shapes.md, section 14. Section 7 found that the shipped text encoder does not
bind: its second direction word's state tells the first shape's colour (77 %) better than its own (55 %), because the
encoder (one causal layer before the state the UNet reads) was trained contrastively on single frames where no
direction is visible. Section 8 could not tell in 300 steps whether binding solved in the text helps the UNet.

`bind` runs the recipe's `text_bind` (`i2vgen.train.text_bind`, as `train-recipe tiny-shapes-bound` does) on a copy
of the shipped text encoder: each clause's direction word is trained to tell its own clause's colour and shape
(linear heads on that word's state, cross-entropy), every token state kept near the shipped encoder's (mean squared
error) so that a UNet's learnt reading of the words survives. It reports the linear binding probe of
`shapes_text_encoder_binding.py` before and after, on held-out captions, and how far the states moved.

`train` continues the shipped base UNet (its EMA weights) with the base stage's own recipe (all clips, half of the
samples at t >= 950, posterior means, batch 2; AdamW at `--lr` after a short warm-up, EMA 0.999 from the shipped
EMA) for `--steps`, the arms differing only in the text encoder the UNet reads: `frozen` the shipped one, `bound`
the fine-tuned one (also frozen); `attend` reads the shipped one and adds `AttendLoss` (`--attend-weight` times a
loss that rewards each shape's place for attending to its own clause's direction word: can the UNet route when told
to?). Every `--probe-every` steps, on the EMA weights: the binding probe of
`shapes_text_encoder_joint.py` (held-out two-shape clips at t = 999: per shape, whether its own direction word beats
its other three with the other shape's word kept true; chance 25 %) and the one-shape probe. `--save` writes the
arm's EMA UNet and its text encoder for `i2vgen eval-shapes`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from shapes_cross_attention import cross_attention_weights, place

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.train.recipe import bind_text, recipe
from i2vgen.train.text_bind import clause_sites

HELD_SEEDS = 2000


def binding_probe(encoder: TextEncoder, clips: list) -> dict[str, float]:
    """Three of the linear probes of shapes_text_encoder_binding.py on these two-shape captions."""
    from shapes_text_encoder_binding import binding_accuracies

    keys = ("second direction word -> second colour", "second direction word -> first colour",
            "first direction word -> first colour (control)")
    accuracy = binding_accuracies(encoder, clips)
    return {k: accuracy[k] for k in keys}


def bind(args: argparse.Namespace) -> int:
    """The recipe's `text_bind` (tiny-shapes-bound) on the shipped text encoder, probed before and after."""
    cfg = recipe("tiny-shapes-bound")
    shipped = TextEncoder.from_model_folder(local_model_path("tiny-shapes"))
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("text_encoder", "tokenizer"):
            shutil.copytree(local_model_path("tiny-shapes") / part, Path(tmp) / part)
        bind_text(cfg, Path(tmp), lambda m: print(m, flush=True))
        encoder = TextEncoder.from_model_folder(tmp)
        out = Path(args.output)
        encoder.model.save_pretrained(out / "text_encoder")
        encoder.tokenizer.save_pretrained(out / "tokenizer")
    held = [c for c in (shapes.make_clip(s, size=8, num_frames=2) for s in shapes.split_seeds("heldout", HELD_SEEDS))
            if len(c.shapes) == 2]
    with torch.no_grad():
        ids, _ = clause_sites(encoder, held)
        old = shipped.encode_ids(ids)
        moved = float((encoder.encode_ids(ids) - old).pow(2).mean() / old.var())
    result = {"text_bind": dataclasses.asdict(cfg.text_bind), "held_two_shape_captions": len(held),
              "probe_shipped": binding_probe(shipped, held), "probe_bound": binding_probe(encoder, held),
              "held_states_moved_relative_mse": moved}
    print(json.dumps(result, indent=1))
    (out / "bind.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


class AttendLoss:
    """Arm `attend`: a loss that rewards routing in the 8x8 cross-attention layers (down_blocks.1 and the middle,
    where `shapes_cross_attention.py` finds the heads that read the direction words). For each two-shape clip of a
    batch, at frame 0 and the latent position of each shape's centre, the head-mean attention to its own clause's
    direction word against the other clause's: -log(w_own / (w_own + w_other)), averaged over shapes and layers.
    Form `own` scores the own word's weight alone, -log(w_own): the ratio can be met by ignoring both words.
    A design aid outside I2VGen-XL, to learn whether the UNet can route at all when told to."""

    LAYERS = ("down_blocks.1.attentions.0", "mid_block.attentions.0")

    def __init__(self, unet: torch.nn.Module, text: TextEncoder, form: str = "ratio") -> None:
        self.text, self.form, self.weights = text, form, []
        for name in self.LAYERS:
            unet.get_submodule(name).transformer_blocks[0].attn2.register_forward_hook(self._hook)
        self.active = False

    def _hook(self, attn: torch.nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        if self.active:
            x, context, num_frames = inputs  # x: (B*F, L, C); context: (B, S, D)
            self.weights.append(cross_attention_weights(attn, x[::num_frames], context).mean(1))  # frame 0: (B, L, S)

    def start(self, batch: dict) -> None:
        meta = batch["meta"]
        self.clips = [shapes.make_clip(int(s), size=8, num_frames=2) for s in meta["seed"]]
        self.centroids, self.size = meta["centroids"], batch["frames"].shape[-1]  # (B, 2, F, 2) pixels
        self.weights, self.active = [], True

    def finish(self) -> torch.Tensor:
        self.active = False
        _, sites = clause_sites(self.text, self.clips)
        terms = []
        for w in self.weights[:len(self.LAYERS)]:  # the forward pass's layers, not the probe's
            side = round(w.shape[1] ** 0.5)
            for b, site in enumerate(sites):
                if len(site) != 2:
                    continue
                words = [site[0][0], site[1][0]]
                for i in range(2):
                    pos = place(self.centroids[b, i, 0].tolist(), side, self.size)
                    own, other = w[b, pos, words[i]], w[b, pos, words[1 - i]]
                    share = own if self.form == "own" else own / (own + other + 1e-8)
                    terms.append(-torch.log(share + 1e-8))
        return torch.stack(terms).mean() if terms else torch.zeros(())


def train(args: argparse.Namespace) -> int:
    from shapes_text_encoder_joint import probe

    from i2vgen.diffusion.losses import v_loss
    from i2vgen.diffusion.schedule import base_alphas_cumprod
    from i2vgen.models.loading import load_unet, save_unet
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.train.data import make_dataloader
    from i2vgen.train.recipe import stage_config, stage_dataset
    from i2vgen.train.trainer import encode_clips, load_frozen, sample_timesteps, update_ema

    torch.set_num_threads(args.threads)
    folder = local_model_path("tiny-shapes")
    rcfg = recipe("tiny-shapes-text")
    rcfg = dataclasses.replace(rcfg, base=dataclasses.replace(rcfg.base, extra={**rcfg.base.extra,
                                                                                 "data.seed": args.data_seed}))
    cfg = stage_config(rcfg, "base", folder, Path("/tmp/unused"))
    frozen = load_frozen(cfg, torch.device("cpu"))
    text = (TextEncoder.from_pretrained(Path(args.text) / "text_encoder", Path(args.text) / "tokenizer")
            if args.text else TextEncoder.from_model_folder(folder))
    unet = load_unet(folder / "unet").float()
    ema = copy.deepcopy(unet).requires_grad_(False)
    base = I2VGenPipeline.from_pretrained(folder)
    base.unet, base.text_encoder = ema, text
    held = [shapes.make_clip(s, num_frames=rcfg.num_frames) for s in shapes.split_seeds("heldout", 4 * args.probe_n)]
    one = [c for c in held if len(c.shapes) == 1][:args.probe_n]
    two = [c for c in held if len(c.shapes) == 2][:args.probe_n]
    schedule = base_alphas_cumprod()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                            weight_decay=cfg.optim.weight_decay)
    pairs = [(e, p) for e, p in zip(ema.parameters(), unet.parameters())]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = make_dataloader(stage_dataset(rcfg, "base"), cfg.batch_size, shuffle=True, seed=cfg.data.seed,
                             drop_last=True)
    routing = AttendLoss(unet, text, args.attend_form) if args.arm == "attend" else None
    rows = [{"arm": args.arm, "step": 0, **probe(base, one, two, with_one=True)}]
    print(json.dumps(rows[-1]), flush=True)
    step, t0, losses, attend_losses = 0, time.perf_counter(), [], []
    while step < args.steps:
        for batch in loader:
            unet.train()
            with torch.no_grad():
                z0, image = encode_clips(frozen, batch, None, torch.device("cpu"), None)  # (B, 4, F, h, w), (B, D)
                ctx = text.encode(batch["captions"])  # (B, L, D)
            t = sample_timesteps(z0.shape[0], cfg.loss, gen)  # (B,)

            def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return unet(x_t, t, encoder_hidden_states=ctx, image_embeds=image,  # noqa: B023
                            first_frame_latent=z0[:, :, 0], fps=batch["fps"])  # noqa: B023

            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
            if routing is not None:
                routing.start(batch)
            loss, _ = v_loss(net, z0, schedule, generator=gen, offset_noise=cfg.loss.offset_noise, t=t)
            if routing is not None:
                extra = routing.finish()
                attend_losses.append(extra.item())
                loss = loss + args.attend_weight * extra
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            update_ema(pairs, 0.999)
            step += 1
            losses.append(loss.item())
            if step % args.probe_every == 0 or step == args.steps:
                rows.append({"arm": args.arm, "step": step, "loss": float(np.mean(losses[-100:])),
                             **({"attend_loss": float(np.mean(attend_losses[-100:]))} if attend_losses else {}),
                             "seconds": round(time.perf_counter() - t0),
                             **probe(base, one, two, with_one=step == args.steps)})
                print(json.dumps(rows[-1]), flush=True)
                Path(args.output).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}, indent=1) + "\n")
            if step == args.steps:
                break
    if args.save:
        out = Path(args.save)
        save_unet(ema, out / "unet")
        text.model.save_pretrained(out / "text_encoder")
        text.tokenizer.save_pretrained(out / "tokenizer")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bind", help="fine-tune the text encoder to bind")
    b.add_argument("-o", "--output", required=True, help="folder for text_encoder/, tokenizer/ and bind.json")
    b.set_defaults(func=bind)
    t = sub.add_parser("train", help="continue the shipped base UNet with one text encoder")
    t.add_argument("--arm", choices=("frozen", "bound", "attend"), required=True)
    t.add_argument("--attend-weight", type=float, default=0.1, help="arm attend: the routing loss's weight")
    t.add_argument("--attend-form", choices=("ratio", "own"), default="ratio",
                   help="arm attend: score the own word's share against the other's (ratio) or its weight (own)")
    t.add_argument("--text", default=None, help="the `bind` output folder (arm bound; optional for arm attend)")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--warmup", type=int, default=50)
    t.add_argument("--data-seed", type=int, default=7)
    t.add_argument("--probe-every", type=int, default=500)
    t.add_argument("--probe-n", type=int, default=48, help="held-out clips per probe (one-shape and two-shape)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--save", default=None)
    t.add_argument("-o", "--output", required=True)
    t.set_defaults(func=train)
    args = p.parse_args()
    if args.cmd == "train" and args.arm == "bound" and not args.text:
        p.error("--arm bound needs --text")
    if args.cmd == "train" and args.text and args.arm == "frozen":
        p.error("--arm frozen reads the shipped encoder; drop --text")
    torch.set_num_threads(1)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
