"""Video files: write (mp4 / gif / webp / PNG folder, atomically), read and probe; training clip sampling.

Frames cross this boundary as uint8 numpy arrays (F, H, W, 3). mp4 and other containers are decoded with PyAV
(audio ignored); gif, webp and PNG folders, which this module also writes, are read with PIL so that every
output format round-trips through `read_video`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import operator
import os
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageSequence

from i2vgen.errors import InputError
from i2vgen.io.atomic import atomic_dir, atomic_path, atomic_write_text
from i2vgen.io.image import float_to_uint8

FrameSource = np.ndarray | torch.Tensor | Sequence[Image.Image] | Sequence[np.ndarray]

METADATA_FILE = "metadata.json"  # inside a PNG-frame folder: {"fps", "num_frames", "metadata"}
_EXIF_IMAGE_DESCRIPTION = 0x010E  # where webp output keeps its metadata JSON
_PIL_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
_ZERO_DELAY_FPS = 10.0  # browsers play animations without frame delays at about 10 fps
_TEXT_FORMATS = {"tty", "bin", "xbin", "idf", "adf"}  # FFmpeg renders any text file as ANSI-art "video"


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` finds. `width`/`height` are as displayed (rotation metadata applied)."""

    num_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds
    variable_frame_rate: bool
    has_audio: bool
    codec: str = ""
    metadata: dict[str, str] = field(default_factory=dict)  # raw container tags


# --------------------------------------------------------------------------------------------------- writing


def output_kind(path: str | os.PathLike[str]) -> str:
    """'mp4', 'gif', 'webp' or 'png' (a folder of frames: no extension, or a path ending in '/')."""
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or Path(text).suffix == "":
        return "png"
    suffix = Path(text).suffix.lower()
    if suffix in (".mp4", ".gif", ".webp"):
        return suffix[1:]
    raise InputError(
        f"unknown video extension {suffix!r} in {text!r}: "
        "use .mp4, .gif, .webp, or a folder path ending in '/'"
    )


def write_video(
    frames: FrameSource,
    path: str | os.PathLike[str],
    *,
    fps: float,
    metadata: dict[str, Any] | None = None,
    crf: int = 18,
) -> Path:
    """Write `frames` to `path` atomically (temporary sibling, then rename); the extension picks the format.

    - `.mp4`: H.264 (libx264, yuv420p, BT.709 tagged, `+faststart`), `crf` quality. Odd widths/heights are
      padded to even by repeating the last row/column. `metadata` goes into the `comment` tag as JSON; a
      `prompt` entry is also written to `description`. The same frames give the same stream every time
      (`_x264_cpu_options`).
    - `.gif`: looping, per-frame adaptive palette; delays in 1/100 s, alternated so the average rate is `fps`
      (at most 100 fps; browsers slow delays under 20 ms down). PIL merges identical consecutive frames into
      one longer frame, so such a GIF reads back with fewer frames.
    - `.webp`: looping, lossy quality 90; delays in ms, alternated likewise. Metadata as JSON in EXIF
      ImageDescription (GIF: in the comment block).
    - no extension / trailing '/': a folder with `frame_0000.png, ...` and `metadata.json` (fps and metadata).

    `frames`: uint8 (F, H, W, 3) or float in [0, 1] (F, H, W, 3) numpy; float/uint8 tensor (F, 3, H, W) or
    (1, 3, F, H, W); or a list of PIL images / HWC arrays. Returns the path written. Read metadata back with
    `read_metadata`.
    """
    kind = output_kind(path)  # refuse an unknown extension before any work
    fps = _check_fps(fps)
    if _check_int(crf, "crf", 0) > 51:
        raise InputError(f"crf must be between 0 and 51 (x264 quality, lower is better), got {crf}")
    frames = to_uint8_frames(frames)
    metadata = dict(metadata or {})
    _metadata_json(metadata)  # not serialisable → InputError before any file is created
    if kind == "png":
        with atomic_dir(path) as tmp:
            _write_png_folder(frames, tmp, fps, metadata)
    else:
        with atomic_path(path) as tmp:
            if kind == "mp4":
                _write_mp4(frames, tmp, fps, metadata, crf)
            else:
                _write_pil_animation(frames, tmp, fps, metadata, _PIL_FORMATS[f".{kind}"])
    return Path(path)


