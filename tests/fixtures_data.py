"""A synthetic stand-in for ../shared/data/real, for clones that do not have it (CI's clean clone).

`build_real_data(root)` writes, in about a second, the layout and the properties the tests rely on:

    images/img_0001.jpg  1280x720 (the first image: test_io_image asserts its size)
    images/img_0003.jpg  800x600,  img_0007.jpg 540x720 (portrait),  img_0012.jpg 640x640
    images/captions.txt  name|||caption, the captions of the real folder
    videos/1066674877.mp4  H.264, 596x336, 16 fps, 165 frames (10.3125 s), no audio
    videos/1066674883.mp4  H.264, 596x336, 16 fps, 202 frames (12.625 s), a stereo 44.1 kHz AAC track
    videos/v_PlayingGuitar_g0{3,6,7}_c01.avi  MPEG-4 part 2 in AVI, 320x240, 25 fps, 250 frames (10 s), no audio
    videos/captions.txt  name|||caption for the five clips, in that order

The MP4s keep their index (`moov`) at the end like the real ones, so a file cut in half has no readable
frame. The pictures are landscapes drawn with PIL and numpy (gradient sky, smooth noise, hills, a sun,
trees, film grain); the clips pan across such a landscape while a sun or moon rises, clouds drift and
shapes move, so consecutive frames differ everywhere. Every file is read-only, as in the shared folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGES = {  # name: ((width, height), caption) as in ../shared/data/real/images/captions.txt
    "img_0001.jpg": (
        (1280, 720),
        (
            "A green frog floats on the surface of the water on green lotus leaves, with several pink lotus "
            "flowers, in a Chinese painting style."
        ),
    ),
    "img_0003.jpg": ((800, 600), "Evening waterfall"),
    "img_0007.jpg": ((540, 720), "Chinese ink painting, two boats and two coconut trees by the sea"),
    "img_0012.jpg": ((640, 640), "A close-up of a parrot"),
}
MP4S = {  # name: (frames, caption, with audio); all 596x336 at 16 fps
    "1066674877.mp4": (
        165,
        (
            "cactus flower names mammillaria schiedeana blooming as pink color at sun rising as nature "
            "background time lapse cactus flower blooming"
        ),
        False,
    ),
    "1066674883.mp4": (202, "moon rise in the cloud time lapse", True),
}
AVIS = ["v_PlayingGuitar_g03_c01.avi", "v_PlayingGuitar_g06_c01.avi", "v_PlayingGuitar_g07_c01.avi"]
AVI_CAPTION = "a person is playing guitar"
MP4_SIZE, MP4_FPS = (596, 336), 16
AVI_SIZE, AVI_FPS, AVI_FRAMES = (320, 240), 25, 250
AUDIO_RATE = 44100


def build_real_data(root: str | os.PathLike[str]) -> Path:
    """Write the synthetic folder under `root` (created if needed) and return it."""
    root = Path(root)
    images, videos = root / "images", root / "videos"
    images.mkdir(parents=True, exist_ok=True)
    videos.mkdir(parents=True, exist_ok=True)
    for k, (name, (size, _)) in enumerate(IMAGES.items()):
        landscape(size, seed=k + 1).save(images / name, quality=90)
    _write_captions(images / "captions.txt", {name: caption for name, (_, caption) in IMAGES.items()})
    for k, (name, (n, _, audio)) in enumerate(MP4S.items()):
        _write_mp4(videos / name, n, seed=10 + k, audio=audio)
    for k, name in enumerate(AVIS):
        _write_avi(videos / name, seed=20 + k)
    captions = {name: caption for name, (_, caption, _) in MP4S.items()} | dict.fromkeys(AVIS, AVI_CAPTION)
    _write_captions(videos / "captions.txt", captions)
    for path in [*images.iterdir(), *videos.iterdir()]:
        path.chmod(0o444)
    return root


def _write_captions(path: Path, captions: dict[str, str]) -> None:
    path.write_text("".join(f"{name}|||{caption}\n" for name, caption in captions.items()), encoding="utf-8")


# ------------------------------------------------------------------------------------------------- pictures


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int, amplitude: float) -> np.ndarray:
    """(h, w, 3) float noise without edges: a coarse random grid, bicubically up-sampled."""
    gw, gh = max(2, cells * w // max(w, h)), max(2, cells * h // max(w, h))
    coarse = Image.fromarray(rng.integers(0, 256, (gh + 1, gw + 1, 3), dtype=np.uint8))
    fine = np.asarray(coarse.resize((w, h), Image.BICUBIC), np.float32)
    return (fine - 128) * (amplitude / 128)


def landscape(size: tuple[int, int], seed: int) -> Image.Image:
    """A landscape-like RGB picture of `size` (width, height): sky gradient, sun, hills, trees, texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    top, horizon = np.array(_colour(rng, 20, 140), np.float32), np.array(_colour(rng, 150, 255), np.float32)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] ** 0.8
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    sky = top + (horizon - top) * y + 18 * x * np.array([1.0, 0.3, -0.6], np.float32)
    sky = sky + _smooth_noise(rng, w, h, 12, 22)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = int(rng.uniform(0.05, 0.1) * min(w, h))
    cx, cy = int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.15, 0.4) * h)
    sun = np.array(_colour(rng, 200, 256), np.float32)
    for k in range(4, 0, -1):  # a sun with a soft halo, fading into the sky
        halo = sun + (horizon - sun) * (k - 1) / 4
        draw.ellipse([cx - r * k // 2, cy - r * k // 2, cx + r * k // 2, cy + r * k // 2],
                     fill=tuple(int(c) for c in halo))
    xs = np.linspace(0, w, 64)
    for layer in range(3):  # hills, darker towards the front
        base = h * (0.5 + 0.13 * layer)
        phase, freq = rng.uniform(0, 2 * np.pi, 2), rng.uniform(1, 4, 2)
        ys = base + h * 0.06 * (np.sin(freq[0] * xs / w * 2 * np.pi + phase[0])
                                + 0.5 * np.sin(freq[1] * xs / w * 5 + phase[1]))
        shade = _colour(rng, 30 + 10 * (2 - layer), 160 - 35 * layer)
        draw.polygon([*zip(xs.tolist(), ys.tolist()), (w, h), (0, h)], fill=shade)
    for _ in range(int(rng.integers(4, 9))):  # trees
        tx, ty = rng.uniform(0, w), rng.uniform(0.65, 0.95) * h
        th = rng.uniform(0.06, 0.16) * h
        draw.rectangle([tx - th * 0.05, ty - th, tx + th * 0.05, ty], fill=_colour(rng, 40, 110))
        draw.ellipse([tx - th * 0.35, ty - th * 1.5, tx + th * 0.35, ty - th * 0.7], fill=_colour(rng, 10, 150))
    for _ in range(int(rng.integers(10, 25))):  # flowers, stones
        fx, fy, fr = rng.uniform(0, w), rng.uniform(0.7, 1.0) * h, rng.uniform(0.005, 0.02) * min(w, h)
        draw.ellipse([fx - fr, fy - fr, fx + fr, fy + fr], fill=_colour(rng, 60, 256))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 5, (h, w, 1)).astype(np.float32)  # film grain
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------- clips


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)


