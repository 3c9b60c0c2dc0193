"""Offline evaluation (issue 6, item 4): pure functions over frame arrays, a summary helper and `i2vgen eval`.

Frames are numpy arrays (F, H, W, 3) (an image: (H, W, 3)), uint8 in [0, 255] or float in [0, 1]; every metric
works on the 0-255 scale (floats are multiplied by 255, not rounded). Nothing is downloaded: the one learned
metric, the Fréchet video distance, takes any feature extractor (e.g. a local TorchScript file).

torch and the shapes module are imported inside the functions that use them, so that importing this module (the
`i2vgen` command line builds its parser from `add_eval_command`) stays cheap.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2vgen.errors import I2VGenError, InputError

Frames = np.ndarray  # (F, H, W, 3) or (H, W, 3), uint8 or float in [0, 1]
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights (MATLAB rgb2gray)
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004
VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
TRACK_MAX_SIDE = 128  # colour tracking works on frames reduced to at most this side


def _frames(x: Frames, name: str = "frames") -> np.ndarray:
    """→ float64 (F, H, W, 3) on the 0-255 scale."""
    if hasattr(x, "detach"):  # a torch tensor in the same channels-last layout
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or 0 in a.shape:
        raise InputError(f"{name} must be (F, H, W, 3) or (H, W, 3), got shape {np.shape(x)}")
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name} must be uint8 or float in [0, 1], got dtype {a.dtype}")
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"float {name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: shapes differ, {len(a)} frames of {a.shape[1:]} vs {len(b)} of {b.shape[1:]}")


# ---------------------------------------------------------------------------------------- fidelity: PSNR, SSIM


def psnr(x: Frames, y: Frames) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(255² / MSE), with the MSE pooled over every pixel, channel and
    frame of the two arrays; inf when they are equal."""
    a, b = _frames(x, "x"), _frames(y, "y")
    _same_shape(a, b, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(x: Frames, y: Frames, *, channels: str = "luma") -> float:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, eq. 13): Gaussian window 11x11 with sigma 1.5,
    K1 = 0.01, K2 = 0.03, L = 255, local statistics over 'valid' windows only (as the authors' MATLAB
    `ssim_index`); the mean of the SSIM map over all windows and frames.

    `channels`: "luma" (default) on Y = 0.299 R + 0.587 G + 0.114 B, or "rgb": each channel on its own, averaged.
    Frames need at least 11 pixels per side.
    """
    import torch
    import torch.nn.functional as F

    a, b = _frames(x, "x"), _frames(y, "y")
    _same_shape(a, b, "ssim")
    if min(a.shape[1:3]) < SSIM_WINDOW:
        size = f"{a.shape[2]}x{a.shape[1]}"
        raise InputError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {size}")
    if channels == "luma":
        a, b = a @ np.asarray(LUMA)[:, None], b @ np.asarray(LUMA)[:, None]  # (F, H, W, 1)
    elif channels != "rgb":
        raise InputError(f"channels must be 'luma' or 'rgb', got {channels!r}")
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).reshape(-1, 1, *a.shape[1:3])  # (F*C, 1, H, W)
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).reshape(-1, 1, *b.shape[1:3])
    g = _gaussian(SSIM_WINDOW, SSIM_SIGMA)
    window = (g[:, None] * g[None, :])[None, None]  # (1, 1, 11, 11)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)  # 'valid'

    mu_a, mu_b = filt(ta), filt(tb)
    var_a, var_b = filt(ta * ta) - mu_a**2, filt(tb * tb) - mu_b**2
    cov = filt(ta * tb) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _gaussian(size: int, sigma: float) -> Any:
    """Normalised 1-D Gaussian window (float64 tensor), centred."""
    import torch

    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def first_frame_fidelity(video: Frames, image: Frames) -> dict[str, float]:
    """PSNR and SSIM (luma) of frame 0 of `video` against the input `image` (same size; the CLI centre-crops and
    resizes the input as the pipeline does)."""
    first = _frames(video, "video")[:1]
    ref = _frames(image, "image")[:1]
    return {"psnr": psnr(first / 255, ref / 255), "ssim": ssim(first / 255, ref / 255)}


# ------------------------------------------------------------------------------------- temporal: drift, flicker


def colour_drift(video: Frames) -> dict[str, float]:
    """Colour drift over time: with m_t the mean RGB colour of frame t (0-255), d_t = mean_c |m_t,c - m_0,c|, the
    mean per-channel distance of frame t's mean colour to frame 0's; returns the mean and the max of d_t over
    t >= 1 (0 for a single frame)."""
    means = _frames(video, "video").mean(axis=(1, 2))  # (F, 3)
    d = np.abs(means[1:] - means[0]).mean(axis=1)
    return {"mean": float(d.mean()) if d.size else 0.0, "max": float(d.max()) if d.size else 0.0}


def temporal_flickering(video: Frames) -> float:
    """VBench's temporal flickering score (Vchitect/VBench: vbench/temporal_flickering.py, `cal_score`, commit
    00c4b29): the mean absolute difference between consecutive frames over all pixels and channels (0-255
    scale), averaged over the F - 1 pairs, reported as (255 - mean) / 255; 1 for a static clip. VBench applies it
    to clips its static filter keeps; here it is computed on any clip."""
    v = _frames(video, "video")
    if len(v) < 2:
        raise InputError("temporal flickering needs at least 2 frames")
    mae = np.abs(v[1:] - v[:-1]).mean(axis=(1, 2, 3))  # per pair, as VBench's `calculate_mae`
    return float((255.0 - mae.mean()) / 255.0)


# ---------------------------------------------------------------------------------------------- optical flow


def optical_flow(
    frame0: Frames,
    frame1: Frames,
    *,
    levels: int | None = None,
    iterations: int = 10,
    window_sigma: float = 2.0,
    regularisation: float = 1e-3,
    max_step: float = 1.0,
    min_side: int = 16,
) -> np.ndarray:
    """Dense optical flow (H, W, 2) = (u, v) in pixels, such that frame1(x + u, y + v) ≈ frame0(x, y).

    Pyramidal Lucas-Kanade (Lucas & Kanade 1981; coarse to fine as Bouguet 2001) on luma in [0, 1]. At each level,
    `iterations` Gauss-Newton steps: warp frame1 by the current flow (bilinear), take the symmetric gradient
    (I_x, I_y) = (∇frame0 + ∇warped) / 2 and I_t = warped - frame0, and solve per pixel
    (G * [I_x², I_x I_y; I_x I_y, I_y²] + λ Id) du = -G * [I_x I_t; I_y I_t], with G a Gaussian window of
    `window_sigma` pixels and λ = `regularisation` ((intensity / pixel)²: flat areas keep zero flow); each step
    is clipped to +-`max_step` pixels. `levels` (default: as many as keep the coarsest side >= `min_side`, at most
    5) halve the size each time (Gaussian blur, 2x2 means); the flow is doubled on the way up.
    """
    import torch
    import torch.nn.functional as F

    a = _luma_tensor(frame0, "frame0")
    b = _luma_tensor(frame1, "frame1")
    if a.shape != b.shape:
        raise InputError(f"optical flow: frame sizes differ, {tuple(a.shape[-2:])} vs {tuple(b.shape[-2:])}")
    h, w = a.shape[-2:]
    if levels is None:
        levels = max(1, min(5, int(math.log2(max(min(h, w), min_side) / min_side)) + 1))
    pyramid = [(a, b)]
    for _ in range(levels - 1):
        a, b = (F.avg_pool2d(_blur(t, 1.0), 2) for t in (a, b))
        pyramid.append((a, b))
    flow = torch.zeros(1, 2, *pyramid[-1][0].shape[-2:], dtype=torch.float64)
    for a, b in reversed(pyramid):
        lh, lw = a.shape[-2:]
        if flow.shape[-2:] != (lh, lw):
            sy, sx = lh / flow.shape[-2], lw / flow.shape[-1]
            flow = F.interpolate(flow, size=(lh, lw), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([sx, sy], dtype=torch.float64).view(1, 2, 1, 1)
        a, b = _blur(a, 1.0), _blur(b, 1.0)  # smoother images linearise better
        ax, ay = _gradients(a)
        for _ in range(iterations):
            warped = _warp(b, flow)
            wx, wy = _gradients(warped)
            ix, iy, it = (ax + wx) / 2, (ay + wy) / 2, warped - a
            sxx = _blur(ix * ix, window_sigma) + regularisation
            syy = _blur(iy * iy, window_sigma) + regularisation
            sxy, sxt, syt = (_blur(t, window_sigma) for t in (ix * iy, ix * it, iy * it))
            det = sxx * syy - sxy * sxy
            du = (-syy * sxt + sxy * syt) / det
            dv = (sxy * sxt - sxx * syt) / det
            flow = flow + torch.cat([du, dv], dim=1).clamp(-max_step, max_step)
    return flow[0].permute(1, 2, 0).numpy()


def _luma_tensor(x: Frames, name: str) -> Any:
    """A single frame → luma in [0, 1], float64 tensor (1, 1, H, W)."""
    import torch

    f = _frames(x, name)
    if len(f) != 1:
        raise InputError(f"{name} must be one frame (H, W, 3), got {len(f)} frames")
    return torch.from_numpy(f[0] @ np.asarray(LUMA) / 255.0)[None, None]


def _blur(t: Any, sigma: float) -> Any:
    """Separable Gaussian blur of (N, 1, H, W), radius 3 sigma, replicate padding."""
    import torch.nn.functional as F

    radius = max(1, math.ceil(3 * sigma))
    g = _gaussian(2 * radius + 1, sigma)
    t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1))


def _gradients(t: Any) -> tuple[Any, Any]:
    """Central differences (d/dx, d/dy) of (N, 1, H, W), replicate padding."""
    import torch.nn.functional as F

    p = F.pad(t, (1, 1, 1, 1), mode="replicate")
    return (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2, (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2


def _warp(t: Any, flow: Any) -> Any:
    """t sampled at (x + u, y + v), bilinear, border values outside."""
    import torch
    import torch.nn.functional as F

    h, w = t.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=t.dtype), torch.arange(w, dtype=t.dtype), indexing="ij")
    gx = 2 * (xs + flow[0, 0]) / max(w - 1, 1) - 1
    gy = 2 * (ys + flow[0, 1]) / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)[None]  # (1, H, W, 2)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=True)


def motion_magnitude(video: Frames, *, max_side: int = 256) -> dict[str, float]:
    """Motion from `optical_flow` between consecutive frames, in pixels per frame at the video's resolution:
    "mean", the mean flow magnitude over all pixels, and "top5", the mean of the largest 5 % of magnitudes (the
    per-pair score of VBench's dynamic degree, Vchitect/VBench: vbench/dynamic_degree.py `get_score`, with this
    flow in place of RAFT); each averaged over the F - 1 pairs. Frames larger than `max_side` are first reduced
    by an integer factor k (k x k means) and the flow multiplied by k."""

    v = _frames(video, "video")
    if len(v) < 2:
        raise InputError("motion magnitude needs at least 2 frames")
    v, k = _reduce(v, max_side)
    means, tops = [], []
    for f0, f1 in itertools.pairwise(v):
        mag = np.linalg.norm(optical_flow(f0 / 255, f1 / 255), axis=-1).ravel() * k
        n = max(1, int(mag.size * 0.05))
        means.append(mag.mean())
        tops.append(np.sort(mag)[-n:].mean())
    return {"mean": float(np.mean(means)), "top5": float(np.mean(tops))}


# ------------------------------------------------------------------------------- text-motion agreement (shapes)


def colour_segmentation(video: Frames, *, max_side: int = TRACK_MAX_SIDE) -> tuple[np.ndarray, np.ndarray, int]:
    """Which named shape colour each pixel shows, allowing for antialiased or blurred edges over a grey background
    → (labels (F, h, w): index into `shapes.COLOURS` (its order), -1 for none; alpha (F, h, w) in [0, 1]; k).

    Each pixel p is fit, for each named colour c, as alpha c + g (1, 1, 1) (c mixed with some grey g): with ~ the
    component orthogonal to the grey axis, alpha = p~ . c~ / |c~|² and the residual is |p~|² - (p~ . c~)² / |c~|².
    The label is the colour with the smallest residual among those with alpha > 0 (the nearest named colour in
    chroma, whatever the grey level), and alpha is its share in the pixel: 1 for the pure colour, 0 for a grey,
    about 0.5 on an edge half-covered by the shape over a grey (a plain nearest-colour rule calls a pink-on-grey
    edge purple). Frames larger than `max_side` are first reduced by an integer factor k (k x k means).
    """
    from i2vgen.shapes import COLOURS

    v, k = _reduce(_frames(video, "video"), max_side)
    colours = np.asarray(list(COLOURS.values()), np.float64)
    chroma = colours - colours.mean(axis=1, keepdims=True)  # (S, 3): c~
    pixels = v.reshape(-1, 3)
    p = pixels - pixels.mean(axis=1, keepdims=True)  # (N, 3): p~
    dots = p @ chroma.T  # (N, S)
    norm2 = (chroma**2).sum(axis=1)  # (S,)
    alpha = dots / norm2
    residual = np.where(alpha > 0, (p**2).sum(axis=1, keepdims=True) - dots**2 / norm2, np.inf)
    best = residual.argmin(axis=1)
    rows = np.arange(len(p))
    labels = np.where(np.isfinite(residual[rows, best]), best, -1)
    share = np.where(labels >= 0, np.clip(alpha[rows, best], 0.0, 1.0), 0.0)
    return labels.reshape(v.shape[:3]), share.reshape(v.shape[:3]), k


def _reduce(v: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """(F, H, W, 3) → (k x k means, edges cropped to a multiple of k; k), k = ceil(max(H, W) / max_side)."""
    k = max(1, math.ceil(max(v.shape[1:3]) / max_side))
    if k == 1:
        return v, 1
    f, h, w, c = v.shape
    return v[:, : h - h % k, : w - w % k].reshape(f, h // k, k, w // k, k, c).mean(axis=(2, 4)), k


def track_colours(
    video: Frames, colours: Sequence[str], *, max_side: int = TRACK_MAX_SIDE
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each named colour: (centroids (F, 2), counts (F,)). The centroid is (x, y) in pixels of the video (pixel
    centres at integers), weighted by alpha over the pixels that `colour_segmentation` gives that colour with
    alpha >= 0.5; counts are those pixels (at the reduced size); NaN where there are none."""
    from i2vgen.shapes import COLOURS

    for colour in colours:
        if colour not in COLOURS:
            raise InputError(f"unknown colour {colour!r}; choose one of {sorted(COLOURS)}")
    labels, alpha, k = colour_segmentation(video, max_side=max_side)
    ys, xs = np.mgrid[: labels.shape[1], : labels.shape[2]]
    out = {}
    for colour in colours:
        weight = np.where((labels == list(COLOURS).index(colour)) & (alpha >= 0.5), alpha, 0.0)  # (F, h, w)
        total = weight.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (weight * xs).sum(axis=(1, 2)) / total
            cy = (weight * ys).sum(axis=(1, 2)) / total
        centroids = (np.stack([cx, cy], axis=1) + 0.5) * k - 0.5  # reduced → full-size pixel coordinates
        out[colour] = (centroids, (weight > 0).sum(axis=(1, 2)))
    return out


