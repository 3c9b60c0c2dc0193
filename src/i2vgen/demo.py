"""`i2vgen demo` / `make demo`: the whole image-to-video pipeline, offline, on a tiny embedded model."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from i2vgen.io import write_sidecar_json, write_video
from i2vgen.pipelines.common import BUILTIN_MODELS

PROMPT = "a red circle moves right"
NEGATIVE = "blurry, static"
RANDOM_WEIGHTS_NOTE = """\
NOTE: no trained weights ship with this version yet. The demo runs the complete pipeline (CLIP text and image
encoders, VAE, the I2VGen-XL base UNet, DDIM with classifier-free guidance, video writing) on a tiny model with
RANDOM weights, so the video shows noise, not motion. The trained tiny model replaces it in a later version."""


def sample_image(size: int = 64) -> Image.Image:
    """A red circle on a blue background: the kind of picture the tiny shapes model is trained on."""
    img = Image.new("RGB", (size, size), (40, 60, 160))
    r = size // 6
    ImageDraw.Draw(img).ellipse((size // 3 - r, size // 2 - r, size // 3 + r, size // 2 + r), fill=(220, 40, 40))
    return img


def run(out_dir: Path, seed: int = 0) -> int:
    from i2vgen.pipelines.base import I2VGenPipeline

    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = BUILTIN_MODELS["tiny-shapes"].is_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if trained:
            model, steps = "tiny-shapes", 25
        else:
            from i2vgen.models.tiny import random_components, write_model_folder

            print(RANDOM_WEIGHTS_NOTE, file=sys.stderr)
            model, steps = write_model_folder(random_components(seed), Path(tmp) / "tiny-random",
                                              note="random weights"), 10
        pipe = I2VGenPipeline.from_pretrained(model)
        frames = pipe(sample_image(), PROMPT, negative_prompt=NEGATIVE, num_frames=16 if trained else 8, height=64,
                      width=64, num_inference_steps=steps, guidance_scale=9.0,
                      generator=torch.Generator().manual_seed(seed),
                      output_type="np")[0]
    meta = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "seed": seed, "sampler": "ddim", "steps": steps,
            "model": "tiny-shapes" if trained else "tiny model with random weights"}
    for name in ("demo.mp4", "demo.gif"):
        write_video(frames, out_dir / name, fps=8, metadata=meta)
    write_sidecar_json(out_dir / "demo.json", meta)
    print(f"wrote {out_dir / 'demo.mp4'} and {out_dir / 'demo.gif'} ({len(frames)} frames, prompt {PROMPT!r}, "
          f"{time.time() - t0:.1f} s)", file=sys.stderr)
    if not trained:
        print("(random weights: see the note above)", file=sys.stderr)
    return 0
