"""`i2vgen refine` and `i2vgen generate --refine`: end to end on tiny random models; one-line errors on bad input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import randomize_
from test_refine_pipeline import random_refiner_folder

from i2vgen.cli import main
from i2vgen.io import probe_video, read_metadata, read_video, write_video
from i2vgen.models.tiny import random_components, write_model_folder
from i2vgen.pipelines.refine import I2VGenRefinePipeline

FAST = ["--width", "32", "--height", "24", "--steps", "2", "--seed", "1", "-q"]


@pytest.fixture(scope="module")
def refiner(tmp_path_factory):
    return random_refiner_folder(tmp_path_factory.mktemp("r") / "refiner", seed=8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    c = random_components(0)
    for i, m in enumerate((c.unet, c.vae, c.text_encoder, c.image_encoder)):
        randomize_(m, 20 + i, scale=0.1 if m is c.vae else 0.2)
    return write_model_folder(c, tmp_path_factory.mktemp("b") / "base")


@pytest.fixture
def clip(real_data_dir):
    return f"{real_data_dir}/videos/1066674883.mp4"  # 596x336, 16 fps, with an audio track


def _refine(video, out, model, *extra):  # noqa: ANN001, ANN002, ANN202
    return main(["refine", "--video", str(video), "--prompt", "a man playing guitar", "-o", str(out), "--model",
                 str(model), *FAST, *extra])


def test_refine_a_real_clip(tmp_path, refiner, clip, capsys):
    out = tmp_path / "ref.mp4"
    assert _refine(clip, out, refiner, "--max-frames", "3") == 0
    err = capsys.readouterr().err
    assert "audio track is ignored" in err and "stretched" in err  # 596x336 is not 32:24
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height, info.fps, info.has_audio) == (3, 32, 24, 16.0, False)
    meta = json.loads((tmp_path / "ref.mp4.json").read_text())
    assert (meta["strength"], meta["t_start"], meta["steps"], meta["seed"], meta["frames"]) == (0.6, 599, 2, 1, 3)
    assert meta["prompt"] == "a man playing guitar" and meta["positive_suffix"].startswith(", cinematic")
    assert read_metadata(out)["stage"] == "refine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.mp4", "ref.mp4.json"]
    again = tmp_path / "again.mp4"
    assert _refine(clip, again, refiner, "--max-frames", "3") == 0
    assert (read_video(out)[0] == read_video(again)[0]).all()  # a seed gives the same video


def test_refine_long_input_in_windows_and_odd_sizes(tmp_path, refiner, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "odd.gif"  # 33x21 pixels: odd sizes are resized like any other
    write_video(rng.integers(0, 256, (7, 21, 33, 3), dtype=np.uint8), src, fps=10)
    out = tmp_path / "frames"  # a folder of PNG frames
    assert _refine(src, out, refiner, "--window", "4", "--overlap", "2", "--resize", "crop", "--save-fps", "5") == 0
    frames, fps = read_video(out)
    assert frames.shape == (7, 24, 32, 3) and fps == 5
    meta = json.loads((tmp_path / "frames.json").read_text())
    assert (meta["window"], meta["overlap"], meta["resize"], meta["input_fps"]) == (4, 2, "crop", 10)


def test_refine_variable_frame_rate_is_resampled(tmp_path, refiner, capsys):
    src = tmp_path / "vfr.mp4"
    with av.open(str(src), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate([0, 40, 160, 200]):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 50 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert _refine(src, tmp_path / "o.mp4", refiner) == 0
    # resampled to the stream's average rate, 4 frames in 240 ms; output at that rate
    assert "variable frame rate: resampled to a constant 16.6667 fps" in capsys.readouterr().err
    info = probe_video(tmp_path / "o.mp4")
    assert info.num_frames == 4 and info.fps == pytest.approx(50 / 3, rel=1e-3) and not info.variable_frame_rate


def test_generate_with_refine(tmp_path, base, refiner, real_data_dir, capsys):
    out = tmp_path / "cascade.mp4"
    rc = main(["generate", "--image", f"{real_data_dir}/images/img_0001.jpg", "--prompt", "a cat", "-o", str(out),
               "--model", str(base), "--frames", "3", "--width", "16", "--height", "16", "--steps", "2",
               "--negative-prompt", "blurry", "--seed", "2", "-q", "--refine", "--refiner-model", str(refiner),
               "--refine-width", "32", "--refine-height", "24", "--refine-steps", "2", "--strength", "0.5"])
    assert rc == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 32, 24)
    meta = json.loads((tmp_path / "cascade.mp4.json").read_text())
    assert (meta["width"], meta["height"], meta["base_width"], meta["base_height"]) == (32, 24, 16, 16)
    assert meta["refine"]["t_start"] == 499 and meta["refine"]["steps"] == 2


def _zero_frame_mp4(path: Path) -> Path:
    container = av.open(str(path), "w", format="mp4")
    stream = container.add_stream("libx264", rate=25)
    stream.width = stream.height = 32
    stream.pix_fmt = "yuv420p"
    container.start_encoding()
    container.close()
    return path


def _bad_refine(tmp_path: Path, clip: str) -> dict[str, tuple[list[str], str, bool]]:
    """case -> (arguments, text the error shows, whether it must fail before the model loads)."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, I am not a video")
    return {
        "missing": (["--video", str(tmp_path / "nope.mp4")], "nope.mp4", True),
        "zero-byte": (["--video", str(tmp_path / "empty.mp4")], "empty", True),
        "not-a-video": (["--video", str(tmp_path / "text.mp4")], "not a readable video", True),
        "zero-frames": (["--video", str(_zero_frame_mp4(tmp_path / "zero.mp4"))], "no video stream", True),
        "bad-extension": (["--video", clip, "--output", str(tmp_path / "x.avi")], "avi", True),
        "size-not-multiple": (["--video", clip, "--width", "33"], "multiples of 2", True),
        "size-refiner": (["--video", clip, "--height", "26"], "odd height", True),
        "strength-0": (["--video", clip, "--strength", "0"], "strength", True),
        "strength-big": (["--video", clip, "--strength", "1.5"], "strength", True),
        "steps-0": (["--video", clip, "--steps", "0"], "steps", True),
        "steps-too-many": (["--video", clip, "--strength", "0.01", "--steps", "30"], "do not fit", True),
        "overlap": (["--video", clip, "--window", "4", "--overlap", "4"], "overlap must be smaller", True),
        "window": (["--video", clip, "--window", "-1"], "window must be", True),
        "rescale": (["--video", clip, "--guidance-rescale", "2"], "guidance rescale", True),
        "max-frames": (["--video", clip, "--max-frames", "0"], "max frames", True),
        "no-model": (["--video", clip, "--model", str(tmp_path / "none")], "model not found", False),
    }