def displacement(centroids: np.ndarray, counts: np.ndarray, min_count: int = 2) -> tuple[float, float]:
    """Net displacement (dx, dy) of a tracked centroid over the clip: the least-squares line through the centroids
    of the frames with at least `min_count` pixels, at the last frame minus at the first; NaNs when fewer than
    two frames qualify."""
    seen = counts >= min_count
    if seen.sum() < 2:
        return math.nan, math.nan
    t = np.flatnonzero(seen).astype(np.float64)
    slope = np.polyfit(t, centroids[seen], 1)[0]  # (2,): pixels per frame in x and y
    return float(slope[0] * (len(counts) - 1)), float(slope[1] * (len(counts) - 1))


def motion_directions(video: Frames, colours: Sequence[str], *, threshold: float = 0.03) -> dict[str, str | None]:
    """For each named colour: 'left', 'right', 'up' or 'down', the larger component of its `displacement` (y grows
    downwards; tracked by `track_colours`, frames with >= max(2, 0.1 % of the pixels)), or None when the colour
    is not found or moves less than `threshold` times the frame's larger side."""
    tracks = track_colours(video, colours)
    h, w = np.shape(video)[-3:-1]
    k = max(1, math.ceil(max(h, w) / TRACK_MAX_SIDE))
    min_count = max(2, math.ceil(1e-3 * h * w / k**2))
    out: dict[str, str | None] = {}
    for colour, (centroids, counts) in tracks.items():
        dx, dy = displacement(centroids, counts, min_count)
        if math.isnan(dx) or max(abs(dx), abs(dy)) < threshold * max(h, w):
            out[colour] = None
        elif abs(dx) >= abs(dy):
            out[colour] = "right" if dx > 0 else "left"
        else:
            out[colour] = "down" if dy > 0 else "up"
    return out


