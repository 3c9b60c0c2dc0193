"""`i2vgen generate`: animate a picture with a prompt (base stage; `--refine` adds the refinement stage), one image or
a batch list. All settings are checked by the application layer before a model loads; outputs never replace anything
unless `--overwrite`."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from i2vgen import reference
from i2vgen.app.settings import FAST
from i2vgen.errors import I2VGenError, InputError

BATCH_SEED_COLUMN = "seed"


def add_generate(sub: argparse._SubParsersAction) -> None:
    from i2vgen.cli.common import add_device_args
    from i2vgen.diffusion.sampler_table import sampler_names

    p = sub.add_parser("generate", help="animate an image with a text prompt (base stage; --refine adds the second)",
                       description="Animate an image with a prompt. Output format by extension: .mp4 (H.264), "
                                   ".gif, .webp, or a folder of PNG frames (no extension). An existing output is "
                                   "never replaced without --overwrite. With --refine the base stage runs at "
                                   f"{reference.CASCADE_WIDTH}x{reference.CASCADE_HEIGHT} and the refiner takes its "
                                   f"frames to {reference.REFINE_WIDTH}x{reference.REFINE_HEIGHT}.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="input image file")
    src.add_argument("--list", help="batch: a file of 'image_path|||caption[|||seed]' lines (paths relative to the "
                                    "file); --output is then a folder; a re-run skips videos made with the same "
                                    "settings and refuses ones made with others (--force redoes them)")
    p.add_argument("--prompt", help="text prompt (with --image)")
    p.add_argument("--output", "-o", required=True, help="output file (.mp4/.gif/.webp/folder) or, with --list, folder")
    p.add_argument("--model", default=reference.BASE_MODEL,
                   help=f"model folder, built-in name (tiny-shapes) or Hub id (default: {reference.BASE_MODEL})")
    p.add_argument("--frames", type=int, default=None,
                   help=f"number of frames (default {reference.NUM_FRAMES}, or the model's)")
    p.add_argument("--height", type=int, default=None,
                   help=f"base stage height (default {reference.HEIGHT}, or {reference.CASCADE_HEIGHT} with "
                        f"--refine; a tiny model's own size)")
    p.add_argument("--width", type=int, default=None,
                   help=f"base stage width (default {reference.WIDTH}, or {reference.CASCADE_WIDTH} with --refine; "
                        f"a tiny model's own size)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the sampler's, 50 for ddim)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance (default {reference.GUIDANCE}, the reference; a tiny model's "
                        f"own suggestion)")
    p.add_argument("--sampler", default=None, choices=sampler_names("base"), help="default ddim (--fast: its own)")
    p.add_argument("--timestep-spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="sampling grid (default: the model's suggestion, else the sampler's: leading for ddim)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (default: a random one, recorded); with --list item i uses SEED + i")
    p.add_argument("--fps", type=int, default=None,
                   help=f"fps condition of the model (default {reference.TARGET_FPS}, the reference; a tiny "
                        f"model's own)")
    p.add_argument("--save-fps", type=float, default=reference.SAVE_FPS,
                   help=f"frame rate of the written file (default {reference.SAVE_FPS:g}, as the reference saves)")
    p.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt (base stage)")
    p.add_argument("--force", action="store_true", help="with --list: redo items made with other settings")
    f = p.add_argument_group("speed (docs/benchmarks.md, 'Fewer UNet calls')")
    f.add_argument("--fast", action="store_true",
                   help="the measured fast preset: " + ", ".join(f"{k} {v}" for k, v in FAST.items())
                        + " (flags given explicitly win)")
    f.add_argument("--cfg-until", type=float, default=None,
                   help="guide only the first FRACTION of the steps; the rest run the conditional branch alone "
                        "(default 1: every step, the reference)")
    f.add_argument("--cache-interval", type=int, default=None,
                   help="step caching: every N-th step runs the whole UNet, the steps between reuse its deep "
                        "features (default 1: off)")
    f.add_argument("--cache-depth", type=int, default=None,
                   help="outer UNet levels a cached step recomputes (default 1)")
    r = p.add_argument_group("refinement stage (--refine)")
    r.add_argument("--refine", action="store_true", help="refine the base stage's frames (the I2VGen-XL cascade)")
    r.add_argument("--refiner-model", help="refiner model folder (unet/, vae/, text_encoder/, tokenizer/) or built-in "
                                           "name; the tiny-shapes model names its own refiner")
    r.add_argument("--refiner-unet", default=None, help="refiner UNet weights instead of REFINER_MODEL/unet")
    r.add_argument("--refine-width", type=int, default=None,
                   help=f"default {reference.REFINE_WIDTH} (a tiny model's own size)")
    r.add_argument("--refine-height", type=int, default=None,
                   help=f"default {reference.REFINE_HEIGHT} (a tiny model's own size)")
    r.add_argument("--strength", type=float, default=None,
                   help="how much the refiner re-generates: it noises to t = round(1000 * strength) - 1 "
                        f"(default {reference.STRENGTH}: the reference; a tiny model's own suggestion)")
    r.add_argument("--refine-guidance", type=float, default=None,
                   help=f"the refiner's classifier-free guidance (default {reference.REFINE_GUIDANCE}: the reference; "
                        "a tiny model's own suggestion; 1 runs no unconditional pass)")
    r.add_argument("--refine-sampler", default=None, choices=sampler_names("refine"),
                   help="the refiner's sampler (default dpmpp-2m-sde, the reference; a tiny model's own suggestion)")
    r.add_argument("--refine-steps", type=int, default=None, help="refiner steps (default: the sampler's, 30)")
    add_device_args(p, "one component on the device at a time (default with --refine: one stage at a time)")
    p.set_defaults(func=run_generate)


def settings_from_args(args: argparse.Namespace, prompt: str, seed: int | None):
    from i2vgen.app.settings import GenerationSettings
    from i2vgen.cli.common import device_settings

    speed = {"sampler": args.sampler, "steps": args.steps, "cfg_until": args.cfg_until,
             "cache_interval": args.cache_interval, "cache_depth": args.cache_depth}
    if args.fast:
        speed = {k: FAST.get(k) if v is None else v for k, v in speed.items()}
    speed = {k: v for k, v in speed.items() if v is not None}  # the rest: the settings' defaults
    return GenerationSettings(
        prompt=prompt, negative_prompt=args.negative_prompt, model=args.model, num_frames=args.frames,
        width=args.width, height=args.height, guidance=args.guidance,
        timestep_spacing=args.timestep_spacing, seed=seed, fps=args.fps, save_fps=args.save_fps, refine=args.refine,
        refiner_model=args.refiner_model, refiner_unet=args.refiner_unet, refine_width=args.refine_width,
        refine_height=args.refine_height, strength=args.strength, refine_guidance=args.refine_guidance,
        refine_sampler=args.refine_sampler, refine_steps=args.refine_steps, runtime=device_settings(args), **speed)


@dataclass
class Item:
    image: Path
    prompt: str
    seed: int | None  # None: random (not part of the resume key)
    output: Path


def read_list(path: Path) -> list[tuple[Path, str, int | None]]:
    """`image|||caption[|||seed]` lines -> (image path relative to the list, caption, seed or None). A UTF-8 BOM,
    CRLF line ends, blank lines and `#` comments are accepted."""
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start})") from None
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("|||")
        if len(parts) not in (2, 3) or not parts[0].strip():
            raise InputError(f"{path}:{n}: expected 'image_path|||caption[|||seed]', got {line[:60]!r}")
        seed = None
        if len(parts) == 3:
            try:
                seed = int(parts[2].strip())
            except ValueError:
                raise InputError(f"{path}:{n}: the seed column must be an integer, got {parts[2].strip()!r}") from None
        items.append((path.parent / parts[0].strip(), parts[1].strip(), seed))
    if not items:
        raise InputError(f"{path} lists no items")
    return items


def resume_key(settings, seed_given: bool) -> str:
    """A digest of every setting that changes the pixels (the seed only when the user chose it)."""
    key = settings.output_key()
    if not seed_given:
        key.pop("seed", None)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_generate(args: argparse.Namespace) -> int:
    from i2vgen.app.outputs import check_output, sidecar_path
    from i2vgen.app.run import prepare

    if args.image is not None:
        if args.prompt is None:
            raise InputError("--prompt is required with --image")
        s = prepare(settings_from_args(args, args.prompt, args.seed), image=args.image)
        check_output(args.output, overwrite=args.overwrite, inputs=[args.image],
                     size_bytes=_output_bytes(args.output, s))
        items = [(Item(Path(args.image), args.prompt, args.seed, Path(args.output)), s)]
        return _run(items, args, single=True)
    if args.prompt is not None:
        raise InputError("--prompt goes with --image; with --list each line carries its caption")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output must be a folder with --list: {out_dir} is a file")
    rows = read_list(Path(args.list))
    items, skipped, conflicts = [], 0, []
    for i, (image, caption, col_seed) in enumerate(rows):
        seed = col_seed if col_seed is not None else (None if args.seed is None else (args.seed + i) % 2**64)
        s = prepare(settings_from_args(args, caption, seed))
        out = out_dir / f"{i:05d}_{image.stem}.mp4"
        key = resume_key(s, seed is not None)
        if out.exists():
            old = _sidecar_key(sidecar_path(out))
            if old == key:
                skipped += 1
                continue
            if not args.force:
                conflicts.append(out.name)
                continue
        items.append((Item(image, caption, seed, out), s))
    if conflicts:
        raise InputError(f"{len(conflicts)} video(s) in {out_dir} were made with other settings (first: "
                         f"{conflicts[0]}); use the same settings to resume, another --output, or --force to redo "
                         f"them")
    if skipped:
        print(f"skipping {skipped} finished video(s)", file=sys.stderr)
    if items:
        check_output(out_dir / "x.mp4", overwrite=True, inputs=[args.list] + [str(it.image) for it, _ in items],
                     size_bytes=sum(_output_bytes(it.output, s) for it, s in items))
    return _run(items, args, single=False)


def _output_bytes(out: str | Path, s) -> int:
    from i2vgen.app.outputs import estimate_output_bytes, output_kind

    w, h = (s.refine_width, s.refine_height) if s.refine else (s.width, s.height)
    return estimate_output_bytes(output_kind(out), s.num_frames, w, h)


def _sidecar_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("settings_key")
    except (OSError, ValueError, AttributeError):
        return None


def _run(items: list, args: argparse.Namespace, single: bool) -> int:
    from i2vgen.app.outputs import write_output
    from i2vgen.app.run import generate, load_generation_pipeline
    from i2vgen.cli.common import Bars, show_plan

    if not items:
        return 0
    shown = show_plan(items[0][1])
    pipe = load_generation_pipeline(items[0][1])
    failures = 0
    for item, s in items:
        shown = show_plan(s, shown)
        bars = Bars(args.quiet, item.image.name)
        try:
            result = generate(pipe, s, str(item.image), on_step=bars)
            bars.close()
            result.metadata["settings_key"] = resume_key(s, item.seed is not None)
            write_output(result.frames, item.output, fps=result.fps, metadata=result.metadata,
                         overwrite=args.overwrite or (not single and args.force))
        except I2VGenError as e:
            bars.close()
            if single:
                raise
            failures += 1
            print(f"i2vgen: error: {item.image}: {' '.join(str(e).split())}", file=sys.stderr)
            continue
        print(f"wrote {item.output} ({s.num_frames} frames, seed {s.seed}, {result.metadata['seconds']} s)",
              file=sys.stderr)
    if failures:
        print(f"i2vgen: {failures} of {len(items)} item(s) failed", file=sys.stderr)
        return 1
    return 0