def _mp4_frames(n: int, seed: int) -> Iterator[np.ndarray]:
    """Pan across a wide landscape while a disc rises, clouds drift and a flower opens."""
    w, h = MP4_SIZE
    rng = np.random.default_rng(seed)
    scene = landscape((w + n, h + 40), seed)
    moon = _colour(rng, 200, 256)
    clouds = [(rng.uniform(0, w), rng.uniform(0.05, 0.4) * h, rng.uniform(30, 70), rng.uniform(-2, 2))
              for _ in range(4)]
    petals = _colour(rng, 150, 256)
    for i in range(n):
        t = i / max(n - 1, 1)
        frame = scene.crop((i, int(40 * t), i + w, int(40 * t) + h))  # pan right and tilt down
        draw = ImageDraw.Draw(frame)
        _disc(draw, w * (0.2 + 0.5 * t), h * (0.75 - 0.55 * t), 22, moon)  # rising
        for cx, cy, r, v in clouds:
            x = (cx + v * i * 3) % (w + 2 * r) - r
            for dx in (-0.6, 0.0, 0.6):
                _disc(draw, x + dx * r, cy + abs(dx) * r * 0.3, r * (0.7 - abs(dx) * 0.3), (235, 235, 240))
        fx, fy, fr = w * 0.7, h * 0.8, 4 + 26 * t  # a flower that opens
        for k in range(6):
            a = k * math.pi / 3 + t
            _disc(draw, fx + fr * math.cos(a), fy + fr * math.sin(a), fr * 0.55, petals)
        _disc(draw, fx, fy, fr * 0.45, (250, 210, 40))
        yield np.asarray(frame)


