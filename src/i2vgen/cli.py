"""The `i2vgen` command: generate (optionally with the refinement stage), refine, convert, demo.

Every failure the user can cause ends in one line on stderr (`i2vgen: error: ...`) and a non-zero exit, with nothing
partially written: outputs are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from i2vgen.errors import I2VGenError, InputError

DTYPES = ("fp32", "fp16", "bf16")


def _dtype(name: str):  # noqa: ANN202 - torch imported lazily
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# ---- generate -----------------------------------------------------------------------------------------------------
def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="animate an image with a text prompt (base stage; --refine adds the second)",
                       description="Animate an image with a prompt. Output format by extension: .mp4 (H.264), "
                                   ".gif, .webp, or a folder of PNG frames (no extension). With --refine the base "
                                   "stage runs at 640x352 and the refiner takes its frames to 1280x720.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="input image file")
    src.add_argument("--list", help="batch: a file of 'image_path|||caption' lines (paths relative to the file); "
                                    "--output is then a folder, and finished videos are skipped on a re-run")
    p.add_argument("--prompt", help="text prompt (with --image)")
    p.add_argument("--output", "-o", required=True, help="output file (.mp4/.gif/.webp/folder) or, with --list, folder")
    p.add_argument("--model", default="ali-vilab/i2vgen-xl",
                   help="model folder, built-in name (tiny-shapes) or Hub id (default: ali-vilab/i2vgen-xl)")
    p.add_argument("--frames", type=int, default=None, help="number of frames (default 16, or the model's)")
    p.add_argument("--height", type=int, default=None,
                   help="base stage height (default 704, or 352 with --refine; a tiny model's own size)")
    p.add_argument("--width", type=int, default=None,
                   help="base stage width (default 1280, or 640 with --refine; a tiny model's own size)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance (default 9.0, the reference; a tiny model's own suggestion)")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "dpmpp-2m", "dpmpp-2m-sde"))
    p.add_argument("--timestep-spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="sampling grid (default: the model's suggestion, else leading for ddim, trailing otherwise)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, recorded)")
    p.add_argument("--fps", type=int, default=None,
                   help="fps condition of the model (default 16, the reference; a tiny model's own)")
    p.add_argument("--save-fps", type=float, default=8.0,
                   help="frame rate of the written file (default 8, as the reference saves)")
    p.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt (base stage)")
    r = p.add_argument_group("refinement stage (--refine)")
    r.add_argument("--refine", action="store_true", help="refine the base stage's frames (the I2VGen-XL cascade)")
    r.add_argument("--refiner-model", help="refiner model folder (unet/, vae/, text_encoder/, tokenizer/) or built-in "
                                           "name; the tiny-shapes model names its own refiner")
    r.add_argument("--refiner-unet", default=None, help="refiner UNet weights instead of REFINER_MODEL/unet")
    r.add_argument("--refine-width", type=int, default=None, help="default 1280 (a tiny model's own size)")
    r.add_argument("--refine-height", type=int, default=None, help="default 720 (a tiny model's own size)")
    r.add_argument("--strength", type=float, default=None,
                   help="how much the refiner re-generates: it noises to t = round(1000 * strength) - 1 "
                        "(default 0.6: t = 599, the reference; a tiny model's own suggestion)")
    r.add_argument("--refine-steps", type=int, default=None, help="refiner steps (default 30, DPM-Solver++ 2M SDE)")
    _add_device_args(p, "one component on the device at a time (default with --refine: one stage at a time)")
    p.set_defaults(func=run_generate)


def _add_device_args(p: argparse.ArgumentParser, offload_help: str) -> None:
    p.add_argument("--dtype", default="fp32", choices=DTYPES)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--variant", default=None, help="weight variant of the model folder, e.g. fp16")
    p.add_argument("--offload", action="store_true", help=f"model CPU offload: {offload_help}")
    p.add_argument("--sequential-cfg", action="store_true", help="guidance as two forwards (less memory)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="apply a LoRA adapter saved by `i2vgen train` to the UNet (repeatable; scale default 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _read_list(path: Path) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "|||" not in line:
            raise InputError(f"{path}:{n}: expected 'image_path|||caption', got {line[:60]!r}")
        img, caption = line.split("|||", 1)
        items.append(((path.parent / img.strip()), caption.strip()))
    if not items:
        raise InputError(f"{path} lists no items")
    return items


def run_generate(args: argparse.Namespace) -> int:
    from i2vgen.io import load_image, output_kind

    if args.image is not None:
        if not args.prompt:
            raise InputError("--prompt is required with --image")
        output_kind(args.output)  # an unknown extension fails before any work
        load_image(args.image)  # a bad image fails before the model is loaded
        jobs = [(Path(args.image), args.prompt, Path(args.output))]
    else:
        out_dir = Path(args.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--output must be a folder with --list: {out_dir} is a file")
        items = _read_list(Path(args.list))
        jobs = [(img, cap, out_dir / f"{i:05d}_{img.stem}.mp4") for i, (img, cap) in enumerate(items)]
        done = [j for j in jobs if j[2].exists()]
        jobs = [j for j in jobs if not j[2].exists()]
        if done:
            print(f"skipping {len(done)} finished video(s)", file=sys.stderr)
    apply_model_defaults(args)
    for name, v in (("--frames", args.frames), ("--steps", args.steps)):
        if v < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    if args.guidance < 0:
        raise InputError(f"--guidance must be >= 0, got {args.guidance}")
    if args.refine:
        if not args.refiner_model:
            raise InputError("--refine needs --refiner-model (a folder with unet/, vae/, text_encoder/, tokenizer/)")
        _check_refine_settings(args.refiner_model, args.refiner_unet, args.refine_width, args.refine_height,
                               args.strength, "dpmpp-2m-sde", args.refine_steps)
    if not jobs:
        return 0
    pipe = _load_base_pipeline(args)
    failures = 0
    for image, prompt, out in jobs:
        try:
            generate_one(pipe, args, image, prompt, out)
        except I2VGenError as e:
            if args.image is not None:
                raise
            failures += 1
            print(f"i2vgen: error: {image}: {e}", file=sys.stderr)
    if failures:
        print(f"i2vgen: {failures} of {len(jobs)} item(s) failed", file=sys.stderr)
        return 1
    return 0


def apply_model_defaults(args: argparse.Namespace) -> None:
    """Fill the size, frame, fps, guidance and strength flags left unset: from the model folder's suggestions
    (`_i2vgen_defaults`, the tiny models), else the reference's (16 frames at 1280x704, or 640x352 refined to
    1280x720; fps 16; guidance 9.0; strength 0.6)."""
    from i2vgen.pipelines.common import REFERENCE_GUIDANCE, REFERENCE_STRENGTH, model_defaults

    d = model_defaults(args.model)
    base_w, base_h = (640, 352) if args.refine and "width" not in d else (1280, 704)
    for name, key, fallback in (("frames", "num_frames", 16), ("width", "width", base_w),
                                ("height", "height", base_h), ("fps", "target_fps", 16),
                                ("guidance", "guidance_scale", REFERENCE_GUIDANCE),
                                ("refine_width", "refine_width", 1280), ("refine_height", "refine_height", 720),
                                ("strength", "refine_strength", REFERENCE_STRENGTH),
                                ("refiner_model", "refiner", None), ("timestep_spacing", "timestep_spacing", None)):
        if getattr(args, name, None) is None:
            setattr(args, name, d.get(key, fallback))


def _load_base_pipeline(args: argparse.Namespace):  # noqa: ANN202
    """The base pipeline, or with --refine the cascade (one stage on the device at a time, or one component)."""
    from i2vgen.pipelines.base import I2VGenPipeline

    loras = _lora_specs(args.lora)  # a bad adapter path fails before the model loads
    pipe = I2VGenPipeline.from_pretrained(args.model, dtype=_dtype(args.dtype), variant=args.variant)
    _apply_loras(pipe.unet, loras)
    if args.refine:
        from i2vgen.pipelines.cascade import I2VGenCascadePipeline

        refiner = _load_refiner(args.refiner_model, args.refiner_unet, args)
        return I2VGenCascadePipeline(pipe, refiner, device=args.device, offload="model" if args.offload else "stage")
    return pipe.enable_model_cpu_offload(args.device) if args.offload else pipe.to(args.device)


def generate_one(pipe, args: argparse.Namespace, image: Path, prompt: str, out: Path) -> dict[str, Any]:  # noqa: ANN001
    import torch

    from i2vgen.io import write_sidecar_json, write_video
    from i2vgen.pipelines.base import DEFAULT_NEGATIVE_PROMPT

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    bars = _Bars(args.quiet)
    t0 = time.time()
    generator = torch.Generator().manual_seed(seed)
    base_kw = {"negative_prompt": negative, "target_fps": args.fps, "num_inference_steps": args.steps,
               "guidance_scale": args.guidance, "sampler": args.sampler, "sequential_cfg": args.sequential_cfg,
               "timestep_spacing": args.timestep_spacing,
               "callback": bars.callback(args.steps, f"{image.name}")}
    meta = {"prompt": prompt, "negative_prompt": negative, "seed": seed, "sampler": args.sampler,
            "steps": args.steps, "timestep_spacing": args.timestep_spacing, "guidance": args.guidance,
            "fps_condition": args.fps, "model": str(args.model),
            "image": str(image), "frames": args.frames, "width": args.width, "height": args.height}
    if args.refine:
        from i2vgen.pipelines.refine import DEFAULT_STEPS, strength_to_t_start

        steps = args.refine_steps or DEFAULT_STEPS["dpmpp-2m-sde"]
        refine_kw = {"num_inference_steps": steps, "sequential_cfg": args.sequential_cfg,
                     "callback": bars.callback(steps, f"{image.name} refine")}
        frames = pipe(str(image), prompt, num_frames=args.frames, width=args.width, height=args.height,
                      refine_width=args.refine_width, refine_height=args.refine_height, strength=args.strength,
                      generator=generator, base_kwargs=base_kw, refine_kwargs=refine_kw, output_type="np")[0]
        meta.update(width=args.refine_width, height=args.refine_height, base_width=args.width,
                    base_height=args.height, refine={
                        "model": str(args.refiner_model), "unet": args.refiner_unet, "strength": args.strength,
                        "t_start": strength_to_t_start(args.strength), "steps": steps, "sampler": "dpmpp-2m-sde"})
    else:
        frames = pipe(str(image), prompt, num_frames=args.frames, height=args.height, width=args.width,
                      generator=generator, output_type="np", **base_kw)[0]
    bars.close()
    meta.update(seconds=round(time.time() - t0, 2), generator="i2vgen")
    write_video(frames, out, fps=args.save_fps, metadata=meta)
    write_sidecar_json(_sidecar(out), meta)
    print(f"wrote {out} ({args.frames} frames, seed {seed}, {meta['seconds']} s)", file=sys.stderr)
    return meta


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name.rstrip("/") + ".json")


def _progress(total: int, desc: str, disable: bool):  # noqa: ANN202
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=disable, leave=False)


class _Bars:
    """One progress bar per stage, each opened at its stage's first step (the previous one is closed then)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def callback(self, total: int, desc: str):  # noqa: ANN202
        def step(i: int, t: float, x0: Any) -> None:
            if i == 0:
                self.close()
                self.bar = _progress(total, desc, disable=self.quiet)
            self.bar.update(1)

        return step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- refine -------------------------------------------------------------------------------------------------------
