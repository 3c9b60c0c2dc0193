"""`i2vgen demo`: the offline demo on the embedded tiny model (`i2vgen.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline demo on the embedded tiny model: writes demo.mp4 and demo.gif")
    p.add_argument("--output-dir", default=".", help="where demo.mp4 / demo.gif go (default: here)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from i2vgen.demo import run

    return run(Path(args.output_dir), seed=args.seed)