def prompt_agreement(video: Frames, prompt: str) -> bool | None:
    """True when every (colour, shape, direction) of `shapes.parse_prompt(prompt)` is matched by
    `motion_directions(video, ...)[colour]` (the shape kind is not checked); None when the prompt names none."""
    per_item = prompt_agreement_per_item(video, prompt)
    return all(per_item) if per_item else None


def prompt_agreement_per_item(video: Frames, prompt: str) -> list[bool]:
    """For each (colour, shape, direction) of `shapes.parse_prompt(prompt)`, whether that colour moves that way
    (`prompt_agreement` asks for all of them at once); [] when the prompt names none."""
    from i2vgen.shapes import parse_prompt

    items = parse_prompt(prompt)
    found = motion_directions(video, [colour for colour, _, _ in items]) if items else {}
    return [found[colour] == direction for colour, _, direction in items]


def direction_accuracy(videos: Sequence[Frames], prompts: Sequence[str]) -> float:
    """Fraction of the videos whose prompt `prompt_agreement` can check that agree with it."""
    if len(videos) != len(prompts):
        raise InputError(f"{len(videos)} videos but {len(prompts)} prompts")
    checked = [ok for ok in map(prompt_agreement, videos, prompts) if ok is not None]
    if not checked:
        raise InputError("no prompt names a colour and a direction (e.g. 'a red circle moves left')")
    return float(np.mean(checked))