def add_refine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="refine a video to 1280x720 with a text prompt (refinement stage)",
                       description="Refine any video with the MS-Vid2Vid-XL refiner: its frames are resized to the "
                                   "target size, noised part of the way (--strength) and denoised guided by the "
                                   "prompt. Long videos are refined in overlapping windows of frames. Output format "
                                   "by extension: .mp4 (H.264), .gif, .webp, or a folder of PNG frames.")
    p.add_argument("--video", required=True, help="input video (anything FFmpeg reads; audio is ignored; a variable "
                                                  "frame rate is resampled to constant fps)")
    p.add_argument("--prompt", default="", help="what the video shows (the reference's quality suffix is appended)")
    p.add_argument("--output", "-o", required=True, help="output file (.mp4/.gif/.webp) or folder")
    p.add_argument("--model", required=True, help="refiner model folder (unet/, vae/, text_encoder/, tokenizer/)")
    p.add_argument("--unet", default=None, help="refiner UNet weights instead of MODEL/unet, e.g. non_ema_0035000.pth")
    p.add_argument("--width", type=int, default=None, help="default 1280 (a tiny model's own size)")
    p.add_argument("--height", type=int, default=None, help="default 720 (a tiny model's own size)")
    p.add_argument("--strength", type=float, default=None,
                   help="how much is re-generated: noise to t = round(1000 * strength) - 1 (default 0.6: t = 599, "
                        "the reference, or a tiny model's own suggestion; lower keeps more of the input)")
    p.add_argument("--sampler", default="dpmpp-2m-sde", choices=("dpmpp-2m-sde", "heun"))
    p.add_argument("--steps", type=int, default=None, help="default 30 (dpmpp-2m-sde) or 50 (heun)")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--guidance-rescale", type=float, default=0.2)
    p.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt")
    p.add_argument("--no-suffix", action="store_true", help="do not append the reference's positive suffix")
    p.add_argument("--window", type=int, default=32, help="frames per temporal window (default 32; 0: all at once)")
    p.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows (default "
                                                             "window / 4)")
    p.add_argument("--max-frames", type=int, default=None, help="refine only the first N frames")
    p.add_argument("--resize", default="stretch", choices=("stretch", "crop"),
                   help="stretch to the target size (reference) or scale to cover it and crop the centre")
    p.add_argument("--save-fps", type=float, default=None, help="frame rate of the written file (default: the input's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, recorded)")
    _add_device_args(p, "one component on the device at a time")
    p.set_defaults(func=run_refine)


