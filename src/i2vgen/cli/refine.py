"""`i2vgen refine`: the refinement stage alone, on any video. Settings and the input are checked (the video probed
before it is decoded) and the output path cleared before the refiner loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from i2vgen import reference


def add_refine(sub: argparse._SubParsersAction) -> None:
    from i2vgen.cli.common import add_device_args
    from i2vgen.diffusion.sampler_table import sampler_names

    p = sub.add_parser("refine", help=f"refine a video to {reference.REFINE_WIDTH}x{reference.REFINE_HEIGHT} with a "
                                      f"text prompt (refinement stage)",
                       description="Refine any video with the MS-Vid2Vid-XL refiner: its frames are resized to the "
                                   "target size, noised part of the way (--strength) and denoised guided by the "
                                   "prompt. Long videos are refined in overlapping windows of frames. Output format "
                                   "by extension: .mp4 (H.264), .gif, .webp, or a folder of PNG frames. An existing "
                                   "output is never replaced without --overwrite, and never by the input.")
    p.add_argument("--video", required=True, help="input video (anything FFmpeg reads; audio is ignored; a variable "
                                                  "frame rate is resampled to constant fps)")
    p.add_argument("--prompt", default="", help="what the video shows (the reference's quality suffix is appended)")
    p.add_argument("--output", "-o", required=True, help="output file (.mp4/.gif/.webp) or folder")
    p.add_argument("--model", required=True, help="refiner model folder (unet/, vae/, text_encoder/, tokenizer/)")
    p.add_argument("--unet", default=None, help="refiner UNet weights instead of MODEL/unet, e.g. non_ema_0035000.pth")
    p.add_argument("--width", type=int, default=None,
                   help=f"default {reference.REFINE_WIDTH} (a tiny model's own size)")
    p.add_argument("--height", type=int, default=None,
                   help=f"default {reference.REFINE_HEIGHT} (a tiny model's own size)")
    p.add_argument("--strength", type=float, default=None,
                   help="how much is re-generated: noise to t = round(1000 * strength) - 1 (default "
                        f"{reference.STRENGTH}, the reference, or a tiny model's own suggestion; lower keeps more of "
                        f"the input)")
    p.add_argument("--sampler", default=None, choices=sampler_names("refine"),
                   help="default dpmpp-2m-sde (the reference), or a tiny model's own suggestion")
    p.add_argument("--steps", type=int, default=None, help="default: the sampler's (30 for dpmpp-2m-sde)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance (default {reference.REFINE_GUIDANCE}, the reference, or a tiny "
                        "model's own suggestion; 1 runs no unconditional pass)")
    p.add_argument("--guidance-rescale", type=float, default=reference.REFINE_GUIDANCE_RESCALE)
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
    add_device_args(p, "one component on the device at a time")
    p.set_defaults(func=run_refine)


def run_refine(args: argparse.Namespace) -> int:
    from i2vgen.app.outputs import check_output, estimate_output_bytes, output_kind, write_output
    from i2vgen.app.run import load_refine_pipeline, prepare_refine, refine
    from i2vgen.app.settings import RefineSettings
    from i2vgen.cli.common import Bars, device_settings, show_plan

    output_kind(args.output)  # an unknown extension fails before any work
    settings = RefineSettings(
        model=args.model, unet=args.unet, prompt=args.prompt, negative_prompt=args.negative_prompt,
        positive_suffix=not args.no_suffix, width=args.width, height=args.height, strength=args.strength,
        sampler=args.sampler, steps=args.steps, guidance=args.guidance, guidance_rescale=args.guidance_rescale,
        window=args.window, overlap=args.overlap, max_frames=args.max_frames, resize=args.resize,
        save_fps=args.save_fps, seed=args.seed, runtime=device_settings(args))
    check_output(args.output, overwrite=args.overwrite, inputs=[args.video])  # before the video is decoded
    s, video = prepare_refine(settings, args.video)
    check_output(args.output, overwrite=args.overwrite, inputs=[args.video],
                 size_bytes=estimate_output_bytes(output_kind(args.output), len(video.frames), s.width, s.height))
    for note in video.notes:
        print(f"i2vgen: note: {note}", file=sys.stderr)
    h, w = video.frames.shape[1:3]
    if s.resize == "stretch" and abs((w / h) / (s.width / s.height) - 1) > 0.02:
        print(f"i2vgen: note: the {w}x{h} input is stretched to {s.width}x{s.height}; --resize crop keeps its "
              f"aspect", file=sys.stderr)
    show_plan(s)
    pipe = load_refine_pipeline(s)
    bars = Bars(args.quiet, Path(args.video).name)
    try:
        result = refine(pipe, s, video, on_step=bars)
    finally:
        bars.close()
    write_output(result.frames, args.output, fps=result.fps, metadata=result.metadata, overwrite=args.overwrite)
    print(f"wrote {args.output} ({len(result.frames)} frames at {s.width}x{s.height}, seed {s.seed}, "
          f"{result.metadata['seconds']} s)", file=sys.stderr)
    return 0
