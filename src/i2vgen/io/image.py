"""Image loading and the reference pre-processing (spec §1.3 items 2-3).

`load_image` turns a path, PIL image, numpy array or torch tensor into an RGB PIL image. `center_crop_wide`,
`clip_preprocess` and `latent_preprocess` reproduce VGen's `CenterCropWide` → (224² bilinear → CLIP
normalisation) and (→ [-1, 1]) pixel for pixel, including the reference's rounding (see `center_crop_wide`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from i2vgen.errors import InputError

ImageSource = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor

DEFAULT_MAX_PIXELS = 64_000_000  # 64 megapixels; bigger headers are refused before any decoding
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
_FLOAT_TOL = 1e-3  # float pixels may overshoot [0, 1] by this much (then clipped); more is an error


def load_image(src: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load `src` as an RGB PIL image, upright (EXIF orientation applied), transparency composited on white.

    `src` is a file path, a PIL image, a numpy array (HWC with C in 1/3/4, or HW; uint8 or float in [0, 1]) or
    a torch tensor (CHW or HWC, optionally with a leading batch of 1; uint8 or float in [0, 1]). High
    bit-depth modes are scaled, not clipped: `I;16` by 1/257, `I` likewise when a value exceeds 255, `F` by
    255 when all values lie in [0, 1] (else read as 0-255). CMYK is converted without colour management (PIL's
    formula, ICC profile ignored). Files whose header declares more than `max_pixels` pixels are refused
    before decoding (None: only PIL's own limit, `2 * PIL.Image.MAX_IMAGE_PIXELS`, applies).
    """
    if isinstance(src, (str, os.PathLike)):
        return _load_file(Path(src), max_pixels)
    if isinstance(src, Image.Image):
        if max_pixels is not None and src.width * src.height > max_pixels:
            raise InputError(
                f"image of {src.width}x{src.height} pixels is larger than the limit {max_pixels}"
            )
        try:
            return _to_rgb(ImageOps.exif_transpose(src), "the image")
        except (OSError, SyntaxError, ValueError) as e:  # a lazily opened image that fails to decode
            if isinstance(e, InputError):
                raise
            raise InputError(f"cannot decode the given PIL image: {e}") from None
    if isinstance(src, np.ndarray):
        return _array_to_image(src, channels_first=False, what="numpy image")
    if isinstance(src, torch.Tensor):
        return _tensor_to_image(src)
    raise InputError(
        f"cannot read an image from a {type(src).__name__}; pass a path, PIL image, array or tensor"
    )