@pytest.mark.parametrize("case", ["missing", "zero-byte", "not-a-video", "zero-frames", "bad-extension",
                                  "size-not-multiple", "size-refiner", "strength-0", "strength-big", "steps-0",
                                  "steps-too-many", "overlap", "window", "rescale", "max-frames", "no-model"])
def test_refine_bad_input_one_line_error_nothing_written(case, tmp_path, refiner, clip, capsys, monkeypatch):
    args, needle, before_load = _bad_refine(tmp_path, clip)[case]
    loads = []
    if before_load:
        monkeypatch.setattr(I2VGenRefinePipeline, "from_pretrained", lambda *a, **k: loads.append(1))
    out = tmp_path / "o.mp4"
    before = set(tmp_path.iterdir())
    rc = main(["refine", "--prompt", "p", "--output", str(out), "--model", str(refiner), *FAST, *args])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and err.startswith("i2vgen: error:") and needle in err and "Traceback" not in err
    assert not loads
    assert not out.exists() and set(tmp_path.iterdir()) == before  # no output, no temporary litter


@pytest.mark.parametrize("extra,needle", [([], "refiner model"), (["--refine-height", "26"], "odd height"),
                                          (["--strength", "2"], "strength")])
def test_generate_refine_bad_settings_fail_before_loading(extra, needle, tmp_path, base, refiner, real_data_dir,
                                                          capsys):
    model = [] if not extra else ["--refiner-model", str(refiner)]
    rc = main(["generate", "--image", f"{real_data_dir}/images/img_0001.jpg", "--prompt", "p", "-o",
               str(tmp_path / "o.mp4"), "--model", str(tmp_path / "not-loaded"), "--refine", "--refine-width", "32",
               "--refine-height", "24", *model, *extra, "-q"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and needle in err and "not-loaded" not in err
    assert list(tmp_path.iterdir()) == []