# ---------------------------------------------------------------------------------------------- refinement gain


def bicubic_upscale(frames: Frames, size: tuple[int, int]) -> np.ndarray:
    """Frames → float (F, height, width, 3) in [0, 1] at `size` = (height, width): PyTorch bicubic (a = -0.75,
    align_corners=False), clipped."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(_frames(frames)).permute(0, 3, 1, 2)
    up = F.interpolate(t, size=tuple(size), mode="bicubic", align_corners=False)
    return (up.clamp(0, 255) / 255).permute(0, 2, 3, 1).numpy()


def resize_like_refiner(frames: Frames, size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """`bicubic_upscale` to `size` = (height, width) with the refiner's geometry (`pipelines.refine.resize_frames`):
    "stretch" to the size, or "crop": scale to cover it, then take the centre."""
    height, width = size
    if resize == "stretch":
        return bicubic_upscale(frames, size)
    if resize != "crop":
        raise InputError(f"resize must be 'stretch' or 'crop', got {resize!r}")
    h, w = np.shape(frames)[-3:-1]
    s = max(width / w, height / h)
    cover = (max(height, round(h * s)), max(width, round(w * s)))
    top, left = (cover[0] - height) // 2, (cover[1] - width) // 2
    return bicubic_upscale(frames, cover)[:, top:top + height, left:left + width]


def refinement_gain(
    base: Frames, refined: Frames, ground_truth: Frames, *, resize: str = "stretch"
) -> dict[str, float]:
    """Refinement against its baseline: PSNR and SSIM (luma, `psnr` / `ssim`) of the `refined` frames and of the
    bicubic up-scaling of the `base` frames (`resize_like_refiner`), both against `ground_truth` (same size as
    `refined`); gains are refined minus bicubic (dB for PSNR)."""
    ref = _frames(refined, "refined") / 255
    gt = _frames(ground_truth, "ground_truth") / 255
    _same_shape(ref, gt, "refinement_gain")
    up = resize_like_refiner(base, gt.shape[1:3], resize)
    _same_shape(up, gt, "refinement_gain (base frames)")
    out = {"psnr_refined": psnr(ref, gt), "psnr_bicubic": psnr(up, gt), "ssim_refined": ssim(ref, gt),
           "ssim_bicubic": ssim(up, gt)}
    out["psnr_gain_db"] = out["psnr_refined"] - out["psnr_bicubic"]
    out["ssim_gain"] = out["ssim_refined"] - out["ssim_bicubic"]
    return out


def detail(video: Frames) -> float:
    """Fine detail in a clip: the mean gradient magnitude of luma (central differences, one-sided at the borders,
    0-255 scale) over all pixels and frames."""
    y = _frames(video, "video") @ np.asarray(LUMA)  # (F, H, W)
    if min(y.shape[1:]) < 2:
        raise InputError(f"detail needs frames of at least 2x2 pixels, got {y.shape[2]}x{y.shape[1]}")
    gy, gx = np.gradient(y, axis=(1, 2))
    return float(np.hypot(gx, gy).mean())


def refinement_fidelity(base: Frames, refined: Frames, *, resize: str = "stretch") -> dict[str, float]:
    """Refinement without a ground truth, against the refiner's input `base` up-scaled to the refined size
    (`resize_like_refiner`, bicubic): input_psnr / input_ssim (luma) say how far the refiner moved away from its
    input, detail_gain = `detail`(refined) / `detail`(up-scaled input) how much finer detail it added (1: none;
    inf when the up-scaled input is flat and the refined clip is not)."""
    ref = _frames(refined, "refined") / 255
    up = resize_like_refiner(base, ref.shape[1:3], resize)
    _same_shape(up, ref, "refinement_fidelity (input frames)")
    d_ref, d_up = detail(ref), detail(up)
    gain = d_ref / d_up if d_up > 0 else (math.inf if d_ref > 0 else 1.0)
    return {"input_psnr": psnr(ref, up), "input_ssim": ssim(ref, up), "detail_gain": gain}


# ----------------------------------------------------------------------------------------- Fréchet distance


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative round-off
    eigenvalues set to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID, Heusel et al. 2017):
    |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^½ sigma2 sigma1^½)^½), in float64. The trace term is
    the sum of the square roots of the eigenvalues of the symmetric PSD matrix sigma1^½ sigma2 sigma1^½ (equal to
    tr((sigma1 sigma2)^½)), which stays real and stable for singular covariances; the result is clamped at 0."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(f"frechet_distance: shapes {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape} do not match")
    root1 = _sqrtm_psd(s1)
    m = root1 @ s2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_root))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features (N, D), float64; the covariance with N - 1 in the denominator (as FID/FVD)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def extract_features(
    videos: Sequence[Frames], feature_extractor: Callable[[Any], Any], *, batch_size: int = 8
) -> np.ndarray:
    """Features (N, D) of `videos`: consecutive videos of one shape are stacked into batches of at most
    `batch_size`, given to `feature_extractor` as a float32 tensor (B, 3, F, H, W) in [-1, 1] under
    `torch.no_grad()`; its output (a tensor or array with B rows) is flattened to (B, D)."""
    import torch

    rows: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).float().permute(0, 4, 1, 2, 3) / 127.5 - 1  # (B, 3, F, H, W)
        with torch.no_grad():
            out = feature_extractor(x)
        out = out.detach().cpu().double().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float64)
        if out.shape[0] != len(batch):
            raise InputError(f"the feature extractor returned {out.shape[0]} rows for a batch of {len(batch)}")
        rows.append(out.reshape(len(batch), -1))
        batch.clear()

    for i, video in enumerate(videos):
        v = _frames(video, f"video {i}")
        if batch and (v.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(v)
    if batch:
        flush()
    if not rows:
        raise InputError("no videos to extract features from")
    return np.concatenate(rows)


def frechet_video_distance(
    videos_a: Sequence[Frames], videos_b: Sequence[Frames], feature_extractor: Callable[[Any], Any], *,
    batch_size: int = 8,
) -> float:
    """Fréchet distance between the feature statistics of two sets of videos (FVD, Unterthiner et al. 2018, when the
    extractor is I3D): `frechet_distance(*feature_statistics(A), *feature_statistics(B))` with features from
    `extract_features`. The extractor is any callable; `load_feature_extractor` loads one from a local file."""
    fa = extract_features(videos_a, feature_extractor, batch_size=batch_size)
    fb = extract_features(videos_b, feature_extractor, batch_size=batch_size)
    return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))


def load_feature_extractor(path: str | os.PathLike[str]) -> Callable[[Any], Any]:
    """A feature extractor from a local file, on the CPU: a `torch.export` program (`.pt2`, `torch.export.load`)
    or a TorchScript module (any other name, `torch.jit.load`, in eval mode). It gets (B, 3, F, H, W) in [-1, 1]
    (see `extract_features`); a model expecting other inputs needs a wrapper. Nothing is downloaded."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"feature extractor not found: {str(path)!r} (a local file; nothing is downloaded)")
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot load the feature extractor {str(path)!r}: {reason}") from None


