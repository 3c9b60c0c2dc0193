"""The training loop of both I2VGen-XL stages: `train(cfg)`.

One loop serves the base stage and the refiner; what differs is the loss of a batch (`base_loss`, `refine_loss`):

- base: v-prediction MSE on the clip's VAE latents with offset noise, t ~ U{0..999}, conditioned on the caption,
  the CLIP embedding and the latent of the clip's first frame and its fps, with condition dropout for guidance;
- refine: the same objective, text-only, t ~ U{0..599}, where for t >= `loss.degraded_min_t` x_t is made (with
  probability `loss.degraded_prob`) from the latent of a degraded copy of the clip while the target stays the v that
  leads to the clean clip (docs/training.md explains the choice); a dataset may pair each clip with a source clip of
  the same shape ("source_frames", e.g. a base stage's output or a copy with misplaced shapes), which is then what
  gets degraded.

Around it: frozen VAE and CLIP encoders, AdamW with the spatial layers' learning rate scaled by gamma, warm-up then
cosine, EMA, autocast, gradient accumulation and checkpointing, LoRA, DDP or FSDP2 across processes
(`torchrun` / `accelerate launch`), atomic checkpoints with exact resume, CSV / TensorBoard logs and sample videos.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from i2vgen import reference
from i2vgen.diffusion import (
    alpha_bar_at,
    base_alphas_cumprod,
    offset_noise_like,
    q_sample,
    refiner_alphas_cumprod,
    v_loss,
    v_target,
)
from i2vgen.errors import CheckpointError, InputError
from i2vgen.io.atomic import atomic_path, atomic_write_text
from i2vgen.models.configs import unet_preset
from i2vgen.models.encoders import ImageEncoder, TextEncoder
from i2vgen.models.loading import build_unet, load_unet
from i2vgen.models.refiner import I2VGenRefinerUNet
from i2vgen.models.unet import I2VGenUNet, UNet3D
from i2vgen.models.vae import VideoVAE
from i2vgen.train import checkpoint as ckpt_io
from i2vgen.train.config import DegradeConfig, LossConfig, TrainConfig
from i2vgen.train.data import VideoTextDataset, make_dataloader

VAE_CHUNK = 8  # frames per VAE encoder call


@dataclass
class Frozen:
    """The frozen encoders (no gradients, eval mode)."""

    vae: VideoVAE
    text: TextEncoder
    image: ImageEncoder | None  # base stage only
    degrade_vae: VideoVAE | None = None  # refiner stage with `degrade.vae`: the base stage's VAE


@dataclass
class Procs:
    """This process within the job."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # the process group was created here (and is destroyed at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    losses: list[float]  # this process's per-step losses of this run (after any resume)
    output_dir: Path
    unet: UNet3D  # the trained network (for FSDP: sharded)
    ema: UNet3D | None
    checkpoint: Path | None  # the last checkpoint written


# =============================================================================================== the training loop
def train(cfg: TrainConfig, *, resume: str | os.PathLike | None = None,
          dataset: torch.utils.data.Dataset | None = None) -> TrainResult:
    """Train the `cfg.stage` UNet for `cfg.max_steps` optimizer steps; continue from a checkpoint with `resume`
    (a checkpoint folder or a run folder, whose latest checkpoint is used).

    Several processes (`torchrun` / `accelerate launch` set WORLD_SIZE, RANK, LOCAL_RANK) train data-parallel, each
    on its own shard of the data. `dataset` replaces `VideoTextDataset(cfg.data)` (it must follow the same item
    contract and expose `is_image` and `config`, see `i2vgen.train.data`).
    """
    # ---- 1. processes, device, output folder; settings that cannot train are refused before anything is loaded
    procs = setup_processes(cfg)
    device, out = procs.device, Path(cfg.output_dir)
    resume_dir = ckpt_io.find_checkpoint(resume) if resume is not None else None
    if dataset is None and not cfg.data.sources:
        raise InputError("data.sources is empty: name the training data, e.g. a file of 'video_path|||caption' "
                         "lines (`--data clips.txt`; docs/training.md, Data)")
    check_context_width(cfg, resume_dir)
    if resume_dir is None and ckpt_io.list_checkpoints(out):
        raise InputError(f"{out} already holds checkpoints of a run: resume it with --resume {out}, or choose a new "
                         f"output_dir")
    if resume_dir is not None and procs.is_main:
        saved = TrainConfig.load_yaml(resume_dir / "config.yaml").to_dict()
        changed = ckpt_io.check_resume_config(saved, cfg.to_dict())
        if changed:
            print(f"resuming with changed settings: {', '.join(changed)}", flush=True)
    if procs.is_main:
        ckpt_io.ensure_output_dir(out)
        cfg.save_yaml(out / "config.yaml")
    autocast = torch.autocast(device.type, dtype=torch.float16 if cfg.mixed_precision == "fp16" else torch.bfloat16,
                              enabled=cfg.mixed_precision != "no")

    # ---- 2. frozen encoders; the "no text" context used by condition dropout
    frozen = load_frozen(cfg, device)
    null_text = encode_text(frozen.text, [null_prompt(cfg)], device)  # (1, 77, D)

    # ---- 3. the UNet (same initial weights on every rank), LoRA, EMA copy, resumed weights, parallel wrapper
    torch.manual_seed(cfg.seed)
    unet = build_training_unet(cfg, frozen, resume_dir).to(device)
    if cfg.lora.enabled:
        from i2vgen.models.lora import add_lora

        add_lora(unet, cfg.lora)
    ema = copy.deepcopy(unet).requires_grad_(False).eval() if cfg.ema.enabled else None
    if resume_dir is not None:
        load_weights(resume_dir, cfg, unet, ema)
    unet.gradient_checkpointing = cfg.model.gradient_checkpointing
    unet.train()
    model = wrap_parallel(unet, ema, cfg, procs)  # what forward passes go through (DDP wrapper, or unet itself)
    trainable = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
    ema_pairs = _ema_pairs(unet, ema)

    # ---- 4. optimizer: AdamW, spatial layers at lr * gamma, linear warm-up then cosine
    optimizer = torch.optim.AdamW(param_groups(trainable, cfg), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
                                  fused=cfg.parallel != "fsdp" or procs.world_size == 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.mixed_precision == "fp16")

    # ---- 5. per-rank random state and resume
    gen = torch.Generator().manual_seed(_rank_seed(cfg.seed, procs.rank))  # timesteps, noise, dropout, VAE samples
    _seed_globals(_rank_seed(cfg.seed, procs.rank))
    step, position, counters = 0, None, {"skipped": 0, "samples": 0, "elapsed": 0.0}
    if resume_dir is not None:
        step, position, counters = restore_state(resume_dir, cfg, unet, optimizer, scheduler, scaler, gen, procs)
        if procs.is_main:
            print(f"resumed from {resume_dir} at step {step}", flush=True)

    # ---- 6. data: this rank's shard, from the saved position
    dataset = VideoTextDataset(cfg.data) if dataset is None else dataset
    loader = make_dataloader(dataset, cfg.batch_size, num_workers=cfg.num_workers, shuffle=True,
                             seed=cfg.data.seed, rank=procs.rank, world_size=procs.world_size, drop_last=True,
                             pin_memory=device.type == "cuda")
    # The loader draws a worker seed from a generator at every new iterator; its own keeps the global RNG (dropout)
    # on the same sequence whether or not a run was interrupted mid-epoch.
    loader.generator = torch.Generator().manual_seed(cfg.data.seed)
    batches = endless_batches(loader, position)
    cache = LatentCache(cfg) if cfg.cache_dir else None
    sample_src = sample_source(cfg, dataset) if cfg.log.sample_every and (procs.is_main or cfg.parallel == "fsdp") \
        else None
    schedule = base_alphas_cumprod() if cfg.stage == "base" else refiner_alphas_cumprod()
    log = RunLog(out, cfg, procs, step, counters)
    probe = TextProbeRunner.build(cfg, dataset, frozen, device, out, step) \
        if cfg.log.text_probe_every and (procs.is_main or cfg.parallel == "fsdp") else None

    # ---- 7. the loop: one optimizer step per iteration, over grad_accum micro-batches
    losses: list[float] = []
    last_ckpt: Path | None = None
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        skipped: list[str] = []
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            skipped += batch["skipped"]
            position = batch["position"]
            log.record_paths(step + 1, batch["paths"])
            # Gradients are all-reduced only on the last micro-batch of the step.
            with _no_sync(model, unet, last=micro == cfg.grad_accum - 1), autocast:
                if cfg.stage == "base":
                    loss = base_loss(model, frozen, batch, null_text, schedule, cfg, gen, device, cache)
                else:
                    loss = refine_loss(model, frozen, batch, null_text, schedule, cfg, gen, device, cache)
            scaler.scale(loss / cfg.grad_accum).backward()
            step_loss += loss.detach().double() / cfg.grad_accum
        scaler.unscale_(optimizer)
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # this step's learning rates
        scheduler.step()
        step += 1
        if ema is not None:
            update_ema(ema_pairs, ema_decay(cfg, step))

        losses.append(step_loss.item())
        counters["samples"] += cfg.batch_size * cfg.grad_accum * procs.world_size
        log.step(step, step_loss, grad_norm, skipped, lrs, time.perf_counter() - t0, position)
        if sample_src is not None and step % cfg.log.sample_every == 0:
            write_sample(cfg, step, ema if ema is not None else unet, frozen, sample_src, procs)
        if probe is not None and step % cfg.log.text_probe_every == 0:
            probe.run(step, unet, schedule, log.tb if procs.is_main else None, procs.is_main)
        final = step == cfg.max_steps
        if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or (final and cfg.checkpoint.save_final):
            counters["elapsed"] = log.elapsed()
            last_ckpt = save_training_checkpoint(cfg, step, unet, ema, optimizer, scheduler, scaler, gen,
                                                 position, counters, procs)

    log.finish(unet)
    if procs.owns_group:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(step, losses, out, unet, ema, last_ckpt)


