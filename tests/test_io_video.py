"""i2vgen.io.video and i2vgen.io.atomic: writing every format, atomicity, reading, probing, clip sampling."""

from __future__ import annotations

import itertools
import json
import os
import random
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import i2vgen.io.video as video_module
from i2vgen.errors import InputError
from i2vgen.io import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    constant_fps_indices,
    output_kind,
    probe_video,
    read_metadata,
    read_video,
    read_video_cfr,
    sample_clip_indices,
    to_uint8_frames,
    write_sidecar_json,
    write_video,
)

METADATA = {
    "prompt": "a red fox running through snow, ünïcödé",
    "seed": 42,
    "sampler": "ddim",
    "steps": 50,
    "model": "i2vgen-xl",
}


def _frames(f: int = 8, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth moving gradients (compress well, so lossy round trips stay close)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((f, h, w, 3), np.uint8)
    for i in range(f):
        out[i, ..., 0] = 40 + 150 * xx / w
        out[i, ..., 1] = 40 + 150 * yy / h
        out[i, ..., 2] = 60 + (15 * i) % 180
    return out


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def real_video_dir(real_data_dir: str) -> Path:
    """The videos of ../shared/data/real, or of its synthetic stand-in (conftest.py)."""
    return Path(real_data_dir) / "videos"


# --------------------------------------------------------------------------------------------------- writing


def test_mp4_round_trip(tmp_path: Path) -> None:
    frames = _frames()
    path = write_video(frames, tmp_path / "out.mp4", fps=8, metadata=METADATA)
    assert _listing(tmp_path) == ["out.mp4"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 8
        assert json.loads(container.metadata["comment"]) == METADATA  # the container tags, read by PyAV
        assert container.metadata["description"] == METADATA["prompt"]
    back, fps = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8 and fps == 8
    assert np.abs(back.astype(int) - frames).mean() < 3
    assert read_metadata(path) == METADATA
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (8, 8.0, 64, 48, "h264")
    assert info.duration == pytest.approx(1.0) and not info.variable_frame_rate and not info.has_audio


def test_mp4_odd_size_is_padded_and_fractional_fps(tmp_path: Path) -> None:
    frames = _frames(5, 33, 47)
    write_video(frames, tmp_path / "odd.mp4", fps=29.97)
    back, fps = read_video(tmp_path / "odd.mp4")
    assert back.shape == (5, 34, 48, 3) and fps == pytest.approx(29.97)
    assert np.abs(back[:, :33, :47].astype(int) - frames).mean() < 3
    assert np.abs(back[:, 33, :47].astype(int) - frames[:, 32]).mean() < 4  # padding repeats the edge
    assert read_metadata(tmp_path / "odd.mp4") == {}


def test_mp4_encoder_leaves_out_its_avx512_code() -> None:
    """libx264's AVX-512 code made identical encodes differ (benchmarks/x264_determinism.py: a served 32x32 clip
    through the writer; a real 596x336 one in a bare encode loop); the writer limits it to AVX2 exactly where AVX-512
    is there (the end-to-end check: test_serve's same-seed jobs)."""
    from i2vgen.io.video import _x264_cpu_options

    avx512 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n\nprocessor\t: 1\nflags\t\t: fpu avx512f\n"
    assert _x264_cpu_options(avx512) == {"x264-params": "asm=AVX2"}
    assert _x264_cpu_options("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512_vnni\n") == {}
    assert _x264_cpu_options("") == {}  # no /proc/cpuinfo (macOS, Windows): libx264's own choice


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_image_round_trip(tmp_path: Path, suffix: str) -> None:
    frames = _frames()
    path = write_video(frames, tmp_path / f"out{suffix}", fps=8, metadata=METADATA)
    with Image.open(path) as im:
        assert im.is_animated and im.n_frames == 8 and im.info.get("loop") == 0
    back, fps = read_video(path)
    assert back.shape == frames.shape and fps == pytest.approx(8)
    assert np.abs(back.astype(int) - frames).mean() < 4  # palette (GIF) / lossy (WebP)
    assert read_metadata(path) == METADATA
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (8, 64, 48) and not info.variable_frame_rate


def test_gif_delays_average_to_fps(tmp_path: Path) -> None:
    write_video(_frames(8), tmp_path / "a.gif", fps=8)  # 125 ms is not a multiple of 10 ms: 120/130 alternate
    with Image.open(tmp_path / "a.gif") as im:
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info["duration"])
    assert set(delays) <= {120, 130} and sum(delays) == 1000


@pytest.mark.parametrize("name", ["frames/", "frames"])
def test_png_folder_round_trip(tmp_path: Path, name: str) -> None:
    frames = _frames(3)
    write_video(frames, str(tmp_path / name), fps=12.5, metadata=METADATA)
    folder = tmp_path / "frames"
    assert _listing(tmp_path) == ["frames"]
    assert _listing(folder) == ["frame_0000.png", "frame_0001.png", "frame_0002.png", "metadata.json"]
    assert np.array_equal(np.asarray(Image.open(folder / "frame_0001.png")), frames[1])
    assert json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["fps"] == 12.5
    back, fps = read_video(folder)
    assert np.array_equal(back, frames) and fps == 12.5
    assert read_metadata(folder) == METADATA
    write_video(frames[:1], folder, fps=1)  # an existing folder is replaced, not merged
    assert _listing(folder) == ["frame_0000.png", "metadata.json"]


def test_frame_inputs_are_equivalent() -> None:
    frames = _frames(4, 6, 10)
    as_float = frames.astype(np.float32) / 255
    tensor = torch.from_numpy(as_float).permute(0, 3, 1, 2)  # (F, 3, H, W)
    for src in [
        frames,
        as_float,
        tensor,
        tensor.permute(1, 0, 2, 3)[None],
        torch.from_numpy(frames).permute(0, 3, 1, 2),
        [Image.fromarray(f) for f in frames],
        list(frames),
    ]:
        assert np.array_equal(to_uint8_frames(src), frames)
    assert to_uint8_frames(frames[..., :1]).shape == (4, 6, 10, 3)


@pytest.mark.parametrize(
    "frames, word",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        ([], "no frames"),
        (np.zeros((2, 3, 8, 8), np.uint8), "channels-last"),
        (np.zeros((2, 8, 8, 3), np.int32), "dtype"),
        (np.full((2, 8, 8, 3), 1.5, np.float32), r"\[0, 1\]"),
        (torch.zeros(2, 8, 8), "shape"),
        (torch.zeros(2, 2, 3, 8, 8), "shape"),
        ("frames", "type"),
    ],
)
def test_bad_frames(tmp_path: Path, frames: object, word: str) -> None:
    with pytest.raises(InputError, match=word):
        write_video(frames, tmp_path / "x.mp4", fps=8)  # type: ignore[arg-type]
    assert _listing(tmp_path) == []