# ---------------------------------------------------------------------------------------------------- summaries


def evaluate_video(
    video: Frames,
    prompt: str | None = None,
    image: Frames | None = None,
    *,
    flow: bool = True,
    base: Frames | None = None,
    ground_truth: Frames | None = None,
    resize: str = "stretch",
) -> dict[str, Any]:
    """Every metric that applies to one video, as a flat dict: direction_correct (when the prompt names a colour
    and a direction), first_frame_psnr/ssim (with the input `image`), colour_drift_mean/max,
    temporal_flickering, motion_mean/top5 (with `flow`); when `video` is a refined clip, the `refinement_fidelity`
    entries (with the `base` it refined, resized as `resize`) and the `refinement_gain` entries (with the `base`
    and the `ground_truth` clip)."""
    video = _frames(video, "video") / 255.0  # converted once
    row: dict[str, Any] = {}
    if prompt is not None:
        row["prompt"] = prompt
        row["direction_correct"] = prompt_agreement(video, prompt)
    if image is not None:
        fid = first_frame_fidelity(video, image)
        row["first_frame_psnr"], row["first_frame_ssim"] = fid["psnr"], fid["ssim"]
    drift = colour_drift(video)
    row["colour_drift_mean"], row["colour_drift_max"] = drift["mean"], drift["max"]
    if len(video) > 1:
        row["temporal_flickering"] = temporal_flickering(video)
        if flow:
            motion = motion_magnitude(video)
            row["motion_mean"], row["motion_top5"] = motion["mean"], motion["top5"]
    if base is not None:
        row |= refinement_fidelity(base, video, resize=resize)
        if ground_truth is not None:
            row |= refinement_gain(base, video, ground_truth, resize=resize)
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-video rows → {"count": videos, "mean": {metric: mean}, "n": {metric: videos that have it}}, over every
    numeric entry that is not None (booleans count as 0/1, so mean["direction_correct"] is the direction
    accuracy, also given as "direction_accuracy")."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (bool, int, float, np.number)):
                values.setdefault(key, []).append(float(value))
    summary: dict[str, Any] = {
        "count": len(rows),
        "mean": {k: float(np.mean(v)) for k, v in values.items()},
        "n": {k: len(v) for k, v in values.items()},
    }
    if "direction_correct" in values:
        summary["direction_accuracy"] = summary["mean"]["direction_correct"]
    return summary


