"""`i2vgen demo` / `make demo`: the whole two-stage pipeline, offline, on the embedded tiny-shapes model.

A shipped picture (`assets/samples/red-circle.png`, a red circle on light grey) and a prompt go through the base stage
at 32x32 (CLIP text and image encoders, VAE, the I2VGen-XL base UNet, DPM-Solver++ with classifier-free guidance),
then the refiner at 64x64; the result is written as demo.mp4 and demo.gif with a JSON sidecar. To show that the prompt
steers the motion, the same picture is also animated with the four directions ("a red circle moves left / right /
up / down", base stage, same seed) side by side in demo-directions.gif and .mp4. Installations without the
embedded model (it is package data) fall back to a tiny model with random weights and say so.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2vgen.io import write_sidecar_json, write_video
from i2vgen.model_paths import ASSETS, BUILTIN_MODELS

PROMPT = "a red circle moves right"
DIRECTION_PROMPTS = tuple(f"a red circle moves {d}" for d in ("left", "right", "up", "down"))
SAMPLE_IMAGE = ASSETS / "samples" / "red-circle.png"
REFINE_STEPS = 20  # the base stage runs the `--fast` preset (app.settings.FAST: DDIM-50 quality, docs/benchmarks.md)
RANDOM_WEIGHTS_NOTE = """\
NOTE: the embedded tiny-shapes model is missing from this installation. The demo runs the complete pipeline on a
tiny model with RANDOM weights instead, so the video shows noise, not motion."""


def sample_image(size: int = 64) -> Image.Image:
    """The shipped sample picture, or the same scene rendered when the file is missing."""
    if SAMPLE_IMAGE.is_file():
        return Image.open(SAMPLE_IMAGE).convert("RGB")
    return Image.fromarray(render_sample(size))


def render_sample(size: int = 64):  # noqa: ANN201 - numpy array
    """A red circle left of centre on light grey, as the shapes task draws it (its start allows every direction)."""
    from i2vgen.shapes import Shape, render

    circle = Shape("circle", "red", "right", "", (0.42, 0.5), 0.12, 0.2)
    return render([circle], "light grey", size=size, num_frames=2)[0][0]


def run(out_dir: Path, seed: int = 0) -> int:
    from i2vgen.app.run import (
        RefineInput,
        generate,
        load_generation_pipeline,
        load_refine_pipeline,
        prepare,
        refine,
    )
    from i2vgen.app.settings import FAST, GenerationSettings, RefineSettings
    from i2vgen.pipelines.base import I2VGenPipeline

    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = BUILTIN_MODELS["tiny-shapes"].is_dir() and BUILTIN_MODELS["tiny-shapes-refiner"].is_dir()
    generator = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        if trained:
            # the folders' suggestions, chosen on held-out clips (docs/tiny-shapes.md): size, guidance 2.0, the
            # trailing grid; the refiner's strength, guidance and sampler (`train.recipe.model_defaults`)
            picture = sample_image()
            settings = {p: prepare(GenerationSettings(prompt=p, model="tiny-shapes", seed=seed, **FAST),
                                   image=picture)
                        for p in DIRECTION_PROMPTS}
            s = settings[PROMPT]
            base = load_generation_pipeline(s)
            # the picture with each of the four prompts (same seed); the one of PROMPT also goes through the refiner
            tiles = [generate(base, settings[p], picture).frames for p in DIRECTION_PROMPTS]  # (F, H, W, 3) each
            rs = RefineSettings(model=s.refiner_model, prompt=PROMPT, width=s.refine_width, height=s.refine_height,
                                strength=s.strength, guidance=s.refine_guidance, sampler=s.refine_sampler,
                                steps=REFINE_STEPS, seed=seed).resolved()
            refined = refine(load_refine_pipeline(rs), rs,
                             RefineInput(tiles[DIRECTION_PROMPTS.index(PROMPT)], s.fps, [], SAMPLE_IMAGE.name))
            frames = refined.frames
            grid = np.concatenate([np.kron(t, np.ones((1, 2, 2, 1))) for t in tiles], axis=2)  # (F, 64, 256, 3)
            meta = {"model": "tiny-shapes + tiny-shapes-refiner",
                    "base": {"size": f"{s.width}x{s.height}", "sampler": s.sampler, "steps": s.steps,
                             "guidance": s.guidance, "timestep_spacing": s.timestep_spacing,
                             "cfg_until": s.cfg_until, "cache_interval": s.cache_interval},
                    "refine": {"size": f"{rs.width}x{rs.height}", "sampler": rs.sampler, "steps": rs.steps,
                               "strength": rs.strength, "guidance": rs.guidance}}
            directions_meta = {**meta["base"], "prompts": list(DIRECTION_PROMPTS), "seed": seed,
                               "layout": "left to right: " + ", ".join(DIRECTION_PROMPTS) + " (2x nearest up-scaling)"}
        else:
            from i2vgen.models.tiny import random_components, write_model_folder

            print(RANDOM_WEIGHTS_NOTE, file=sys.stderr)
            folder = write_model_folder(random_components(seed), Path(tmp) / "tiny-random", note="random weights")
            frames = I2VGenPipeline.from_pretrained(folder)(
                sample_image(), PROMPT, num_frames=8, height=64, width=64, num_inference_steps=10,
                generator=generator, output_type="np")[0]
            meta = {"model": "tiny model with random weights", "steps": 10}
    meta.update(prompt=PROMPT, seed=seed, image=SAMPLE_IMAGE.name)
    for name in ("demo.mp4", "demo.gif"):
        write_video(frames, out_dir / name, fps=8, metadata=meta)
    write_sidecar_json(out_dir / "demo.json", meta)
    written = f"{out_dir / 'demo.mp4'} and {out_dir / 'demo.gif'}"
    if trained:
        for name in ("demo-directions.mp4", "demo-directions.gif"):
            write_video(grid, out_dir / name, fps=8, metadata=directions_meta)
        write_sidecar_json(out_dir / "demo-directions.json", directions_meta)
        written += f", and the four directions side by side in {out_dir / 'demo-directions.gif'} (and .mp4)"
    print(f"wrote {written} ({len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}, prompt {PROMPT!r}, "
          f"{time.time() - t0:.1f} s)", file=sys.stderr)
    if not trained:
        print("(random weights: see the note above)", file=sys.stderr)
    return 0