def test_bad_extension_fps_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown video extension '\.avi'"):
        write_video(object(), tmp_path / "x.avi", fps=8)  # type: ignore[arg-type]  # refused before frames are read
    for fps in (0, -1, float("nan"), "fast"):
        with pytest.raises(InputError, match="fps"):
            write_video(_frames(1), tmp_path / "x.mp4", fps=fps)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="crf"):
        write_video(_frames(1), tmp_path / "x.mp4", fps=8, crf=60)
    with pytest.raises(InputError, match="JSON"):
        write_video(_frames(1), tmp_path / "x.gif", fps=8, metadata={"bad": object()})
    assert _listing(tmp_path) == []
    assert [output_kind(p) for p in ["a.MP4", "b.gif", "c.webp", "d/", "e"]] == [
        "mp4",
        "gif",
        "webp",
        "png",
        "png",
    ]


def test_sidecar_json(tmp_path: Path) -> None:
    path = write_sidecar_json(
        tmp_path / "run.json", {"seed": np.int64(3), "out": tmp_path / "a.mp4", "é": 1.5}
    )
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "seed": 3,
        "out": str(tmp_path / "a.mp4"),
        "é": 1.5,
    }
    assert _listing(tmp_path) == ["run.json"]


# ------------------------------------------------------------------------------------------------- atomicity