def evaluate(
    videos: Sequence[Frames],
    prompts: Sequence[str | None],
    images: Sequence[Frames | None] | None = None,
    *,
    flow: bool = True,
    bases: Sequence[Frames | None] | None = None,
    ground_truths: Sequence[Frames | None] | None = None,
) -> dict[str, Any]:
    """`evaluate_video` on each video and `summarize` over them; the rows are kept under "per_video"."""
    n = len(videos)
    for name, seq in (("prompts", prompts), ("images", images), ("bases", bases), ("ground_truths", ground_truths)):
        if seq is not None and len(seq) != n:
            raise InputError(f"{n} videos but {len(seq)} {name}")
    rows = [
        evaluate_video(videos[i], prompts[i], images[i] if images else None, flow=flow,
                       base=bases[i] if bases else None, ground_truth=ground_truths[i] if ground_truths else None)
        for i in range(n)
    ]
    return {**summarize(rows), "per_video": rows}


# ---------------------------------------------------------------------------------------------- `i2vgen eval`


TABLE_COLUMNS = {  # row key: (table header, number format)
    "direction_correct": ("dir_ok", ".2f"),
    "first_frame_psnr": ("ff_psnr", ".2f"),
    "first_frame_ssim": ("ff_ssim", ".4f"),
    "colour_drift_mean": ("drift", ".2f"),
    "colour_drift_max": ("drift_max", ".2f"),
    "temporal_flickering": ("flicker", ".4f"),
    "motion_mean": ("motion", ".3f"),
    "motion_top5": ("motion5", ".3f"),
    "input_psnr": ("in_psnr", ".2f"),
    "input_ssim": ("in_ssim", ".4f"),
    "detail_gain": ("detail", ".3f"),
    "psnr_gain_db": ("gain_db", ".2f"),
    "ssim_gain": ("ssim_gain", ".4f"),
}


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `i2vgen eval FOLDER`; the handler (`run_eval`) is stored as `func`."""
    p = subparsers.add_parser(
        "eval", help="evaluate a folder of generated videos (offline metrics, a table or JSON)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate every video in FOLDER (.mp4, .gif, .webp, or a folder of frame_*.png as written by\n"
                    "`i2vgen generate`) and print a table: one row per video and their mean. Each video needs a\n"
                    "JSON sidecar (NAME.json or NAME.EXT.json) with 'prompt' and optionally 'image' (the input\n"
                    "image: first-frame PSNR/SSIM); a refined video ('stage': 'refine', as `i2vgen refine` writes)\n"
                    "names its 'input' video, any video may name a 'base' (the clip it refines) and a\n"
                    "'ground_truth'. Without a sidecar, the metadata stored in the video is used. Relative paths\n"
                    "are tried from the current folder, then the sidecar's.\n\n"
                    "A video that cannot be read is reported on one line and left out; the exit status is then 1.",
        epilog="table columns: dir_ok = the prompt's motion direction is seen (mean: direction accuracy);\n"
               "ff_psnr/ff_ssim = first frame vs the input image; drift/drift_max = colour drift (0-255);\n"
               "flicker = VBench temporal flickering; motion/motion5 = optical flow, pixels per frame (mean,\n"
               "top 5 %); in_psnr/in_ssim/detail = a refined video vs its bicubic up-scaled input (detail > 1:\n"
               "finer detail added); gain_db/ssim_gain = refined minus bicubic, both against the ground truth.")
    p.add_argument("folder", help="folder of generated videos")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--output", "-o", default=None, help="write the summary with per-video rows here (JSON)")
    p.add_argument("--no-flow", action="store_true", help="skip the optical-flow motion magnitude (faster)")
    p.add_argument("--fvd-reference", default=None, help="folder of reference videos for the Fréchet distance")
    p.add_argument("--feature-extractor", default=None,
                   help="local feature extractor (TorchScript, or torch.export .pt2) for --fvd-reference: "
                        "(B, 3, F, H, W) in [-1, 1] -> (B, D)")
    p.set_defaults(func=run_eval)
    return p


def find_videos(folder: Path) -> list[Path]:
    """The videos in `folder`, sorted: .mp4/.gif/.webp files and sub-folders holding frame_*.png."""
    if not folder.is_dir():
        raise InputError(f"not a folder: {str(folder)!r}")
    return sorted(
        p for p in folder.iterdir()
        if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and any(p.glob("frame_*.png")))
    )


def _sidecar(video: Path) -> dict[str, Any]:
    import json

    from i2vgen.io import read_metadata

    for candidate in (video.with_name(video.name + ".json"), video.with_name(video.stem + ".json")):
        if candidate.is_file() and candidate != video:
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise InputError(f"unreadable sidecar {str(candidate)!r}: {e}") from None
            if isinstance(data, dict):
                return data
    return read_metadata(video)


def resolve_sidecar_path(value: str, sidecar_folder: Path) -> Path | None:
    """A path named in a sidecar: as it is when absolute; else from the current folder (sidecars written before
    `io.sidecar_path_field` hold paths relative to the folder `i2vgen` ran in), then from the sidecar's folder.
    None when it exists in neither."""
    path = Path(value)
    for candidate in [path] if path.is_absolute() else [path, sidecar_folder / path]:
        if candidate.exists():
            return candidate
    return None


def _evaluate_file(path: Path, *, flow: bool, warnings: list[str]) -> dict[str, Any] | None:
    """One video of the folder → its row, or None when it has no prompt (skipped). An input named by its sidecar
    that is not found is reported (and added to `warnings`) and the metrics that need it are left out; a video or
    input that cannot be read raises."""
    from i2vgen.io import center_crop_wide, load_image, read_video

    meta = _sidecar(path)
    prompt = meta.get("prompt")
    if not isinstance(prompt, str):
        print(f"i2vgen: note: {path}: skipped, no prompt in its sidecar or metadata", file=sys.stderr)
        return None
    video, _ = read_video(path)
    refined = meta.get("stage") == "refine"

    def find(key: str, needed_for: str) -> Path | None:
        value = meta.get(key)
        if not isinstance(value, str) or not value:
            return None
        found = resolve_sidecar_path(value, path.parent)
        if found is None:
            where = "" if Path(value).is_absolute() else f" (tried from {Path.cwd()} and {path.parent})"
            warnings.append(f"{path}: its {key} {value!r} was not found{where}; {needed_for} left out")
            print(f"i2vgen: warning: {warnings[-1]}", file=sys.stderr)
        return found

    image = None
    if (image_path := find("image", "first-frame PSNR/SSIM")) is not None:
        h, w = video.shape[1:3]
        image = np.asarray(center_crop_wide(load_image(image_path), (w, h)))  # as the pipeline crops it
    base_key = "input" if refined and "base" not in meta else "base"
    base_path = find(base_key, "the refinement figures (in_psnr, in_ssim, detail)")
    gt_path = find("ground_truth", "the refinement gain") if base_path else None
    base = _read_base(base_path, len(video)) if base_path else None
    gt = read_video(gt_path)[0] if gt_path else None
    resize = meta.get("resize", "stretch") if refined else "stretch"
    return {"video": path.name, **evaluate_video(video, prompt, image, flow=flow, base=base, ground_truth=gt,
                                                 resize=resize)}


def _read_base(path: Path, num_frames: int) -> np.ndarray:
    """The clip a video refines, read as `i2vgen refine` reads its input (a variable frame rate resampled), up to
    the refined video's frame count (`--max-frames`)."""
    from i2vgen.pipelines.refine import load_video

    return load_video(path, max_frames=num_frames)[0]