# =============================================================================================== the two losses
def base_loss(model: nn.Module, frozen: Frozen, batch: dict[str, Any], null_text: Tensor, schedule: Tensor,
              cfg: TrainConfig, gen: torch.Generator, device: torch.device, cache: LatentCache | None) -> Tensor:
    """v-prediction MSE of the base stage for one batch (spec §3)."""
    vae_gen = gen if cfg.model.sample_posterior else None
    with torch.no_grad():
        z0, image = encode_clips(frozen, batch, vae_gen, device, cache)  # (B, 4, F, h, w), (B, D)
        text = encode_captions(frozen.text, batch["captions"], cfg, device, cache)  # (B, 77, D)
        text, image = drop_conditions(text, image, null_text, cfg.loss, gen)
    first = z0[:, :, 0]  # (B, 4, h, w): the conditioning image is the clip's first frame, kept in every branch
    if cfg.loss.drop_first_frame > 0:  # ... unless every image condition of a sample is dropped (text-only samples)
        keep = (torch.rand(first.shape[0], generator=gen) >= cfg.loss.drop_first_frame).to(device)  # (B,)
        first = first * keep[:, None, None, None]
        image = image * keep[:, None]
    fps = batch["fps"].to(device)  # (B,)
    t = sample_timesteps(z0.shape[0], cfg.loss, gen)  # (B,)

    def net(x_t: Tensor, t: Tensor) -> Tensor:
        return model(x_t, t, encoder_hidden_states=text, image_embeds=image, first_frame_latent=first, fps=fps)

    loss, _ = v_loss(net, z0, schedule, generator=gen, offset_noise=cfg.loss.offset_noise, t=t)
    return loss


def refine_loss(model: nn.Module, frozen: Frozen, batch: dict[str, Any], null_text: Tensor, schedule: Tensor,
                cfg: TrainConfig, gen: torch.Generator, device: torch.device, cache: LatentCache | None) -> Tensor:
    """The refiner's objective: clean target, x_t from the degraded clip for high enough t (see module docstring).

    With a = alpha_bar_t, s = sqrt(1 - a) and the source latent z_src (clean or degraded), x_t = sqrt(a) z_src + s eps
    and the target is the v whose x0 prediction sqrt(a) x_t - s v is the clean latent z: v = v(z, eps) +
    (a / s)(z_src - z). The extra term is bounded by (a / s) <= 0.5 for t >= 300 on the refiner schedule.
    """
    loss_cfg, vae_gen = cfg.loss, gen if cfg.model.sample_posterior else None
    with torch.no_grad():
        z0, _ = encode_clips(frozen, batch, vae_gen, device, cache)  # (B, 4, F, h, w): the clean, high-res target
        source = batch.get("source_frames", batch["frames"])  # (B, 3, F, H, W): paired source, else the clip
        low = degrade(source.to(device), cfg.degrade, gen, frozen.degrade_vae)  # (B, 3, F, H, W)
        z_low = encode_posterior_sample(frozen.vae, low, vae_gen)  # (B, 4, F, h, w)
        text = encode_captions(frozen.text, batch["captions"], cfg, device, cache)  # (B, 77, D)
        text, _ = drop_conditions(text, None, null_text, loss_cfg, gen)
    b = z0.shape[0]
    t = sample_timesteps(b, loss_cfg, gen)  # (B,)
    use_low = (torch.rand(b, generator=gen) < loss_cfg.degraded_prob) & (t >= loss_cfg.degraded_min_t)
    z_src = torch.where(use_low.to(device)[:, None, None, None, None], z_low, z0)
    eps = offset_noise_like(z0, loss_cfg.offset_noise, gen)  # (B, 4, F, h, w)
    a = alpha_bar_at(schedule, t)  # (B,) float64
    x_t = q_sample(z_src, t, schedule, eps)  # sqrt(a) z_src + sqrt(1 - a) eps
    target = paired_v_target(z0, z_src, eps, a)
    pred = model(x_t, t.to(device, torch.float32), encoder_hidden_states=text)
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1).mean()