def _avi_frames(seed: int) -> Iterator[np.ndarray]:
    """A 'guitar player': a figure with a swaying guitar and a strumming arm, with camera shake."""
    w, h = AVI_SIZE
    rng = np.random.default_rng(seed)
    scene = landscape((w + 16, h + 16), seed)
    shirt, wood = _colour(rng, 40, 220), _colour(rng, 100, 200)
    for i in range(AVI_FRAMES):
        t = i / AVI_FPS
        ox, oy = 8 + round(6 * math.sin(1.3 * t)), 8 + round(5 * math.sin(0.9 * t + 1))
        frame = scene.crop((ox, oy, ox + w, oy + h))
        draw = ImageDraw.Draw(frame)
        bx = w * 0.5 + 20 * math.sin(0.4 * t)
        draw.ellipse([bx - 18, 60, bx + 18, 96], fill=(230, 190, 160))  # head
        draw.rectangle([bx - 40, 96, bx + 40, 210], fill=shirt)  # body
        sway = 8 * math.sin(2 * t)
        draw.line([bx - 90, 120 + sway, bx + 10, 170 - sway], fill=(60, 35, 20), width=8)  # neck
        _disc(draw, bx + 15, 170 - sway, 30, wood)  # guitar body
        _disc(draw, bx + 15, 170 - sway, 8, (30, 20, 10))
        strum = 25 * math.sin(2 * math.pi * 2.5 * t)
        draw.line([bx + 40, 110, bx + 30, 160 + strum], fill=(230, 190, 160), width=9)  # strumming arm
        yield np.asarray(frame)


def _audio_frames(seconds: float) -> Iterator[av.AudioFrame]:
    """Stereo float planar 1024-sample frames: two slowly beating tones and a little noise."""
    rng = np.random.default_rng(0)
    total = round(seconds * AUDIO_RATE)
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (start + np.arange(n)) / AUDIO_RATE
        left = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t))
        right = 0.2 * np.sin(2 * np.pi * 330 * t + 1) + 0.02 * rng.standard_normal(n)
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        yield frame


def _write_mp4(path: Path, n: int, seed: int, audio: bool) -> None:
    """H.264 (x264 ultrafast: fast to write), moov at the end like the real files; optional AAC track."""
    w, h = MP4_SIZE
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=MP4_FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "26"}
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio else None
        samples = iter(_audio_frames(n / MP4_FPS)) if sound is not None else iter(())
        pending = next(samples, None)
        for i, rgb in enumerate(_mp4_frames(n, seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, MP4_FPS)
            container.mux(video.encode(frame))
            while sound is not None and pending is not None and pending.pts <= (i + 1) * AUDIO_RATE / MP4_FPS:
                container.mux(sound.encode(pending))  # interleaved in time order
                pending = next(samples, None)
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))


def _write_avi(path: Path, seed: int) -> None:
    w, h = AVI_SIZE
    with av.open(str(path), "w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=AVI_FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.bit_rate = 600_000
        for i, rgb in enumerate(_avi_frames(seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, AVI_FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