def run_eval(args: argparse.Namespace) -> int:
    """The `i2vgen eval` handler: evaluate each video of the folder, print a table (or JSON), optionally write the
    JSON with the rows; 1 when a video could not be evaluated, else 0."""
    import json

    from i2vgen.io import write_sidecar_json

    folder = Path(args.folder)
    paths = find_videos(folder)
    if not paths:
        raise InputError(f"no videos (.mp4, .gif, .webp, PNG-frame folders) in {str(folder)!r}")
    if bool(args.fvd_reference) != bool(args.feature_extractor):
        raise InputError("--fvd-reference and --feature-extractor go together")
    extractor = load_feature_extractor(args.feature_extractor) if args.feature_extractor else None
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    failed: list[dict[str, str]] = []
    warnings: list[str] = []
    for path in paths:
        try:
            row = _evaluate_file(path, flow=not args.no_flow, warnings=warnings)
        except I2VGenError as e:
            _report_failure(path, e, failed)
            continue
        if row is None:
            skipped.append(path.name)
        else:
            rows.append(row)
    summary: dict[str, Any] = {"folder": str(folder), **summarize(rows), "skipped": skipped, "failed": failed,
                               "warnings": warnings}
    if extractor is not None:
        bad = {f["video"] for f in failed}
        generated = _read_all([p for p in paths if str(p) not in bad], failed)
        reference = _read_all(find_videos(Path(args.fvd_reference)), failed)
        summary["fvd"] = frechet_video_distance(generated, reference, extractor)
        summary["fvd_counts"] = [len(generated), len(reference)]
    if args.json:
        print(json.dumps(_finite(summary), indent=2))
    else:
        print(format_table(rows, summary))
    if args.output:
        write_sidecar_json(args.output, _finite({**summary, "per_video": rows}))
        print(f"wrote {args.output}", file=sys.stderr)
    return 1 if failed else 0


