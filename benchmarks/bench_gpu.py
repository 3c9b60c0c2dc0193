"""The full pipeline at the real model's size on a GPU (issue 13, item 3): seconds per UNet step, total seconds, peak
memory and achieved TFLOP/s over a matrix of settings, random weights.

Run on a GPU (the default base matrix is sized for 6-8 minutes on an H100-class card, an estimate: no GPU has run it
yet; `--budget-s`, default 420, starts no configuration after that many seconds; `--table FILE` prints the table of
a JSON-lines file, e.g. of a run cut short):

    .venv/bin/python benchmarks/bench_gpu.py --out gpu.jsonl                  # base stage, 1280x704x16, DDIM 50, CFG
    .venv/bin/python benchmarks/bench_gpu.py --stage refine --out refine.jsonl  # refiner to 1280x720, DPM++ 2M SDE 30

and on a CPU at tiny size (a few seconds; what `tests/test_bench_gpu.py` runs):

    .venv/bin/python benchmarks/bench_gpu.py --size tiny --device cpu --stage base refine

Components (random weights, built directly on the target device and then cast, so nothing is initialised on the
host): the UNet preset `i2vgen-xl` (1,420,469,224 params) or, for `--stage refine`, `ms-vid2vid-xl`; CLIP ViT-H/14
text (24 layers, 1024 wide) and vision (32 layers, 1280 wide, patch 14, projection 1024) towers built by transformers
from configs; the SD VAE config (block_out 128/256/512/512); a tiny byte-level tokenizer (prompt length does not
change the cost: the context is always 77 tokens). `--size tiny` uses the tiny test components instead.

A configuration is named by dash-separated tokens: a dtype (`fp16`, `bf16`, `fp32`), an SDPA backend for the UNet's
attention (`flash`, `efficient`, `math`, `cudnn`, or `default` for PyTorch's own choice), then any of `compile`
(torch.compile of the UNet's forward), `cl` (2-D/3-D conv weights of the UNet and VAE in channels-last memory; the
UNet's activations are channels-last either way), `offload` (`enable_model_cpu_offload`), `tiled` (spatial VAE tiles,
`models.vae.TileSpec`, if this version has them) and `w<N>` (refiner temporal windows of N frames), and optionally
`@<steps>` to run fewer steps than `--steps` and extrapolate the total. Example: `bf16-flash-compile@20`.

Each configuration builds its own pipeline, runs a 1-step warm-up (which includes any compilation), resets the peak
memory counters, then runs once with a step callback that synchronises the device:
- `sec_per_step`: median time between step callbacks (one batched CFG forward of the UNet plus the sampler update);
- `total_s`: the whole call (encoders, denoising, decode to a tensor on the device); `total_s_at_steps` adds
  (steps - steps_run) * sec_per_step when the configuration ran fewer steps (`extrapolated: true`);
- `peak_gib`: torch.cuda.max_memory_allocated over the timed call (on a CPU: growth of the process's peak RSS);
- `tflop_per_step`: FLOPs of one CFG step (the UNet at batch 2; for the refiner, times the number of windows),
  counted once with torch.utils.flop_counter.FlopCounterMode on a copy of the UNet on the `meta` device at the
  benchmark's exact shape (175.96 TFLOP at 1280x704x16; if the meta count fails, one real forward is counted);
  `tflops_per_s` = tflop_per_step / sec_per_step.
Rows are printed as JSON lines as they finish (and appended to `--out`), then a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import json
import math
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import diffusers
import torch
from rss import peak_growth_mb, reset_peak
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from i2vgen.models import vae as vae_module
from i2vgen.models.configs import UNET_PRESETS

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION, "default": None}
GOALS = {"base": (20.0, 20.0), "refine": (None, 24.0)}  # (seconds for the full run, peak GiB) at real size

# The default matrices. Real size on a GPU: ~25-35 s per 50-step run on an H100-class card (0.4-0.5 s per step
# expected), the extras at fewer steps, compilation last (it alone may take a few minutes, cold).
DEFAULT_CONFIGS = {
    ("base", "cuda"): ["fp16-flash", "bf16-flash", "bf16-flash-offload@10", "bf16-flash-tiled@10", "fp16-efficient",
                       "bf16-efficient", "bf16-flash-cl@20", "bf16-flash-compile@20"],
    ("refine", "cuda"): ["bf16-flash", "bf16-flash-tiled@10", "bf16-flash-tiled-w8@10",
                         "bf16-flash-offload-tiled-w8@10"],
    # Tiny size on a CPU exercises every option but compilation (minutes on a CPU) once.
    ("base", "cpu"): ["fp32-flash", "bf16-math-cl", "fp32-flash-offload@2", "fp32-flash-tiled"],
    ("refine", "cpu"): ["fp32-flash-w2@2", "fp32-flash-tiled"],
}


@dataclass(frozen=True)
class Config:
    dtype: str = "bf16"
    sdpa: str = "flash"
    compile: bool = False
    channels_last: bool = False
    offload: bool = False
    tiled: bool = False
    window: int | None = None  # refiner temporal window (frames); None: the pipeline's default (32)
    steps: int | None = None  # steps actually run; None: all of --steps

    @property
    def name(self) -> str:
        flags = [f for f, on in (("compile", self.compile), ("cl", self.channels_last), ("offload", self.offload),
                                 ("tiled", self.tiled)) if on]
        name = "-".join([self.dtype, self.sdpa, *flags, *([f"w{self.window}"] if self.window else [])])
        return name + (f"@{self.steps}" if self.steps else "")

    @classmethod
    def parse(cls, text: str) -> Config:
        body, _, steps = text.partition("@")
        dtype, sdpa, *flags = body.split("-") + [""]  # a missing backend reads as "", refused below
        flags = [f for f in flags if f]
        if dtype not in DTYPES or sdpa not in BACKENDS:
            raise ValueError(f"configuration {text!r} must start with a dtype ({', '.join(DTYPES)}) and an SDPA "
                             f"backend ({', '.join(BACKENDS)}), e.g. bf16-flash")
        kw: dict[str, Any] = {"dtype": dtype, "sdpa": sdpa}
        names = {"compile": "compile", "cl": "channels_last", "offload": "offload", "tiled": "tiled"}
        for flag in flags:
            if flag in names:
                kw[names[flag]] = True
            elif re.fullmatch(r"w[1-9]\d*", flag):
                kw["window"] = int(flag[1:])
            else:
                raise ValueError(f"unknown token {flag!r} in configuration {text!r}; use compile, cl, offload, "
                                 f"tiled or w<frames>")
        if steps:
            if not steps.isdigit() or int(steps) < 1:
                raise ValueError(f"steps after '@' must be a positive integer, got {text!r}")
            kw["steps"] = int(steps)
        return cls(**kw)


@dataclass(frozen=True)
class Shape:
    """What one stage runs at one size."""

    unet: str  # UNET_PRESETS name
    width: int
    height: int
    frames: int
    steps: int
    input_size: tuple[int, int]  # (height, width) of the refiner's input video (the base stage's output)
    tile: tuple[int, int]  # TileSpec(size, overlap) in latent pixels


SHAPES = {
    ("base", "real"): Shape("i2vgen-xl", 1280, 704, 16, 50, (704, 1280), (64, 16)),
    ("refine", "real"): Shape("ms-vid2vid-xl", 1280, 720, 16, 30, (704, 1280), (64, 16)),
    ("base", "tiny"): Shape("tiny", 64, 32, 4, 3, (32, 64), (8, 2)),
    ("refine", "tiny"): Shape("tiny-refiner", 64, 36, 4, 3, (32, 64), (8, 2)),
}


# ---- components ----------------------------------------------------------------------------------------------------
def encoder_configs(size: str, width: int) -> tuple[Any, Any]:
    """(CLIPTextConfig, CLIPVisionConfig): ViT-H/14 at real size (spec 3 and 5.2), the test towers at tiny size."""
    import transformers

    from i2vgen.models.encoders import tiny_text_config, tiny_vision_config

    if size == "tiny":
        return (tiny_text_config(hidden_size=width, projection_dim=width),
                tiny_vision_config(hidden_size=width, projection_dim=width))
    text = transformers.CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                       num_hidden_layers=24, vocab_size=49408, max_position_embeddings=77,
                                       projection_dim=1024, hidden_act="gelu", bos_token_id=0, eos_token_id=2,
                                       pad_token_id=1)
    vision = transformers.CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
                                           num_hidden_layers=32, image_size=224, patch_size=14, projection_dim=1024,
                                           hidden_act="gelu")
    return text, vision


def vae_config(size: str) -> dict[str, Any]:
    if size == "tiny":
        return vae_module.tiny_vae_config()
    return vae_module.tiny_vae_config(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                                      down_block_types=("DownEncoderBlock2D",) * 4,
                                      up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768)


def build_on(device: torch.device, dtype: torch.dtype, factory: Any) -> torch.nn.Module:
    """Construct a module directly on `device` (PyTorch's default random init runs there), then cast to `dtype`."""
    with torch.device(device):
        module = factory()
    return module.to(dtype).eval().requires_grad_(False)


def build_pipeline(stage: str, size: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Any:
    """A base (`I2VGenPipeline`) or refiner (`I2VGenRefinePipeline`) pipeline on `device` with random weights."""
    import transformers
    from diffusers import AutoencoderKL

    from i2vgen.models.encoders import ImageEncoder, TextEncoder, write_tiny_clip_tokenizer
    from i2vgen.models.refiner import I2VGenRefinerUNet
    from i2vgen.models.unet import I2VGenUNet
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    unet_cfg = UNET_PRESETS[shape.unet]
    text_cfg, vision_cfg = encoder_configs(size, unet_cfg.cross_attention_dim)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = transformers.CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(tmp), model_max_length=77)
    torch.manual_seed(0)
    text = TextEncoder(build_on(device, dtype, lambda: transformers.CLIPTextModel(text_cfg)), tokenizer)
    # VideoVAE keeps a float16 VAE's decoder in float32 (force_upcast), so it wraps the cast module.
    vae = vae_module.VideoVAE(build_on(device, dtype, lambda: AutoencoderKL(**vae_config(size))))
    if stage == "refine":
        unet = build_on(device, dtype, lambda: I2VGenRefinerUNet(unet_cfg))
        return I2VGenRefinePipeline(unet, vae, text, device=device)
    unet = build_on(device, dtype, lambda: I2VGenUNet(unet_cfg))
    image = ImageEncoder(build_on(device, dtype, lambda: transformers.CLIPVisionModelWithProjection(vision_cfg)))
    return I2VGenPipeline(unet, vae, text, image, device=device)


# ---- options -------------------------------------------------------------------------------------------------------
def channels_last_(module: torch.nn.Module) -> None:
    """Conv weights in channels-last memory (2-D convs) or channels-last-3d (3-D convs)."""
    formats = {torch.nn.Conv2d: torch.channels_last, torch.nn.Conv3d: torch.channels_last_3d}
    for m in module.modules():
        for cls, memory_format in formats.items():
            if isinstance(m, cls):
                m.weight.data = m.weight.data.contiguous(memory_format=memory_format)


def restrict_sdpa_(module: torch.nn.Module, backend: SDPBackend) -> None:
    """Run `module`'s forward (not the pipeline's encoders or VAE) with only `backend` allowed for SDPA."""
    forward = module.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel([backend]):
            return forward(*args, **kwargs)

    module.forward = run


def vae_tiling_available() -> bool:
    spec = getattr(vae_module, "TileSpec", None)
    return spec is not None and "tile" in inspect.signature(vae_module.VideoVAE.decode).parameters


def tile_vae_(vae: torch.nn.Module, spec: Any) -> None:
    """Make the pipeline's VAE encode and decode in spatial tiles unless a caller passes its own `tile`."""
    for name in ("encode", "decode"):
        fn = getattr(vae, name)

        def call(*args: Any, tile: Any = None, _fn: Any = fn, **kwargs: Any) -> Any:
            return _fn(*args, tile=tile or spec, **kwargs)

        setattr(vae, name, call)


def skip_reason(cfg: Config, stage: str, device: torch.device) -> str | None:
    if device.type == "cpu" and cfg.dtype == "fp16":
        return "fp16 on CPU"
    if cfg.tiled and not vae_tiling_available():
        return "this version's VideoVAE has no spatial tiling"
    if cfg.window and stage != "refine":
        return "windows are a refiner option"
    return None


# ---- FLOPs ---------------------------------------------------------------------------------------------------------
def windows(stage: str, shape: Shape, cfg: Config) -> list[tuple[int, int]]:
    from i2vgen.pipelines.refine import temporal_windows

    if stage == "base":
        return [(0, shape.frames)]
    size = cfg.window or 32  # the refine pipeline's default window and overlap
    return temporal_windows(shape.frames, size, size // 4)


def unet_flops(unet: torch.nn.Module, stage: str, frames: int, h: int, w: int) -> int:
    """FLOPs of one batched CFG forward (batch 2) of `unet` at (frames, h, w) latents, on the UNet's device."""
    kw = {"device": next(unet.parameters()).device, "dtype": unet.dtype}
    d = unet.config.cross_attention_dim
    x, t = torch.randn(2, unet.config.in_channels, frames, h, w, **kw), torch.full((2,), 500, device=kw["device"])
    with torch.no_grad():
        if stage == "refine":
            ctx = torch.randn(2, 77, d, **kw)
            with FlopCounterMode(display=False) as counter:
                unet(x, t, encoder_hidden_states=ctx)
        else:
            cond = unet.prepare_condition(torch.randn(2, 77, d, **kw), torch.randn(2, d, **kw),
                                          torch.randn(2, 4, h, w, **kw), frames)
            with FlopCounterMode(display=False) as counter:
                unet(x, t, condition=cond, fps=16)
    return counter.get_total_flops()


@functools.cache
def meta_flops(stage: str, unet_preset: str, frames: int, h: int, w: int) -> int:
    """`unet_flops` of a UNet preset built on the meta device (no memory, no arithmetic: about a second)."""
    from i2vgen.models.refiner import I2VGenRefinerUNet
    from i2vgen.models.unet import I2VGenUNet

    cls = I2VGenRefinerUNet if stage == "refine" else I2VGenUNet
    with torch.device("meta"):
        return unet_flops(cls(UNET_PRESETS[unet_preset]).eval(), stage, frames, h, w)


def count_step_flops(stage: str, shape: Shape, spans: list[tuple[int, int]], h: int, w: int,
                     fallback_unet: torch.nn.Module) -> tuple[float, str]:
    """TFLOP of one CFG step (all windows) -> (value, how it was counted)."""
    frames = spans[0][1] - spans[0][0]
    try:
        flops, how = meta_flops(stage, shape.unet, frames, h, w), "meta"
    except Exception as err:  # an op without a meta kernel: count one real forward instead
        flops, how = unet_flops(fallback_unet, stage, frames, h, w), f"device forward (meta failed: {err})"
    return flops * len(spans) / 1e12, how


# ---- one configuration ---------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(pipe: Any, stage: str, shape: Shape, cfg: Config, steps: int, device: torch.device) -> dict[str, Any]:
    """One pipeline call -> step timestamps, total seconds and the output's finiteness."""
    from i2vgen.demo import sample_image

    stamps: list[float] = []

    def callback(i: int, t: float, x0: torch.Tensor) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    gen = torch.Generator().manual_seed(0)
    common = {"num_inference_steps": steps, "negative_prompt": "blurry", "generator": gen, "output_type": "pt",
              "callback": callback, "width": shape.width, "height": shape.height}
    sync(device)
    t0 = time.perf_counter()
    if stage == "refine":
        video = torch.randint(0, 256, (shape.frames, 3, *shape.input_size), dtype=torch.uint8, generator=gen)
        out = pipe(video, "a red circle", positive_suffix="", window_size=cfg.window or 32, **common)
    else:
        out = pipe(sample_image(512), "a red circle", num_frames=shape.frames, **common)
    sync(device)
    return {"t0": t0, "stamps": stamps, "end": time.perf_counter(), "finite": bool(torch.isfinite(out).all())}


def run_config(stage: str, size: str, shape: Shape, cfg: Config, steps: int,
               device: torch.device) -> dict[str, Any]:
    steps_run = min(cfg.steps or steps, steps)
    pipe = build_pipeline(stage, size, shape, device, DTYPES[cfg.dtype])
    unet = pipe.unet
    f = pipe.vae.downscale
    spans = windows(stage, shape, cfg)
    tflop, how = count_step_flops(stage, shape, spans, shape.height // f, shape.width // f, unet)
    row: dict[str, Any] = {"unet_params": sum(p.numel() for p in unet.parameters()), "tflop_per_step": tflop,
                           "flops_counted_on": how, "windows": len(spans)}
    if cfg.channels_last:
        channels_last_(unet)
        channels_last_(pipe.vae)
    if cfg.compile:
        unet.forward = torch.compile(unet.forward)
    if BACKENDS[cfg.sdpa] is not None:
        restrict_sdpa_(unet, BACKENDS[cfg.sdpa])
    if cfg.tiled:
        tile_vae_(pipe.vae, vae_module.TileSpec(*shape.tile))
    if cfg.offload:
        pipe.enable_model_cpu_offload(device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    t0 = time.perf_counter()
    timed_call(pipe, stage, shape, cfg, 1, device)  # warm-up: kernels, cuDNN plans, compilation
    row["warmup_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = reset_peak()
    r = timed_call(pipe, stage, shape, cfg, steps_run, device)
    if device.type == "cuda":
        row["peak_gib"], row["peak_kind"] = torch.cuda.max_memory_allocated(device) / 2**30, "max_memory_allocated"
    else:
        row["peak_gib"], row["peak_kind"] = peak_growth_mb(rss0) / 1024, "peak RSS growth"
    stamps = r["stamps"]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    per_step = statistics.median(gaps) if gaps else stamps[0] - r["t0"]  # one step: an upper bound
    total = r["end"] - r["t0"]
    row.update(steps_run=steps_run, sec_per_step=per_step, total_s=total,
               total_s_at_steps=total + (steps - steps_run) * per_step, extrapolated=steps_run < steps,
               encode_s=max(stamps[0] - r["t0"] - per_step, 0.0), decode_s=r["end"] - stamps[-1],
               tflops_per_s=tflop / per_step, finite=r["finite"])
    return row


# ---- output --------------------------------------------------------------------------------------------------------
def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, floats rounded."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    return value


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | config | steps run | s/step | total s (at steps) | encode s | decode s | peak GiB | "
             "TFLOP/step | TFLOP/s | status |", "|" + "---|" * 11]
    for r in rows:
        total = fmt(r.get("total_s_at_steps"), ".2f") + (f" (extrap. from {r['steps_run']})"
                                                          if r.get("extrapolated") else "")
        lines.append(f"| {r['stage']} | {r['config']} | {r.get('steps_run', '-')} | "
                     f"{fmt(r.get('sec_per_step'), '.3f')} | {total} | {fmt(r.get('encode_s'), '.2f')} | "
                     f"{fmt(r.get('decode_s'), '.2f')} | {fmt(r.get('peak_gib'), '.2f')} | "
                     f"{fmt(r.get('tflop_per_step'), '.4g')} | {fmt(r.get('tflops_per_s'), '.4g')} | {r['status']} |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--stage", nargs="+", choices=("base", "refine"), default=["base"])
    ap.add_argument("--steps", type=int, help="sampler steps (default: 50 base / 30 refine at real size, 3 tiny)")
    ap.add_argument("--frames", type=int, help="frames (default 16 real, 4 tiny)")
    ap.add_argument("--configs", nargs="+", help="configuration names (see the module docstring); default: the "
                                                "stage's matrix for this device")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="start no configuration after this many seconds (the rest are reported as skipped)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", type=Path, help="append the JSON rows to this file")
    ap.add_argument("--table", type=Path, help="only print the Markdown table of a JSON-lines file and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return 0

    from i2vgen.errors import InputError
    from i2vgen.pipelines.common import check_device

    try:
        device = check_device(args.device)
        plans = [(stage, [Config.parse(c) for c in (args.configs or DEFAULT_CONFIGS[stage, device.type])])
                 for stage in args.stage]
    except (InputError, ValueError, KeyError) as err:
        print(f"bench_gpu: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusers.utils.logging.set_verbosity_error()  # "modules that should be kept in float32: []" on every cast
    env = environment(device)
    start, rows = time.perf_counter(), []
    for stage, configs in plans:
        shape = SHAPES[stage, args.size]
        shape = replace(shape, frames=args.frames) if args.frames else shape
        steps = args.steps or shape.steps
        for cfg in configs:
            row: dict[str, Any] = {"stage": stage, "config": cfg.name, "size": args.size, "width": shape.width,
                                   "height": shape.height, "frames": shape.frames, "steps": steps,
                                   "dtype": cfg.dtype, "sdpa": cfg.sdpa, "compile": cfg.compile,
                                   "channels_last": cfg.channels_last, "offload": cfg.offload, "tiled": cfg.tiled,
                                   "window": cfg.window, **env}
            reason = skip_reason(cfg, stage, device)
            if reason is None and time.perf_counter() - start > args.budget_s:
                reason = f"over --budget-s {args.budget_s:g}"
            if reason:
                row["status"] = f"skipped: {reason}"
            else:
                try:
                    row.update(run_config(stage, args.size, shape, cfg, steps, device))
                    row["status"] = "ok"
                except Exception as err:  # one failing configuration (an OOM, a missing kernel) ends only itself
                    row["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if cfg.compile:
                    torch._dynamo.reset()
            row = {k: clean(v) for k, v in row.items()}
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(line + "\n")
    print()
    print(f"{env['device_name']} ({env['device']}), torch {env['torch']}, size {args.size}, random weights; "
          f"{time.perf_counter() - start:.0f} s in all")
    print(markdown_table(rows))
    if args.size == "real":
        for stage in args.stage:
            secs, gib = GOALS[stage]
            print(f"goals, {stage}: " + (f"<= {secs:g} s for the full run, " if secs else "") + f"<= {gib:g} GiB peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