def _check_refine_settings(model: str, unet: str | None, width: int, height: int, strength: float, sampler: str,
                           steps: int | None) -> None:
    """Strength, steps and the target size (against the folder's JSON configs) before any weights load."""
    from i2vgen.pipelines.refine import check_target_size, folder_geometry, sampling_timesteps

    sampling_timesteps(strength, sampler, steps)
    geometry = folder_geometry(model, unet)
    if geometry is not None:
        check_target_size(width, height, *geometry)
    elif width < 1 or height < 1:
        raise InputError(f"refine width and height must be positive, got {width}x{height}")


def _load_refiner(model: str, unet: str | None, args: argparse.Namespace,  # noqa: ANN202
                  loras: list[tuple[str, float]] = ()):
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    pipe = I2VGenRefinePipeline.from_pretrained(model, unet=unet, dtype=_dtype(args.dtype), variant=args.variant)
    _apply_loras(pipe.unet, loras)
    return pipe


def _lora_specs(specs: list[str]) -> list[tuple[str, float]]:
    from i2vgen.train.lora import parse_lora_spec

    out = [parse_lora_spec(s) for s in specs]
    for path, _ in out:
        if not Path(path).exists():
            raise InputError(f"LoRA adapter not found: {path}")
    return out


def _apply_loras(unet, loras: list[tuple[str, float]]) -> None:  # noqa: ANN001
    if loras:
        from i2vgen.train.lora import apply_lora

        for path, scale in loras:
            apply_lora(unet, path, scale)


