"""`i2vgen train ...`: the training commands.

    i2vgen train config PRESET [--data LIST] [-o cfg.yaml]  write a preset's full configuration to edit
    i2vgen train base   --config cfg.yaml [--resume DIR]    train the base stage
    i2vgen train refine --config cfg.yaml [--resume DIR]    train the refinement stage

`--data SOURCE` (repeatable) sets `data.sources`: a file of `video_path|||caption` lines, a CSV, a JSONL or a folder.
`--set KEY=VALUE` (repeatable) changes one dotted field (`--set optim.lr=1e-4 --set max_steps=500`), the value read
as YAML. With `--resume` and no `--config`, the checkpoint's own configuration is used. Several
processes: `torchrun --nproc_per_node 8 -m i2vgen train base --config cfg.yaml` (docs/training.md).
`add_train_commands(subparsers)` registers the commands on the `i2vgen` parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from i2vgen.errors import InputError

if TYPE_CHECKING:
    from i2vgen.train.config import TrainConfig


# = i2vgen.train.config.PRESETS and i2vgen.train.recipe.RECIPES, named here so `--help` imports no torch (a test
# checks they agree)
PRESET_NAMES = ("i2vgen-xl-base", "i2vgen-xl-finetune", "i2vgen-xl-refine", "tiny", "tiny-refine")
RECIPE_NAMES = ("smoke", "tiny-shapes", "tiny-shapes-v1", "tiny-shapes-text", "tiny-shapes-t2i", "tiny-shapes-bound",
                "tiny-shapes-axis")


def add_train_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `train {config,base,refine}` on a top-level subparsers object; returns the `train` parser."""
    train = subparsers.add_parser("train", help="train the base or refinement stage (or write a config)",
                                  description="Train I2VGen-XL: phase 1 the base stage, phase 2 the refiner.")
    sub = train.add_subparsers(dest="train_command", required=True, metavar="STAGE")
    for stage, text in (("base", "the base stage (image + text -> video)"),
                        ("refine", "the refinement stage (text-guided video-to-video)")):
        p = sub.add_parser(stage, help=f"train {text}", description=f"Train {text}.")
        p.add_argument("--config", "-c", help="a YAML TrainConfig (see `i2vgen train config`); optional with --resume")
        p.add_argument("--resume", help="continue from a checkpoint folder, or a run folder's latest checkpoint")
        _add_data_argument(p)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a dotted config field, e.g. optim.lr=1e-4 (repeatable)")
        p.set_defaults(func=run_train, stage=stage)
    p = sub.add_parser("config", help="write a preset's configuration as YAML",
                       description="Write a preset's full TrainConfig as YAML, to edit and pass to --config.")
    p.add_argument("preset", choices=PRESET_NAMES)
    p.add_argument("--output", "-o", help="YAML file to write (default: print)")
    _add_data_argument(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a dotted config field, e.g. max_steps=500 (repeatable)")
    p.set_defaults(func=run_config)

    r = subparsers.add_parser(
        "train-recipe", help="train a whole tiny model from scratch (tiny-shapes: ~2.3 hours on 2 CPU cores)",
        description="Reproduce a shipped model from nothing: `tiny-shapes` trains the VAEs, then the base UNet at "
                    "32x32 (a curriculum of clips that share a first frame, then all clips) and the refiner at "
                    "64x64 on the synthetic shapes task, and writes the model folders "
                    "tiny-shapes/ and tiny-shapes-refiner/. Running it again into the same folder resumes: "
                    "finished stages are skipped, an interrupted one continues from its last checkpoint.")
    r.add_argument("recipe", choices=RECIPE_NAMES, help="tiny-shapes (the shipped model); tiny-shapes-v1 and "
                                                        "tiny-shapes-text (the models shipped before it); "
                                                        "tiny-shapes-t2i, tiny-shapes-bound and "
                                                        "tiny-shapes-axis (issue 11's experiments, "
                                                        "docs/tiny-shapes.md); smoke "
                                                        "(seconds)")
    r.add_argument("--output-dir", "-o", default=None, help="run folder (default runs/<recipe>)")
    r.add_argument("--export", default=None, metavar="DIR",
                   help="write the two model folders here (default: the run folder), e.g. src/i2vgen/assets")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2, the recipe's budget)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--base-only", action="store_true",
                   help="stop after the base UNet's stages and write only tiny-shapes/ (e.g. a new base beside a "
                        "refiner that the same refiner stages already trained)")
    r.set_defaults(func=run_recipe_command)
    return train


def _add_data_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[], metavar="SOURCE",
                   help="training data, replacing data.sources: a file of 'video_path|||caption' lines (relative "
                        "paths in it start at its folder), a CSV, a JSONL or a folder; repeatable")


def run_recipe_command(args: argparse.Namespace) -> int:
    from i2vgen.train.recipe import recipe, run_recipe

    cfg = recipe(args.recipe)
    cfg.output_dir = args.output_dir or f"runs/{args.recipe}"
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        cfg.threads = args.threads
    if args.seed is not None:
        cfg.seed = args.seed
    run_recipe(cfg, export_to=Path(args.export) if args.export else None, base_only=args.base_only)
    return 0


def _apply_sets(cfg: TrainConfig, sets: list[str], data: list[str] | None = None) -> TrainConfig:
    """`cfg` with the `--set KEY=VALUE` changes and, when given, `--data` as data.sources."""
    import yaml

    changes: dict[str, object] = {"data.sources": [_data_path(d) for d in data]} if data else {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            changes[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InputError(f"--set {key}: cannot read {value!r}: {' '.join(str(e).split())}") from None
    return cfg.replace(**changes) if changes else cfg


def _data_path(source: str) -> str:
    """A `--data` source as an absolute path, so that a written config works from any folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"--data {source}: no such file or folder")
    return os.path.abspath(path)


def load_run_config(config: str | None, resume: str | None, stage: str, sets: list[str],
                    data: list[str] | None = None) -> TrainConfig:
    """The configuration of a `train base|refine` call."""
    from i2vgen.train.checkpoint import find_checkpoint
    from i2vgen.train.config import TrainConfig

    if config is None:
        if resume is None:
            raise InputError("pass --config cfg.yaml (write one with `i2vgen train config PRESET`), or --resume")
        config = str(find_checkpoint(resume) / "config.yaml")
    cfg = _apply_sets(TrainConfig.load_yaml(config), sets, data)
    if cfg.stage != stage:
        raise InputError(f"{config} configures the {cfg.stage} stage; run `i2vgen train {cfg.stage}` "
                         f"(or set stage: {stage})")
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from i2vgen.train.trainer import train

    cfg = load_run_config(args.config, args.resume, args.stage, args.set, args.data)
    result = train(cfg, resume=args.resume)
    if result.checkpoint is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {result.step} steps; last checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def run_config(args: argparse.Namespace) -> int:
    from i2vgen.train.config import preset

    cfg = _apply_sets(preset(args.preset), args.set, args.data)
    if args.output:
        cfg.save_yaml(Path(args.output))
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(cfg.to_yaml())
    return 0