def sample_timesteps(b: int, cfg: LossConfig, gen: torch.Generator) -> Tensor:
    """(B,) training timesteps in {0, ..., t_max - 1} from `cfg.t_dist`: uniform (the reference; the same draws as
    `torch.randint`), power (floor(t_max (1 - u^t_skew)), u ~ U(0, 1)) or logit-normal (floor(t_max sigmoid(n)),
    n ~ N(t_logit_mean, t_logit_std^2)); then, with `t_top_share` > 0, each sample is replaced with that probability
    by a uniform draw from {t_top_min, ..., t_max - 1}."""
    if cfg.t_dist == "uniform":
        t = torch.randint(0, cfg.t_max, (b,), generator=gen)
    elif cfg.t_dist == "power":
        u = torch.rand(b, generator=gen)
        t = (cfg.t_max * (1 - u ** cfg.t_skew)).long()
    else:  # logit-normal
        n = cfg.t_logit_mean + cfg.t_logit_std * torch.randn(b, generator=gen)
        t = (cfg.t_max * torch.sigmoid(n)).long()
    t = t.clamp(0, cfg.t_max - 1)
    if cfg.t_top_share > 0:
        top = torch.rand(b, generator=gen) < cfg.t_top_share
        t = torch.where(top, torch.randint(cfg.t_top_min, cfg.t_max, (b,), generator=gen), t)
    return t


def paired_v_target(z0: Tensor, z_src: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The v target for x_t = sqrt(a) z_src + sqrt(1 - a) eps whose x0 prediction sqrt(a) x_t - sqrt(1 - a) v is z0:
    v(z0, eps) + a / sqrt(1 - a) (z_src - z0); equal to the usual target when z_src is z0. alpha_bar: (B,)."""
    a = alpha_bar.to(torch.float64)
    coef = (a / (1 - a).sqrt()).float().to(z0.device)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
    return v_target(z0, eps, a) + coef * (z_src - z0)


def drop_conditions(text: Tensor, image: Tensor | None, null_text: Tensor, cfg: LossConfig,
                    gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Condition dropout for classifier-free guidance: one uniform draw per sample picks (exclusively) "drop text and
    image" (p = drop_all, the unconditional branch used at inference), "drop text" (drop_text) or "drop image"
    (drop_image). Dropped text becomes `null_text`'s embedding, a dropped image embedding zeros (spec §1.3 step 7).
    Without an image (refiner), the text is dropped with probability drop_all + drop_text."""
    b = text.shape[0]
    u = torch.rand(b, generator=gen).to(text.device)  # (B,)
    p_all, p_text = cfg.drop_all, cfg.drop_text
    drop_text = u < p_all + p_text
    text = torch.where(drop_text[:, None, None], null_text.to(text.dtype).expand_as(text), text)
    if image is not None:
        drop_image = (u < p_all) | ((u >= p_all + p_text) & (u < p_all + p_text + cfg.drop_image))
        image = torch.where(drop_image[:, None], torch.zeros_like(image), image)
    return text, image


def degrade(frames: Tensor, cfg: DegradeConfig, gen: torch.Generator, vae: VideoVAE | None = None) -> Tensor:
    """A lower-quality copy of each clip at the same size: Gaussian blur, bilinear down-scaling by a random factor,
    with `vae` a round trip through it (posterior mean), Gaussian noise, bilinear up-scaling back (the base stage's
    output as the refiner sees it). One random setting per clip, the same for all its frames. frames (B, 3, F, H, W)
    in [-1, 1] -> same shape, clamped to [-1, 1]. Runs in float32 outside autocast (antialiased resizing has no
    half-precision CPU kernel)."""
    _, _, _, h, w = frames.shape
    out = []
    with torch.autocast(frames.device.type, enabled=False):
        for clip in frames:
            u = torch.rand(3, generator=gen).tolist()
            scale = cfg.scale_min + u[0] * (cfg.scale_max - cfg.scale_min)
            sigma, noise_std = u[1] * cfg.blur_max, u[2] * cfg.noise_max
            x = gaussian_blur(clip.transpose(0, 1).float(), sigma)  # (F, 3, H, W)
            small = (max(1, round(h / scale)), max(1, round(w / scale)))
            if vae is not None:  # sizes the VAE maps back to themselves, as the base stage's are
                f = vae.downscale
                small = (max(f, round(small[0] / f) * f), max(f, round(small[1] / f) * f))
            x = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
            if vae is not None:
                with torch.no_grad():
                    z = vae.encode(x.transpose(0, 1)[None].to(vae.device, vae.dtype), sample=False)  # (1, 4, F, ...)
                    x = vae.decode(z)[0].transpose(0, 1).float().to(frames.device)  # (F, 3, h, w)
            x = x + noise_std * torch.randn(x.shape, generator=gen).to(x.device)
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            out.append(x.clamp(-1, 1).transpose(0, 1))  # (3, F, H, W)
    return torch.stack(out).to(frames.dtype)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, reflect padding; sigma in pixels (<= 0.1: unchanged)."""
    if sigma <= 0.1:
        return x
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.device, x.dtype)
    c = x.shape[1]
    radius_h, radius_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    x = F.pad(x, (radius_w, radius_w, radius_h, radius_h), mode="reflect") if radius_h and radius_w else x
    kh = k[radius - radius_h: radius + radius_h + 1]
    kw = k[radius - radius_w: radius + radius_w + 1]
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


# =============================================================================================== encoders
def load_frozen(cfg: TrainConfig, device: torch.device) -> Frozen:
    """The VAE and CLIP encoders of `cfg.model.components`, frozen, on `device`."""
    from i2vgen.model_paths import check_model_folder, resolve_model_path

    if not cfg.model.components:
        raise InputError("model.components must name a model folder (vae/, text_encoder/, tokenizer/"
                         + (", image_encoder/" if cfg.stage == "base" else "") + ")")
    needed = ["vae", "text_encoder", "tokenizer"] + (["image_encoder"] if cfg.stage == "base" else [])
    root = resolve_model_path(cfg.model.components, components=needed)
    check_model_folder(root, needed)
    vae = VideoVAE.from_model_folder(root).to(device)
    text = TextEncoder.from_model_folder(root).to(device)
    image = ImageEncoder.from_model_folder(root).to(device) if cfg.stage == "base" else None
    degrade_vae = None
    if cfg.stage == "refine" and cfg.degrade.vae is not None:
        vae_root = resolve_model_path(cfg.degrade.vae, components=["vae"])
        vae_dir = vae_root / "vae" if (vae_root / "vae").is_dir() else vae_root
        degrade_vae = VideoVAE.from_pretrained(vae_dir).to(device).requires_grad_(False).eval()
    return Frozen(vae.requires_grad_(False).eval(), text.requires_grad_(False).eval(),
                  None if image is None else image.requires_grad_(False).eval(), degrade_vae)


def null_prompt(cfg: TrainConfig) -> str:
    if cfg.model.null_prompt is not None:
        return cfg.model.null_prompt
    return reference.NEGATIVE_PROMPT if cfg.stage == "base" else reference.REFINE_NEGATIVE_PROMPT


def caption_suffix(cfg: TrainConfig) -> str:
    if cfg.model.caption_suffix is not None:
        return cfg.model.caption_suffix
    return "" if cfg.stage == "base" else reference.POSITIVE_SUFFIX


def encode_text(text_encoder: TextEncoder, prompts: list[str], device: torch.device) -> Tensor:
    """(B, 77, D); prompts longer than the context are cut silently (captions often are)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="prompt \\d+ is")
        return text_encoder.encode(prompts).to(device)