def _report_failure(path: Path, error: BaseException, failed: list[dict[str, str]]) -> None:
    reason = " ".join(str(error).split()) or type(error).__name__
    failed.append({"video": str(path), "error": reason})
    print(f"i2vgen: error: {path}: {reason}", file=sys.stderr)


def _read_all(paths: Sequence[Path], failed: list[dict[str, str]]) -> list[np.ndarray]:
    """The frames of each readable video; the others are reported and added to `failed`."""
    from i2vgen.io import read_video

    videos = []
    for path in paths:
        try:
            videos.append(read_video(path)[0])
        except I2VGenError as e:
            _report_failure(path, e, failed)
    return videos


def format_table(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The per-video rows and their mean (`summary["mean"]`) as an aligned text table: the `TABLE_COLUMNS` that
    some row has, '-' where a row lacks one; the Fréchet distance, when computed, on a line below."""
    if not rows:
        lines = ["no videos evaluated"]
    else:
        keys = [k for k in TABLE_COLUMNS if any(k in row for row in rows)]
        header = ["video", *(TABLE_COLUMNS[k][0] for k in keys)]
        body = [[str(row["video"]), *(_cell(row.get(k), TABLE_COLUMNS[k][1]) for k in keys)] for row in rows]
        mean = ["mean", *(_cell(summary["mean"].get(k), TABLE_COLUMNS[k][1]) for k in keys)]
        widths = [max(len(line[i]) for line in (header, *body, mean)) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

        rule = "  ".join("-" * w for w in widths)
        lines = [line(header), rule, *map(line, body), rule, line(mean)]
    if "fvd" in summary:
        n_gen, n_ref = summary["fvd_counts"]
        lines.append(f"fvd: {summary['fvd']:.4g} ({n_gen} videos vs {n_ref} reference videos)")
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if not math.isfinite(value):
        return str(float(value))  # inf, -inf, nan
    return format(value, fmt)


def _finite(value: Any) -> Any:
    """inf / NaN → None, recursively, so that the JSON is standard (an identical first frame has PSNR inf)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value
