"""The shipped tiny-shapes cascade (issue 6): inside the package, within the size budget, loadable by name, and
`i2vgen demo` / `i2vgen generate --model tiny-shapes` working offline on it."""

import json

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageSequence

from i2vgen.cli import main
from i2vgen.model_paths import ASSETS, BUILTIN_MODELS

MAX_BYTES = 25 * 1024 * 1024  # issue 6: the trained model is at most 25 MB


def shipped_frames() -> int:
    index = json.loads((BUILTIN_MODELS["tiny-shapes"] / "model_index.json").read_text())
    return index["_i2vgen_defaults"]["num_frames"]


def test_shipped_model_is_complete_and_small():
    total = 0
    for name, parts in (("tiny-shapes", ("unet", "vae", "text_encoder", "tokenizer", "image_encoder", "scheduler")),
                        ("tiny-shapes-refiner", ("unet", "vae", "text_encoder", "tokenizer"))):
        folder = BUILTIN_MODELS[name]
        assert (folder / "model_index.json").is_file(), f"{folder} is missing: ship the trained model"
        for part in parts:
            assert (folder / part).is_dir(), f"{folder / part}"
        total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert total <= MAX_BYTES, f"shipped model is {total / 2**20:.1f} MB"
    assert not list(ASSETS.rglob("*.bin")) and not list(ASSETS.rglob("*.pth"))  # safetensors only
    index = json.loads((BUILTIN_MODELS["tiny-shapes"] / "model_index.json").read_text())
    assert index["_i2vgen_defaults"]["width"] == 32 and index["_i2vgen_defaults"]["refine_width"] == 64
    # both UNets learnt from VAE posterior means and the refiner with textbook SDEdit: the folders say so, and the
    # pipelines sample that way by default (`ModelConventions`)
    from i2vgen.pipelines.common import ModelConventions

    assert ModelConventions.from_folder(BUILTIN_MODELS["tiny-shapes"]).sample_posterior is False
    assert ModelConventions.from_folder(BUILTIN_MODELS["tiny-shapes-refiner"]) == ModelConventions(False, False)


def test_shipped_model_keeps_the_first_frame():
    """Frame 0 of a generated video matches the input image: PSNR > 20 dB on a held-out clip at the folder's
    suggested guidance, as the CLI, the demo and the service sample it (the results table in docs/tiny-shapes.md
    reports the mean over 100; at the pipeline's reference guidance 9.0 this model's first frames suffer: section
    17), and the detail encoder is what does it: with the first-frame latent zeroed the same sample is at least 5 dB
    worse."""
    from i2vgen.eval import first_frame_fidelity
    from i2vgen.model_paths import model_defaults
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.shapes import make_clip

    frames = shipped_frames()
    clip = make_clip(10**6 + 3, size=32, num_frames=frames)
    pipe = I2VGenPipeline.from_pretrained("tiny-shapes")
    psnr = {}
    for ablate in ((), ("first_frame",)):
        video = pipe(clip.first_frame, clip.caption, num_frames=frames, height=32, width=32, target_fps=8,
                     num_inference_steps=10, generator=torch.Generator().manual_seed(0), ablate=ablate,
                     guidance_scale=model_defaults("tiny-shapes")["guidance_scale"])[0]
        psnr[ablate] = first_frame_fidelity(video, clip.first_frame)["psnr"]
    assert psnr[()] > 20 and psnr[("first_frame",)] < psnr[()] - 5, psnr


def test_generate_on_a_users_drawing_with_the_builtin_model(tmp_path):
    drawing = Image.new("RGB", (120, 90), (235, 235, 235))
    ImageDraw.Draw(drawing).rectangle((40, 30, 70, 60), fill=(40, 80, 220))
    drawing.save(tmp_path / "my_shapes.png")
    out = tmp_path / "square.mp4"
    assert main(["generate", "--model", "tiny-shapes", "--image", str(tmp_path / "my_shapes.png"), "--prompt",
                 "a blue square moves up", "--output", str(out), "--steps", "10", "--seed", "0", "--quiet"]) == 0
    meta = json.loads((tmp_path / "square.mp4.json").read_text())
    assert (meta["width"], meta["height"], meta["frames"], meta["fps_condition"]) == (32, 32, shipped_frames(), 8)
    assert meta["timestep_spacing"] == "trailing"  # the folder's suggestion: the first step at t = 999
    assert out.stat().st_size > 0


def test_demo_writes_both_videos_from_the_trained_model(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "RANDOM" not in err
    meta = json.loads((tmp_path / "demo.json").read_text())
    assert meta["model"].startswith("tiny-shapes")
    with Image.open(tmp_path / "demo.gif") as im:
        assert im.size == (64, 64) and im.n_frames == shipped_frames()
        first = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert first.std() > 5  # a picture, not a flat field
    assert (tmp_path / "demo.mp4").stat().st_size > 0
    # the four directions side by side: four 64x64 tiles, one prompt each
    with Image.open(tmp_path / "demo-directions.gif") as im:
        assert im.size == (256, 64) and im.n_frames == shipped_frames()
    grid = json.loads((tmp_path / "demo-directions.json").read_text())
    assert [p.rsplit(" ", 1)[1] for p in grid["prompts"]] == ["left", "right", "up", "down"]
    # the point of the demo: each tile moves the circle the way its prompt says (the centroid tracker of
    # `i2vgen eval` on the GIF's frames, each 64x64 tile on its own)
    from i2vgen.eval import motion_directions

    with Image.open(tmp_path / "demo-directions.gif") as im:
        video = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])  # (F, 64, 256, 3)
    moved = [motion_directions(video[:, :, 64 * i:64 * (i + 1)], ["red"])["red"] for i in range(4)]
    assert moved == ["left", "right", "up", "down"], moved