def run_refine(args: argparse.Namespace) -> int:
    from i2vgen.io import output_kind
    from i2vgen.pipelines.common import REFERENCE_STRENGTH, model_defaults
    from i2vgen.pipelines.refine import check_refine_args, load_video

    output_kind(args.output)  # an unknown extension fails before any work
    d = model_defaults(args.model)
    args.width = d.get("width", 1280) if args.width is None else args.width
    args.height = d.get("height", 720) if args.height is None else args.height
    args.strength = d.get("strength", REFERENCE_STRENGTH) if args.strength is None else args.strength
    window = args.window or None
    if args.window < 0:
        raise InputError(f"--window must be >= 0, got {args.window}")
    overlap = args.overlap if args.overlap is not None else (window or 0) // 4
    check_refine_args(args.guidance, args.guidance_rescale, window, overlap)
    if args.save_fps is not None and not args.save_fps > 0:
        raise InputError(f"--save-fps must be > 0, got {args.save_fps}")
    _check_refine_settings(args.model, args.unet, args.width, args.height, args.strength, args.sampler, args.steps)
    loras = _lora_specs(args.lora)
    frames, fps, notes = load_video(args.video, max_frames=args.max_frames)  # a bad video fails before loading
    for note in notes:
        print(f"i2vgen: note: {note}", file=sys.stderr)
    h, w = frames.shape[1:3]
    if args.resize == "stretch" and abs((w / h) / (args.width / args.height) - 1) > 0.02:
        print(f"i2vgen: note: the {w}x{h} input is stretched to {args.width}x{args.height}; --resize crop keeps its "
              f"aspect", file=sys.stderr)
    pipe = _load_refiner(args.model, args.unet, args, loras)
    pipe = pipe.enable_model_cpu_offload(args.device) if args.offload else pipe.to(args.device)
    refine_one(pipe, args, frames, fps, window, overlap)
    return 0


