"""`i2vgen convert`: UNet weights between the diffusers, VGen / ModelScope .pth and i2vgen formats."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from i2vgen.app.settings import DTYPES
from i2vgen.errors import InputError


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert UNet weights between diffusers, VGen/ModelScope .pth and i2vgen",
                       description="Convert a base or refiner UNet. SRC: a diffusers unet/ folder (or a model folder "
                                   "holding one), a VGen / ModelScope .pth, or an i2vgen folder.")
    p.add_argument("src")
    p.add_argument("dst", help="a folder (diffusers, i2vgen) or a .pth file (vgen); must not exist")
    p.add_argument("--to", default="i2vgen", choices=("diffusers", "vgen", "i2vgen"))
    p.add_argument("--dtype", default=None, choices=DTYPES, help="cast the weights (default: keep)")
    p.add_argument("--variant", default=None, help="weight variant of a diffusers SRC folder, e.g. fp16")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from i2vgen.app.run import torch_dtype
    from i2vgen.models.loading import load_unet, save_unet

    dst = Path(args.dst)
    if dst.exists():
        raise InputError(f"{dst} exists; choose a new destination")
    if args.to == "vgen" and dst.suffix not in (".pth", ".pt"):
        raise InputError(f"--to vgen writes a .pth file; got {dst}")
    model = load_unet(args.src, variant=args.variant)
    save_unet(model, dst, format=args.to, dtype=torch_dtype(args.dtype) if args.dtype else None)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {dst} ({args.to}, {type(model).__name__}, {n:,} parameters)", file=sys.stderr)
    return 0
