"""Training throughput (clips/s) and peak memory of one base-stage UNet training step, gradient checkpointing on/off.

Run: `.venv/bin/python benchmarks/bench_train.py [--preset bench-mid] [--frames 8] [--latent 32] [--batch 2]
[--steps 5] [--threads 2] [--device cpu|cuda] [--dtype fp32|bf16]`.

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