def write_sidecar_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write `data` as indented UTF-8 JSON to `path` atomically (Paths, numpy/torch scalars: plain values)."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    return Path(path)


def sidecar_path_field(path: str | os.PathLike[str], sidecar: str | os.PathLike[str]) -> str:
    """How a sidecar JSON (`sidecar`) should name another file, e.g. the input image or video: relative to the
    sidecar's folder (forward slashes), so that `i2vgen eval` finds it from any working directory and the folder
    can be moved with its inputs; absolute when the two share no folder but the root (or lie on different
    drives), where a relative path would only break more easily."""
    target, folder = Path(path).resolve(), Path(sidecar).resolve().parent
    try:
        common = Path(os.path.commonpath([target, folder]))
    except ValueError:  # different drives
        return str(target)
    if common == Path(common.anchor):
        return str(target)
    return Path(os.path.relpath(target, folder)).as_posix()


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, torch.Tensor)) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _metadata_json(metadata: dict[str, Any], *, ascii_only: bool = False) -> str:
    try:
        return json.dumps(metadata, ensure_ascii=ascii_only, default=_json_default)
    except (TypeError, ValueError) as e:
        raise InputError(f"video metadata must be JSON serialisable: {e}") from None


def _check_int(value: int, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)  # ints and numpy integers; floats are refused
    except TypeError:
        raise InputError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return value


def _check_fps(fps: float) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a number, got {fps!r}") from None
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps}")
    return fps