def encode_captions(text_encoder: TextEncoder, captions: list[str], cfg: TrainConfig, device: torch.device,
                    cache: LatentCache | None) -> Tensor:
    prompts = [c + caption_suffix(cfg) for c in captions]
    if cache is None:
        return encode_text(text_encoder, prompts, device)
    return torch.cat([cache.get(("text", p), lambda p=p: {"text": encode_text(text_encoder, [p], device)})["text"]
                      for p in prompts]).to(device)


def encode_image(image_encoder: ImageEncoder, pixels: Tensor, device: torch.device) -> Tensor:
    """CLIP image embeddings (B, D) of the data's (B, 3, 224, 224) crops; an encoder of another input size (the
    tiny test models) gets them resized."""
    size = image_encoder.model.config.image_size
    pixels = pixels.to(device)
    if pixels.shape[-1] != size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return image_encoder.encode(pixels)


def posterior(vae: VideoVAE, frames: Tensor) -> tuple[Tensor, Tensor]:
    """VAE posterior mean and std of (B, 3, F, H, W) frames in [-1, 1] -> two (B, 4, F, h, w), unscaled."""
    b, _, f, h, w = frames.shape
    x = frames.transpose(1, 2).reshape(b * f, 3, h, w).to(vae.device, vae.dtype)  # (B*F, 3, H, W)
    means, stds = [], []
    for chunk in x.split(VAE_CHUNK):
        dist_ = vae.vae.encode(chunk).latent_dist
        means.append(dist_.mean.float())
        stds.append(dist_.std.float())
    mean, std = torch.cat(means), torch.cat(stds)  # (B*F, 4, h, w)
    # contiguous (B, 4, F, h, w), the layout latents have when they come from the cache
    return (mean.reshape(b, f, *mean.shape[1:]).transpose(1, 2).contiguous(),
            std.reshape(b, f, *std.shape[1:]).transpose(1, 2).contiguous())


def sample_latents(vae: VideoVAE, mean: Tensor, std: Tensor, gen: torch.Generator | None) -> Tensor:
    """A posterior sample, scaled: (mean + std * N(0, 1)) * scaling_factor, the noise drawn from `gen` (CPU);
    without a generator the scaled mean."""
    if gen is None:
        return mean * vae.scaling_factor
    noise = torch.randn(mean.shape, generator=gen, dtype=torch.float32).to(mean.device)
    return (mean + std * noise) * vae.scaling_factor


def encode_posterior_sample(vae: VideoVAE, frames: Tensor, gen: torch.Generator | None) -> Tensor:
    mean, std = posterior(vae, frames)
    return sample_latents(vae, mean, std, gen)


def encode_clips(frozen: Frozen, batch: dict[str, Any], gen: torch.Generator | None, device: torch.device,
                 cache: LatentCache | None) -> tuple[Tensor, Tensor | None]:
    """-> (posterior-sample latents (B, 4, F, h, w) (the mean without `gen`), CLIP image embeddings (B, D) or None
    for the refiner)."""
    frames = batch["frames"]  # (B, 3, F, H, W)
    want_image = frozen.image is not None
    if cache is None:
        mean, std = posterior(frozen.vae, frames.to(device))
        image = encode_image(frozen.image, batch["clip_pixels"], device) if want_image else None
    else:
        parts = []
        for i in range(frames.shape[0]):
            key = ("clip", batch["paths"][i], list(batch["frame_indices"][i]), list(frames.shape[1:]), want_image)

            def compute(i: int = i) -> dict[str, Tensor]:
                m, s = posterior(frozen.vae, frames[i:i + 1].to(device))
                d = {"mean": m, "std": s}
                if want_image:
                    d["image"] = encode_image(frozen.image, batch["clip_pixels"][i:i + 1], device)
                return d

            parts.append(cache.get(key, compute))
        mean = torch.cat([p["mean"] for p in parts]).to(device)
        std = torch.cat([p["std"] for p in parts]).to(device)
        image = torch.cat([p["image"] for p in parts]).to(device) if want_image else None
    return sample_latents(frozen.vae, mean, std, gen), image