def test_mp4_interrupted_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = video_module._rgb_to_video_frame
    calls = []

    def flaky(rgb: np.ndarray, index: int) -> av.VideoFrame:
        calls.append(index)
        if index == 5:
            raise KeyboardInterrupt
        return real(rgb, index)

    monkeypatch.setattr(video_module, "_rgb_to_video_frame", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_video(_frames(), tmp_path / "out.mp4", fps=8)
    assert calls == [0, 1, 2, 3, 4, 5] and _listing(tmp_path) == []

    (tmp_path / "keep.mp4").write_bytes(b"old")  # an existing output survives a failed overwrite
    with pytest.raises(KeyboardInterrupt):
        write_video(_frames(), tmp_path / "keep.mp4", fps=8)
    assert _listing(tmp_path) == ["keep.mp4"] and (tmp_path / "keep.mp4").read_bytes() == b"old"


@pytest.mark.parametrize("target", ["out.gif", "out.webp", "out/"])
def test_pil_writers_interrupted_midway_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    real_save = Image.Image.save
    saved = []

    def flaky_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        saved.append(fp)
        if len(saved) == 2 or target != "out/":
            Path(str(fp)).write_bytes(b"partial")
            raise OSError("disk full")
        real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        write_video(_frames(), str(tmp_path / target), fps=8)
    assert saved and _listing(tmp_path) == []


def test_atomic_helpers(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"123")  # creates the parent folder
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"123"
    with open(tmp_path / "plain", "wb"):
        pass
    plain_mode = (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "sub" / "a.bin").stat().st_mode & 0o777 == plain_mode  # not mkstemp's 0600

    with pytest.raises(ValueError), atomic_path(tmp_path / "b.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_text("half")
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("half")
        raise KeyboardInterrupt
    assert _listing(tmp_path) == ["plain", "sub"]

    with pytest.raises(InputError, match="folder"), atomic_path(tmp_path / "sub"):
        pass
    with pytest.raises(InputError, match="file"), atomic_dir(tmp_path / "plain"):
        pass
    assert _listing(tmp_path) == ["plain", "sub"]


# --------------------------------------------------------------------------------------------------- reading


def test_read_real_videos(real_video_dir: Path) -> None:
    mp4 = real_video_dir / "1066674877.mp4"
    frames, fps = read_video(mp4)
    assert frames.shape == (165, 336, 596, 3) and frames.dtype == np.uint8 and fps == 16
    part, part_fps = read_video(mp4, start=10, stride=3, max_frames=5)
    assert np.array_equal(part, frames[10:25:3]) and part_fps == 16 / 3
    assert read_video(mp4, start=160, stride=2)[0].shape[0] == 3  # 160, 162, 164

    with_audio = real_video_dir / "1066674883.mp4"
    info = probe_video(with_audio)
    assert (
        info.has_audio
        and info.num_frames == 202
        and info.fps == 16
        and (info.width, info.height) == (596, 336)
    )
    assert read_video(with_audio, max_frames=4)[0].shape == (4, 336, 596, 3)

    avi = min(real_video_dir.glob("*.avi"))
    frames, fps = read_video(avi, max_frames=30)
    assert frames.shape == (30, 240, 320, 3) and fps == 25
    info = probe_video(avi)
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (250, 25.0, 320, 240, "mpeg4")
    assert info.duration == pytest.approx(10.0) and not info.variable_frame_rate and not info.has_audio


def test_read_captions_list(real_video_dir: Path) -> None:
    lines = (real_video_dir / "captions.txt").read_text(encoding="utf-8").splitlines()
    for line in lines:
        name, caption = line.split("|||")
        assert (real_video_dir / name).is_file() and caption


def test_bad_videos(tmp_path: Path, real_video_dir: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a video at all\n" * 50)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    data = (real_video_dir / "1066674877.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index at the end: nothing survives
    Image.new("RGB", (8, 8)).save(tmp_path / "still.jpg")
    (tmp_path / "no_frames").mkdir()
    cases = [
        ("not found", tmp_path / "missing.mp4"),
        ("empty", tmp_path / "empty.mp4"),
        ("not a readable video", tmp_path / "notes.txt"),
        ("not a readable video", tmp_path / "noise.mp4"),
        ("not a readable video", tmp_path / "truncated.mp4"),
        ("still image", tmp_path / "still.jpg"),
        ("no frame_", tmp_path / "no_frames"),
    ]
    for word, path in cases:
        for fn in (read_video, probe_video):
            with pytest.raises(InputError, match=word) as info:
                fn(path)
            assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        read_video(path)


def test_truncated_tail_keeps_decoded_frames(tmp_path: Path) -> None:
    """Our mp4s have the index first (+faststart): a cut-off copy decodes up to the cut, with a warning."""
    write_video(_frames(24, 64, 64), tmp_path / "full.mp4", fps=8, crf=0)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(UserWarning, match="truncated"):
        frames, _ = read_video(tmp_path / "cut.mp4")
    assert 0 < len(frames) < 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_video(tmp_path / "full.mp4")[0]) == 24


def test_bad_read_arguments(real_video_dir: Path) -> None:
    mp4 = real_video_dir / "1066674877.mp4"
    with pytest.raises(InputError, match="no frame at index 1000"):
        read_video(mp4, start=1000)
    for kwargs in ({"stride": 0}, {"max_frames": 0}, {"start": -1}, {"stride": 1.5}):
        with pytest.raises(InputError, match=next(iter(kwargs))):
            read_video(mp4, **kwargs)


def _write_vfr(path: Path, times_ms: list[int]) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate(tmp_path: Path) -> None:
    times = [0, 40, 80, 200, 240, 400, 440, 480]
    _write_vfr(tmp_path / "vfr.mp4", times)
    info = probe_video(tmp_path / "vfr.mp4")
    assert info.variable_frame_rate and info.num_frames == 8
    _write_vfr(tmp_path / "cfr.mp4", list(range(0, 320, 40)))
    assert not probe_video(tmp_path / "cfr.mp4").variable_frame_rate

    frames, fps = read_video_cfr(tmp_path / "vfr.mp4", fps=25)
    assert fps == 25
    expected = constant_fps_indices([t / 1000 for t in times], 25)
    assert len(frames) == 13 == len(expected)  # 0 .. 480 ms every 40 ms
    levels = [round(int(f[16, 16, 0]) / 30) for f in frames]
    assert levels == expected == [0, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 7]
    assert len(read_video_cfr(tmp_path / "vfr.mp4", fps=25, max_frames=4)[0]) == 4
    cfr, cfr_fps = read_video_cfr(tmp_path / "cfr.mp4")
    assert len(cfr) == 8 and cfr_fps == 25


def test_constant_fps_indices() -> None:
    assert constant_fps_indices([i / 30 for i in range(10)], 30) == list(range(10))
    assert constant_fps_indices([i / 30 for i in range(10)], 10) == [0, 3, 6, 9]
    assert constant_fps_indices([0.0, 0.1, 0.5], 10) == [0, 1, 1, 1, 2, 2]  # 0.3: tie → earlier frame
    assert constant_fps_indices([], 10) == []
    with pytest.raises(InputError, match="sorted"):
        constant_fps_indices([0.2, 0.1], 10)


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    frame = _frames(1, 32, 64)[0]
    frame[:8, :8] = (255, 0, 0)  # a red corner, top-left as stored
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    back, _ = read_video(path)
    assert back.shape == (1, 64, 32, 3)
    assert np.abs(back[0].astype(int) - np.rot90(frame)).mean() < 3  # the red corner is now bottom-left
    assert back[0, 60, 2, 0] > 200
    info = probe_video(path)
    assert (info.width, info.height) == (32, 64)


# -------------------------------------------------------------------------------------------------- sampling


def test_sample_clip_indices_long_video() -> None:
    rng = random.Random(0)
    starts = set()
    for _ in range(300):
        idx = sample_clip_indices(250, 25.0, 8.0, 16, rng)  # stride round(25 / 8) = 3, covers 48 frames
        assert len(idx) == 16 and all(b - a == 3 for a, b in itertools.pairwise(idx))
        assert 0 <= idx[0] <= 250 - 48 - 5
        starts.add(idx[0])
    assert min(starts) == 0 and max(starts) == 197
    gen = np.random.default_rng(0)
    idx = sample_clip_indices(165, 16.0, 8.0, 16, gen)
    assert len(idx) == 16 and idx[1] - idx[0] == 2 and idx[0] <= 165 - 32 - 5
    assert sample_clip_indices(100, 30, 8, 4, random.Random(1)) == sample_clip_indices(
        100, 30, 8, 4, random.Random(1)
    )


def test_sample_clip_indices_short_and_edge_cases() -> None:
    rng = random.Random(0)
    assert sample_clip_indices(52, 25, 8, 16, rng) == list(range(0, 48, 3))  # 52 < 48 + 5: start at 0
    assert sample_clip_indices(20, 25, 8, 16, rng) == [0, 3, 6, 9, 12, 15, 18]  # too short: fewer frames
    assert sample_clip_indices(8, 4, 8, 4, rng) == [0, 1, 2, 3]  # native slower than target: stride 1
    assert sample_clip_indices(0, 25, 8, 4, rng) == []
    with pytest.raises(InputError, match="n_frames"):
        sample_clip_indices(100, 25, 8, 0, rng)
    with pytest.raises(InputError, match="fps"):
        sample_clip_indices(100, 0, 8, 4, rng)


def test_sampled_clip_reads_back(real_video_dir: Path) -> None:
    avi = min(real_video_dir.glob("*.avi"))
    info = probe_video(avi)
    idx = sample_clip_indices(info.num_frames, info.fps, 8, 8, random.Random(3))
    stride = idx[1] - idx[0]
    clip, fps = read_video(avi, start=idx[0], stride=stride, max_frames=len(idx))
    assert clip.shape == (8, 240, 320, 3) and fps == pytest.approx(25 / 3)
    assert os.path.basename(avi).endswith(".avi")