def refine_one(pipe, args: argparse.Namespace, frames: Any, fps: float, window: int | None,  # noqa: ANN001
               overlap: int) -> dict[str, Any]:
    import torch

    from i2vgen.io import write_sidecar_json, write_video
    from i2vgen.pipelines.refine import DEFAULT_NEGATIVE_PROMPT, DEFAULT_STEPS, POSITIVE_SUFFIX, strength_to_t_start

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    suffix = "" if args.no_suffix else POSITIVE_SUFFIX
    steps = args.steps or DEFAULT_STEPS[args.sampler]
    bars = _Bars(args.quiet)
    t0 = time.time()
    out = pipe(frames, args.prompt, negative_prompt=negative, positive_suffix=suffix, width=args.width,
               height=args.height, strength=args.strength, num_inference_steps=steps, sampler=args.sampler,
               guidance_scale=args.guidance, guidance_rescale=args.guidance_rescale, window_size=window,
               window_overlap=overlap, resize_mode=args.resize, generator=torch.Generator().manual_seed(seed),
               sequential_cfg=args.sequential_cfg, callback=bars.callback(steps, Path(args.video).name),
               output_type="np")[0]
    bars.close()
    save_fps = args.save_fps or fps
    meta = {"prompt": args.prompt, "positive_suffix": suffix, "negative_prompt": negative, "seed": seed,
            "sampler": args.sampler, "steps": steps, "guidance": args.guidance,
            "guidance_rescale": args.guidance_rescale, "strength": args.strength,
            "t_start": strength_to_t_start(args.strength), "model": str(args.model), "unet": args.unet,
            "input": str(args.video), "input_fps": fps, "fps": save_fps, "frames": len(out), "width": args.width,
            "height": args.height, "resize": args.resize, "window": window, "overlap": overlap,
            "seconds": round(time.time() - t0, 2), "generator": "i2vgen", "stage": "refine"}
    out_path = Path(args.output)
    write_video(out, out_path, fps=save_fps, metadata=meta)
    write_sidecar_json(_sidecar(out_path), meta)
    print(f"wrote {out_path} ({len(out)} frames at {args.width}x{args.height}, seed {seed}, {meta['seconds']} s)",
          file=sys.stderr)
    return meta


# ---- convert ------------------------------------------------------------------------------------------------------
def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert UNet weights between diffusers, VGen/ModelScope .pth and i2vgen",
                       description="Convert a base or refiner UNet. SRC: a diffusers unet/ folder (or a model folder "
                                   "holding one), a VGen / ModelScope .pth, or an i2vgen folder.")
    p.add_argument("src")
    p.add_argument("dst", help="a folder (diffusers, i2vgen) or a .pth file (vgen)")
    p.add_argument("--to", default="i2vgen", choices=("diffusers", "vgen", "i2vgen"))
    p.add_argument("--dtype", default=None, choices=DTYPES, help="cast the weights (default: keep)")
    p.add_argument("--variant", default=None, help="weight variant of a diffusers SRC folder, e.g. fp16")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from i2vgen.models.loading import load_unet, save_unet

    dst = Path(args.dst)
    if dst.exists():
        raise InputError(f"{dst} exists; choose a new destination")
    if args.to == "vgen" and dst.suffix not in (".pth", ".pt"):
        raise InputError(f"--to vgen writes a .pth file; got {dst}")
    dtype = _dtype(args.dtype) if args.dtype else None
    model = load_unet(args.src, variant=args.variant)
    save_unet(model, dst, format=args.to, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {dst} ({args.to}, {type(model).__name__}, {n:,} parameters)", file=sys.stderr)
    return 0


# ---- demo ---------------------------------------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline demo on the embedded tiny model: writes demo.mp4 and demo.gif")
    p.add_argument("--output-dir", default=".", help="where demo.mp4 / demo.gif go (default: here)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from i2vgen.demo import run

    return run(Path(args.output_dir), seed=args.seed)


# ---- entry point --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from i2vgen import __version__
    from i2vgen.eval import add_eval_command
    from i2vgen.shapes_eval import add_eval_shapes_command
    from i2vgen.train.cli import add_train_commands

    parser = argparse.ArgumentParser(prog="i2vgen", description="I2VGen-XL: image-to-video diffusion, both stages.")
    parser.add_argument("--version", action="version", version=f"i2vgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate(sub)
    add_refine(sub)
    add_convert(sub)
    add_demo(sub)
    add_eval_command(sub)
    add_eval_shapes_command(sub)
    add_train_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except I2VGenError as e:
        print(f"i2vgen: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("i2vgen: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except MemoryError:
        print("i2vgen: error: out of memory; try smaller --frames/--height/--width, --offload or --dtype bf16",
              file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