class LatentCache:
    """VAE posteriors (mean and std, so every step still draws its own sample), CLIP image embeddings and text
    embeddings on disk, one safetensors file per clip (keyed by path, frame indices and shape) or per text.

    Valid while the frozen components, the training size and the decoding of a (path, frame indices) pair do not
    change; `meta.json` records the settings and a mismatch refuses the folder. Pixel augmentations would make it
    invalid (the data pipeline has none). The refiner's degraded inputs are random every step and never cached.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.root = Path(cfg.cache_dir)
        meta = {"components": os.path.abspath(cfg.model.components) if os.path.exists(cfg.model.components)
                else cfg.model.components, "width": cfg.data.width, "height": cfg.data.height,
                "clip_width": cfg.data.clip_width, "num_frames": cfg.data.num_frames,
                "caption_suffix": caption_suffix(cfg), "version": 1}
        meta_file = self.root / "meta.json"
        if meta_file.is_file():
            saved = json.loads(meta_file.read_text())
            if saved != meta:
                diff = sorted(k for k in set(saved) | set(meta) if saved.get(k) != meta.get(k))
                raise InputError(f"cache_dir {self.root} was filled with other settings ({', '.join(diff)}); "
                                 f"use a new cache_dir")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # several ranks may race here; same content
                atomic_write_text(meta_file, json.dumps(meta, indent=2))

    def get(self, key: Any, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The entry for `key` (any JSON-able value), computed with `compute()` and stored if missing."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        path = self.root / digest[:2] / f"{digest}.safetensors"
        if path.is_file():
            with contextlib.suppress(Exception):  # a damaged entry is recomputed
                # Copies: safetensors' buffers are only 16-byte aligned, and CPU matmul kernels can round differently
                # on those than on torch's 64-byte aligned tensors.
                return {k: v.clone() for k, v in load_file(str(path)).items()}
        value = compute()
        with atomic_path(path, fsync=False) as tmp:
            save_file({k: v.detach().float().contiguous().cpu() for k, v in value.items()}, str(tmp))
        return {k: v.detach().float().cpu() for k, v in value.items()}


# =============================================================================================== model set-up
def build_training_unet(cfg: TrainConfig, frozen: Frozen, resume_dir: Path | None) -> UNet3D:
    """The UNet to train: from a checkpoint being resumed (full fine-tuning), from `model.unet`, or new from
    `model.unet_preset` with spatial layers from `model.sd_init` and the new layers starting as identities."""
    m = cfg.model
    if resume_dir is not None and not cfg.lora.enabled and (resume_dir / "unet").is_dir():
        unet = _in_own_memory(load_unet(resume_dir / "unet"))
    elif m.unet is not None:
        unet = _in_own_memory(load_unet(_local_unet_path(m.unet), concat_scale=m.concat_scale))
    else:
        config = unet_preset(m.unet_preset)
        if m.concat_scale is not None:
            config = config.replace(concat_scale=m.concat_scale)
        unet = build_unet(config)
        if m.sd_init is not None:
            report = ckpt_io.init_from_stable_diffusion(unet, m.sd_init)
            print(f"initialised {report['copied']} spatial tensors from {m.sd_init}; {report['new']} new", flush=True)
        else:
            ckpt_io.zero_init_new_layers(unet)
    want = I2VGenUNet if cfg.stage == "base" else I2VGenRefinerUNet
    if not isinstance(unet, want):
        raise CheckpointError(f"the {cfg.stage} stage trains a {want.__name__}; the configured UNet is a "
                              f"{type(unet).__name__}")
    # Caught earlier by `check_context_width` wherever config files can tell (not for Hub ids or .pth files).
    d = unet.config.cross_attention_dim
    widths = {"text encoder": frozen.text.model.config.hidden_size}
    if frozen.image is not None:
        widths["image encoder"] = frozen.image.model.config.projection_dim
    for encoder, width in widths.items():
        if width != d:
            raise CheckpointError(_width_message(cfg, "the UNet", d, encoder, width))
    return unet.float().train()


def check_context_width(cfg: TrainConfig, resume_dir: Path | None) -> None:
    """Refuse a UNet whose cross-attention width differs from the frozen encoders' (the text encoder's hidden size,
    the image encoder's projection), from the config files alone, before any weights are loaded. Sources whose
    config cannot be read without loading or downloading are left to `build_training_unet`."""
    from i2vgen.model_paths import local_model_path

    m = cfg.model
    if resume_dir is not None and not cfg.lora.enabled and (resume_dir / "unet").is_dir():
        unet_from, d = f"the UNet of {resume_dir}", _config_field(resume_dir / "unet", "cross_attention_dim")
    elif m.unet is not None:
        folder = local_model_path(m.unet)
        folder = folder / "unet" if (folder / "unet").is_dir() and not (folder / "config.json").exists() else folder
        unet_from, d = f"model.unet {m.unet!r}", _config_field(folder, "cross_attention_dim")
    else:
        try:
            d = unet_preset(m.unet_preset).cross_attention_dim
        except ValueError as e:
            raise InputError(f"model.unet_preset: {e}") from None
        unet_from = f"model.unet_preset {m.unet_preset!r}"
    root = local_model_path(m.components)
    widths = {"text encoder": _config_field(root / "text_encoder", "hidden_size")}
    if cfg.stage == "base":
        widths["image encoder"] = _config_field(root / "image_encoder", "projection_dim")
    for encoder, width in widths.items():
        if d is not None and width is not None and width != d:
            raise InputError(_width_message(cfg, unet_from, d, encoder, width))


def _width_message(cfg: TrainConfig, unet_from: str, d: int, encoder: str, width: int) -> str:
    from i2vgen.models.configs import UNET_PRESETS

    image = cfg.stage == "base"
    fits = [n for n, c in UNET_PRESETS.items() if c.cross_attention_dim == width and c.image_conditioning == image]
    hint = f" (model.unet_preset {' or '.join(fits)})" if fits else ""
    return (f"{unet_from} has context width {d}, but the {encoder} of model.components {cfg.model.components!r} has "
            f"width {width}; they must agree: use a UNet of width {width}{hint} or other components")


def _config_field(folder: Path, key: str) -> int | None:
    """`key` of `folder/config.json`; None when there is no such file or field (loading reports those)."""
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _in_own_memory(unet: UNet3D) -> UNet3D:
    """A copy of a loaded UNet in freshly allocated parameters. `load_unet` keeps safetensors' buffers, which are
    only 16-byte aligned; CPU kernels may round differently on those than on torch's 64-byte aligned memory, and an
    interrupted and resumed run must compute exactly as an uninterrupted one."""
    fresh = build_unet(unet.config, device="meta").to_empty(device="cpu")
    fresh.load_state_dict(unet.state_dict())
    return fresh


def _local_unet_path(path: str) -> Path:
    if Path(path).exists():
        return Path(path)
    from i2vgen.model_paths import resolve_model_path

    return resolve_model_path(path, components=["unet"]) / "unet"


def param_groups(named: list[tuple[str, nn.Parameter]], cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: the spatial (SD-initialised) parameters at lr * spatial_lr_scale (gamma), the rest at lr.
    A learning-rate multiplier, not a gradient scale: Adam's update is invariant to scaling the gradient (spec §4.1).
    LoRA adapters form a single group at lr."""
    gamma = cfg.optim.spatial_lr_scale
    if cfg.lora.enabled:
        return [{"params": [p for _, p in named], "lr": cfg.optim.lr, "name": "lora"}]
    spatial = [p for n, p in named if ckpt_io.is_spatial_parameter(n)]
    other = [p for n, p in named if not ckpt_io.is_spatial_parameter(n)]
    groups = [{"params": other, "lr": cfg.optim.lr, "name": "temporal_and_conditioning"},
              {"params": spatial, "lr": cfg.optim.lr * gamma, "name": "spatial"}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier of optimizer step `step` (0-based): linear warm-up to 1, then cosine to
    min_lr_ratio at decay_steps (VGen `AnnealingLR`)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    total = o.decay_steps or cfg.max_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay(cfg: TrainConfig, step: int) -> float:
    return min(cfg.ema.decay, (1 + step) / (10 + step)) if cfg.ema.warmup else cfg.ema.decay


def _ema_pairs(unet: nn.Module, ema: nn.Module | None) -> list[tuple[Tensor, Tensor]]:
    if ema is None:
        return []
    theirs = dict(ema.named_parameters())
    return [(theirs[n], p) for n, p in unet.named_parameters() if p.requires_grad]


@torch.no_grad()
def update_ema(pairs: list[tuple[Tensor, Tensor]], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * param, for the trainable parameters."""
    for e, p in pairs:
        e.lerp_(p.detach(), 1 - decay)


# =============================================================================================== processes
def setup_processes(cfg: TrainConfig) -> Procs:
    """Rank, world size and device from the launcher's environment (torchrun / accelerate launch)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        return Procs(dist.get_rank(), dist.get_world_size(), device, owns)
    return Procs(0, 1, device, owns)


def wrap_parallel(unet: UNet3D, ema: UNet3D | None, cfg: TrainConfig, procs: Procs) -> nn.Module:
    """DDP around `unet`, or FSDP2 sharding of `unet` and `ema` per block (then the module itself is returned)."""
    if procs.world_size == 1:
        return unet
    if cfg.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [procs.device.index] if procs.device.type == "cuda" else None
        return DistributedDataParallel(unet, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    from i2vgen.models.blocks import ResBlock, SpatialTransformer, TemporalConv, TemporalTransformer

    # Our temporal transformer returns a view of its residual sum; nothing modifies it in place, so FSDP2's warning
    # about in-place ops on views does not apply.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    # Blocks the trunk calls as modules; the root takes the rest (conv_in, embeddings, conditioning, head).
    units = (ResBlock, SpatialTransformer, TemporalConv, TemporalTransformer)
    for net in (unet, ema) if ema is not None else (unet,):
        for m in list(net.modules()):
            if isinstance(m, units):
                fully_shard(m)
        fully_shard(net)
    return unet


def _no_sync(model: nn.Module, unet: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce except on the last micro-batch of an optimizer step."""
    if hasattr(model, "no_sync"):  # DDP
        return contextlib.nullcontext() if last else model.no_sync()
    if hasattr(unet, "set_requires_gradient_sync"):  # FSDP2
        unet.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def _rank_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _gather(obj: Any, procs: Procs) -> list[Any]:
    if procs.world_size == 1:
        return [obj]
    out: list[Any] = [None] * procs.world_size
    dist.all_gather_object(out, obj)
    return out


# =============================================================================================== data
def endless_batches(loader: torch.utils.data.DataLoader, position: dict[str, int] | None) -> Iterator[dict]:
    """Batches across epochs, starting after `position` (a batch's "position": epoch and batches consumed)."""
    sampler = loader.batch_sampler
    epoch = 0 if position is None else position["epoch"]
    sampler.set_state(epoch, 0 if position is None else position["offset"])
    while True:
        yield from loader
        epoch += 1
        sampler.set_epoch(epoch)


# =============================================================================================== checkpoints
def save_training_checkpoint(cfg: TrainConfig, step: int, unet: UNet3D, ema: UNet3D | None,
                             optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, gen: torch.Generator,
                             position: dict[str, int] | None, counters: dict[str, Any], procs: Procs) -> Path:
    """Gather the full state (a collective under FSDP) and write `checkpoints/step-N/` atomically on rank 0."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    lora_writer = model_sd = ema_sd = None
    if cfg.lora.enabled:
        from i2vgen.models.lora import lora_state_dict, save_lora

        sd, ema_lora = lora_state_dict(unet), lora_state_dict(ema) if ema is not None else None

        def lora_writer(folder: Path) -> None:
            save_lora(unet, folder / "lora", sd)
            if ema_lora is not None:
                save_lora(unet, folder / "lora_ema", ema_lora)
    else:
        model_sd = get_model_state_dict(unet, options=opts)
        ema_sd = get_model_state_dict(ema, options=opts) if ema is not None else None
    optim_sd = get_optimizer_state_dict(unet, optimizer, options=opts)
    rngs = _gather(ckpt_io.rng_state(gen), procs)
    dst = ckpt_io.checkpoint_dir(cfg.output_dir, step)
    if procs.is_main:
        state = {"step": step, "position": position, "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rngs, "world_size": procs.world_size,
                 "counters": dict(counters)}
        ckpt_io.save_checkpoint(dst, config_yaml=cfg.to_yaml(), unet_class=type(unet).__name__,
                                unet_config=unet.config, model_state=model_sd, ema_state=ema_sd,
                                lora_writer=lora_writer, optimizer_state=optim_sd, trainer_state=state)
        ckpt_io.prune_checkpoints(cfg.output_dir, cfg.checkpoint.keep_last)
        print(f"saved checkpoint {dst}", flush=True)
    if procs.world_size > 1:
        dist.barrier()
    return dst


def load_weights(ckpt: Path, cfg: TrainConfig, unet: UNet3D, ema: UNet3D | None) -> None:
    """Trained and EMA weights (or adapters) of a checkpoint into the not yet wrapped modules."""
    if cfg.lora.enabled:
        from peft import set_peft_model_state_dict

        from i2vgen.models.lora import load_lora

        set_peft_model_state_dict(unet, load_lora(ckpt / "lora")[1], adapter_name="default")
        if ema is not None and (ckpt / "lora_ema").is_dir():
            set_peft_model_state_dict(ema, load_lora(ckpt / "lora_ema")[1], adapter_name="default")
        return
    # (unet/ itself was loaded by build_training_unet)
    if ema is not None:
        folder = ckpt / "unet_ema" if (ckpt / "unet_ema").is_dir() else ckpt / "unet"
        ema.load_state_dict(ckpt_io.read_weights(folder / "model.safetensors"))


def restore_state(ckpt: Path, cfg: TrainConfig, unet: UNet3D, optimizer: torch.optim.Optimizer, scheduler: Any,
                  scaler: Any, gen: torch.Generator, procs: Procs) -> tuple[int, dict | None, dict]:
    """Optimizer, scheduler, scaler and random states of a checkpoint; -> (step, data position, counters)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state, optim_sd = ckpt_io.load_trainer_state(ckpt)
    set_optimizer_state_dict(unet, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if state["world_size"] == procs.world_size:
        ckpt_io.set_rng_state(state["rng"][procs.rank], gen)
    elif procs.is_main:
        warnings.warn(f"resuming {state['world_size']} processes' run with {procs.world_size}: random states are "
                      f"reseeded, so the run does not continue exactly", stacklevel=2)
    return int(state["step"]), state["position"], dict(state["counters"])


# =============================================================================================== samples
def sample_source(cfg: TrainConfig, dataset: Any) -> dict[str, Any]:
    """The conditioning of sample videos: the first training entry (or log.sample_image / sample_prompt)."""
    item = dataset[0]
    frames = item["frames"]  # (3, F, H, W) in [-1, 1]
    src = {"frames": frames, "prompt": cfg.log.sample_prompt if cfg.log.sample_prompt is not None
           else item["caption"]}
    if cfg.log.sample_image is not None:
        src["image"] = cfg.log.sample_image
    else:
        src["image"] = ((frames[:, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    return src


@torch.no_grad()
def write_sample(cfg: TrainConfig, step: int, net: UNet3D, frozen: Frozen, src: dict[str, Any],
                 procs: Procs) -> Path | None:
    """A sample video from `net` (the EMA weights) through the stage's inference pipeline: samples/step-N.mp4."""
    from i2vgen.io import write_video

    was_training = net.training
    gen = torch.Generator().manual_seed(cfg.seed)
    d = cfg.data
    devices = [procs.device] if procs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="prompt \\d+ is")  # long captions and negative prompts are cut
        if cfg.stage == "base":
            from i2vgen.pipelines.base import I2VGenPipeline

            pipe = I2VGenPipeline(net, frozen.vae, frozen.text, frozen.image, device=procs.device)
            frames = pipe(src["image"], src["prompt"], negative_prompt=null_prompt(cfg), num_frames=d.num_frames,
                          height=d.height, width=d.width, target_fps=d.target_fps,
                          num_inference_steps=cfg.log.sample_steps,
                          guidance_scale=cfg.log.sample_guidance if cfg.log.sample_guidance is not None else 9.0,
                          generator=gen, output_type="np")[0]
        else:
            from i2vgen.pipelines.refine import I2VGenRefinePipeline

            pipe = I2VGenRefinePipeline(net, frozen.vae, frozen.text, device=procs.device)
            low = degrade(src["frames"][None], cfg.degrade, torch.Generator().manual_seed(cfg.seed),
                          frozen.degrade_vae)
            video = ((low + 1) / 2).clamp(0, 1)  # (1, 3, F, H, W) in [0, 1]
            frames = pipe(video, src["prompt"], negative_prompt=null_prompt(cfg), positive_suffix=caption_suffix(cfg),
                          width=d.width, height=d.height, strength=cfg.loss.t_max / 1000,
                          num_inference_steps=cfg.log.sample_steps, window_size=None,
                          guidance_scale=cfg.log.sample_guidance if cfg.log.sample_guidance is not None else 7.5,
                          generator=gen, output_type="np")[0]
    net.train(was_training)
    if not procs.is_main:
        return None
    path = Path(cfg.output_dir) / "samples" / f"step-{step:08d}.mp4"
    write_video(frames, path, fps=d.target_fps, metadata={"step": step, "prompt": src["prompt"], "stage": cfg.stage})
    return path


# =============================================================================================== text-use probe
class TextProbeRunner:
    """The trainer's text-use probe (`i2vgen.train.text_probe`) on the dataset's last `log.text_probe_samples`
    entries with distinct captions: posterior-mean latents and conditions computed once; each run appends to
    text_probe.csv, writes TensorBoard scalars text/gap_<t> and text/rel_gap_<t>, prints one line, and a warning
    while the relative gap stays below `log.text_probe_warn` at every probed t. It draws its noise from its own
    generator and leaves the training random state alone, so runs with and without it train identically."""

    def __init__(self, cfg: TrainConfig, batch: dict[str, Tensor], order: list[int], out: Path,
                 timesteps: tuple[int, ...]) -> None:
        self.cfg, self.batch, self.order, self.timesteps = cfg, batch, order, timesteps
        self.path = out / "text_probe.csv"

    @classmethod
    def build(cls, cfg: TrainConfig, dataset: Any, frozen: Frozen, device: torch.device, out: Path,
              step: int) -> TextProbeRunner | None:
        from i2vgen.train.text_probe import shuffled_order

        # the last entries with distinct captions (looking back at most 32 per sample wanted)
        n, want = len(dataset), cfg.log.text_probe_samples
        items: list[dict[str, Any]] = []
        for i in range(n - 1, max(n - 32 * want, 0) - 1, -1):
            it = dataset[i]
            if not it.get("is_image", False) and all(it["caption"] != other["caption"] for other in items):
                items.append(it)
            if len(items) == want:
                break
        items.reverse()
        captions = [it["caption"] for it in items]
        order = shuffled_order(captions) if len(items) >= 2 else None
        if order is None:
            print("text-use probe off: it needs two entries with different captions near the end of the data",
                  flush=True)
            return None
        with torch.no_grad():
            frames = torch.stack([it["frames"] for it in items])  # (K, 3, F, H, W)
            mean, _ = posterior(frozen.vae, frames.to(device))
            batch = {"z0": mean * frozen.vae.scaling_factor,
                     "text": encode_text(frozen.text, [c + caption_suffix(cfg) for c in captions], device),
                     "fps": torch.tensor([float(it["fps"]) for it in items], device=device)}
            if cfg.stage == "base":
                batch["image"] = encode_image(frozen.image, torch.stack([it["clip_pixels"] for it in items]), device)
        timesteps = tuple(sorted({min(t, cfg.loss.t_max - 1) for t in cfg.log.text_probe_t}, reverse=True))
        _truncate_lines(out / "text_probe.csv", step, lambda line: int(line.split(",", 1)[0]), header=True)
        return cls(cfg, batch, order, out, timesteps)

    def run(self, step: int, unet: nn.Module, schedule: Tensor, tb: Any, is_main: bool) -> dict[str, float]:
        from i2vgen.train.text_probe import caption_gap

        b = self.batch
        was_training = unet.training
        unet.eval()
        z0, text = b["z0"], b["text"]
        k = z0.shape[0]

        def net(x_t: Tensor, t: Tensor, context: Tensor) -> Tensor:
            if self.cfg.stage == "base":
                return unet(x_t, t, encoder_hidden_states=context, image_embeds=b["image"].repeat(2, 1),
                            first_frame_latent=z0[:, :, 0].repeat(2, 1, 1, 1), fps=b["fps"].repeat(2))
            return unet(x_t, t, encoder_hidden_states=context)

        with torch.random.fork_rng(devices=[]):
            res = caption_gap(net, z0, text, text[self.order], schedule, self.timesteps, seed=self.cfg.seed)
        unet.train(was_training)
        if not is_main:
            return res
        new = not self.path.is_file()
        with open(self.path, "a", encoding="utf-8") as f:
            if new:
                f.write("step,t,loss,loss_other_caption,gap,rel_gap\n")
            for t in self.timesteps:
                loss, gap = res[f"loss_{t}"], res[f"gap_{t}"]
                f.write(f"{step},{t},{loss!r},{loss + gap!r},{gap!r},{res[f'rel_gap_{t}']!r}\n")
        if tb is not None:
            for t in self.timesteps:
                tb.add_scalar(f"text/gap_{t}", res[f"gap_{t}"], step)
                tb.add_scalar(f"text/rel_gap_{t}", res[f"rel_gap_{t}"], step)
        parts = ", ".join(f"t={t}: {res[f'gap_{t}']:.3g} ({100 * res[f'rel_gap_{t}']:.2g} %)" for t in self.timesteps)
        print(f"text-use probe at step {step} ({k} samples), loss gap with another caption: {parts}", flush=True)
        if all(res[f"rel_gap_{t}"] < self.cfg.log.text_probe_warn for t in self.timesteps):
            print(f"warning: the loss hardly depends on the caption (gap < {100 * self.cfg.log.text_probe_warn:g} % "
                  f"of the loss at every probed t): the model is not reading the text. At high t only the text tells "
                  f"what the clip does; sample more timesteps there (loss.t_top_share, docs/training.md)", flush=True)
        return res


# =============================================================================================== logs
class RunLog:
    """metrics.csv, skipped.txt, TensorBoard scalars and console lines (main process); per-rank data records.

    On resume, rows after the resumed step (written by the interrupted run after its last checkpoint) are dropped, so
    the files read as one uninterrupted run.
    """

    FIELDS = ["step", "epoch", "loss", "lr", "lr_spatial", "grad_norm", "clips_per_s", "step_s", "skipped",
              "samples", "elapsed_s"]

    def __init__(self, out: Path, cfg: TrainConfig, procs: Procs, step: int, counters: dict[str, Any]) -> None:
        self.out, self.cfg, self.procs, self.counters = out, cfg, procs, counters
        self.start = time.perf_counter() - counters.get("elapsed", 0.0)
        self.window: list[float] = []
        self.window_time = 0.0
        self.window_grad = 0.0
        self.window_skipped: list[str] = []
        self.tb = None
        self.ranks_file = None
        if cfg.log.rank_files:
            (out / "ranks").mkdir(parents=True, exist_ok=True)
            path = out / "ranks" / f"rank{procs.rank}.jsonl"
            _truncate_lines(path, step, lambda line: json.loads(line).get("step", 0))
            self.ranks_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish
        if not procs.is_main:
            return
        self.csv_path, self.skipped_path = out / "metrics.csv", out / "skipped.txt"
        _truncate_lines(self.csv_path, step, lambda line: int(line.split(",", 1)[0]), header=True)
        _truncate_lines(self.skipped_path, step, lambda line: int(line.split("\t", 1)[0]))
        new = not self.csv_path.is_file()
        self.csv_file = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.csv = csv.writer(self.csv_file)
        if new:
            self.csv.writerow(self.FIELDS)
        self.skipped_file = open(self.skipped_path, "a", encoding="utf-8")  # noqa: SIM115
        if cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record_paths(self, step: int, paths: list[str]) -> None:
        if self.ranks_file is not None:
            self.ranks_file.write(json.dumps({"step": step, "paths": list(paths)}) + "\n")

    def step(self, step: int, loss: Tensor, grad_norm: Tensor, skipped: list[str], lrs: dict[str, float], seconds: float,
             position: dict[str, int] | None) -> None:
        self.window.append(loss.item())
        self.window_time += seconds
        self.window_grad = float(grad_norm)
        self.window_skipped += skipped
        if step % self.cfg.log.every and step != self.cfg.max_steps:
            return
        # Mean loss and the skips over the window, across ranks.
        n = len(self.window)
        stats = torch.tensor([sum(self.window), float(len(self.window_skipped))], dtype=torch.float64)
        paths = _gather(self.window_skipped, self.procs)
        if self.procs.world_size > 1:
            dev = self.procs.device if dist.get_backend() == "nccl" else torch.device("cpu")
            stats = stats.to(dev)
            dist.all_reduce(stats)
            stats = stats.cpu()
        loss_mean = stats[0].item() / (n * self.procs.world_size)
        self.counters["skipped"] += int(stats[1].item())
        clips_per_s = self.cfg.batch_size * self.cfg.grad_accum * self.procs.world_size * n / self.window_time
        if self.procs.is_main:
            lr = next((v for k, v in lrs.items() if k != "spatial"), lrs.get("spatial", 0.0))
            row = {"step": step, "epoch": position["epoch"] if position else 0, "loss": repr(loss_mean),
                   "lr": f"{lr:.6g}", "lr_spatial": f"{lrs.get('spatial', lr):.6g}",
                   "grad_norm": f"{self.window_grad:.6g}", "clips_per_s": f"{clips_per_s:.4g}",
                   "step_s": f"{self.window_time / n:.4g}", "skipped": self.counters["skipped"],
                   "samples": self.counters["samples"], "elapsed_s": f"{self.elapsed():.1f}"}
            self.csv.writerow([row[k] for k in self.FIELDS])
            self.csv_file.flush()
            for rank_paths in paths:
                for p in rank_paths:
                    self.skipped_file.write(f"{step}\t{p}\n")
            self.skipped_file.flush()
            if self.tb is not None:
                for k in ("loss", "lr", "lr_spatial", "grad_norm", "clips_per_s", "skipped"):
                    self.tb.add_scalar(f"train/{k}", float(row[k]), step)
            print(f"step {step}/{self.cfg.max_steps} loss {loss_mean:.4f} lr {lr:.3g} {clips_per_s:.3g} clips/s "
                  f"skipped {self.counters['skipped']}", flush=True)
        self.window, self.window_time, self.window_skipped = [], 0.0, []

    def finish(self, unet: nn.Module) -> None:
        if self.ranks_file is not None:
            self.ranks_file.write(json.dumps({"final_checksum": parameter_checksum(unet)}) + "\n")
            self.ranks_file.close()
        if self.procs.is_main:
            self.csv_file.close()
            self.skipped_file.close()
            if self.tb is not None:
                self.tb.close()


def parameter_checksum(module: nn.Module) -> str:
    """sha256 over the parameters' bytes in name order (this rank's shards under FSDP)."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        t = p.detach()
        t = t.to_local() if hasattr(t, "to_local") else t
        h.update(name.encode())
        h.update(t.float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _truncate_lines(path: Path, step: int, step_of: Any, header: bool = False) -> None:
    """Keep the lines of a log whose step is <= `step` (all of them when starting fresh, step 0: none)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    kept = []
    for line in body:
        try:
            if step_of(line) <= step:
                kept.append(line)
        except (ValueError, json.JSONDecodeError):
            continue  # a line cut short by a kill
    atomic_write_text(path, "".join(head + kept))