def to_uint8_frames(frames: FrameSource) -> np.ndarray:
    """Any supported frame container → contiguous uint8 array (F, H, W, 3)."""
    if isinstance(frames, torch.Tensor):
        t = frames.detach().cpu()
        shape = tuple(t.shape)
        if t.ndim == 5 and shape[0] == 1:
            t = t[0].permute(1, 0, 2, 3)  # (1, C, F, H, W) → (F, C, H, W)
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise InputError(f"frame tensor must be (F, 3, H, W) or (1, 3, F, H, W), got shape {shape}")
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise InputError(f"frame tensor must be uint8 or float in [0, 1], got dtype {t.dtype}")
        a = t.permute(0, 2, 3, 1).numpy() if t.dtype == torch.uint8 else t.float().permute(0, 2, 3, 1).numpy()
    elif isinstance(frames, np.ndarray):
        a = frames
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4 or a.shape[-1] not in (1, 3):
            hint = "; numpy frames must be channels-last" if a.ndim == 4 and a.shape[1] in (1, 3) else ""
            raise InputError(f"numpy frames must be (F, H, W, 3), got shape {frames.shape}{hint}")
    elif isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError("no frames to write")
        try:
            items = [
                np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames
            ]
            a = np.stack(items)
        except ValueError as e:
            raise InputError(f"frames in the list differ in shape: {e}") from None
        return to_uint8_frames(a)
    else:
        raise InputError(f"cannot write frames of type {type(frames).__name__}")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise InputError(f"no frames to write: shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        a = float_to_uint8(a, "frame values")
    else:
        raise InputError(f"frames must be uint8 or float in [0, 1], got dtype {a.dtype}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def _rgb_to_video_frame(rgb: np.ndarray, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frame = frame.reformat(
        format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
    )
    frame.pts = index
    return frame


def _write_mp4(frames: np.ndarray, tmp: Path, fps: float, metadata: dict[str, Any], crf: int) -> None:
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        if metadata:
            container.metadata["comment"] = _metadata_json(metadata)
            if isinstance(metadata.get("prompt"), str):
                container.metadata["description"] = metadata["prompt"]
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        stream.options = {"crf": str(int(crf)), "preset": "medium", **_x264_cpu_options()}
        cc = stream.codec_context  # tag BT.709 limited range, which is what `_rgb_to_video_frame` converts to
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
        for i, rgb in enumerate(frames):
            for packet in stream.encode(_rgb_to_video_frame(rgb, i)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()
        raise
    container.close()


_AVX512 = "avx512f"


@functools.cache
def _host_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _x264_cpu_options(cpuinfo: str | None = None) -> dict[str, str]:
    """libx264 options that keep its output a function of its input. On CPUs with AVX-512, libx264's AVX-512 code
    makes identical encodes differ (the PyAV wheel's libx264, 12 encodes in each of 6 processes through this writer:
    a served 32x32 clip gave 2 distinct streams, decoded up to 16 levels apart; driven in a bare loop, 16 frames of a
    596x336 real clip 12-18 streams; limited to AVX2: 1 stream each; benchmarks/x264_determinism.py, docs/results/x264,
    docs/benchmarks.md), so there it is limited to AVX2, which every AVX-512 CPU has (encode time within the noise).
    `cpuinfo`: the text of /proc/cpuinfo (read when None; where there is none, nothing changes)."""
    cpuinfo = _host_cpuinfo() if cpuinfo is None else cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return {"x264-params": "asm=AVX2"} if _AVX512 in flags else {}


def _frame_durations(n: int, fps: float, unit_ms: int) -> list[int]:
    """Per-frame delays in ms, multiples of `unit_ms`, whose running sum stays within half a unit of k/fps."""
    ends = [round((k + 1) * 1000 / fps / unit_ms) for k in range(n)]
    return [max(1, e - s) * unit_ms for s, e in zip([0, *ends[:-1]], ends)]


def _write_pil_animation(
    frames: np.ndarray, tmp: Path, fps: float, metadata: dict[str, Any], fmt: str
) -> None:
    images = [Image.fromarray(f) for f in frames]
    text = _metadata_json(metadata, ascii_only=True) if metadata else None
    options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "loop": 0}
    if fmt == "GIF":
        options["duration"] = _frame_durations(len(images), fps, 10)
        if text:
            options["comment"] = text
    else:
        options |= {"duration": _frame_durations(len(images), fps, 1), "quality": 90, "method": 4}
        if text:
            exif = Image.Exif()
            exif[_EXIF_IMAGE_DESCRIPTION] = text
            options["exif"] = exif.tobytes()
    images[0].save(tmp, format=fmt, **options)


def _write_png_folder(frames: np.ndarray, folder: Path, fps: float, metadata: dict[str, Any]) -> None:
    digits = max(4, len(str(len(frames) - 1)))
    for i, rgb in enumerate(frames):
        Image.fromarray(rgb).save(folder / f"frame_{i:0{digits}d}.png")
    info = {"fps": fps, "num_frames": len(frames), "metadata": metadata}
    text = json.dumps(info, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    (folder / METADATA_FILE).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------- reading


def _check_input_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"video file not found: {str(path)!r}")
    if path.is_dir():
        if not _png_frames(path):
            raise InputError(f"folder {str(path)!r} holds no frame_*.png files")
        return path
    if path.stat().st_size == 0:
        raise InputError(f"video file is empty (0 bytes): {str(path)!r}")
    return path


def _png_frames(folder: Path) -> list[Path]:
    return sorted(folder.glob("frame_*.png"))


def _is_pil_animation(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _PIL_FORMATS


@contextlib.contextmanager
def _open_av(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable video file {str(path)!r}: {_reason(e)}") from None
    try:
        names = set(container.format.name.split(","))
        if names & _TEXT_FORMATS:
            raise InputError(f"not a readable video file {str(path)!r}: it is text ({container.format.name})")
        if "image2" in names or any(n.endswith("_pipe") for n in names):
            raise InputError(f"{str(path)!r} is a still image, not a video; use load_image")
        if not container.streams.video:
            raise InputError(f"{str(path)!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _reason(e: BaseException) -> str:
    """An FFmpeg/OS error as a short phrase ("Invalid data found when processing input")."""
    return str(getattr(e, "strerror", None) or e).splitlines()[0] if str(e) else type(e).__name__


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _decoded_frames(
    container: av.container.InputContainer, stream: Any, path: Path
) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order. A decoding error after at least one frame ends the video with a
    warning, before any frame it is an InputError; fewer frames than the header announces (a cut-off file)
    also warns."""
    n = 0
    try:
        for frame in container.decode(stream):
            n += 1
            yield frame
        if stream.frames and n < stream.frames:
            warnings.warn(
                f"{path}: decoded {n} of the {stream.frames} frames its header announces; the file may be "
                "truncated",
                stacklevel=3,
            )
    except av.FFmpegError as e:
        if n == 0:
            raise InputError(f"cannot decode video {str(path)!r}: {_reason(e)}") from None
        warnings.warn(
            f"{path}: decoding stopped after {n} frames ({_reason(e)}); the file may be truncated",
            stacklevel=3,
        )


def _frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4  # display matrix, counter-clockwise like np.rot90
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _timed_frames(
    path: Path,
) -> tuple[Iterator[tuple[float, np.ndarray | av.VideoFrame]], float | None, contextlib.ExitStack]:
    """(seconds, frame) pairs for any readable input, its nominal fps, and the stack that closes it. A frame is an
    RGB array, or a decoded `av.VideoFrame` that `_as_rgb` converts."""
    stack = contextlib.ExitStack()
    if path.is_dir():
        files = _png_frames(path)
        fps = _folder_fps(path)
        step = 1 / fps if fps else 0.0

        def gen_png() -> Iterator[tuple[float, np.ndarray]]:
            for i, f in enumerate(files):
                with _open_pil(f) as im:
                    yield i * step, _pil_rgb(im, f)

        return gen_png(), fps, stack
    if _is_pil_animation(path):
        im = stack.enter_context(_open_pil(path))
        durations = _pil_durations(im)
        fps = _fps_from_durations(durations)

        def gen_pil() -> Iterator[tuple[float, np.ndarray]]:
            t = 0.0
            for frame, d in zip(ImageSequence.Iterator(im), durations):
                yield t, _pil_rgb(frame, path)
                t += d / 1000

        return gen_pil(), fps, stack
    container, stream = stack.enter_context(_open_av(path))
    # Decoded frames stay as `av.VideoFrame` until picked: converting only the kept ones to RGB is most of the
    # cost saved when sampling every n-th frame (`_as_rgb` converts).
    frames = ((float(f.time or 0.0), f) for f in _decoded_frames(container, stream, path))
    return frames, _stream_fps(stream), stack


def _as_rgb(frame: np.ndarray | av.VideoFrame) -> np.ndarray:
    return _frame_to_rgb(frame) if isinstance(frame, av.VideoFrame) else frame


def read_video(
    path: str | os.PathLike[str], *, max_frames: int | None = None, stride: int = 1, start: int = 0
) -> tuple[np.ndarray, float]:
    """Decode frames `start, start + stride, ...` (at most `max_frames`) → (uint8 (F, H, W, 3), fps).

    The fps returned is that of the returned frames: the file's nominal rate divided by `stride`. Frames are
    counted in presentation order, decoding sequentially from the start (no seeking), with rotation metadata
    applied. Reads anything PyAV reads (audio ignored), and the gif / webp / PNG-folder outputs of
    `write_video`. For variable-frame-rate files see `read_video_cfr`.
    """
    path = _check_input_path(path)
    max_frames = None if max_frames is None else _check_int(max_frames, "max_frames", 1)
    stride = _check_int(stride, "stride", 1)
    start = _check_int(start, "start", 0)
    timed, fps, stack = _timed_frames(path)
    with stack:
        picked = itertools.islice(timed, start, None, stride)
        kept = [(t, _as_rgb(frame)) for t, frame in itertools.islice(picked, max_frames)]
    if not kept:
        if start > 0:
            raise InputError(f"video {str(path)!r} has no frame at index {start} or later")
        raise InputError(f"video {str(path)!r} has no decodable frames")
    frames = np.stack([rgb for _, rgb in kept])
    if fps is not None:
        return frames, fps / stride
    kept_fps = _fps_from_times([t for t, _ in kept])  # no nominal rate: measure the kept frames' spacing
    if kept_fps is None:
        raise InputError(f"cannot determine the frame rate of {str(path)!r}")
    return frames, kept_fps


def read_video_cfr(
    path: str | os.PathLike[str], fps: float | None = None, *, max_frames: int | None = None
) -> tuple[np.ndarray, float]:
    """Decode at a constant `fps` (default: the file's average rate) by taking, at each time t0 + k / fps, the
    frame whose timestamp is nearest (ties: the earlier one). Use it for variable-frame-rate files."""
    path = _check_input_path(path)
    max_frames = None if max_frames is None else _check_int(max_frames, "max_frames", 1)
    if fps is not None:
        fps = _check_fps(fps)
    timed, native_fps, stack = _timed_frames(path)
    with stack:
        target = fps or native_fps
        if not target:
            raise InputError(f"cannot determine the frame rate of {str(path)!r}; pass fps")
        out = [_as_rgb(f) for f in itertools.islice(_nearest_on_grid(timed, target), max_frames)]
    if not out:
        raise InputError(f"video {str(path)!r} has no decodable frames")
    return np.stack(out), target


def constant_fps_indices(timestamps: Sequence[float], fps: float) -> list[int]:
    """For sorted frame `timestamps` (seconds), the index of the nearest frame at each time t0 + k / fps, for
    every grid time up to the last timestamp (ties: the earlier frame). A constant-rate input at `fps` maps to
    itself."""
    fps = _check_fps(fps)
    if any(b < a for a, b in itertools.pairwise(timestamps)):
        raise InputError("timestamps must be sorted")
    return list(_nearest_on_grid(((float(t), i) for i, t in enumerate(timestamps)), fps))


def _nearest_on_grid(items: Iterable[tuple[float, Any]], fps: float) -> Iterator[Any]:
    """Streaming `constant_fps_indices`: yields an item per grid time, holding at most two in memory."""
    t0: float | None = None
    prev: tuple[float, Any] | None = None
    k = 0
    for t, item in items:
        if prev is None:
            t0 = t
        else:
            while t0 + k / fps < t:  # the grid time lies between prev and this frame
                g = t0 + k / fps
                yield prev[1] if g - prev[0] <= t - g else item
                k += 1
        prev = (t, item)
    if prev is not None:
        while t0 + k / fps <= prev[0] + 1e-9:
            yield prev[1]
            k += 1


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, rate, size, duration, variable-frame-rate flag and audio presence, without decoding the
    whole file: packets are counted and their timestamps compared, and one frame is decoded to prove the file
    decodes.

    `variable_frame_rate` is True when any interval between consecutive frame timestamps differs from the
    median by more than 10 % (and more than 1.5 ticks of the time base) — a dropped frame counts.
    """
    path = _check_input_path(path)
    if path.is_dir() or _is_pil_animation(path):
        return _probe_with_pil(path)
    with _open_av(path) as (container, stream):
        times: list[float] = []
        packets = 0
        first: av.VideoFrame | None = None
        try:
            for packet in container.demux(stream):
                if first is None:  # decode until one frame comes out (the last, empty packet flushes)
                    decoded = packet.decode()
                    first = decoded[0] if decoded else None
                if packet.size == 0:
                    continue
                packets += 1
                if packet.pts is not None:
                    times.append(float(packet.pts * packet.time_base))
        except av.FFmpegError as e:
            if packets == 0 or first is None:
                raise InputError(f"cannot read video {str(path)!r}: {_reason(e)}") from None
        times.sort()
        num_frames = packets or (stream.frames or 0)
        tick = float(stream.time_base) if stream.time_base else 0.0
        fps = _stream_fps(stream) or _fps_from_times(times)
        if not fps:
            raise InputError(f"cannot determine the frame rate of {str(path)!r}")
        metadata = {str(k): str(v) for k, v in container.metadata.items()}
        has_audio = bool(container.streams.audio)
        codec = stream.codec_context.name
        duration = _duration(stream, container, num_frames, fps)
    if first is None:
        raise InputError(f"video {str(path)!r} has no decodable frames")
    width, height = first.width, first.height
    if round(first.rotation / 90) % 2:
        width, height = height, width
    return VideoInfo(
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        duration=duration,
        variable_frame_rate=_is_variable(times, tick),
        has_audio=has_audio,
        codec=codec,
        metadata=metadata,
    )


def _duration(stream: Any, container: Any, num_frames: int, fps: float) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return num_frames / fps


def _is_variable(times: Sequence[float], tick: float) -> bool:
    deltas = np.diff(np.asarray(times, dtype=np.float64))
    if len(deltas) < 2:
        return False
    median = float(np.median(deltas))
    tolerance = max(0.1 * median, 1.5 * tick)
    return bool(np.any(np.abs(deltas - median) > tolerance))


def _fps_from_times(times: Sequence[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def _fps_from_durations(durations_ms: Sequence[int]) -> float:
    total = sum(durations_ms)
    return 1000 * len(durations_ms) / total if total > 0 else _ZERO_DELAY_FPS


def _pil_rgb(im: Image.Image, path: Path) -> np.ndarray:
    try:
        return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt frame in {str(path)!r}: {e}") from None


def _open_pil(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read {str(path)!r}: {e}") from None


def _pil_durations(im: Image.Image) -> list[int]:
    durations = []
    try:
        for frame in ImageSequence.Iterator(im):
            frame.load()  # WebP sets the frame's duration only when it is decoded
            durations.append(int(frame.info.get("duration", 0) or 0))
        im.seek(0)
    except (OSError, EOFError, ValueError) as e:
        if not durations:
            raise InputError(f"cannot decode {str(im.filename)!r}: {e}") from None
    return durations


def _folder_fps(folder: Path) -> float | None:
    try:
        info = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        return float(info["fps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _probe_with_pil(path: Path) -> VideoInfo:
    if path.is_dir():
        files = _png_frames(path)
        with _open_pil(files[0]) as im:
            width, height = im.size
        fps = _folder_fps(path)
        if fps is None:
            raise InputError(f"cannot determine the frame rate of {str(path)!r}: no fps in {METADATA_FILE}")
        n, variable = len(files), False
    else:
        with _open_pil(path) as im:
            width, height = im.size
            durations = _pil_durations(im)
        fps = _fps_from_durations(durations)
        n = len(durations)
        step = 1000 / fps
        variable = any(abs(d - step) > max(0.1 * step, 10) for d in durations)  # 10 ms: GIF delay resolution
    stored = read_metadata(path)
    meta = {"comment": json.dumps(stored, ensure_ascii=False)} if stored else {}
    return VideoInfo(
        n, fps, width, height, n / fps, variable, False, "png" if path.is_dir() else path.suffix[1:], meta
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `metadata` dict that `write_video` stored in `path` ({} when there is none or it is not ours)."""
    path = _check_input_path(path)
    text: str | bytes | None
    if path.is_dir():
        try:
            info = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return info.get("metadata", {}) if isinstance(info, dict) else {}
    if _is_pil_animation(path):
        with _open_pil(path) as im:
            text = (
                im.info.get("comment")
                if path.suffix.lower() == ".gif"
                else im.getexif().get(_EXIF_IMAGE_DESCRIPTION)
            )
    else:
        with _open_av(path) as (container, _):
            text = container.metadata.get("comment")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# -------------------------------------------------------------------------------------------------- sampling


def sample_clip_indices(
    num_frames: int,
    native_fps: float,
    target_fps: float,
    n_frames: int,
    rng: random.Random | np.random.Generator,
) -> list[int]:
    """Frame indices of one training clip, VGen's `VideoDataset` sampling (spec §4.1 "Video reading").

    stride = max(1, round(native_fps / target_fps)); when the video has at least stride * n_frames + 5 frames
    the start is uniform in [0, num_frames - stride * n_frames - 5], else 0; the clip is start, start +
    stride, ..., n_frames of them. A video too short for that gives fewer (every stride-th frame from 0 that
    exists; [] for an empty video): the caller pads, as the reference zero-pads. The reference reads with a
    1-based counter, which shifts its picks one frame earlier, drops the last frame at stride 1 and never
    reads the last two frames of a short video; those off-by-ones are not reproduced. Read the frames with
    `read_video(path, start=idx[0], stride=stride, max_frames=len(idx))`.
    """
    n_frames = _check_int(n_frames, "n_frames", 1)
    num_frames = _check_int(num_frames, "num_frames", 0)
    native_fps, target_fps = _check_fps(native_fps), _check_fps(target_fps)
    stride = max(1, round(native_fps / target_fps))
    cover = stride * n_frames
    if num_frames < cover + 5:
        start = 0
    elif isinstance(rng, np.random.Generator):
        start = int(rng.integers(0, num_frames - cover - 5, endpoint=True))
    else:
        start = rng.randint(0, num_frames - cover - 5)
    return [i for i in range(start, start + cover, stride) if i < num_frames]
