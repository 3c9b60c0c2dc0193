"""The `i2vgen` command: generate, convert, demo.

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
    p = sub.add_parser("generate", help="animate an image with a text prompt (base stage)",
                       description="Animate an image with a prompt. Output format by extension: .mp4 (H.264), "
                                   ".gif, .webp, or a folder of PNG frames (no extension).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="input image file")
    src.add_argument("--list", help="batch: a file of 'image_path|||caption' lines (paths relative to the file); "
                                    "--output is then a folder, and finished videos are skipped on a re-run")
    p.add_argument("--prompt", help="text prompt (with --image)")
    p.add_argument("--output", "-o", required=True, help="output file (.mp4/.gif/.webp/folder) or, with --list, folder")
    p.add_argument("--model", default="ali-vilab/i2vgen-xl",
                   help="model folder, built-in name (tiny-shapes) or Hub id (default: ali-vilab/i2vgen-xl)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=9.0)
    p.add_argument("--sampler", default="ddim", choices=("ddim", "dpmpp-2m", "dpmpp-2m-sde"))
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, recorded)")
    p.add_argument("--fps", type=int, default=16, help="fps condition of the model (default 16, the reference)")
    p.add_argument("--save-fps", type=float, default=8.0,
                   help="frame rate of the written file (default 8, as the reference saves)")
    p.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt")
    p.add_argument("--dtype", default="fp32", choices=DTYPES)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--variant", default=None, help="weight variant of the model folder, e.g. fp16")
    p.add_argument("--offload", action="store_true", help="model CPU offload: one component on the device at a time")
    p.add_argument("--sequential-cfg", action="store_true", help="guidance as two forwards (less memory)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)


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
    for name, v in (("--frames", args.frames), ("--steps", args.steps)):
        if v < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    if args.guidance < 0:
        raise InputError(f"--guidance must be >= 0, got {args.guidance}")
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


def _load_base_pipeline(args: argparse.Namespace):  # noqa: ANN202
    from i2vgen.pipelines.base import I2VGenPipeline

    pipe = I2VGenPipeline.from_pretrained(args.model, dtype=_dtype(args.dtype), variant=args.variant)
    return pipe.enable_model_cpu_offload(args.device) if args.offload else pipe.to(args.device)


def generate_one(pipe, args: argparse.Namespace, image: Path, prompt: str, out: Path) -> dict[str, Any]:  # noqa: ANN001
    import torch

    from i2vgen.io import write_sidecar_json, write_video
    from i2vgen.pipelines.base import DEFAULT_NEGATIVE_PROMPT

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    bar = _progress(args.steps, f"{image.name}", disable=args.quiet)
    t0 = time.time()
    frames = pipe(str(image), prompt, negative_prompt=negative, num_frames=args.frames, height=args.height,
                  width=args.width, target_fps=args.fps, num_inference_steps=args.steps,
                  guidance_scale=args.guidance, sampler=args.sampler, generator=torch.Generator().manual_seed(seed),
                  sequential_cfg=args.sequential_cfg, callback=lambda i, t, x0: bar.update(1), output_type="np")[0]
    bar.close()
    meta = {"prompt": prompt, "negative_prompt": negative, "seed": seed, "sampler": args.sampler,
            "steps": args.steps, "guidance": args.guidance, "fps_condition": args.fps, "model": str(args.model),
            "image": str(image), "frames": args.frames, "width": args.width, "height": args.height,
            "seconds": round(time.time() - t0, 2), "generator": "i2vgen"}
    write_video(frames, out, fps=args.save_fps, metadata=meta)
    write_sidecar_json(_sidecar(out), meta)
    print(f"wrote {out} ({args.frames} frames, seed {seed}, {meta['seconds']} s)", file=sys.stderr)
    return meta


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name.rstrip("/") + ".json")


def _progress(total: int, desc: str, disable: bool):  # noqa: ANN202
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=disable, leave=False)


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

    parser = argparse.ArgumentParser(prog="i2vgen", description="I2VGen-XL: image-to-video diffusion, both stages.")
    parser.add_argument("--version", action="version", version=f"i2vgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate(sub)
    add_convert(sub)
    add_demo(sub)
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
