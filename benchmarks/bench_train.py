"""Training throughput (clips/s) and peak memory of one base-stage UNet training step, gradient checkpointing on/off.

Run: `.venv/bin/python benchmarks/bench_train.py [--preset bench-mid] [--frames 8] [--latent 32] [--batch 2]
[--steps 5] [--threads 2] [--device cpu|cuda] [--dtype fp32|bf16]`; with `--trainer [--data shapes|list]` the
tiny-shapes recipe's base stage through the trainer itself (`run_trainer`).

A step is what `i2vgen.train.trainer` does after encoding: v-prediction loss with offset noise on (B, 4, F, h, w)
latents with the text / CLIP / first-frame conditions (random tensors here; the frozen VAE and CLIP encoders are not
timed), backward, AdamW with the gamma parameter groups, EMA update. Each setting runs in its own subprocess:
throughput = batch * steps / time over `--steps` steps after 2 warm-up steps; peak memory = growth of the peak RSS
(VmHWM, CPU) or of `torch.cuda.max_memory_allocated` (GPU) over the memory held after building the model and its EMA
copy: activations, gradients and the AdamW state (allocated at the first step).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time

import torch
from rss import reset_peak, rss_kb


def run_one(args: argparse.Namespace) -> dict:
    from i2vgen.diffusion import base_alphas_cumprod, v_loss
    from i2vgen.models.configs import unet_preset
    from i2vgen.models.unet import I2VGenUNet
    from i2vgen.train.config import preset
    from i2vgen.train.trainer import param_groups, update_ema

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = unet_preset(args.preset)
    unet = I2VGenUNet(cfg).to(device).train()
    unet.gradient_checkpointing = args.checkpointing == "on"
    ema = copy.deepcopy(unet).requires_grad_(False)
    named = list(unet.named_parameters())
    train_cfg = preset("tiny")
    opt = torch.optim.AdamW(param_groups(named, train_cfg), lr=3e-5, fused=True)
    pairs = list(zip(ema.parameters(), unet.parameters()))
    b, f, s, d = args.batch, args.frames, args.latent, cfg.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(b, 4, f, s, s, generator=g).to(device)
    text, image = torch.randn(b, 77, d, generator=g).to(device), torch.randn(b, d, generator=g).to(device)
    schedule = base_alphas_cumprod()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def step() -> None:
        with autocast:
            loss, _ = v_loss(lambda x, t: unet(x, t, encoder_hidden_states=text, image_embeds=image,
                                               first_frame_latent=x0[:, :, 0], fps=16),
                             x0, schedule, generator=g, offset_noise=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(pairs, 0.9999)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = (reset_peak() or 0) * 1024
    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else rss_kb("VmHWM") * 1024
    params = sum(p.numel() for p in unet.parameters())
    return {"checkpointing": args.checkpointing, "clips_per_s": b * args.steps / seconds,
            "step_s": seconds / args.steps, "peak_mem_mb": (peak - base) / 2**20, "params": params,
            "device": str(device), "dtype": args.dtype, "threads": args.threads, "batch": b, "frames": f,
            "latent": s, "preset": args.preset}


def run_trainer(args: argparse.Namespace) -> dict:
    """The tiny-shapes recipe's base stage through `i2vgen.train.train` itself (data, frozen encoders, UNet step,
    EMA): median step time over the steps after `--skip`, from metrics.csv. `--data shapes` renders clips on the fly
    (`ShapesDataset`, the recipe); `--data list` trains on `--clips` pre-rendered mp4 clips in the reference's list
    format through `VideoTextDataset` with the latent cache (steps after the first epoch hit it)."""
    import csv
    import statistics
    import tempfile
    from pathlib import Path

    from i2vgen.model_paths import local_model_path
    from i2vgen.shapes import write_clip_list
    from i2vgen.train.recipe import recipe, stage_config, stage_dataset
    from i2vgen.train.trainer import train

    torch.set_num_threads(args.threads)
    cfg = recipe("tiny-shapes")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        changes = {"max_steps": args.steps + args.skip, "batch_size": args.batch, "log.every": 1,
                   "log.tensorboard": False, "log.text_probe_every": 0, "checkpoint.every": 0,
                   "checkpoint.save_final": False, "mixed_precision": "bf16" if args.dtype == "bf16" else "no",
                   "device": args.device}
        dataset = None
        if args.data == "list":
            clips = write_clip_list(Path(tmp) / "clips", "train", args.clips, size=cfg.base_size,
                                    num_frames=cfg.num_frames)
            changes.update({"data.sources": str(clips), "cache_dir": str(Path(tmp) / "cache"), "num_workers": 0})
        else:
            dataset = stage_dataset(cfg, "base")
        tcfg = stage_config(cfg, "base", local_model_path("tiny-shapes"), out).replace(**changes)
        train(tcfg, dataset=dataset)
        with open(out / "metrics.csv", newline="") as f:
            times = [float(r["step_s"]) for r in csv.DictReader(f)][args.skip:]
    step_s = statistics.median(times)
    return {"mode": f"{args.data}, batch {args.batch}, {args.dtype}", "clips_per_s": args.batch / step_s,
            "step_s": step_s, "steps": len(times), "threads": args.threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainer", action="store_true",
                   help="time the tiny-shapes recipe's base stage through the trainer instead (see run_trainer)")
    p.add_argument("--data", choices=("shapes", "list"), default="shapes")
    p.add_argument("--clips", type=int, default=32, help="--data list: pre-rendered clips (one epoch)")
    p.add_argument("--skip", type=int, default=None, help="--trainer: first steps not timed (default: one epoch "
                                                         "with --data list, else 3)")
    p.add_argument("--preset", default="bench-mid")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--latent", type=int, default=32, help="latent height and width")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--checkpointing", choices=("on", "off"), help="(internal) run one setting")
    args = p.parse_args()
    if args.trainer:
        args.skip = args.skip if args.skip is not None else (args.clips // args.batch if args.data == "list" else 3)
        print(json.dumps(run_trainer(args)))
        return
    if args.checkpointing:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for ckpt in ("off", "on"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--checkpointing", ckpt]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    r = rows[0]
    print(f"{r['preset']} UNet ({r['params'] / 1e6:.1f} M parameters), batch {r['batch']}, {r['frames']} frames, "
          f"{r['latent']}x{r['latent']} latents, {r['dtype']}, {r['device']}, {r['threads']} threads")
    print("| gradient checkpointing | clips/s | s/step | peak memory (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['checkpointing']} | {r['clips_per_s']:.3f} | {r['step_s']:.2f} | {r['peak_mem_mb']:.0f} |")


if __name__ == "__main__":
    main()
