"""Can the tiny base UNet move two shapes two ways at all? Two-shape scenes memorised at the top of the schedule.

Run: `.venv/bin/python benchmarks/shapes_two_shape_overfit.py --scenes 1 -o runs/overfit/1.json` (one arm; run two
side by side at one thread each).

A controlled experiment for docs/tiny-shapes.md, section 15. The shipped base moves the first-named of two shapes
the prompted way and the second at chance (section 14: its cross-attention reads the first direction word from both
shapes' places). Two explanations predict different things here. If the UNet cannot make two shapes of one clip move
two ways from two words (capacity or architecture), it fails even on scenes it has memorised; if it can but does not
generalise, it learns the training scenes and stays at chance on held-out ones.

The arm continues the shipped base UNet (its EMA weights, or `--init`'s; the shipped text encoder or `--text`'s)
exactly as the recipe's two-shape curriculum stages train (`curriculum-4`'s settings: every t in [970, 1000),
posterior means, batch 4, AdamW 1e-3 after 20 warm-up steps, no EMA, no condition dropout) on all 16 direction
combinations of the first `--scenes` two-shape train scenes (`shapes.DirectionsDataset`). Every `--probe-every`
steps, the binding probe of `shapes_eval.text_use` at t = 999 (per shape: does its own direction word beat its other
three, the other shape's word kept true; chance 25 %) on 16 clips of the training scenes (all 16 combinations of the
first scene, or one combination from each of the first 16 scenes) and on `--probe-n` held-out two-shape clips.
`--save` writes the trained UNet into a copy of the shipped base folder, for `i2vgen eval-shapes --model`.
`--travel-census` counts the training clips whose shapes end partly out of frame (`with_directions` keeps each
shape's drawn travel; `--axis-travel` renders each axis's own).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.shapes_eval import text_use
from i2vgen.train.recipe import recipe

STAGE = "curriculum-4"  # the first two-shape curriculum stage: its settings, other scenes


_KEPT = shapes.with_directions  # the drawn travel (the default), which `--axis-travel` replaces in the module
axis_travel = functools.partial(_KEPT, axis_travel=True)  # each direction with its own axis's travel


def out_of_frame(sh: shapes.Shape, size: int = 32) -> float:
    """Share of shape `sh`'s area outside the frame at its last frame: its coverage (as `shapes.render` draws it) on a
    grid three frames wide, the frame in the middle."""
    grid = (np.arange(-size, 2 * size, dtype=np.float32) + 0.5) / size  # pixel centres, fraction of the side
    dx, dy = shapes.DIRECTIONS[sh.direction]
    r = sh.radius * shapes.SCALES[sh.scale]
    cx = sh.start[0] + sh.travel * dx
    cy = sh.start[1] + sh.travel * dy + (0.25 * shapes._TRIANGLE * r if sh.kind == "triangle" else 0.0)
    alpha = np.clip(0.5 - shapes._signed_distance(sh.kind, grid[None, :] - cx, grid[:, None] - cy, r) * size, 0, 1)
    return float(1 - alpha[size:2 * size, size:2 * size].sum() / alpha.sum())  # alpha: (3 size, 3 size)


def travel_census(scenes: int, num_frames: int) -> dict[str, int]:
    """Clips of all 16 direction combinations of the first `scenes` two-shape train scenes in which a shape ends
    with over 1 % of its area out of frame, rendered as `with_directions` does (drawn travel) and with each axis's."""
    combos = list(itertools.product(sorted(shapes.DIRECTIONS), repeat=2))
    counts = {"clips": 0, "kept_travel": 0, "axis_travel": 0}
    for seed in shapes.split_seeds("train", scenes):
        scene = shapes.make_clip(seed, num_frames=num_frames, num_shapes=2)
        for c in combos:
            counts["clips"] += 1
            for key, fn in (("kept_travel", _KEPT), ("axis_travel", axis_travel)):
                counts[key] += any(out_of_frame(sh) > 0.01 for sh in fn(scene, c).shapes)
    return counts


def probe(base: object, clips: list) -> dict[str, float]:
    """Per-shape binding accuracy at t = 999 on these two-shape clips: (first shape, second shape)."""
    base.unet.eval()
    rows = [text_use(base, c, seed=k, timesteps=(999,), max_shapes=2, repeats=1) for k, c in enumerate(clips)]
    per_shape = np.array([r["text_use_ok_per_shape_999"] for r in rows])  # (n, 2)
    return {"first": float(per_shape[:, 0].mean()), "second": float(per_shape[:, 1].mean()),
            "gap": float(np.mean([r["text_gap_999"] for r in rows]))}


def train_clips(scenes: int, num_frames: int) -> list:
    """16 clips of the training scenes: every combination of scene 0, or one combination from each of 16 scenes."""
    seeds = shapes.split_seeds("train", scenes)
    combos = list(itertools.product(sorted(shapes.DIRECTIONS), repeat=2))
    if scenes == 1:
        scene = shapes.make_clip(seeds[0], num_frames=num_frames, num_shapes=2)
        return [shapes.with_directions(scene, c) for c in combos]
    return [shapes.with_directions(shapes.make_clip(s, num_frames=num_frames, num_shapes=2), combos[(5 * k) % 16])
            for k, s in enumerate(seeds[:16])]


