"""i2vgen.io.image: every kind of input, bad input, and the reference pre-processing (diffusers parity)."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2vgen.errors import InputError
from i2vgen.io import center_crop_wide, clip_preprocess, latent_preprocess, load_image, pil_to_tensor


@pytest.fixture
def real_image_path(real_data_dir: str) -> Path:
    """The first image of ../shared/data/real, or of its synthetic stand-in (conftest.py)."""
    paths = sorted((Path(real_data_dir) / "images").glob("*.jpg"))
    assert paths, f"no .jpg in {real_data_dir}/images"
    return paths[0]


def _px(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return tuple(img.getpixel(xy))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares `width` x `height` but holds almost no data (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------- loading


def test_load_real_jpeg(real_image_path: Path) -> None:
    for src in (real_image_path, str(real_image_path)):
        img = load_image(src)
        assert img.mode == "RGB" and img.size == (1280, 720)
    img.load()  # the file is closed, the pixels are ours
    assert np.asarray(img).std() > 10


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent → white
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),  # half alpha over white
        ("LA", (100, 255), (100, 100, 100)),
        ("LA", (100, 0), (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 257 * 100, (100, 100, 100)),
        ("I", 257 * 200, (200, 200, 200)),  # values above 255: read as 16-bit
        ("I", 42, (42, 42, 42)),  # 8-bit data stored as 32-bit integers
        ("F", 0.5, (128, 128, 128)),  # floats in [0, 1]
        ("F", 200.0, (200, 200, 200)),  # floats in 0-255
    ],
)
def test_mode_conversion(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    img = load_image(Image.new(mode, (4, 3), value))
    assert img.mode == "RGB" and img.size == (4, 3)
    assert all(abs(a - b) <= 1 for a, b in zip(_px(img), expected)), (_px(img), expected)


def test_palette_with_transparency_and_premultiplied_modes() -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    img = load_image(p)
    assert _px(img, (0, 0)) == (255, 255, 255) and _px(img, (1, 1)) == (200, 100, 50)
    assert _px(load_image(Image.new("PA", (2, 2), (0, 0)))) == (255, 255, 255)
    assert _px(load_image(Image.new("RGBa", (2, 2), (0, 0, 0, 0)))) == (255, 255, 255)
    assert _px(load_image(Image.new("La", (2, 2), (0, 0)))) == (255, 255, 255)


@pytest.mark.parametrize(
    "mode, value, suffix, expected",
    [
        ("RGBA", (10, 20, 30, 0), ".png", (255, 255, 255)),
        ("LA", (50, 255), ".png", (50, 50, 50)),
        ("I;16", 65535, ".png", (255, 255, 255)),
        ("I", 257 * 30, ".tif", (30, 30, 30)),
        ("F", 0.25, ".tif", (64, 64, 64)),
        ("CMYK", (0, 0, 0, 0), ".jpg", (255, 255, 255)),
        ("L", 9, ".gif", (9, 9, 9)),
    ],
)
def test_mode_conversion_from_files(
    tmp_path: Path, mode: str, value: object, suffix: str, expected: tuple[int, int, int]
) -> None:
    path = tmp_path / f"img{suffix}"
    Image.new(mode, (8, 8), value).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert all(abs(a - b) <= 2 for a, b in zip(_px(img), expected)), (_px(img), expected)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    img = load_image(path)
    assert img.size == (20, 40)
    r, _, b = _px(img, (15, 5))  # top-left went to top-right
    assert r > 200 and b < 60
    r, _, b = _px(img, (5, 5))
    assert b > 200 and r < 60
    # a PIL image opened by the caller gets the same treatment
    assert load_image(Image.open(path)).size == (20, 40)


def test_arrays_and_tensors() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(hwc)), hwc)
    assert np.array_equal(np.asarray(load_image(hwc.astype(np.float32) / 255)), hwc)
    assert np.array_equal(np.asarray(load_image(hwc[:, :, 0]))[:, :, 1], hwc[:, :, 0])  # HW greyscale
    assert np.array_equal(np.asarray(load_image(hwc[:, :, :1]))[:, :, 2], hwc[:, :, 0])  # HW1
    rgba = np.concatenate([hwc, np.zeros((5, 7, 1), np.uint8)], axis=2)
    assert (np.asarray(load_image(rgba)) == 255).all()

    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    assert np.array_equal(np.asarray(load_image(chw)), hwc)  # uint8 CHW
    assert np.array_equal(np.asarray(load_image(chw.float() / 255)), hwc)  # float CHW
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(hwc))), hwc)  # uint8 HWC
    assert np.array_equal(np.asarray(load_image(chw[None].double() / 255)), hwc)  # batch of one
    assert np.array_equal(np.asarray(load_image(chw.to(torch.bfloat16) / 255)).shape, hwc.shape)
    assert np.array_equal(np.asarray(load_image(pil_to_tensor(Image.fromarray(hwc)))), hwc)


# ------------------------------------------------------------------------------------------------- bad input


def test_bad_files(tmp_path: Path, real_image_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    (tmp_path / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    data = real_image_path.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    cases = [
        ("not found", tmp_path / "missing.png"),
        ("folder", tmp_path),
        ("empty", tmp_path / "empty.png"),
        ("not an image", tmp_path / "notes.txt"),
        ("not an image", tmp_path / "garbage.jpg"),
        ("truncated", tmp_path / "truncated.jpg"),
    ]
    for word, path in cases:
        with pytest.raises(InputError, match=word) as info:
            load_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_decompression_bombs(tmp_path: Path, real_image_path: Path) -> None:
    path = tmp_path / "bomb.png"
    _png_header_only(path, 10_000, 10_000)  # 100 MP: our 64 MP limit, checked on the header
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        with pytest.raises(InputError, match="more than the limit"):
            load_image(path)
        _png_header_only(path, 20_000, 20_000)  # 400 MP: beyond PIL's own hard limit too
        with pytest.raises(InputError, match="too large"):
            load_image(path, max_pixels=None)
        with pytest.raises(InputError, match="limit"):
            load_image(real_image_path, max_pixels=1000)
        with pytest.raises(InputError, match="limit"):
            load_image(Image.new("RGB", (100, 100)), max_pixels=1000)


@pytest.mark.parametrize(
    "src, word",
    [
        (np.zeros((5, 5, 2), np.uint8), "channels"),
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((1, 5, 5, 3), np.uint8), "shape"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 5, 3), np.int16), "dtype"),
        (np.full((5, 5, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((5, 5, 3), -1.0, np.float32), r"\[0, 1\]"),
        (np.full((5, 5, 3), np.nan, np.float32), "NaN"),
        (torch.zeros(3, 5, 5, dtype=torch.int64), "dtype"),
        (torch.zeros(2, 3, 5, 5), "shape"),
        (torch.zeros(7, 5, 5), "channels"),
        (12345, "int"),
    ],
)
def test_bad_arrays(src: object, word: str) -> None:
    with pytest.raises(InputError, match=word):
        load_image(src)


# --------------------------------------------------------------------------------------------- pre-processing


def test_center_crop_wide_landscape_to_1280x704() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    out = center_crop_wide(img, (1280, 704))  # scale 1: no resize, 8 rows cut top and bottom
    assert out.size == (1280, 704)
    assert np.array_equal(np.asarray(out), np.asarray(img)[8:712])


@pytest.mark.parametrize(
    "size, box, resized, offset",
    [
        ((400, 700), (1280, 704), (1280, 2240), (0, 768)),  # portrait: width limits, 700 // 0.3125 = 2240
        ((333, 517), (256, 160), (256, 397), (0, 118)),  # scale = 333/256, 517 // scale = 397
        ((1920, 1080), (1280, 1280), (2275, 1280), (497, 0)),  # central square
        ((1024, 576), (1280, 704), (1279, 719), (-1, 7)),  # 1024 // 0.8 = 1279: one column short
    ],
)
def test_center_crop_wide_arithmetic(
    size: tuple[int, int], box: tuple[int, int], resized: tuple[int, int], offset: tuple[int, int]
) -> None:
    """Resize to (round(w // s), round(h // s)), s = min(w / W, h / H), BOX; crop at ((w' - W) // 2, ...)."""
    w, h = size
    s = min(w / box[0], h / box[1])
    expected_size = (round(w // s), round(h // s))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    big = img.resize(expected_size, Image.Resampling.BOX)
    x1, y1 = (expected_size[0] - box[0]) // 2, (expected_size[1] - box[1]) // 2
    out = center_crop_wide(img, box)
    assert out.size == box
    assert np.array_equal(np.asarray(out), np.asarray(big.crop((x1, y1, x1 + box[0], y1 + box[1]))))
    assert expected_size == resized and (x1, y1) == offset  # worked out by hand


def test_center_crop_wide_reference_black_line_and_exact_mode() -> None:
    """The reference's float floor division lands 1 px short (512² → 1279²): a black first column and row."""
    img = Image.new("RGB", (512, 512), (200, 150, 100))
    ref = np.asarray(center_crop_wide(img, (1280, 1280)))
    assert ref.shape == (1280, 1280, 3)
    assert (ref[:, 0] == 0).all() and (ref[0, :] == 0).all() and (ref[1:, 1:] > 0).all()
    exact = np.asarray(center_crop_wide(img, (1280, 1280), reference_rounding=False))
    assert exact.shape == (1280, 1280, 3) and (exact == (200, 150, 100)).all()
    wide = np.asarray(center_crop_wide(Image.new("RGB", (1024, 576), (9, 9, 9)), (1280, 704)))
    assert (wide[:, 0] == 0).all() and (wide[:, 1:] == 9).all()  # a common 16:9 size gets a black left column
    for w, h in [(333, 517), (517, 333), (1, 1), (1279, 703), (4000, 300)]:
        for box in [(1280, 704), (64, 96)]:
            assert center_crop_wide(Image.new("RGB", (w, h)), box, reference_rounding=False).size == box


def test_center_crop_wide_bad_size() -> None:
    img = Image.new("RGB", (8, 8))
    for size in [(0, 4), (4, -1), (4.5, 4), "ab", (4,)]:
        with pytest.raises(InputError, match="size"):
            center_crop_wide(img, size)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="aspect ratio"):  # would need a 1,280,000 x 704 intermediate image
        center_crop_wide(Image.new("RGB", (10_000, 5)), (1280, 704))


def test_preprocess_shapes_and_ranges(real_image_path: Path) -> None:
    img = load_image(real_image_path)
    clip = clip_preprocess(img)
    assert clip.shape == (3, 224, 224) and clip.dtype == torch.float32
    lat = latent_preprocess(img, 1280, 704)
    assert lat.shape == (3, 704, 1280) and lat.min() >= -1 and lat.max() <= 1
    # paths and arrays go through load_image
    assert torch.equal(latent_preprocess(real_image_path, 64, 32), latent_preprocess(img, 64, 32))


def test_preprocess_matches_diffusers_pipeline(real_image_path: Path) -> None:
    """Same image → same tensors as I2VGenXLPipeline (`_center_crop_wide`, `_resize_bilinear`, CLIP norm)."""
    pipeline_module = pytest.importorskip("diffusers.pipelines.deprecated.i2vgen_xl.pipeline_i2vgen_xl")
    from diffusers.video_processor import VideoProcessor
    from transformers import CLIPImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feature_extractor = CLIPImageProcessor()  # falls back to the PIL backend without torchvision
    processor = VideoProcessor(vae_scale_factor=8, do_resize=False)
    base = load_image(real_image_path)
    images = [
        base,
        base.crop((100, 0, 500, 700)),
        base.resize((333, 517)),
        base.resize((1024, 576)),
        base.resize((512, 512)),
    ]
    for img in images:
        for width, height in [(1280, 704), (256, 160)]:
            square = pipeline_module._center_crop_wide(img, (width, width))
            assert np.array_equal(np.asarray(square), np.asarray(center_crop_wide(img, (width, width))))
            small = pipeline_module._resize_bilinear(square, (224, 224))
            pixels = processor.numpy_to_pt(processor.pil_to_numpy(small))
            expected = feature_extractor(
                images=pixels,
                do_normalize=True,
                do_center_crop=False,
                do_resize=False,
                do_rescale=False,
                return_tensors="pt",
            ).pixel_values[0]
            assert torch.equal(clip_preprocess(img, width), expected)

            latent_input = processor.preprocess(pipeline_module._center_crop_wide(img, (width, height)))[0]
            assert torch.equal(latent_preprocess(img, width, height), latent_input)