def _load_file(path: Path, max_pixels: int | None) -> Image.Image:
    if not path.exists():
        raise InputError(f"image file not found: {str(path)!r}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a folder: {str(path)!r}")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {str(path)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise InputError(
                        f"image {str(path)!r} is {im.width}x{im.height} = {im.width * im.height} pixels, "
                        f"more than the limit of {max_pixels} (a decompression bomb or a very large photo)"
                    )
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im), repr(str(path)))
    except Image.DecompressionBombError as e:
        raise InputError(f"image {str(path)!r} is too large to decode safely: {e}") from None
    except UnidentifiedImageError:
        raise InputError(f"not an image file (or an unsupported format): {str(path)!r}") from None
    except PermissionError:
        raise InputError(f"no permission to read image file {str(path)!r}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"corrupt or truncated image file {str(path)!r}: {e}") from None


def _to_rgb(im: Image.Image, what: str) -> Image.Image:
    """Convert any PIL mode to RGB: transparency composited over white, high bit depths rescaled to 8 bits."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(im), mode)).convert("RGB")
    try:
        if mode == "La":  # premultiplied grey + alpha: PIL converts it only to LA
            im = im.convert("LA")
        if im.mode in ("RGBA", "RGBa", "LA", "PA") or "transparency" in im.info:
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
        return im if mode == "RGB" else im.convert("RGB")
    except (ValueError, OSError) as e:
        raise InputError(f"cannot convert {what} from PIL mode {mode!r} to RGB: {e}") from None


def _high_depth_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.size and a.min() >= 0.0 and a.max() <= 1.0 else 1.0
        return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    a = a.astype(np.int64)
    if mode == "I" and (a.size == 0 or (a.min() >= 0 and a.max() <= 255)):
        return a.astype(np.uint8)  # an 8-bit image stored as 32-bit integers
    return np.round(np.clip(a, 0, 65535) / 257.0).astype(np.uint8)


def _array_to_image(a: np.ndarray, *, channels_first: bool, what: str) -> Image.Image:
    """Pixels of shape HW / HWC (or CHW when `channels_first`) → RGB PIL image."""
    shape = tuple(a.shape)
    if a.ndim == 3 and channels_first:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        layout = "CHW or HWC" if channels_first else "HWC or HW"
        hint = (
            "; it looks channels-first, numpy images must be HWC"
            if (not channels_first and a.ndim == 3 and shape[0] in (1, 3, 4))
            else ""
        )
        raise InputError(f"{what} must be {layout} with 1, 3 or 4 channels, got shape {shape}{hint}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what} is empty: shape {shape}")
    if a.dtype == np.uint8:
        pixels = a
    elif np.issubdtype(a.dtype, np.floating):
        pixels = float_to_uint8(a, what)
    else:
        raise InputError(f"{what} must be uint8 or float in [0, 1], got dtype {a.dtype}")
    pixels = np.ascontiguousarray(pixels)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    return _to_rgb(Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode), what)


def float_to_uint8(a: np.ndarray, what: str = "pixels") -> np.ndarray:
    """Float pixels in [0, 1] → uint8 as `round(x * 255)` (diffusers' `numpy_to_pil`); out of range: error."""
    a = np.asarray(a, dtype=np.float32)
    if a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{what} contain NaN or infinite values")
        if lo < -_FLOAT_TOL or hi > 1 + _FLOAT_TOL:
            raise InputError(f"{what} must be floats in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)


def _tensor_to_image(t: torch.Tensor) -> Image.Image:
    shape = tuple(t.shape)
    if t.ndim == 4 and shape[0] == 1:
        t = t[0]
    if t.ndim == 3:
        chw = t.shape[0] in (1, 3, 4)
        hwc = t.shape[-1] in (1, 3, 4)
        channels_first = chw or not hwc  # ambiguous shapes (3, H, 3) are read as CHW, torch's convention
    else:
        channels_first = False
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        a = t.numpy()
    elif t.is_floating_point():
        a = t.float().numpy()
    else:
        raise InputError(f"image tensor must be uint8 or float in [0, 1], got dtype {t.dtype}")
    if t.ndim not in (2, 3):
        raise InputError(f"image tensor must be CHW, HWC or HW, got shape {shape}")
    return _array_to_image(a, channels_first=channels_first, what="image tensor")


def center_crop_wide(
    img: Image.Image, size: tuple[int, int], *, reference_rounding: bool = True
) -> Image.Image:
    """Resize (PIL BOX) to cover `size` = (width, height), then crop the centre: VGen's `CenterCropWide`.

    The reference scales by `s = min(w / W, h / H)` and resizes to `(round(w // s), round(h // s))`. The floor
    division by a float often lands one pixel short of the box (512² → 1279² for 1280², 1024x576 → 1279x719
    for 1280x704: about 40 % of input sizes), and the crop then reaches one pixel outside the image, which PIL
    fills with black: a black first column and/or row. We keep that by default because the released model and
    the diffusers pipeline see exactly this input; `reference_rounding=False` computes the cover size in exact
    integer arithmetic instead (never short). Extreme aspect ratios whose cover image would exceed
    `DEFAULT_MAX_PIXELS` are refused.
    """
    width, height = _check_size(size)
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError(f"cannot crop an empty image of size {w}x{h}")
    if reference_rounding:
        scale = min(w / width, h / height)
        new_w, new_h = round(w // scale), round(h // scale)
    elif w * height <= h * width:  # width is the limiting side
        new_w, new_h = width, max(height, (2 * h * width + w) // (2 * w))
    else:
        new_w, new_h = max(width, (2 * w * height + h) // (2 * h)), height
    if new_w * new_h > max(DEFAULT_MAX_PIXELS, 4 * width * height):
        raise InputError(
            f"image of {w}x{h} has too extreme an aspect ratio for {width}x{height}: "
            f"covering it would need a {new_w}x{new_h} intermediate image"
        )
    img = img.resize((new_w, new_h), resample=Image.Resampling.BOX)
    x1 = (new_w - width) // 2
    y1 = (new_h - height) // 2
    return img.crop((x1, y1, x1 + width, y1 + height))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height), got {size!r}") from None
    if width < 1 or height < 1 or (width, height) != tuple(size):
        raise InputError(f"size must be two positive integers (width, height), got {size!r}")
    return width, height


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → float32 tensor (3, H, W) in [0, 1] (`uint8 / 255`, like torchvision's `to_tensor`)."""
    a = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def _as_rgb_image(img: Image.Image | ImageSource) -> Image.Image:
    if isinstance(img, Image.Image) and img.mode == "RGB":
        return img  # used as given: call `load_image` first for EXIF orientation
    return load_image(img)


def clip_preprocess(
    img: Image.Image | ImageSource, width: int = 1280, *, size: int = CLIP_SIZE
) -> torch.Tensor:
    """Image → CLIP vision input (3, 224, 224): central `width`² square (via `center_crop_wide`), 224² PIL
    bilinear, [0, 1], CLIP mean/std. Same as VGen (`width` = 1280) and diffusers' `I2VGenXLPipeline`
    (`width` = its width)."""
    square = center_crop_wide(_as_rgb_image(img), (width, width))
    x = pil_to_tensor(square.resize((size, size), resample=Image.Resampling.BILINEAR))
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def latent_preprocess(img: Image.Image | ImageSource, width: int, height: int) -> torch.Tensor:
    """Image → VAE input (3, height, width) in [-1, 1]: `center_crop_wide` to (width, height), then 2x - 1."""
    x = pil_to_tensor(center_crop_wide(_as_rgb_image(img), (width, height)))
    return x * 2 - 1