def main() -> int:
    from i2vgen.diffusion.losses import v_loss
    from i2vgen.diffusion.schedule import base_alphas_cumprod
    from i2vgen.models.loading import load_unet
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.train.data import make_dataloader
    from i2vgen.train.recipe import stage_config, stage_dataset
    from i2vgen.train.trainer import encode_clips, load_frozen, sample_timesteps

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, required=True, help="two-shape train scenes (16 clips each)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--probe-every", type=int, default=150)
    p.add_argument("--probe-n", type=int, default=24, help="held-out two-shape clips per probe")
    p.add_argument("--axis-travel", action="store_true",
                   help="re-render each direction with its own axis's travel (`axis_travel`), not the drawn one")
    p.add_argument("--text", default=None,
                   help="another text encoder (a folder with text_encoder/ and tokenizer/, e.g. the bound one)")
    p.add_argument("--init", default=None,
                   help="start from this base folder's UNet (e.g. an earlier run's --save), not the shipped one")
    p.add_argument("--travel-census", action="store_true",
                   help="only count the clips of the --scenes scenes whose shapes end partly out of frame, and exit")
    p.add_argument("--save", default=None,
                   help="write a base model folder (the shipped one with the trained UNet) here, for `i2vgen eval-shapes`")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", help="the JSON of probe rows (required unless --travel-census)")
    args = p.parse_args()
    if args.scenes < 1:
        p.error("--scenes must be >= 1")
    if not args.output and not args.travel_census:
        p.error("-o/--output is required")
    if args.save and Path(args.save).exists():
        p.error(f"--save {args.save} exists; choose a new folder")
    torch.set_num_threads(args.threads)
    if args.travel_census:
        print(json.dumps({"scenes": args.scenes, **travel_census(args.scenes, recipe("tiny-shapes-text").num_frames)}))
        return 0
    if args.axis_travel:
        shapes.with_directions = axis_travel  # DirectionsDataset, text_use and train_clips render through it

    folder = local_model_path("tiny-shapes")
    rcfg = recipe("tiny-shapes-text")
    k = int(STAGE.split("-")[1])
    rcfg = dataclasses.replace(rcfg, curriculum=[*rcfg.curriculum[:k], dataclasses.replace(
        rcfg.curriculum[k], scenes=args.scenes, steps=args.steps)])
    cfg = stage_config(rcfg, STAGE, folder, Path("/tmp/unused"))
    frozen = load_frozen(cfg, torch.device("cpu"))
    text = TextEncoder.from_model_folder(args.text or folder)
    unet = load_unet(Path(args.init or folder) / "unet").float()
    base = I2VGenPipeline.from_pretrained(folder)
    base.unet, base.text_encoder = unet, text
    seen = train_clips(args.scenes, rcfg.num_frames)
    held = [c for c in (shapes.make_clip(s, num_frames=rcfg.num_frames)
                        for s in shapes.split_seeds("heldout", 4 * args.probe_n)) if len(c.shapes) == 2][:args.probe_n]
    schedule = base_alphas_cumprod()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                            weight_decay=cfg.optim.weight_decay)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = make_dataloader(stage_dataset(rcfg, STAGE), cfg.batch_size, shuffle=True, seed=cfg.data.seed,
                             drop_last=True)
    rows: list[dict] = []

    def record(step: int, **extra: float) -> None:
        rows.append({"scenes": args.scenes, "step": step, **extra, "train": probe(base, seen), "heldout": probe(base, held)})
        print(json.dumps(rows[-1]), flush=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "stage": STAGE, "rows": rows}, indent=1) + "\n")

    record(0)
    step, t0, losses = 0, time.perf_counter(), []
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
                g["lr"] = cfg.optim.lr * min(1.0, (step + 1) / cfg.optim.warmup_steps)
            loss, _ = v_loss(net, z0, schedule, generator=gen, offset_noise=cfg.loss.offset_noise, t=t)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if step % args.probe_every == 0 or step == args.steps:
                record(step, loss=float(np.mean(losses[-args.probe_every:])), seconds=round(time.perf_counter() - t0))
            if step == args.steps:
                break
    if args.save:
        save_folder(folder, unet, args.text, Path(args.save))
    return 0


def save_folder(shipped: Path, unet: torch.nn.Module, text: str | None, out: Path) -> None:
    """The shipped base folder with this UNet (and `text`'s encoder, if given), written whole into a temporary
    folder beside `out` and renamed."""
    import shutil
    import tempfile

    from i2vgen.models.loading import save_unet

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        shutil.copytree(shipped, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unet"))
        save_unet(unet, tmp / "unet", format="diffusers")  # as the recipe exports it
        for part in ("text_encoder", "tokenizer") if text else ():
            shutil.rmtree(tmp / part)
            shutil.copytree(Path(text) / part, tmp / part)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
